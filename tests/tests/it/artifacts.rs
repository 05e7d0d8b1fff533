//! Issue 11, part 5: archives and the artifact store. A member name or link
//! target with a control character is refused at staging; an artifact whose
//! stage failed leaves the store unless something still uses it; the store
//! has a size cap (`limits.max_artifact_store_bytes`) with eviction of
//! unreferenced artifacts, oldest first. Real `golivectl` and
//! `golive-agent` processes over real mutual TLS, a real HTTP server serving
//! the live release; every claim is checked on disk, in the agent's journal
//! or over the wire.
//!
//! Each test owns a temp dir and loopback addresses in 127.0.0.210-219.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use golive_shared::protocol::{
    ErrorCode, HasArtifactRequest, JobEventsRequest, JobInfo, JobState, Request, Response,
};
use golive_tests::*;
use golivectl::client::AgentClient;
use serde_json::Value;
use sha2::{Digest, Sha256};

world!();

/// One host: the app's ROOT, its HTTP server and its agent. Declared after
/// the [`World`], so it is dropped (processes killed) first.
struct Host {
    ip: String,
    root: PathBuf,
    http: HttpApp,
    agent: AgentProc,
}

impl World {
    /// An agent on `ip` declaring app `shop` (critical probe on /health),
    /// with `limits` lines and `tables` after `[apps.shop]`.
    fn host(&self, ip: &str, limits: &str, tables: &str) -> Host {
        let root = self.path().join("web1/srv/shop");
        let http = HttpApp::serve(&root.join("current"), ip);
        let mut spec = AgentSpec::new("web1", ip);
        spec.limits_toml = limits.into();
        spec.apps_toml = format!(
            "{}{tables}\n",
            app_toml("shop", &root, &format!("http://{ip}:{}/health", http.port))
        );
        let agent = AgentProc::start(self.path(), &self.pki, &spec);
        Host {
            ip: ip.into(),
            root,
            http,
            agent,
        }
    }

    /// `golivectl --output json deploy` of release `id` from `artifact`:
    /// the run and its `result` event.
    fn deploy(&self, id: &str, artifact: &Path, h: &Host) -> (Run, Value) {
        let plan = self.path().join(format!("{id}.toml"));
        write_plan(
            &plan,
            &self.pki,
            &self.op,
            "shop",
            Some((id, artifact)),
            &[&h.agent],
        );
        let run = self.ctl.run(&["--output", "json", "deploy", s(&plan)]);
        let result = run
            .json_lines()
            .into_iter()
            .find(|v| v["event"] == "result")
            .unwrap_or_else(|| panic!("no result event:\n{}", run.text()));
        (run, result)
    }

    /// Asks the agent whether it holds artifact `sha` (`HasArtifact`).
    fn has(&self, h: &Host, sha: &str) -> bool {
        let req = Request::HasArtifact(HasArtifactRequest { sha256: sha.into() });
        match self.call(h, &req) {
            Ok(Response::Artifact(info)) => {
                assert_eq!(info.sha256, sha);
                true
            }
            Err(e) if e.agent_code() == Some(ErrorCode::NotFound) => false,
            other => panic!("unexpected HasArtifact answer: {other:?}"),
        }
    }

    /// Job `id` as the agent reports it (`JobEvents`, not waiting).
    fn job(&self, h: &Host, id: u64) -> JobInfo {
        let req = Request::JobEvents(JobEventsRequest {
            job_id: id,
            after_seq: 0,
            wait_ms: 0,
        });
        match self.call(h, &req) {
            Ok(Response::Events(r)) => r.job,
            other => panic!("unexpected JobEvents answer: {other:?}"),
        }
    }

    /// One request to the host's agent as the operator, within 30 s.
    fn call(&self, h: &Host, req: &Request) -> Result<Response, golivectl::client::ClientError> {
        let tls = golivectl::tls::client_config(&self.pki.ca(), &self.op.0, &self.op.1)
            .expect("client TLS config");
        let client = AgentClient::new(&h.agent.name, &h.agent.addr.to_string(), None, tls)
            .expect("agent client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), client.call(req))
                .await
                .expect("the agent answered within 30 s")
        })
    }
}

impl Host {
    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.ip, self.http.port, path)
            .unwrap_or_else(|| panic!("no HTTP answer from {}:{}", self.ip, self.http.port))
    }

    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    fn store(&self) -> PathBuf {
        self.agent.state_dir.join("artifacts")
    }

    /// The artifacts in the store (sorted sha256 names; partials excluded).
    fn stored(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.store())
            .expect("list the artifact store")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Sets an artifact's mtime, which is its age in the store.
    fn age(&self, sha: &str, secs_since_epoch: u64) {
        std::fs::File::open(self.store().join(sha))
            .expect("open stored artifact")
            .set_modified(UNIX_EPOCH + Duration::from_secs(secs_since_epoch))
            .expect("set mtime");
    }

    /// `state` of every upload row of `sha`, oldest first.
    fn upload_states(&self, sha: &str) -> Vec<String> {
        let j = self.agent.journal();
        let mut stmt = j
            .prepare("SELECT state FROM uploads WHERE sha256 = ?1 ORDER BY id")
            .expect("prepare");
        stmt.query_map([sha], |r| r.get(0))
            .expect("query uploads")
            .collect::<Result<_, _>>()
            .expect("read uploads")
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read artifact")))
}

/// A healthy release archive (`index.html` = "shop VERSION\n", `health`)
/// plus `extra` files.
fn release(dir: &Path, version: &str, extra: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("dist").join(format!("shop-{version}.tar.gz"));
    let index = format!("shop {version}\n");
    let mut files: Vec<(&str, &[u8])> = vec![("index.html", index.as_bytes()), ("health", b"ok\n")];
    files.extend_from_slice(extra);
    artifact(&path, &files);
    path
}

/// Bytes that gzip cannot shrink (xorshift, seeded), so an artifact's size
/// in the store is about `n`.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A raw tar header: name and link bytes go straight into the old-style
/// fields, so nothing is normalised or refused on the way.
fn raw_header(name: &[u8], kind: tar::EntryType, link: &[u8], size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    {
        let old = header.as_old_mut();
        assert!(name.len() < old.name.len() && link.len() < old.linkname.len());
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

/// A healthy .tar.gz, then one crafted entry.
fn crafted(path: &Path, name: &[u8], kind: tar::EntryType, link: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for (n, body) in [("index.html", &b"crafted\n"[..]), ("health", b"ok\n")] {
        let h = raw_header(
            n.as_bytes(),
            tar::EntryType::Regular,
            b"",
            body.len() as u64,
        );
        tar.append(&h, body).unwrap();
    }
    let body: &[u8] = if kind == tar::EntryType::Regular {
        b"x\n"
    } else {
        b""
    };
    tar.append(&raw_header(name, kind, link, body.len() as u64), body)
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

/// Every path under `dir` (bounded walk, symlinks not followed).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        assert!(out.len() < 100_000, "runaway walk under {}", dir.display());
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// One crafted entry: label, name, kind, link target, the refusal wanted.
type Case<'a> = (&'a str, &'a [u8], tar::EntryType, &'a [u8], &'a str);

/// A member name with a newline, tab, escape or C1 character, or a link
/// target with one, is refused at staging: exit 2 like any refused archive,
/// the entry named escaped with the character and the fix, nothing live
/// changed, no such name written anywhere, and the refused artifact gone
/// from the store.
#[test]
fn issue11_control_characters_in_member_names_are_refused() {
    let w = World::new();
    let h = w.host("127.0.0.210", "", "");
    let v1 = release(w.path(), "v1", &[]);
    let (run, _) = w.deploy("v1", &v1, &h);
    assert_eq!(run.code, 0, "{}", run.text());

    let cases: [Case; 5] = [
        (
            "newline",
            b"evil\nname",
            tar::EntryType::Regular,
            b"",
            r#"archive entry "evil\nname" has the control character U+000A (line feed) in its name"#,
        ),
        (
            "tab",
            b"dir/a\tb",
            tar::EntryType::Regular,
            b"",
            r#"archive entry "dir/a\tb" has the control character U+0009 (tab)"#,
        ),
        (
            "escape",
            b"\x1b[2Jclear",
            tar::EntryType::Regular,
            b"",
            r#"archive entry "\u{1b}[2Jclear" has the control character U+001B (escape)"#,
        ),
        (
            "c1",
            "nel\u{85}x".as_bytes(),
            tar::EntryType::Regular,
            b"",
            r#"archive entry "nel\u{85}x" has the control character U+0085"#,
        ),
        (
            "link",
            b"link",
            tar::EntryType::Symlink,
            b"index\r.html",
            r#"link "link" -> "index\r.html" has the control character U+000D (carriage return) in its target"#,
        ),
    ];
    for (i, (label, name, kind, link, want)) in cases.iter().enumerate() {
        let art = w.path().join(format!("dist/{label}.tar.gz"));
        crafted(&art, name, *kind, link);
        let sha = sha256_of(&art);
        let (run, res) = w.deploy(&format!("bad{i}"), &art, &h);
        assert_eq!(run.code, 2, "{label}: {}", run.text());
        assert_eq!(res["state"], "refused", "{label}: {}", run.text());
        let msg = text(&res["message"]);
        assert!(
            msg.contains("staging on web1 failed, nothing live changed")
                && msg.contains(want)
                && msg.contains("rebuild the artifact"),
            "{label}: {msg}"
        );
        assert_eq!(h.current().as_deref(), Some("releases/v1"), "{label}");
        assert_eq!(h.get("/"), (200, "shop v1\n".into()), "{label}");
        assert!(!h.root.join(format!("releases/bad{i}")).exists(), "{label}");
        assert!(
            !w.has(&h, &sha),
            "{label}: the refused artifact is still served"
        );
    }
    let leaked: Vec<PathBuf> = walk(w.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().iter().any(|b| *b < 0x20))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "control characters went live: {leaked:?}"
    );
    assert_eq!(h.stored(), [sha256_of(&v1)]);
}

/// Every way a stage can fail (a refused archive, an archive over the unpack
/// limits, a failing `after_unpack` hook) leaves nothing in the store: the
/// file is gone, its upload row reads `discarded`, `HasArtifact` answers no
/// and the next deploy uploads it again. An artifact a release on disk was
/// staged from stays.
#[test]
fn issue11_refused_uploads_leave_nothing_in_the_store() {
    let w = World::new();
    let h = w.host(
        "127.0.0.211",
        "max_unpacked_bytes = 100000",
        "[[apps.shop.hooks.after_unpack]]\n\
         cmd = [\"sh\", \"-c\", \"case $GOLIVE_RELEASE in bad*) echo refusing $GOLIVE_RELEASE; exit 3;; esac\"]\n",
    );
    let v1 = release(w.path(), "v1", &[]);
    let (run, _) = w.deploy("v1", &v1, &h);
    assert_eq!(run.code, 0, "{}", run.text());
    let live = sha256_of(&v1);

    let traversal = w.path().join("dist/traversal.tar.gz");
    crafted(&traversal, b"../evil", tar::EntryType::Regular, b"");
    let big = noise(150_000, 7);
    let too_big = release(w.path(), "big", &[("blob", &big)]);
    let hooked = release(w.path(), "hooked", &[]);
    for (id, art, want) in [
        ("r1", &traversal, "has a `..` component"),
        ("r2", &too_big, "unpacks to more than 100000 bytes"),
        // The hook's output is in its step (issue 12), not the outcome.
        ("bad3", &hooked, "hook after_unpack.0"),
    ] {
        let sha = sha256_of(art);
        let (run, res) = w.deploy(id, art, &h);
        assert_eq!(run.code, 2, "{id}: {}", run.text());
        let msg = text(&res["message"]);
        assert!(msg.contains(want), "{id}: {msg}");
        assert_eq!(h.stored(), [live.as_str()], "{id}: left in the store");
        assert!(!w.has(&h, &sha), "{id}");
        assert_eq!(h.upload_states(&sha), ["discarded"], "{id}");
        assert!(
            run.stdout.contains(&format!("removed artifact {sha}")),
            "{id}: the job says nothing of the removal:\n{}",
            run.text()
        );
    }
    assert_eq!(h.current().as_deref(), Some("releases/v1"));

    // The live release's own artifact, failing under another id, stays: v1
    // on disk was staged from it.
    let (run, _) = w.deploy("bad-again", &v1, &h);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stdout.contains(&format!(
            "artifact {live} stays in the store: release v1 of app shop was staged from it"
        )),
        "{}",
        run.text()
    );
    assert_eq!(h.stored(), [live.as_str()]);
    assert_eq!(h.upload_states(&live), ["stored"]);

    // A discarded artifact is uploaded again by the next deploy.
    let (run, _) = w.deploy("v2", &hooked, &h);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(
        h.upload_states(&sha256_of(&hooked)),
        ["discarded", "stored"]
    );
    assert_eq!(h.get("/"), (200, "shop hooked\n".into()));
}

/// The store is capped: an upload that would pass the cap evicts the
/// unreferenced artifacts, least recently asked for first, never the live
/// one nor the rollback target's even when they are older; each eviction is
/// logged and journaled, and an evicted artifact is uploaded again. An
/// upload that cannot fit is refused (exit 2) with the cap, the sizes and
/// the fix, and evicts nothing.
#[test]
fn issue11_store_cap_evicts_the_oldest_unreferenced_artifact_only() {
    let w = World::new();
    let h = w.host(
        "127.0.0.212",
        "max_artifact_bytes = 450000\nmax_artifact_store_bytes = 450000",
        "",
    );
    // Five artifacts of about 100 kB: four fit under 450 kB, five do not.
    let arts: Vec<PathBuf> = (1..=5)
        .map(|i| {
            let blob = noise(100_000, i);
            release(w.path(), &format!("v{i}"), &[("blob", &blob)])
        })
        .collect();
    let sha: Vec<String> = arts.iter().map(|a| sha256_of(a)).collect();
    for (i, art) in arts[..4].iter().enumerate() {
        let (run, _) = w.deploy(&format!("v{}", i + 1), art, &h);
        assert_eq!(run.code, 0, "v{}: {}", i + 1, run.text());
    }
    let mut all = sha[..4].to_vec();
    all.sort();
    assert_eq!(h.stored(), all, "four artifacts fit under the cap");
    // Live v4 and rollback target v3 are the oldest; of the unreferenced v1
    // and v2, v2 was asked for longer ago.
    for (i, secs) in [
        (3, 1_000_000_000),
        (2, 1_000_000_100),
        (1, 1_000_000_200),
        (0, 1_000_000_300),
    ] {
        h.age(&sha[i], secs);
    }

    let (run, _) = w.deploy("v5", &arts[4], &h);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(h.get("/"), (200, "shop v5\n".into()));
    let mut left = vec![
        sha[0].clone(),
        sha[2].clone(),
        sha[3].clone(),
        sha[4].clone(),
    ];
    left.sort();
    assert_eq!(h.stored(), left, "exactly v2's artifact makes room");
    assert!(!w.has(&h, &sha[1]));
    assert_eq!(h.upload_states(&sha[1]), ["evicted"]);
    let log = h.agent.log_text();
    assert!(
        log.contains(&format!("evicted artifact {} (", sha[1]))
            && log.contains("under limits.max_artifact_store_bytes (450000 bytes)"),
        "{log}"
    );
    assert_eq!(log.matches("evicted artifact").count(), 1, "{log}");

    // 300 kB more cannot fit: v5 (live) and v4 (rollback target) stay, and
    // evicting v1 and v3 still leaves too much. Refused, nothing evicted.
    let huge_blob = noise(300_000, 9);
    let huge = release(w.path(), "v6", &[("blob", &huge_blob)]);
    let huge_size = std::fs::metadata(&huge).unwrap().len();
    let (run, res) = w.deploy("v6", &huge, &h);
    assert_eq!(run.code, 2, "{}", run.text());
    assert_eq!(res["state"], "refused", "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains(&format!(
            "cannot take artifact {} ({huge_size} bytes)",
            sha256_of(&huge)
        )) && msg.contains("would pass limits.max_artifact_store_bytes (450000 bytes)")
            && msg.contains("nothing was evicted")
            && msg.contains("Raise limits.max_artifact_store_bytes in the agent config"),
        "{msg}"
    );
    assert_eq!(h.stored(), left, "a refused upload evicts nothing");
    assert_eq!(h.get("/"), (200, "shop v5\n".into()));
    assert!(!w.has(&h, &sha256_of(&huge)));

    // The evicted artifact comes back when a deploy needs it: the agent
    // said it had no such artifact, so the controller uploaded it.
    let (run, _) = w.deploy("v2-again", &arts[1], &h);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(h.upload_states(&sha[1]), ["evicted", "stored"]);
    assert_eq!(h.get("/"), (200, "shop v2\n".into()));
    // Room for it came from v3's artifact, asked for longer ago than v1's;
    // v5's (now the rollback target) and v4's were pinned while it was made.
    let mut left = vec![
        sha[0].clone(),
        sha[1].clone(),
        sha[3].clone(),
        sha[4].clone(),
    ];
    left.sort();
    assert_eq!(h.stored(), left);
    assert_eq!(h.upload_states(&sha[2]), ["evicted"]);
}

/// `ROOT/releases` made immutable (`chattr +i`): even root cannot create
/// anything in it, which is a disk fault as staging meets it. Undone on
/// drop, so a failing test leaves a temp dir that can be removed.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        let mut cmd = std::process::Command::new("chattr");
        cmd.arg("+i").arg(dir);
        let run = run_bounded(cmd, Duration::from_secs(10));
        assert_eq!(
            run.code,
            0,
            "this test needs `chattr +i` (root on ext4/xfs/btrfs) on {}: {}",
            dir.display(),
            run.text()
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let mut cmd = std::process::Command::new("chattr");
        cmd.arg("-i").arg(&self.0);
        let _ = run_bounded(cmd, Duration::from_secs(10));
    }
}

/// The id and `error_code` of the agent's last failed stage job, from its
/// journal.
fn last_failed_stage(h: &Host) -> (u64, Option<String>) {
    let (id, code): (i64, Option<String>) = h
        .agent
        .journal()
        .query_row(
            "SELECT id, error_code FROM jobs WHERE kind = 'stage' AND state = 'failed' \
             ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("a failed stage job");
    (id as u64, code)
}

/// Issue 14, part 8: the agent classes its staging failures, and the
/// controller's exit code comes from that class through the one mapping
/// (no special case for staging). A corrupt archive fails its stage job
/// with `BadRequest` (in the journal and in the `JobInfo` the agent
/// answers with): exit 2, the message naming the problem and the fix. A
/// disk fault while staging (`ROOT/releases` immutable) fails it with
/// `Internal`: exit 1. Nothing live changes either way, and the same
/// release stages once the disk is fixed.
#[test]
fn issue14_a_staging_failures_exit_code_comes_from_the_class_the_agent_gives_it() {
    let w = World::new();
    let h = w.host("127.0.0.213", "", "");
    let v1 = release(w.path(), "v1", &[]);
    let (run, _) = w.deploy("v1", &v1, &h);
    assert_eq!(run.code, 0, "{}", run.text());

    // A gzip header, then noise.
    let corrupt = w.path().join("dist/corrupt.tar.gz");
    let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    bytes.extend(noise(4096, 11));
    std::fs::write(&corrupt, bytes).unwrap();
    let (run, res) = w.deploy("v2", &corrupt, &h);
    assert_eq!(run.code, 2, "{}", run.text());
    assert_eq!(res["state"], "refused", "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("staging on web1 failed, nothing live changed")
            && msg.contains("archive is damaged or not a tar, tar.gz or tar.zst")
            && msg.contains("rebuild and upload it again"),
        "{msg}"
    );
    let (id, code) = last_failed_stage(&h);
    assert_eq!(code.as_deref(), Some("BadRequest"));
    let job = w.job(&h, id);
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_code, Some(ErrorCode::BadRequest), "{job:?}");
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));

    let v3 = release(w.path(), "v3", &[]);
    let releases = h.root.join("releases");
    let immutable = Immutable::set(&releases);
    let (run, res) = w.deploy("v3", &v3, &h);
    assert_eq!(run.code, 1, "a disk fault is a failure: {}", run.text());
    assert_eq!(res["state"], "failed", "{}", run.text());
    let msg = text(&res["message"]);
    assert!(
        msg.contains("staging on web1 failed, nothing live changed")
            && msg.contains("cannot create directory")
            && msg.contains(&releases.display().to_string()),
        "{msg}"
    );
    let (id, code) = last_failed_stage(&h);
    assert_eq!(code.as_deref(), Some("Internal"));
    assert_eq!(w.job(&h, id).error_code, Some(ErrorCode::Internal));
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));

    drop(immutable);
    let (run, res) = w.deploy("v3", &v3, &h);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["state"], "succeeded", "{}", run.text());
    assert_eq!(h.get("/"), (200, "shop v3\n".into()));
}
