//! Issue 2: deployments end to end. Real `golivectl` and `golive-agent`
//! processes over real mutual TLS, a real HTTP server serving the live
//! release, and the agent's journal read back for every claim.
//!
//! Each test owns a temp dir and loopback addresses in 127.0.0.40-49, so the
//! tests run in parallel with each other and with other modules.
//!
//! The app under test is python's http.server pointed at `ROOT/current`. That
//! directory does not exist before the first deploy; http.server starts anyway
//! and resolves the directory on every request (404 until `current` exists,
//! then whatever release it points to), so no placeholder is needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use golive_shared::protocol::{
    ErrorCode, EventKind, JobEventsRequest, JobInfo, JobSpec, JobState, LockRequest, LockResponse,
    Request, Response, StageRelease, SubmitJob,
};
use golive_tests::*;
use golivectl::client::AgentClient;
use serde_json::Value;
use sha2::{Digest, Sha256};

world!();

/// One host: the app's ROOT, its HTTP server and its agent. Declared after
/// the [`World`] in each test, so it is dropped (processes killed) first.
struct Host {
    ip: String,
    root: PathBuf,
    http: HttpApp,
    agent: AgentProc,
}

impl World {
    /// An http.server on `ip` serving `ROOT/current`, and an agent on `ip`
    /// declaring app `shop` with a critical http probe on `probe_path`.
    fn host(&self, name: &str, ip: &str, probe_path: &str) -> Host {
        let root = self.path().join(name).join("srv/shop");
        let http = HttpApp::serve(&root.join("current"), ip);
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = app_toml(
            "shop",
            &root,
            &format!("http://{ip}:{}{probe_path}", http.port),
        );
        let agent = AgentProc::start(self.path(), &self.pki, &spec);
        Host {
            ip: ip.into(),
            root,
            http,
            agent,
        }
    }

    /// Writes `NAME.toml` naming `agents` (at their current addresses).
    fn plan(&self, name: &str, release: Option<(&str, &Path)>, agents: &[&AgentProc]) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        write_plan(&path, &self.pki, &self.op, "shop", release, agents);
        path
    }

    /// A library client to `agent` with certificate `cert`.
    fn client_as(&self, agent: &AgentProc, cert: &(PathBuf, PathBuf)) -> AgentClient {
        let tls = golivectl::tls::client_config(&self.pki.ca(), &cert.0, &cert.1)
            .expect("client TLS config");
        AgentClient::new(&agent.name, &agent.addr.to_string(), None, tls).expect("agent client")
    }

    fn client(&self, agent: &AgentProc) -> AgentClient {
        self.client_as(agent, &self.op)
    }
}

impl Host {
    /// GET `path` from the live app: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.ip, self.http.port, path)
            .unwrap_or_else(|| panic!("no HTTP answer from {}:{}", self.ip, self.http.port))
    }

    /// Where `ROOT/current` points, as written (`releases/<id>`).
    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    fn releases(&self) -> Vec<String> {
        list(&self.root.join("releases"))
    }
}

/// Sorted entry names of `dir`; empty when it does not exist.
fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// A release archive with `index.html` = "shop VERSION\n" and, when healthy,
/// the `health` file the probe wants; `extra` files are added as given.
fn release(dir: &Path, version: &str, healthy: bool, extra: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("dist").join(format!("shop-{version}.tar.gz"));
    let index = format!("shop {version}\n");
    let mut files: Vec<(&str, &[u8])> = vec![("index.html", index.as_bytes())];
    if healthy {
        files.push(("health", b"ok\n"));
    }
    files.extend_from_slice(extra);
    artifact(&path, &files);
    path
}

/// `golivectl --output json deploy PLAN`: the run and its `result` event.
fn deploy(ctl: &Ctl, plan: &Path) -> (Run, Value) {
    let run = ctl.run(&["--output", "json", "deploy", s(plan)]);
    let result = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result event:\n{}", run.text()));
    (run, result)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn sha256_of(path: &Path) -> (String, u64) {
    let bytes = std::fs::read(path).expect("read artifact");
    (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64)
}

fn count(conn: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> i64 {
    conn.query_row(sql, params, |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Follows a job by polling its events until it ends (60 s limit).
async fn wait_job(client: &AgentClient, id: u64) -> JobInfo {
    let started = Instant::now();
    loop {
        let req = Request::JobEvents(JobEventsRequest {
            job_id: id,
            after_seq: 0,
            wait_ms: 500,
        });
        match client.call(&req).await.expect("job events") {
            Response::Events(ev) if ev.job.state.is_final() => return ev.job,
            Response::Events(_) => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job {id} did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 5 ms until it holds; panics with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child process killed and reaped on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain (uncompressed) tar of `files`; the agent sniffs the format.
fn plain_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dist dir");
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create tar"));
    let mut tar = tar::Builder::new(file);
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.append_data(&mut header, name, body.as_slice())
            .expect("append");
    }
    tar.into_inner()
        .expect("finish tar")
        .into_inner()
        .expect("flush tar");
}

/// Deterministic incompressible bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deploy v1, v2, a broken v3 (switched back), roll back v2 by id; the app
/// serves each release in turn and shared paths survive every switch.
#[test]
fn issue2_deploy_and_rollback_one_host() {
    let w = World::new();
    let h = w.host("web1", "127.0.0.40", "/health");
    assert_eq!(h.get("/").0, 404, "nothing is live before the first deploy");

    let v1 = release(w.path(), "v1", true, &[]);
    let plan = w.plan("v1", Some(("v1", &v1)), &[&h.agent]);
    let (run, res) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["state"], "succeeded", "{}", run.text());
    assert!(
        text(&res["message"]).contains("release v1 is live on 1 host(s)"),
        "{}",
        run.text()
    );
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));
    assert_eq!(h.current().as_deref(), Some("releases/v1"));

    let v2 = release(w.path(), "v2", true, &[]);
    let plan = w.plan("v2", Some(("v2", &v2)), &[&h.agent]);
    let (run, res) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 0, "{}", run.text());
    let d2 = text(&res["deployment"]).to_string();
    assert_eq!(h.get("/"), (200, "shop v2\n".into()));
    let steps: Vec<(String, String)> = run
        .json_lines()
        .iter()
        .filter(|v| v["event"] == "step")
        .map(|v| (text(&v["step"]).to_string(), text(&v["state"]).to_string()))
        .collect();
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "upload",
            "stage",
            "probe-before",
            "activate",
            "probe",
            "gate"
        ],
        "{steps:?}"
    );
    assert!(steps.iter().all(|(_, st)| st == "ok"), "{steps:?}");

    let st = w.ctl.run(&["--output", "json", "status", s(&plan)]);
    assert_eq!(st.code, 0, "{}", st.text());
    let status: Value = serde_json::from_str(st.stdout.trim()).expect("status JSON");
    let app = &status["hosts"][0]["apps"][0];
    assert_eq!(app["name"], "shop", "{status}");
    assert_eq!(app["current"], "v2", "{status}");
    assert_eq!(app["previous"], "v1", "{status}");
    assert!(app["lock"].is_null(), "lock left behind: {status}");
    let mut ids: Vec<&str> = app["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| text(&r["id"]))
        .collect();
    ids.sort();
    assert_eq!(ids, ["v1", "v2"], "{status}");

    // Shared paths: one directory, linked (relatively) into every release.
    let shared = h.root.join("shared/uploads");
    assert!(shared.is_dir(), "{} missing", shared.display());
    for r in ["v1", "v2"] {
        let link = h.root.join("releases").join(r).join("uploads");
        assert_eq!(
            std::fs::read_link(&link).expect("uploads is a symlink"),
            Path::new("../../shared/uploads")
        );
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(&shared).unwrap()
        );
    }
    std::fs::write(shared.join("avatar.txt"), "mine\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(h.root.join("current/uploads/avatar.txt")).unwrap(),
        "mine\n"
    );

    // A release without /health fails its critical probe: switched back.
    let v3 = release(w.path(), "v3", false, &[]);
    let plan = w.plan("v3", Some(("v3", &v3)), &[&h.agent]);
    let (run, res) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 3, "{}", run.text());
    assert_eq!(res["state"], "rolled_back", "{}", run.text());
    assert_eq!(res["exit"], 3);
    let msg = text(&res["message"]);
    assert!(
        msg.contains("the gate rolled back on web1: health (critical, fail)")
            && msg.contains("switched back to the previous release"),
        "{msg}"
    );
    let probe = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "probe" && v["phase"] == "after")
        .expect("probe event");
    assert_eq!(probe["status"], "fail", "{probe}");
    assert!(text(&probe["value"]).contains("404"), "{probe}");
    assert_eq!(h.current().as_deref(), Some("releases/v2"));
    assert_eq!(h.get("/"), (200, "shop v2\n".into()));
    assert_eq!(h.get("/uploads/avatar.txt"), (200, "mine\n".into()));

    // Roll back deployment v2 by its id: back to v1.
    let rb = w.ctl.run(&["--output", "json", "rollback", &d2]);
    assert_eq!(rb.code, 0, "{}", rb.text());
    let res = rb
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .expect("rollback result");
    assert_eq!(
        res["message"],
        format!("deployment {d2} rolled back on 1 host(s)")
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));
    // The shared file written under v2 is still there under v1.
    assert_eq!(h.get("/uploads/avatar.txt"), (200, "mine\n".into()));

    let show = w.ctl.run(&["--output", "json", "show", &d2]);
    assert_eq!(show.code, 0, "{}", show.text());
    let record: Value = serde_json::from_str(show.stdout.trim()).expect("show JSON");
    assert_eq!(record["state"], "rolled_back", "{record}");
    assert_eq!(record["release"], "v2", "{record}");
    assert_eq!(record["hosts"][0]["previous_release"], "v1", "{record}");
    let steps: Vec<(&str, &str)> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (text(&s["step"]), text(&s["state"])))
        .collect();
    assert_eq!(
        steps,
        [
            // Every compiled step is journaled (issue 14), the locks too.
            ("lock", "ok"),
            ("read flags", "ok"),
            ("upload", "ok"),
            ("stage", "ok"),
            ("probe-before", "ok"),
            ("migrations", "ok"),
            ("activate", "ok"),
            ("probe", "ok"),
            ("gate", "ok"),
            ("unlock", "ok"),
            ("rollback", "ok")
        ],
        "{record}"
    );

    let hist = w.ctl.run(&["--output", "json", "history"]);
    assert_eq!(hist.code, 0, "{}", hist.text());
    let hist: Value = serde_json::from_str(hist.stdout.trim()).expect("history JSON");
    let mut rows: Vec<(&str, &str)> = hist["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| (text(&d["release"]), text(&d["state"])))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("v1", "succeeded"),
            ("v2", "rolled_back"),
            ("v3", "rolled_back")
        ],
        "{hist}"
    );

    // The agent's journal saw exactly these switches, in this order.
    let j = h.agent.journal();
    let mut stmt = j
        .prepare("SELECT release, cause FROM activations WHERE app = 'shop' ORDER BY seq")
        .unwrap();
    let switches: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let switches: Vec<(&str, &str)> = switches
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        switches,
        [
            ("v1", "activate"),
            ("v2", "activate"),
            ("v3", "activate"),
            ("v2", "rollback"),
            ("v1", "rollback")
        ]
    );
    assert_eq!(count(&j, "SELECT COUNT(*) FROM locks", []), 0);
}

/// Two hosts: a probe failing on the second host switches both back.
#[test]
fn issue2_two_hosts() {
    let w = World::new();
    // Same release on both; only web-b's probe asks for /health-b.
    let a = w.host("web-a", "127.0.0.41", "/health");
    let b = w.host("web-b", "127.0.0.42", "/health-b");

    let v1 = release(w.path(), "v1", true, &[("health-b", b"ok\n")]);
    let plan = w.plan("v1", Some(("v1", &v1)), &[&a.agent, &b.agent]);
    let (run, res) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        text(&res["message"]).contains("release v1 is live on 2 host(s)"),
        "{}",
        run.text()
    );
    for h in [&a, &b] {
        assert_eq!(h.current().as_deref(), Some("releases/v1"));
        assert_eq!(h.get("/"), (200, "shop v1\n".into()));
    }

    // v2 lacks /health-b: web-a passes, web-b fails, both go back.
    let v2 = release(w.path(), "v2", true, &[]);
    let plan = w.plan("v2", Some(("v2", &v2)), &[&a.agent, &b.agent]);
    let (run, res) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 3, "{}", run.text());
    assert_eq!(res["state"], "rolled_back");
    let msg = text(&res["message"]);
    assert!(
        msg.contains("the gate rolled back on web-b") && msg.contains("switched back"),
        "{msg}"
    );
    let steps: Vec<(String, String, String)> = run
        .json_lines()
        .iter()
        .filter(|v| v["event"] == "step")
        .map(|v| {
            (
                text(&v["host"]).to_string(),
                text(&v["step"]).to_string(),
                text(&v["state"]).to_string(),
            )
        })
        .collect();
    let want = [
        ("web-a", "upload", "ok"),
        ("web-a", "stage", "ok"),
        ("web-b", "upload", "ok"),
        ("web-b", "stage", "ok"),
        ("web-a", "probe-before", "ok"),
        ("web-b", "probe-before", "ok"),
        ("web-a", "activate", "ok"),
        ("web-a", "probe", "ok"),
        ("web-a", "gate", "ok"),
        ("web-b", "activate", "ok"),
        ("web-b", "probe", "failed"),
        ("web-b", "gate", "rollback"),
        ("web-b", "switch-back", "ok"),
        ("web-a", "switch-back", "ok"),
    ];
    let mut got: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|(h, s, st)| (h.as_str(), s.as_str(), st.as_str()))
        .collect();
    // Issue 14: upload and stage, then the probes before, run on both hosts
    // at once: each host's steps keep their order, the hosts interleave.
    got[..4].sort_by_key(|(h, _, _)| *h);
    got[4..6].sort_by_key(|(h, _, _)| *h);
    assert_eq!(got, want, "{}", run.text());
    for h in [&a, &b] {
        assert_eq!(
            h.current().as_deref(),
            Some("releases/v1"),
            "{}",
            h.agent.name
        );
        assert_eq!(h.get("/"), (200, "shop v1\n".into()));
        let j = h.agent.journal();
        assert_eq!(
            count(
                &j,
                "SELECT COUNT(*) FROM activations WHERE release = 'v1' AND cause = 'rollback'",
                []
            ),
            1,
            "{}",
            h.agent.name
        );
        assert_eq!(count(&j, "SELECT COUNT(*) FROM locks", []), 0);
    }
}

/// The same idempotency key twice runs the job once; with another spec it
/// is refused as a conflict.
#[test]
fn issue2_idempotent_resubmission_runs_once() {
    let w = World::new();
    let h = w.host("web1", "127.0.0.43", "/health");
    let v1 = release(w.path(), "v1", true, &[]);
    let (sha, size) = sha256_of(&v1);
    let c = w.client(&h.agent);
    let stage = |release: &str| {
        Request::SubmitJob(SubmitJob {
            idempotency_key: "it-deploy-1:web1:stage".into(),
            lease: None,
            spec: JobSpec::Stage(StageRelease {
                app: "shop".into(),
                release: release.into(),
                artifact_sha256: sha.clone(),
            }),
        })
    };
    let rt = runtime();
    rt.block_on(async {
        let info = c.upload(&v1, &sha, size).await.expect("upload");
        assert!(!info.already_present);
        let Response::Job(first) = c.call(&stage("v1")).await.expect("submit") else {
            panic!("not a job")
        };
        assert!(!first.deduplicated);
        let Response::Job(again) = c.call(&stage("v1")).await.expect("resubmit") else {
            panic!("not a job")
        };
        assert_eq!(again.id, first.id);
        assert!(again.deduplicated, "{again:?}");
        let done = wait_job(&c, first.id).await;
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
        // After it finished, the same key still answers the same job.
        let Response::Job(late) = c.call(&stage("v1")).await.expect("resubmit") else {
            panic!("not a job")
        };
        assert_eq!((late.id, late.deduplicated), (first.id, true));
        assert_eq!(late.state, JobState::Succeeded);

        let err = c.call(&stage("v2")).await.expect_err("conflict");
        assert_eq!(err.agent_code(), Some(ErrorCode::Conflict), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("already used for job") && text.contains("different request"),
            "{text}"
        );
        assert_eq!(err.exit_code(), 2);

        let j = h.agent.journal();
        assert_eq!(
            count(
                &j,
                "SELECT COUNT(*) FROM jobs WHERE idempotency_key = ?1",
                ["it-deploy-1:web1:stage"]
            ),
            1
        );
        assert_eq!(count(&j, "SELECT COUNT(*) FROM jobs", []), 1);
        assert_eq!(
            count(
                &j,
                "SELECT COUNT(*) FROM events WHERE kind LIKE '%stage started on web1%'",
                []
            ),
            1
        );
        assert_eq!(
            count(&j, "SELECT COUNT(*) FROM releases WHERE app = 'shop'", []),
            1
        );
    });
    assert_eq!(h.releases(), ["v1"]);
    assert_eq!(h.current(), None, "staging must not activate");
}

/// A raw tar header: name and link bytes straight into the old-style fields,
/// so nothing is normalised or refused on the way (the `tar` crate's setters
/// would refuse `..` and absolute paths).
fn raw_header(name: &[u8], kind: tar::EntryType, link: &[u8], size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    {
        let old = header.as_old_mut();
        assert!(name.len() < old.name.len() && link.len() < old.linkname.len());
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(kind);
    header.set_mode(if kind == tar::EntryType::Symlink {
        0o777
    } else {
        0o644
    });
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

/// A .tar.gz with a good `index.html` and `health`, then one crafted entry.
fn malicious(path: &Path, name: &[u8], kind: tar::EntryType, link: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for (n, body) in [("index.html", &b"evil\n"[..]), ("health", b"ok\n")] {
        let h = raw_header(
            n.as_bytes(),
            tar::EntryType::Regular,
            b"",
            body.len() as u64,
        );
        tar.append(&h, body).unwrap();
    }
    let body: &[u8] = if kind == tar::EntryType::Regular {
        b"pwned\n"
    } else {
        b""
    };
    tar.append(&raw_header(name, kind, link, body.len() as u64), body)
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

/// One crafted archive entry and the refusal it must cause.
struct Crafted {
    label: &'static str,
    name: Vec<u8>,
    kind: tar::EntryType,
    link: &'static [u8],
    want: String,
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

/// Archives with `../x`, `/abs/x` or a link leaving the release are refused
/// at staging (exit 2, the entry named), and nothing is written anywhere.
#[test]
fn issue2_traversal_archives_are_refused() {
    let w = World::new();
    let h = w.host("web1", "127.0.0.44", "/health");
    let v1 = release(w.path(), "v1", true, &[]);
    let plan = w.plan("v1", Some(("v1", &v1)), &[&h.agent]);
    let (run, _) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 0, "{}", run.text());

    let abs = w.path().join("evil-abs");
    let cases = [
        Crafted {
            label: "dotdot",
            name: b"../evil".to_vec(),
            kind: tar::EntryType::Regular,
            link: b"",
            want: "archive entry \"../evil\" has a `..` component".into(),
        },
        Crafted {
            label: "absolute",
            name: s(&abs).as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            link: b"",
            want: format!("archive entry {:?} has an absolute path", s(&abs)),
        },
        Crafted {
            label: "symlink",
            name: b"link".to_vec(),
            kind: tar::EntryType::Symlink,
            link: b"../../outside",
            want: "link \"link\" -> \"../../outside\" points outside the release directory".into(),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let Crafted {
            label,
            name,
            kind,
            link,
            want,
        } = case;
        let art = w.path().join(format!("dist/{label}.tar.gz"));
        malicious(&art, name, *kind, link);
        let id = format!("bad{i}");
        let plan = w.plan(label, Some((&id, &art)), &[&h.agent]);
        let (run, res) = deploy(&w.ctl, &plan);
        assert_eq!(run.code, 2, "{label}: {}", run.text());
        assert_eq!(res["state"], "refused", "{label}: {}", run.text());
        let msg = text(&res["message"]);
        assert!(
            msg.contains("staging on web1 failed, nothing live changed") && msg.contains(want),
            "{label}: {msg}"
        );
        // No release, no staging leftover, the live release untouched.
        assert_eq!(h.releases(), ["v1"], "{label}");
        assert_eq!(h.current().as_deref(), Some("releases/v1"), "{label}");
        assert_eq!(h.get("/"), (200, "shop v1\n".into()), "{label}");
        let j = h.agent.journal();
        assert_eq!(
            count(
                &j,
                "SELECT COUNT(*) FROM jobs WHERE kind = 'stage' AND state = 'failed' \
                 AND spec LIKE ?1",
                [format!("%\"{id}\"%")]
            ),
            1,
            "{label}"
        );
        assert_eq!(
            count(
                &j,
                "SELECT COUNT(*) FROM releases WHERE id = ?1",
                [id.as_str()]
            ),
            0
        );
    }
    // Nothing named by the archives exists anywhere under the test dir
    // (that covers ROOT/.., ROOT/releases/.. and the absolute target).
    let leaked: Vec<PathBuf> = walk(w.path())
        .into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                ["evil", "evil-abs", "outside", "link"].contains(&&*n.to_string_lossy())
            })
        })
        .collect();
    assert!(leaked.is_empty(), "written outside the release: {leaked:?}");
    assert!(!abs.exists());
}

/// An app lock held by another deployment refuses a deploy (exit 2, holder
/// named); `golivectl unlock` breaks it; an expired lease blocks nobody.
#[test]
fn issue2_lock_refuses_second_deployment() {
    let w = World::new();
    let h = w.host("web1", "127.0.0.45", "/health");
    let bob = w.pki.operator("bob", "operator");
    let c = w.client_as(&h.agent, &bob);
    let rt = runtime();
    let acquire = |deployment: &str, ttl_secs: u32| {
        let req = Request::Lock(LockRequest::Acquire {
            app: "shop".into(),
            deployment: deployment.into(),
            ttl_secs,
        });
        match rt.block_on(c.call(&req)).expect("acquire") {
            Response::Lock(LockResponse::Held { info, .. }) => info,
            other => panic!("not held: {other:?}"),
        }
    };
    let info = acquire("d-other", 600);
    assert_eq!(info.holder, "bob");

    let v1 = release(w.path(), "v1", true, &[]);
    let plan = w.plan("v1", Some(("v1", &v1)), &[&h.agent]);
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr
            .contains("app shop on web1 is locked by deployment d-other, started by bob at")
            && run.stderr.contains("golivectl unlock PLAN --reason"),
        "{}",
        run.text()
    );
    assert_eq!(h.releases(), Vec::<String>::new(), "nothing may change");
    let j = h.agent.journal();
    assert_eq!(count(&j, "SELECT COUNT(*) FROM uploads", []), 0);
    assert_eq!(count(&j, "SELECT COUNT(*) FROM jobs", []), 0);
    assert_eq!(
        count(
            &j,
            "SELECT COUNT(*) FROM locks WHERE deployment = 'd-other' AND holder = 'bob'",
            []
        ),
        1
    );

    let unlock = w.ctl.run(&["unlock", s(&plan), "--reason", "test"]);
    assert_eq!(unlock.code, 0, "{}", unlock.text());
    assert!(
        unlock
            .stdout
            .contains("broke the lock of deployment d-other (held by bob"),
        "{}",
        unlock.text()
    );
    assert_eq!(count(&j, "SELECT COUNT(*) FROM locks", []), 0);
    assert!(
        count(
            &j,
            "SELECT COUNT(*) FROM audit WHERE operation = 'lock.break' AND peer_name = 'alice'",
            []
        ) >= 1,
        "breaking a lock is audited"
    );

    let (run, _) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));

    // A short lease blocks while live and not after it expires.
    let v2 = release(w.path(), "v2", true, &[]);
    let plan = w.plan("v2", Some(("v2", &v2)), &[&h.agent]);
    let info = acquire("d-short", 5);
    assert_eq!(info.expires_at - info.since, 5000);
    let dry = w.ctl.run(&["deploy", "--dry-run", s(&plan)]);
    assert_eq!(dry.code, 2, "{}", dry.text());
    assert!(
        dry.stderr.contains("locked by deployment d-short"),
        "{}",
        dry.text()
    );
    wait_for(Duration::from_secs(10), "the 5 s lease to expire", || {
        golive_shared::protocol::now_millis() > info.expires_at + 200
    });
    let (run, _) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(h.get("/"), (200, "shop v2\n".into()));
    assert_eq!(count(&j, "SELECT COUNT(*) FROM locks", []), 0);
}

/// SIGKILL of the agent during a slow upload: at restart the partial file is
/// gone, the upload is journaled as interrupted, and the artifact deploys.
#[test]
fn issue2_kill9_during_upload_leaves_consistent_state() {
    let w = World::new();
    let mut h = w.host("web1", "127.0.0.46", "/health");
    let blob = noise(20 << 20, 0x9e37_79b9_7f4a_7c15);
    let art = w.path().join("dist/big.tar");
    plain_tar(
        &art,
        &[
            ("index.html".into(), b"shop big\n".to_vec()),
            ("health".into(), b"ok\n".to_vec()),
            ("blob.bin".into(), blob.clone()),
        ],
    );
    let (sha, size) = sha256_of(&art);
    let artifacts = h.agent.state_dir.join("artifacts");

    let curl = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(w.pki.ca())
        .arg("--cert")
        .arg(&w.op.0)
        .arg("--key")
        .arg(&w.op.1)
        .arg("-T")
        .arg(&art)
        .args(["-H", &format!("x-golive-size: {size}")])
        .args(["--limit-rate", "500k"])
        .arg(format!("https://{}/v1/artifacts/{sha}", h.agent.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let mut curl = Reap(curl);
    let partials = |dir: &Path| -> Vec<String> {
        list(dir)
            .into_iter()
            .filter(|n| n.starts_with(".partial-"))
            .collect()
    };
    wait_for(
        Duration::from_secs(10),
        "a .partial-* file in STATE/artifacts",
        || {
            if let Ok(Some(status)) = curl.0.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = curl.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("curl ended early ({status}): {err}");
            }
            !partials(&artifacts).is_empty()
        },
    );
    {
        let j = h.agent.journal();
        assert_eq!(
            count(
                &j,
                "SELECT COUNT(*) FROM uploads WHERE sha256 = ?1 AND state = 'receiving'",
                [sha.as_str()]
            ),
            1
        );
    }
    h.agent.kill9();
    drop(curl);
    h.agent.spawn();

    assert_eq!(partials(&artifacts), Vec::<String>::new(), "partial left");
    assert!(
        !artifacts.join(&sha).exists(),
        "a partial became an artifact"
    );
    let j = h.agent.journal();
    let (state, error): (String, String) = j
        .query_row(
            "SELECT state, error FROM uploads WHERE sha256 = ?1",
            [sha.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("upload row");
    assert_eq!(state, "interrupted");
    assert!(error.contains("stopped during the upload"), "{error}");
    assert!(
        h.agent.log_text().contains("removed partial upload"),
        "{}",
        h.agent.log_text()
    );

    // The agent is on a new port now: plan after the restart.
    let plan = w.plan("big", Some(("big", &art)), &[&h.agent]);
    let st = w.ctl.run(&["status", s(&plan)]);
    assert_eq!(st.code, 0, "{}", st.text());
    assert!(st.stdout.contains("shop: current (none)"), "{}", st.text());
    let (run, res) = deploy(&w.ctl, &plan);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(res["state"], "succeeded");
    assert_eq!(h.get("/"), (200, "shop big\n".into()));
    assert_eq!(
        std::fs::metadata(artifacts.join(&sha))
            .expect("stored")
            .len(),
        size
    );
    assert!(std::fs::read(h.root.join("current/blob.bin")).unwrap() == blob);
    assert_eq!(
        count(
            &j,
            "SELECT COUNT(*) FROM uploads WHERE sha256 = ?1 AND state = 'stored'",
            [sha.as_str()]
        ),
        1
    );
    assert_eq!(
        count(
            &j,
            "SELECT COUNT(*) FROM uploads WHERE state = 'receiving'",
            []
        ),
        0
    );
}

/// SIGKILL of the agent while a stage job unpacks: at restart the job is
/// `interrupted` (never succeeded), its events end with Finished{Interrupted}
/// and no staging leftovers remain.
#[test]
fn issue2_kill9_during_job_marks_interrupted() {
    let w = World::new();
    let mut h = w.host("web1", "127.0.0.47", "/health");
    let rt = runtime();
    // If the unpack beats the kill, try again with a bigger archive.
    for (attempt, files) in [(1u32, 30_000usize), (2, 60_000), (3, 120_000)] {
        let art = w.path().join(format!("dist/many{attempt}.tar"));
        let mut entries = vec![
            ("index.html".to_string(), b"many\n".to_vec()),
            ("health".to_string(), b"ok\n".to_vec()),
        ];
        entries.extend((0..files).map(|i| (format!("d{:03}/f{i:06}", i / 1000), b"x".to_vec())));
        plain_tar(&art, &entries);
        let (sha, size) = sha256_of(&art);
        let c = w.client(&h.agent);
        let release = format!("many{attempt}");
        let job = rt.block_on(async {
            c.upload(&art, &sha, size).await.expect("upload");
            let req = Request::SubmitJob(SubmitJob {
                idempotency_key: format!("it-kill-{attempt}:web1:stage"),
                lease: None,
                spec: JobSpec::Stage(StageRelease {
                    app: "shop".into(),
                    release: release.clone(),
                    artifact_sha256: sha.clone(),
                }),
            });
            match c.call(&req).await.expect("submit") {
                Response::Job(j) => j,
                other => panic!("not a job: {other:?}"),
            }
        });
        let state = |j: &rusqlite::Connection| -> String {
            j.query_row(
                "SELECT state FROM jobs WHERE id = ?1",
                [job.id as i64],
                |r| r.get(0),
            )
            .expect("job row")
        };
        {
            let j = h.agent.journal();
            // Kill once the unpack itself has begun (its first log line,
            // written from the worker), or at once if the job already ended.
            wait_for(Duration::from_secs(30), "the stage job to unpack", || {
                let unpacking = count(
                    &j,
                    "SELECT COUNT(*) FROM events WHERE job_id = ?1 \
                     AND kind LIKE '%unpacking artifact%'",
                    [job.id as i64],
                );
                unpacking > 0 || !["queued", "running"].contains(&state(&j).as_str())
            });
        }
        h.agent.kill9();
        h.agent.spawn();
        let j = h.agent.journal();
        let after = state(&j);
        if after == "succeeded" {
            eprintln!("attempt {attempt}: {files} files unpacked before the kill; retrying bigger");
            continue;
        }
        assert_eq!(after, "interrupted", "attempt {attempt}");
        let error: String = j
            .query_row(
                "SELECT error FROM jobs WHERE id = ?1",
                [job.id as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            error.contains("the agent stopped while this job ran"),
            "{error}"
        );
        let mut stmt = j
            .prepare("SELECT kind FROM events WHERE job_id = ?1 ORDER BY seq")
            .unwrap();
        let events: Vec<EventKind> = stmt
            .query_map([job.id as i64], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|k| serde_json::from_str(&k.unwrap()).expect("event JSON"))
            .collect();
        assert!(
            matches!(events.first(), Some(EventKind::Log { line, .. }) if line == "stage started on web1"),
            "{events:?}"
        );
        assert!(
            matches!(events.get(1), Some(EventKind::Log { line, .. }) if line.starts_with("unpacking artifact")),
            "{events:?}"
        );
        assert_eq!(
            events.last(),
            Some(&EventKind::Finished {
                state: JobState::Interrupted
            }),
            "{events:?}"
        );
        let finished = events
            .iter()
            .filter(|e| matches!(e, EventKind::Finished { .. }))
            .count();
        assert_eq!(finished, 1, "{events:?}");
        let leftovers: Vec<String> = h
            .releases()
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "staging leftovers: {leftovers:?}");
        assert!(
            h.agent.log_text().contains("marked interrupted"),
            "{}",
            h.agent.log_text()
        );
        assert_eq!(h.current(), None, "nothing was activated");

        // The controller sees it too.
        let plan = w.plan("jobs", None, &[&h.agent]);
        let jobs = w.ctl.run(&["--output", "json", "jobs", s(&plan)]);
        assert_eq!(jobs.code, 0, "{}", jobs.text());
        let v: Value = serde_json::from_str(jobs.stdout.trim()).expect("jobs JSON");
        let row = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == job.id)
            .unwrap_or_else(|| panic!("job {} not listed: {v}", job.id));
        assert_eq!(row["state"], "interrupted", "{v}");
        return;
    }
    panic!("the stage job finished before the kill in all 3 attempts");
}

/// `jobs` and `follow` reattach to the agent's jobs; `golive-agent rollback`
/// works without a controller: through the running agent (issue 13: its
/// local socket, so the rollback is the agent's own journaled job), and,
/// once the agent is stopped, in its own process.
#[test]
fn issue2_reattach_and_local_rollback() {
    let w = World::new();
    let mut h = w.host("web1", "127.0.0.48", "/health");
    for v in ["v1", "v2"] {
        let art = release(w.path(), v, true, &[]);
        let plan = w.plan(v, Some((v, &art)), &[&h.agent]);
        let (run, _) = deploy(&w.ctl, &plan);
        assert_eq!(run.code, 0, "{}", run.text());
    }
    let plan = w.plan("jobs", None, &[&h.agent]);
    let jobs = w.ctl.run(&["--output", "json", "jobs", s(&plan)]);
    assert_eq!(jobs.code, 0, "{}", jobs.text());
    let v: Value = serde_json::from_str(jobs.stdout.trim()).expect("jobs JSON");
    let rows = v["jobs"].as_array().expect("jobs");
    let mut kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (text(&r["kind"]), text(&r["state"])))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("activate", "succeeded"),
            ("activate", "succeeded"),
            ("stage", "succeeded"),
            ("stage", "succeeded")
        ],
        "{v}"
    );
    assert!(
        rows.iter()
            .all(|r| text(&r["idempotency_key"]).ends_with(&format!(":web1:{}", text(&r["kind"])))),
        "keys are DEPLOYMENT:HOST:STEP: {v}"
    );
    let human = w.ctl.run(&["jobs", s(&plan)]);
    assert_eq!(human.code, 0, "{}", human.text());
    assert_eq!(
        human
            .stdout
            .lines()
            .filter(|l| l.contains(" succeeded by alice"))
            .count(),
        4,
        "{}",
        human.text()
    );

    let stage = rows.iter().find(|r| r["kind"] == "stage").unwrap();
    let id = stage["id"].as_u64().unwrap().to_string();
    let follow = w.ctl.run(&["follow", s(&plan), "--host", "web1", &id]);
    assert_eq!(follow.code, 0, "{}", follow.text());
    assert!(
        follow.stdout.contains("stage started on web1")
            && follow.stdout.contains(&format!("job {id} succeeded")),
        "{}",
        follow.text()
    );
    let nope = w.ctl.run(&["follow", s(&plan), "--host", "web1", "999999"]);
    assert_eq!(nope.code, 2, "{}", nope.text());
    assert!(nope.stderr.contains("has no job 999999"), "{}", nope.text());

    // Local rollback while the agent runs: through its local socket (issue
    // 13; it used to be refused).
    let config = h.agent.config.clone();
    let local = || {
        let mut cmd = Command::new(bin("golive-agent"));
        cmd.args(["rollback", "shop", "--config"]).arg(&config);
        run_bounded(cmd, Duration::from_secs(30))
    };
    let done = local();
    assert_eq!(done.code, 0, "{}", done.text());
    assert!(
        done.stdout.contains("through its local socket")
            && done.stdout.contains("shop: rolled back from v2 to v1"),
        "{}",
        done.text()
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));
    assert_eq!(h.get("/"), (200, "shop v1\n".into()));
    let (release, previous, cause): (String, String, String) = h
        .agent
        .journal()
        .query_row(
            "SELECT release, previous, cause FROM activations ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((&*release, &*previous, &*cause), ("v1", "v2", "rollback"));

    // Stopped: the same rollback runs in this process, and finds it done.
    assert!(h.agent.stop(), "the agent did not exit on SIGTERM");
    let again = local();
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(
        again.stdout.contains("in this process") && again.stdout.contains("asked for before"),
        "{}",
        again.text()
    );
    assert_eq!(h.current().as_deref(), Some("releases/v1"));

    // The restarted agent reports what the local rollback did.
    h.agent.spawn();
    let plan = w.plan("after", None, &[&h.agent]);
    let st = w.ctl.run(&["--output", "json", "status", s(&plan)]);
    assert_eq!(st.code, 0, "{}", st.text());
    let status: Value = serde_json::from_str(st.stdout.trim()).unwrap();
    assert_eq!(status["hosts"][0]["apps"][0]["current"], "v1", "{status}");
}

/// `deploy --dry-run` reaches the agent and changes nothing anywhere.
#[test]
fn issue2_dry_run_changes_nothing() {
    let w = World::new();
    let h = w.host("web1", "127.0.0.49", "/health");
    let v1 = release(w.path(), "v1", true, &[]);
    let (sha, _) = sha256_of(&v1);
    let plan = w.plan("v1", Some(("v1", &v1)), &[&h.agent]);
    let run = w
        .ctl
        .run(&["--output", "json", "deploy", "--dry-run", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let res = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("{}", run.text()));
    assert_eq!(res["dry_run"], true);
    assert_eq!(res["sha256"], sha);
    assert_eq!(res["hosts"], 1);
    let human = w.ctl.run(&["deploy", "--dry-run", s(&plan)]);
    assert_eq!(human.code, 0, "{}", human.text());
    assert!(
        human.stdout.contains("dry run: would deploy")
            && human.stdout.contains("as release v1 of shop to 1 host(s)"),
        "{}",
        human.text()
    );

    assert_eq!(h.releases(), Vec::<String>::new());
    assert_eq!(h.current(), None);
    assert_eq!(
        list(&h.agent.state_dir.join("artifacts")),
        Vec::<String>::new()
    );
    let j = h.agent.journal();
    for table in ["locks", "uploads", "jobs", "releases", "activations"] {
        assert_eq!(
            count(&j, &format!("SELECT COUNT(*) FROM {table}"), []),
            0,
            "{table}"
        );
    }
    let hist = w.ctl.run(&["--output", "json", "history"]);
    assert_eq!(hist.code, 0, "{}", hist.text());
    let hist: Value = serde_json::from_str(hist.stdout.trim()).unwrap();
    assert_eq!(hist["deployments"], serde_json::json!([]), "{hist}");
}
