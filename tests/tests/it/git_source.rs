//! Issue 4, part 7: a release can be a git ref fetched on the host.
//!
//! Real `git` builds a local bare repository with commits and tags; real
//! `golive-agent` processes fetch it into their mirrors and stage it; real
//! `golivectl` drives them over mutual TLS; a real HTTP server serves the
//! live release. Every claim is checked on disk, over HTTP, in the
//! journals or in the commands' output.
//!
//! Each test owns a temp dir; agents listen on 127.0.0.160-163.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use golive_shared::protocol::{ErrorCode, JobSpec, Request, StageGitRelease, SubmitJob};
use golive_tests::*;
use serde_json::Value;

/// Runs `git` in `cwd` with no system or global config (30 s limit);
/// returns stdout, trimmed.
fn git(cwd: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args);
    let run = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(run.code, 0, "git {args:?} failed: {}", run.text());
    run.stdout.trim().to_string()
}

/// A work tree and the bare repository it pushes to.
struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    fn new(dir: &Path, name: &str) -> Repo {
        let work = dir.join(format!("{name}-work"));
        let bare = dir.join(format!("{name}.git"));
        std::fs::create_dir_all(&work).expect("work dir");
        git(dir, &["init", "--quiet", "--bare", "-b", "main", s(&bare)]);
        git(&work, &["init", "--quiet", "-b", "main"]);
        git(&work, &["remote", "add", "origin", s(&bare)]);
        Repo { work, bare }
    }

    /// Commits `index.html` = "shop VERSION", the `health` file the probe
    /// wants and `files`, pushes branch and tags; returns the commit id.
    fn commit(&self, version: &str, files: &[(&str, &str)]) -> String {
        std::fs::write(self.work.join("index.html"), format!("shop {version}\n")).unwrap();
        std::fs::write(self.work.join("health"), "ok\n").unwrap();
        for (name, body) in files {
            let path = self.work.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "--quiet", "-m", version]);
        git(&self.work, &["push", "--quiet", "origin", "main", "--tags"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// An annotated tag on HEAD, pushed.
    fn tag(&self, name: &str) {
        git(&self.work, &["tag", "-a", name, "-m", name]);
        git(&self.work, &["push", "--quiet", "origin", name]);
    }
}

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
    /// An agent on `ip` declaring app `shop` (shared `uploads`, critical
    /// probe on /health) fetching from `url`, plus `extra` TOML.
    fn host(&self, name: &str, ip: &str, url: &str, extra: &str) -> Host {
        self.host_env(name, ip, url, extra, &[])
    }

    /// [`World::host`] with variables added to the agent's environment.
    fn host_env(&self, name: &str, ip: &str, url: &str, extra: &str, env: &[(&str, &str)]) -> Host {
        let root = self.path().join(name).join("srv/shop");
        let http = HttpApp::serve(&root.join("current"), ip);
        let mut spec = AgentSpec::new(name, ip);
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec.apps_toml = format!(
            "{}[apps.shop.git]\nurl = {url:?}\ntimeout_secs = 60\n\n{extra}",
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

    /// A plan for `app` on `agents` whose release is `git = git_ref`.
    fn plan(&self, name: &str, app: &str, git_ref: &str, agents: &[&AgentProc]) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        write_plan(&path, &self.pki, &self.op, app, None, agents);
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml.push_str(&format!("[release]\ngit = {git_ref:?}\n"));
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// `golivectl --output json deploy PLAN`: the run and its events.
    fn deploy(&self, plan: &Path) -> (Run, Vec<Value>) {
        let run = self.ctl.run(&["--output", "json", "deploy", s(plan)]);
        let events = run.json_lines();
        (run, events)
    }
}

/// The first event named `name`.
fn event<'a>(events: &'a [Value], name: &str, run: &Run) -> &'a Value {
    events
        .iter()
        .find(|v| v["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event:\n{}", run.text()))
}

impl Host {
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

    /// Entry names of `ROOT/releases`, sorted (leftovers included).
    fn release_dirs(&self) -> Vec<String> {
        list(&self.root.join("releases"))
    }

    fn release(&self, id: &str) -> PathBuf {
        self.root.join("releases").join(id)
    }

    fn count(&self, sql: &str) -> i64 {
        self.agent
            .journal()
            .query_row(sql, [], |r| r.get(0))
            .expect("count query")
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The `commit` `golivectl status --output json` reports for `release` on `host`.
fn status_commit(ctl: &Ctl, plan: &Path, host: &str, release: &str) -> Option<String> {
    let run = ctl.run(&["--output", "json", "status", s(plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let status = run.json_lines().pop().expect("status JSON");
    let h = status["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == host)
        .unwrap_or_else(|| panic!("no host {host}: {status}"));
    let app = &h["apps"][0];
    let r = app["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .find(|r| r["id"] == release)
        .unwrap_or_else(|| panic!("no release {release}: {app}"));
    r["commit"].as_str().map(str::to_string)
}

fn client(w: &World, agent: &AgentProc) -> golivectl::client::AgentClient {
    let tls = golivectl::tls::client_config(&w.pki.ca(), &w.op.0, &w.op.1).expect("client TLS");
    golivectl::client::AgentClient::new(&agent.name, &agent.addr.to_string(), None, tls)
        .expect("agent client")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
        .expect("request finished within 30 s")
}

/// The required test: a git-sourced release from a local bare repo, by
/// tag, then by branch after a new commit, then rolled back; two hosts
/// (one naming the repo by path, one by file:// URL) run the same commit.
#[test]
fn issue4_git_release_by_tag_then_branch_then_rollback() {
    let w = World::new();
    let repo = Repo::new(w.path(), "shop");
    let c1 = repo.commit("v1", &[("docs/readme.txt", "read me\n")]);
    repo.tag("v1");
    let web1 = w.host("web1", "127.0.0.160", s(&repo.bare), "");
    let web2 = w.host(
        "web2",
        "127.0.0.161",
        &format!("file://{}", s(&repo.bare)),
        "",
    );
    let agents = [&web1.agent, &web2.agent];

    // A dry run says what it would fetch and changes nothing.
    let plan1 = w.plan("v1", "shop", "v1", &agents);
    let dry = w.ctl.run(&["deploy", "--dry-run", s(&plan1)]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    assert!(
        dry.stdout.contains("would fetch git ref v1"),
        "{}",
        dry.text()
    );
    assert!(web1.release_dirs().is_empty() && web2.release_dirs().is_empty());

    // By tag (annotated: the tag object is peeled to its commit).
    let (run, events) = w.deploy(&plan1);
    assert_eq!(run.code, 0, "{}", run.text());
    let rel1 = event(&events, "start", &run)["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rel1.starts_with("v1-") && rel1.ends_with('Z'), "{rel1}");
    let d1 = event(&events, "start", &run)["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(event(&events, "git", &run)["commit"], c1.as_str());
    for h in [&web1, &web2] {
        assert_eq!(h.current(), Some(format!("releases/{rel1}")));
        let dir = h.release(&rel1);
        assert_eq!(
            std::fs::read_to_string(dir.join("REVISION")).unwrap(),
            format!("{c1}\n")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("docs/readme.txt")).unwrap(),
            "read me\n"
        );
        assert!(!dir.join(".git").exists(), "a git dir in the release");
        assert!(
            std::fs::symlink_metadata(dir.join("uploads"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "shared paths are linked as for artifacts"
        );
        assert_eq!(h.get("/index.html"), (200, "shop v1\n".to_string()));
        assert_eq!(
            status_commit(&w.ctl, &plan1, &h.agent.name, &rel1).as_deref(),
            Some(c1.as_str())
        );
        let journaled: String = h
            .agent
            .journal()
            .query_row(
                "SELECT git_commit FROM releases WHERE app = 'shop' AND id = ?1",
                [&rel1],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(journaled, c1);
        // The mirror: bare, holds no URL, no export left behind.
        let git_dir = h.agent.state_dir.join("git");
        assert_eq!(list(&git_dir), ["shop.git"]);
        assert!(git_dir.join("shop.git/HEAD").is_file());
        let config = std::fs::read_to_string(git_dir.join("shop.git/config")).unwrap();
        assert!(!config.contains(s(&repo.bare)), "{config}");
    }

    // `golivectl show` records the ref and commit, overall and per host.
    let show = w.ctl.run(&["show", &d1]);
    assert_eq!(show.code, 0, "{}", show.text());
    assert!(
        show.stdout.contains(&format!("git v1 at commit {c1}")),
        "{}",
        show.text()
    );
    assert_eq!(
        show.stdout.matches(&format!("commit {c1},")).count(),
        2,
        "a stage step per host names the commit: {}",
        show.text()
    );
    let json = w.ctl.run(&["--output", "json", "show", &d1]);
    let record = json.json_lines().pop().expect("show JSON");
    assert_eq!(record["git_ref"], "v1");
    assert_eq!(record["git_commit"], c1.as_str());

    // By branch, after a new commit: the mirrors fetch it.
    let c2 = repo.commit("v2", &[]);
    assert_ne!(c1, c2);
    let plan2 = w.plan("main", "shop", "main", &agents);
    let (run, events) = w.deploy(&plan2);
    assert_eq!(run.code, 0, "{}", run.text());
    let rel2 = event(&events, "start", &run)["release"]
        .as_str()
        .unwrap()
        .to_string();
    let d2 = event(&events, "start", &run)["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rel2.starts_with("main-"), "{rel2}");
    for h in [&web1, &web2] {
        assert_eq!(h.current(), Some(format!("releases/{rel2}")));
        assert_eq!(
            std::fs::read_to_string(h.release(&rel2).join("REVISION")).unwrap(),
            format!("{c2}\n")
        );
        assert_eq!(h.get("/index.html"), (200, "shop v2\n".to_string()));
        assert_eq!(
            status_commit(&w.ctl, &plan2, &h.agent.name, &rel2).as_deref(),
            Some(c2.as_str())
        );
    }
    let human = w.ctl.run(&["status", s(&plan2)]);
    assert!(
        human
            .stdout
            .contains(&format!("(git commit {})", &c2[..12])),
        "{}",
        human.text()
    );

    // Rollback returns every host to the tag's release.
    let back = w.ctl.run(&["rollback", &d2]);
    assert_eq!(back.code, 0, "{}", back.text());
    for h in [&web1, &web2] {
        assert_eq!(h.current(), Some(format!("releases/{rel1}")));
        assert_eq!(h.get("/index.html"), (200, "shop v1\n".to_string()));
    }
}

/// A ref that does not exist fails naming the ref and the repository; a
/// ref that looks like an option is refused before anything runs, by the
/// controller (exit 2) and by the agent; an app without `[git]` is refused
/// naming the fix. Nothing is switched.
#[test]
fn issue4_git_bad_refs_and_undeclared_source_switch_nothing() {
    let w = World::new();
    let repo = Repo::new(w.path(), "shop");
    repo.commit("v1", &[]);
    let blog_root = w.path().join("web3/srv/blog");
    let web3 = w.host(
        "web3",
        "127.0.0.162",
        s(&repo.bare),
        &format!("[apps.blog]\nroot = {blog_root:?}\n\n"),
    );
    let plan = w.plan("main", "shop", "main", &[&web3.agent]);
    let (run, events) = w.deploy(&plan);
    assert_eq!(run.code, 0, "{}", run.text());
    let live = event(&events, "start", &run)["release"]
        .as_str()
        .unwrap()
        .to_string();
    let before = web3.release_dirs();
    assert_eq!(before, std::slice::from_ref(&live));

    // Unknown ref: the job fails, naming ref and repository.
    let plan = w.plan("nope", "shop", "no-such-branch", &[&web3.agent]);
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_ne!(run.code, 0, "{}", run.text());
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("git ref \"no-such-branch\" is not a branch, tag or commit in"),
        "{}",
        run.text()
    );
    assert!(
        all.contains(s(&repo.bare)),
        "names the repository: {}",
        run.text()
    );
    assert!(all.contains("nothing live changed"), "{}", run.text());
    assert_eq!(web3.current(), Some(format!("releases/{live}")));
    assert_eq!(web3.release_dirs(), before, "nothing staged, no leftovers");
    assert_eq!(list(&web3.agent.state_dir.join("git")), ["shop.git"]);
    assert_eq!(
        web3.count("SELECT COUNT(*) FROM jobs WHERE kind = 'stage.git' AND state = 'failed'"),
        1
    );

    // A ref that would be an option: refused by the controller, nothing runs.
    let marker = w.path().join("pwned");
    let jobs_before = web3.count("SELECT COUNT(*) FROM jobs");
    let evil = format!("--upload-pack=touch {}", s(&marker));
    let plan = w.plan("evil", "shop", &evil, &[&web3.agent]);
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("key `release.git`") && run.stderr.contains("starts with '-'"),
        "{}",
        run.text()
    );
    let history = w.ctl.run(&["history"]);
    assert_eq!(history.stdout.lines().count(), 2, "{}", history.text());
    // ... and by the agent, for a client that skips the controller's check.
    let err = block_on(client(&w, &web3.agent).call(&Request::SubmitJob(SubmitJob {
        idempotency_key: "evil-ref-1".into(),
        lease: None,
        spec: JobSpec::StageGit(StageGitRelease {
            app: "shop".into(),
            release: "evil".into(),
            git_ref: evil.clone(),
            scan: Default::default(),
        }),
    })))
    .expect_err("an option-like ref must be refused");
    assert_eq!(err.agent_code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("invalid git ref"), "{err}");
    assert_eq!(web3.count("SELECT COUNT(*) FROM jobs"), jobs_before);
    assert!(!marker.exists(), "git ran the option");

    // An app without [apps.APP.git]: refused naming the fix.
    let plan = w.plan("blog", "blog", "main", &[&web3.agent]);
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("add [apps.blog.git]"),
        "{}",
        run.text()
    );
    assert!(!blog_root.join("current").exists());
    assert!(list(&blog_root.join("releases")).is_empty());
    assert_eq!(web3.current(), Some(format!("releases/{live}")));
}

/// Hosts whose configs name different repositories resolve `main` to
/// different commits: the deployment stops before any activation.
#[test]
fn issue4_git_hosts_on_different_commits_fail_before_activation() {
    let w = World::new();
    let a = Repo::new(w.path(), "a");
    let b = Repo::new(w.path(), "b");
    let ca = a.commit("from-a", &[]);
    let cb = b.commit("from-b", &[]);
    let web1 = w.host("web1", "127.0.0.162", s(&a.bare), "");
    let web2 = w.host("web2", "127.0.0.163", s(&b.bare), "");
    let plan = w.plan("main", "shop", "main", &[&web1.agent, &web2.agent]);
    let (run, events) = w.deploy(&plan);
    assert_eq!(run.code, 1, "{}", run.text());
    let result = event(&events, "result", &run);
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("different commits")
            && message.contains(&format!("web1: {ca}"))
            && message.contains(&format!("web2: {cb}"))
            && message.contains("nothing live changed"),
        "{message}"
    );
    for h in [&web1, &web2] {
        assert_eq!(h.current(), None, "{}", h.agent.name);
        assert_eq!(
            h.count("SELECT COUNT(*) FROM activations"),
            0,
            "{}",
            h.agent.name
        );
        assert_eq!(h.count("SELECT COUNT(*) FROM locks"), 0, "lock released");
    }
}

/// Credentials in a repository URL never reach output, logs, events or the
/// journal; `check-config` names a missing `git` and a clear-text URL
/// with credentials without echoing them.
#[test]
fn issue4_git_url_credentials_never_show() {
    let w = World::new();
    let secret = "T0pS3cretTok3n";
    // Nothing listens there: the fetch fails after git got the URL.
    let port = free_port("127.0.0.163");
    let url = format!("https://deploy:{secret}@127.0.0.163:{port}/shop.git");
    let web = w.host("web4", "127.0.0.163", &url, "");
    let plan = w.plan("main", "shop", "main", &[&web.agent]);
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_ne!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains(&format!(
            "fetching from https://***@127.0.0.163:{port}/shop.git failed"
        )),
        "{}",
        run.text()
    );
    assert!(!run.text().contains(secret), "{}", run.text());
    assert!(!web.agent.log_text().contains(secret));
    // Neither journal (events, job errors, the deployment record) nor the
    // mirror holds it.
    let git_dir = web.agent.state_dir.join("git");
    let mirror = git_dir.join("shop.git");
    for dir in [&web.agent.state_dir, &w.ctl.state, &git_dir, &mirror] {
        for f in list(dir) {
            let path = dir.join(&f);
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the secret",
                    path.display()
                );
            }
        }
    }
    assert!(mirror.join("HEAD").is_file(), "the mirror was made first");
    assert!(web.current().is_none());

    // check-config: no git in bin_dir; credentials over plain http.
    let empty = w.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let config = std::fs::read_to_string(&web.agent.config)
        .unwrap()
        .replace(
            "timeout_secs = 60\n",
            &format!("timeout_secs = 60\nbin_dir = {:?}\n", s(&empty)),
        )
        .replace("https://", "http://");
    let bad = w.path().join("bad-agent.toml");
    std::fs::write(&bad, config).unwrap();
    let mut cmd = Command::new(bin("golive-agent"));
    cmd.args(["check-config", "--config"]).arg(&bad);
    let check = run_bounded(cmd, Duration::from_secs(20));
    assert_eq!(check.code, 2, "{}", check.text());
    assert!(
        check.stderr.contains("key `apps.shop.git`") && check.stderr.contains("need `git`"),
        "{}",
        check.text()
    );
    assert!(
        check.stderr.contains("key `apps.shop.git.url`") && check.stderr.contains("in clear"),
        "{}",
        check.text()
    );
    assert!(!check.text().contains(secret), "{}", check.text());
}

/// Issue 12, part 3: the plan's forbidden patterns hold for git releases
/// too. `preflight` says each host scans at staging; a commit with `dd(` in
/// a php file is refused by `golivectl deploy` naming file and line (vendor
/// code excluded as for artifacts), nothing is staged or switched, and a
/// clean commit then deploys.
#[test]
fn issue12_git_release_with_forbidden_text_is_refused_at_staging() {
    let w = World::new();
    let repo = Repo::new(w.path(), "shop");
    repo.commit("v1", &[("web/index.php", "<?php\n$cart->add(1);\n")]);
    let web = w.host("web1", "127.0.0.164", s(&repo.bare), "");
    let plan = w.plan("main", "shop", "main", &[&web.agent]);
    let mut toml = std::fs::read_to_string(&plan).unwrap();
    toml.push_str("\n[preflight]\nforbidden = [\"dd(\", \"var_dump(\"]\n");
    std::fs::write(&plan, toml).unwrap();

    let pre = w.ctl.run(&["preflight", s(&plan)]);
    assert!(
        pre.stdout
            .contains("on each host at staging: the release is git ref \"main\"")
            && pre
                .stdout
                .contains("searches the tree it exports for \"dd(\", \"var_dump(\""),
        "{}",
        pre.text()
    );
    assert!(!pre.stdout.contains("skipped"), "{}", pre.text());

    let (run, events) = w.deploy(&plan);
    assert_eq!(run.code, 0, "a clean first commit deploys: {}", run.text());
    let live = event(&events, "start", &run)["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        events.iter().any(|e| e["event"] == "log"
            && e["line"]
                .as_str()
                .is_some_and(|l| l.ends_with("searched for \"dd(\", \"var_dump(\": clean"))),
        "{}",
        run.text()
    );

    let bad = repo.commit(
        "v2",
        &[
            ("web/cart.php", "<?php\n$cart->add(2);\n\ndd($cart);\n"),
            ("web/lib/debug.inc", "<?php var_dump($x);\n"),
            ("vendor/acme/x.php", "<?php dd(1);\n"),
            ("docs/notes.txt", "dd(\n"),
        ],
    );
    let before = web.release_dirs();
    let jobs_failed = "SELECT COUNT(*) FROM jobs WHERE kind = 'stage.git' AND state = 'failed'";
    assert_eq!(web.count(jobs_failed), 0);
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(run.code, 2, "refused, as bad input: {}", run.text());
    let all = format!("{}{}", run.stdout, run.stderr);
    for want in [
        &format!("commit {bad} of main contains forbidden text"),
        "2 hit(s), first web/cart.php:4: dd(",
        "remove it from the repository",
        "nothing was staged",
        "nothing live changed",
        "forbidden: web/cart.php:4: dd(",
        "forbidden: web/lib/debug.inc:1: var_dump(",
    ] {
        assert!(all.contains(want), "missing {want:?}:\n{}", run.text());
    }
    // Each hit is listed once (as it is found); failure lines name the first.
    assert_eq!(
        all.matches("web/lib/debug.inc:1").count(),
        1,
        "{}",
        run.text()
    );
    assert!(
        !all.contains("vendor/acme"),
        "vendor is excluded: {}",
        run.text()
    );
    assert_eq!(web.current(), Some(format!("releases/{live}")));
    assert_eq!(web.release_dirs(), before, "nothing staged, nothing left");
    assert_eq!(web.get("/index.html"), (200, "shop v1\n".to_string()));
    assert_eq!(web.count(jobs_failed), 1);
    assert_eq!(web.count("SELECT COUNT(*) FROM activations"), 1);
    assert_eq!(list(&web.agent.state_dir.join("git")), ["shop.git"]);

    // Fixed in the repository: the next commit deploys.
    std::fs::write(repo.work.join("web/cart.php"), "<?php\n$cart->add(2);\n").unwrap();
    std::fs::write(repo.work.join("web/lib/debug.inc"), "<?php\n").unwrap();
    let good = repo.commit("v3", &[]);
    let (run, events) = w.deploy(&plan);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(event(&events, "git", &run)["commit"], good.as_str());
    let rel = event(&events, "start", &run)["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(web.current(), Some(format!("releases/{rel}")));
    assert_eq!(web.get("/index.html"), (200, "shop v3\n".to_string()));
}

/// Issue 12, part 5: a repository owned by another user than the agent's
/// is refused by git ("dubious ownership"). `check-config`, `preflight` and
/// `deploy --dry-run` say so before any fetch, with the fix; a deploy that
/// goes ahead fails naming the same fix; after the fix (safe.directory in
/// the agent user's global git config, under its HOME) all pass and the
/// release deploys.
#[test]
fn issue12_git_repository_of_another_user_is_reported_with_the_fix() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test gives the repository to `nobody`: the tests run as root"
    );
    let w = World::new();
    let repo = Repo::new(w.path(), "shop");
    repo.commit("v1", &[]);
    let mut chown = Command::new("chown");
    chown.args(["-R", "nobody", s(&repo.bare)]);
    let run = run_bounded(chown, Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}", run.text());
    // The agent's HOME: its global git config lives there.
    let home = w.path().join("agent-home");
    std::fs::create_dir_all(&home).unwrap();
    let web = w.host_env(
        "web1",
        "127.0.0.165",
        s(&repo.bare),
        "",
        &[("HOME", s(&home))],
    );
    let plan = w.plan("main", "shop", "main", &[&web.agent]);
    let fix = format!("git config --global --add safe.directory {}", s(&repo.bare));
    let check_config = || {
        let mut cmd = Command::new(bin("golive-agent"));
        cmd.args(["check-config", "--config"])
            .arg(&web.agent.config)
            .env("HOME", &home);
        run_bounded(cmd, Duration::from_secs(30))
    };

    let check = check_config();
    assert_eq!(check.code, 2, "{}", check.text());
    for want in [
        "key `apps.shop.git.url`: git refuses the repository",
        "detected dubious ownership",
        "owned by nobody (uid 65534), and the agent runs git as root (uid 0)",
        &fix,
    ] {
        assert!(
            check.stderr.contains(want),
            "missing {want:?}: {}",
            check.text()
        );
    }

    let pre = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(pre.code, 1, "{}", pre.text());
    assert!(
        pre.stdout
            .contains("FAIL   git source [critical]: git refuses the repository")
            && pre.stdout.contains(&fix)
            && pre.stdout.contains("verdict: NOT READY"),
        "{}",
        pre.text()
    );

    // deploy (a dry run too) runs preflight's blocking checks first.
    for args in [
        vec!["deploy", "--dry-run", s(&plan)],
        vec!["deploy", s(&plan)],
    ] {
        let refused = w.ctl.run(&args);
        assert_eq!(refused.code, 2, "{}", refused.text());
        assert!(
            refused
                .stderr
                .contains("preflight: NOT READY, nothing changed")
                && refused
                    .stderr
                    .contains("web1 git source (critical, fail): git refuses the repository")
                && refused.stderr.contains(&fix),
            "{}",
            refused.text()
        );
    }

    // Going ahead anyway: git's own refusal, translated, and nothing live.
    let run = w.ctl.run(&[
        "deploy",
        s(&plan),
        "--force",
        "--reason",
        "see what git says",
    ]);
    assert_ne!(run.code, 0, "{}", run.text());
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("git refuses the repository") && all.contains(&fix),
        "{}",
        run.text()
    );
    assert!(web.current().is_none());
    assert!(web.release_dirs().is_empty(), "{:?}", web.release_dirs());

    // The fix, as the message gives it, for the agent's user (its HOME).
    let mut cmd = Command::new("git");
    cmd.args([
        "config",
        "--global",
        "--add",
        "safe.directory",
        s(&repo.bare),
    ])
    .env("HOME", &home);
    let run = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}", run.text());

    let check = check_config();
    assert_eq!(check.code, 0, "{}", check.text());
    let pre = w.ctl.run(&["preflight", s(&plan)]);
    assert!(
        pre.stdout.contains(&format!(
            "pass   git source [critical]: repository {} is owned by nobody (uid 65534), not by \
             the agent's user root (uid 0), and git's safe.directory lists it",
            s(&repo.bare)
        )),
        "{}",
        pre.text()
    );
    let dry = w.ctl.run(&["deploy", "--dry-run", s(&plan)]);
    assert_eq!(dry.code, 0, "{}", dry.text());
    let (run, events) = w.deploy(&plan);
    assert_eq!(run.code, 0, "{}", run.text());
    let rel = event(&events, "start", &run)["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(web.current(), Some(format!("releases/{rel}")));
    assert_eq!(web.get("/index.html"), (200, "shop v1\n".to_string()));
}

/// Issue 14, part 8: a ref the repository does not have fails the
/// stage.git job with `NotFound` (journaled with the job, and in the
/// `JobInfo` the agent answers with): exit 2 from that code, the message
/// naming the ref, the repository and the fix; nothing staged or switched.
#[test]
fn issue14_an_unknown_git_ref_fails_its_job_as_not_found_exit_2() {
    let w = World::new();
    let repo = Repo::new(w.path(), "shop");
    repo.commit("v1", &[]);
    let web = w.host("web1", "127.0.0.166", s(&repo.bare), "");
    let (run, events) = w.deploy(&w.plan("main", "shop", "main", &[&web.agent]));
    assert_eq!(run.code, 0, "{}", run.text());
    let live = event(&events, "start", &run)["release"]
        .as_str()
        .unwrap()
        .to_string();

    let (run, events) = w.deploy(&w.plan("nope", "shop", "v9.9.9", &[&web.agent]));
    assert_eq!(run.code, 2, "{}", run.text());
    let result = event(&events, "result", &run);
    assert_eq!(result["state"], "refused", "{}", run.text());
    let msg = result["message"].as_str().unwrap();
    assert!(
        msg.contains("staging on web1 failed, nothing live changed")
            && msg.contains("git ref \"v9.9.9\" is not a branch, tag or commit in")
            && msg.contains(s(&repo.bare))
            && msg.contains("git ls-remote"),
        "{msg}"
    );
    let (id, code): (i64, Option<String>) = web
        .agent
        .journal()
        .query_row(
            "SELECT id, error_code FROM jobs WHERE kind = 'stage.git' AND state = 'failed'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("one failed stage.git job");
    assert_eq!(code.as_deref(), Some("NotFound"));
    let job = block_on(client(&w, &web.agent).call(&Request::JobEvents(
        golive_shared::protocol::JobEventsRequest {
            job_id: id as u64,
            after_seq: 0,
            wait_ms: 0,
        },
    )));
    match job {
        Ok(golive_shared::protocol::Response::Events(r)) => {
            assert_eq!(r.job.error_code, Some(ErrorCode::NotFound), "{:?}", r.job)
        }
        other => panic!("unexpected JobEvents answer: {other:?}"),
    }
    assert_eq!(web.current(), Some(format!("releases/{live}")));
    assert_eq!(web.release_dirs(), [live]);
}
