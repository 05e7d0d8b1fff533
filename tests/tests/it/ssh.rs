//! Issue 15: hosts reached through SSH (`via = "ssh ..."`). A private sshd
//! ([`TestSshd`]) on a loopback port, the real agent behind it on the same
//! address, and the real `golivectl` running the system ssh: a stdio
//! forward where the server allows it, the remote `golive-agent bridge`
//! where it does not. Mutual TLS runs inside, end to end.
//!
//! Addresses 127.0.0.225-227, one per test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use golive_tests::sshd::TestSshd;
use golive_tests::*;
use serde_json::Value;

/// One test's world: a temp dir, a CA, the operator `alice`, a controller
/// whose ssh control sockets go to its own TMPDIR, and one host (http app
/// and agent) on `ip`. Fields drop in order: processes before the dir.
struct World {
    agent: AgentProc,
    http: HttpApp,
    root: PathBuf,
    ip: String,
    pki: TestPki,
    op: (PathBuf, PathBuf),
    ctl: Ctl,
    tmp: PathBuf,
    dir: tempfile::TempDir,
}

impl World {
    fn new(ip: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let op = pki.operator("alice", "operator");
        let ctl = Ctl::new(dir.path());
        let tmp = dir.path().join("ctl-tmp");
        std::fs::create_dir_all(&tmp).expect("ctl tmp");
        let root = dir.path().join("shop1/srv/shop");
        let http = HttpApp::serve(&root.join("current"), ip);
        let mut spec = AgentSpec::new("shop1", ip);
        // A fixed port: the bridge reads the agent's config as it is on
        // the host.
        spec.port = free_port(ip);
        spec.apps_toml = app_toml("shop", &root, &format!("http://{ip}:{}/health", http.port));
        let agent = AgentProc::start(dir.path(), &pki, &spec);
        World {
            agent,
            http,
            root,
            ip: ip.into(),
            pki,
            op,
            ctl,
            tmp,
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A plan for app `shop` releasing `version` to the one host through
    /// `via`, with `extra` host keys.
    fn plan(&self, name: &str, version: &str, via: &str, extra: &str) -> PathBuf {
        let artifact = self.path().join(format!("dist/shop-{version}.tar.gz"));
        let index = format!("shop {version}\n");
        artifact_files(&artifact, &index);
        let path = self.path().join(format!("{name}.toml"));
        let text = format!(
            "app = \"shop\"\n\n[release]\nid = {version:?}\nartifact = {artifact:?}\n\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n\
             [[hosts]]\nname = \"shop1\"\naddress = \"{addr}\"\nvia = {via:?}\n{extra}\n",
            ca = self.pki.ca(),
            cert = self.op.0,
            key = self.op.1,
            addr = self.agent.addr,
        );
        std::fs::write(&path, text).expect("write plan");
        path
    }

    /// golivectl with TMPDIR pointing at the test's own directory, so its
    /// ssh control sockets can be checked for.
    fn ctl(&self, args: &[&str]) -> Run {
        let mut cmd = self.ctl.cmd(args);
        cmd.env("TMPDIR", &self.tmp);
        run_bounded(cmd, Duration::from_secs(90))
    }

    fn deploy(&self, plan: &Path) -> (Run, Value) {
        let run = self.ctl(&["--output", "json", "deploy", s(plan)]);
        let res = result(&run);
        (run, res)
    }

    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    fn page(&self) -> Option<(u16, String)> {
        http_get(&self.ip, self.http.port, "/")
    }

    /// Once golivectl has ended: its ssh control directory is gone and no
    /// ssh it started (master or call) is left, within 5 s.
    fn assert_ssh_cleaned_up(&self) {
        let started = Instant::now();
        loop {
            let leftovers = std::fs::read_dir(&self.tmp).expect("list ctl tmp").count();
            let procs = processes_naming(&self.tmp);
            if leftovers == 0 && procs.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "golivectl left {leftovers} entries in its TMPDIR and these processes: {procs:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn artifact_files(path: &Path, index: &str) {
    artifact(
        path,
        &[("index.html", index.as_bytes()), ("health", b"ok\n")],
    );
}

/// The `result` event of a JSON run.
fn result(run: &Run) -> Value {
    run.json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result event:\n{}", run.text()))
}

/// Command lines of running processes that mention `path`.
fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("list /proc").flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if line.contains(&needle) {
                found.push(line);
            }
        }
    }
    found
}

/// Deploys v1 and v2 through `via`/`extra`, then `golivectl rollback` of
/// v2: each command authenticates to sshd once (ControlMaster), and leaves
/// no ssh behind.
fn deploy_and_roll_back(w: &World, sshd: &TestSshd, via: &str, extra: &str) {
    let p1 = w.plan("v1", "v1", via, extra);
    let (run, res) = w.deploy(&p1);
    assert_eq!(run.code, 0, "{}\n{}", run.text(), sshd.log_text());
    assert_eq!(res["state"], "succeeded", "{}", run.text());
    assert_eq!(w.current().as_deref(), Some("releases/v1"));
    w.assert_ssh_cleaned_up();

    let logins = sshd.logins();
    let p2 = w.plan("v2", "v2", via, extra);
    let (run, res) = w.deploy(&p2);
    assert_eq!(run.code, 0, "{}", run.text());
    let d2 = res["deployment"]
        .as_str()
        .unwrap_or_else(|| panic!("no deployment id: {res}"))
        .to_string();
    assert_eq!(w.current().as_deref(), Some("releases/v2"));
    assert_eq!(w.page(), Some((200, "shop v2\n".into())));
    // Dozens of calls (lock, upload, stage, job events, probes, ...), one
    // SSH login: the calls shared one master connection.
    let calls: i64 = w
        .agent
        .journal()
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .expect("count audit rows");
    assert!(calls > 10, "only {calls} calls");
    assert_eq!(sshd.logins() - logins, 1, "{}", sshd.log_text());
    w.assert_ssh_cleaned_up();

    let rb = w.ctl(&["--output", "json", "rollback", &d2]);
    assert_eq!(rb.code, 0, "{}", rb.text());
    assert_eq!(
        result(&rb)["message"],
        format!("deployment {d2} rolled back on 1 host(s)")
    );
    assert_eq!(w.current().as_deref(), Some("releases/v1"));
    assert_eq!(w.page(), Some((200, "shop v1\n".into())));
    w.assert_ssh_cleaned_up();
}

#[test]
fn issue15_deploy_and_rollback_through_an_ssh_stdio_forward() {
    let w = World::new("127.0.0.225");
    let mut sshd = TestSshd::start(w.path(), "127.0.0.225", true);
    let via = sshd.via(&sshd.client_config);
    deploy_and_roll_back(&w, &sshd, &via, "");

    // The SSH login proves nothing to the agent: a certificate from another
    // CA, carried through the same ssh, is refused in the TLS handshake.
    let other = TestPki::new(&w.path().join("other"));
    let stranger = other.operator("mallory", "operator");
    let plan = w.plan("stranger", "v3", &via, "");
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace(s(&w.op.0), s(&stranger.0))
        .replace(s(&w.op.1), s(&stranger.1));
    std::fs::write(&plan, text).unwrap();
    let run = w.ctl(&["status", s(&plan)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.text().contains("refused our client certificate")
            || run.text().contains("may have refused our certificate"),
        "{}",
        run.text()
    );
    assert_eq!(w.current().as_deref(), Some("releases/v1"));

    // With the server gone, ssh's own words are the error, exit 2.
    sshd.stop();
    let plan = w.plan("v1", "v1", &via, "");
    let run = w.ctl(&["status", s(&plan)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.text().contains(&format!(
            "via ssh {}@127.0.0.225: ssh failed (exit 255)",
            sshd.user
        )) && run.text().contains("Connection refused"),
        "{}",
        run.text()
    );
    w.assert_ssh_cleaned_up();
}

#[test]
fn issue15_a_server_that_refuses_forwarding_is_reached_through_the_bridge() {
    let w = World::new("127.0.0.226");
    let sshd = TestSshd::start(w.path(), "127.0.0.226", false);
    let via = sshd.via(&sshd.client_config);

    // Forward mode is refused by the server: ssh's words, a hint, exit 2,
    // nothing changed.
    let plan = w.plan("v1", "v1", &via, "");
    let run = w.ctl(&["deploy", s(&plan)]);
    assert_eq!(run.code, 2, "{}", run.text());
    let text = run.text();
    assert!(
        (text.contains("administratively prohibited")
            || text.contains("Stdio forwarding request failed"))
            && text.contains("ssh_mode = \"bridge\""),
        "{text}"
    );
    assert_eq!(w.current(), None);
    w.assert_ssh_cleaned_up();

    let bridge = format!(
        "ssh_mode = \"bridge\"\nbridge_agent = {:?}\nbridge_config = {:?}\n",
        bin("golive-agent"),
        w.agent.config
    );
    deploy_and_roll_back(&w, &sshd, &via, &bridge);
}

#[test]
fn issue15_a_wrong_ssh_key_fails_with_sshs_error() {
    let w = World::new("127.0.0.227");
    let sshd = TestSshd::start(w.path(), "127.0.0.227", true);
    let plan = w.plan("v1", "v1", &sshd.via(&sshd.wrong_key_config), "");
    let started = Instant::now();
    let run = w.ctl(&["--output", "json", "deploy", s(&plan)]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 2, "{}", run.text());
    let text = run.text();
    assert!(
        text.contains("Permission denied (publickey)") && text.contains("authorized_keys"),
        "{text}"
    );
    assert_eq!(sshd.logins(), 0);
    assert_eq!(w.current(), None);
    w.assert_ssh_cleaned_up();
}
