//! Issue 11: relative paths in the agent config resolve against the config
//! file's directory and relative paths in a plan against the plan's, whatever
//! the working directory of the agent or of `golivectl` (the README's rule);
//! and a certificate with two role SANs is refused by the agent, which says
//! why.
//!
//! Loopback addresses 127.0.0.230-239 belong to this module.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use golive_tests::db::{TestPostgres, write_private};
use golive_tests::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// `golive-agent serve` started in `cwd`, killed on drop; its address.
struct Agent {
    _child: KillOnDrop,
    addr: String,
    log: PathBuf,
}

impl Agent {
    fn start(cwd: &Path, config: &Path, state_dir: &Path) -> Agent {
        let log = cwd.join("agent.log");
        let out = std::fs::File::create(&log).expect("agent log");
        let mut child = KillOnDrop(
            Command::new(bin("golive-agent"))
                .current_dir(cwd)
                .args(["serve", "--config"])
                .arg(config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log fd"))
                .stderr(out)
                .spawn()
                .expect("spawn golive-agent"),
        );
        let started = Instant::now();
        let addr_file = state_dir.join("agent.addr");
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && !text.trim().is_empty()
            {
                break text.trim().to_string();
            }
            let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(status) = child.0.try_wait().expect("poll agent") {
                panic!("golive-agent exited at start ({status}):\n{}", log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "golive-agent did not start within 20 s:\n{}",
                log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Agent {
            _child: child,
            addr,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn in_dir(mut cmd: Command, cwd: &Path) -> Run {
    cmd.current_dir(cwd);
    run_bounded(cmd, LIMIT)
}

/// The agent config, the plan and everything they name use relative paths;
/// the agent, `check-config` and `golivectl` all run from other directories
/// (and are given the files by relative paths too). A PostgreSQL backup (its
/// password file, its client tools' directory) and a SQLite one land where
/// the config says, a deploy of a relative artifact switches the relative
/// ROOT. Before the fix the SQLite path and the backup directory were
/// refused, and the password file was looked up in the agent's working
/// directory, so every PostgreSQL step failed after a clean check-config.
#[test]
fn issue11_relative_paths_resolve_against_the_config_and_plan_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = TestPki::new(d);
    let ip = "127.0.0.230";
    let (cert, key) = pki.agent("web1", &[ip]);
    let op = pki.operator("alice", "operator");
    std::fs::create_dir_all(d.join("db")).expect("db dir");
    let pg = TestPostgres::start(&d.join("db"));
    pg.psql("create table products (id int primary key); insert into products values (1), (2);");

    // /etc/golive-like directory: the config and what it names, relatively.
    let etc = d.join("etc/golive");
    std::fs::create_dir_all(etc.join("tls")).expect("tls dir");
    std::fs::create_dir_all(etc.join("secrets")).expect("secrets dir");
    std::fs::create_dir_all(etc.join("data")).expect("data dir");
    std::fs::create_dir_all(etc.join("srv/shop/shared")).expect("root");
    for (from, to) in [
        (pki.ca(), "tls/ca.crt"),
        (cert.clone(), "tls/web1.crt"),
        (key.clone(), "tls/web1.key"),
    ] {
        std::fs::copy(&from, etc.join(to)).expect("copy tls file");
    }
    std::fs::write(etc.join("tls/revoked.txt"), "# none revoked\n").expect("revoked list");
    write_private(&etc.join("secrets/pg.pass"), &pg.password);
    std::os::unix::fs::symlink(&pg.bindir, etc.join("pgbin")).expect("bin_dir link");
    let sqlite = rusqlite::Connection::open(etc.join("data/orders.db")).expect("sqlite");
    sqlite
        .execute_batch(
            "create table orders (id integer primary key); insert into orders values (7);",
        )
        .expect("sqlite rows");
    drop(sqlite);
    let config = etc.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"web1\"\nlisten = \"{ip}:0\"\nstate_dir = \"state\"\n\n\
             [tls]\nca = \"tls/ca.crt\"\ncert = \"tls/web1.crt\"\nkey = \"tls/web1.key\"\n\
             revoked = \"tls/revoked.txt\"\n\n\
             [apps.shop]\nroot = \"srv/shop\"\n\n\
             [apps.shop.backup]\ndir = \"backups\"\n\n\
             [[apps.shop.databases]]\nengine = \"postgres\"\nname = \"main\"\n\
             host = \"127.0.0.1\"\nport = {port}\nuser = \"golive\"\ndbname = \"shop\"\n\
             password_file = \"secrets/pg.pass\"\nbin_dir = \"pgbin\"\n\n\
             [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"orders\"\n\
             path = \"data/orders.db\"\n",
            port = pg.port(),
        ),
    )
    .expect("write agent config");

    // Elsewhere: where the operator happens to be, or systemd's `/`.
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("elsewhere");
    let relative_config = Path::new("../etc/golive/agent.toml");
    for given in [config.as_path(), relative_config] {
        let mut cmd = Command::new(bin("golive-agent"));
        cmd.args(["check-config", "--config"]).arg(given);
        let r = in_dir(cmd, &elsewhere);
        assert_eq!(r.code, 0, "check-config --config {given:?}: {}", r.text());
    }
    let agent = Agent::start(&elsewhere, relative_config, &etc.join("state"));

    // The plan next to its own files, used from yet another directory.
    let plans = d.join("plans");
    std::fs::create_dir_all(&plans).expect("plans dir");
    artifact(
        &plans.join("dist/shop-v1.tar.gz"),
        &[("index.html", b"v1\n" as &[u8])],
    );
    let rel = |p: &Path| {
        let tail = p.strip_prefix(d).expect("under the temp dir");
        Path::new("..").join(tail)
    };
    std::fs::write(
        plans.join("golive.toml"),
        format!(
            "app = \"shop\"\n\n[release]\nartifact = \"dist/shop-v1.tar.gz\"\n\n\
             [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
             [[hosts]]\nname = \"web1\"\naddress = {:?}\n",
            rel(&pki.ca()),
            rel(&op.0),
            rel(&op.1),
            agent.addr,
        ),
    )
    .expect("write plan");
    let ctl_dir = d.join("ctl-cwd");
    std::fs::create_dir_all(&ctl_dir).expect("ctl cwd");
    let ctl = Ctl::new(d);
    let plan = "../plans/golive.toml";
    let golivectl = |args: &[&str]| in_dir(ctl.cmd(args), &ctl_dir);

    let r = golivectl(&["backup", "create", plan, "--label", "relative", "--verify"]);
    assert_eq!(r.code, 0, "{}\nagent log:\n{}", r.text(), agent.log_text());
    let r = golivectl(&["--output", "json", "backup", "list", plan]);
    assert_eq!(r.code, 0, "{}", r.text());
    let listed: Value = r.json_lines().pop().expect("one JSON object");
    let backups = listed["backups"].as_array().expect("backups").clone();
    let b = backups
        .iter()
        .find(|b| b["label"] == "relative")
        .unwrap_or_else(|| panic!("the backup is listed: {listed}"));
    assert_eq!(b["state"], "complete", "{b}");
    assert_eq!(b["verified"], true, "{b}");
    let id = b["id"].as_str().expect("id");
    let kept = std::fs::read_dir(etc.join("backups"))
        .expect("backups under the config's directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(kept.iter().any(|n| n.contains(id)), "{id} in {kept:?}");
    for cwd in [&elsewhere, &ctl_dir] {
        assert!(!cwd.join("backups").exists(), "nothing under {cwd:?}");
        assert!(!cwd.join("state").exists(), "nothing under {cwd:?}");
    }

    let r = golivectl(&["deploy", plan]);
    assert_eq!(r.code, 0, "{}\nagent log:\n{}", r.text(), agent.log_text());
    let live = std::fs::read_to_string(etc.join("srv/shop/current/index.html"))
        .expect("the release is live under the config's ROOT");
    assert_eq!(live, "v1\n");
    let r = golivectl(&["status", plan]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("shop-v1"), "{}", r.text());
}

/// A client certificate signed by the deployment CA but carrying two role
/// SANs is refused at the connection, and the agent's log names both roles
/// and the fix; a good certificate keeps working.
#[test]
fn issue11_agent_refuses_a_certificate_with_two_role_sans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = TestPki::new(d);
    let mut spec = AgentSpec::new("web1", "127.0.0.231");
    spec.apps_toml = app_toml("shop", &d.join("srv/shop"), "http://127.0.0.231:9/");
    let agent = AgentProc::start(d, &pki, &spec);
    let good = pki.operator("alice", "operator");

    // What `golivectl cert` never writes, made with openssl and the same CA.
    let key = d.join("mallory.key");
    let csr = d.join("mallory.csr");
    let crt = d.join("mallory.crt");
    let ext = d.join("mallory.ext");
    std::fs::write(
        &ext,
        "subjectAltName = URI:urn:golive:role:viewer, URI:urn:golive:role:admin\n\
         extendedKeyUsage = clientAuth\nkeyUsage = digitalSignature\nbasicConstraints = CA:FALSE\n",
    )
    .expect("extensions");
    let mut req = Command::new("openssl");
    req.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ])
    .args(["-nodes", "-subj", "/CN=mallory", "-keyout"])
    .arg(&key)
    .arg("-out")
    .arg(&csr);
    let r = run_bounded(req, LIMIT);
    assert_eq!(r.code, 0, "{}", r.text());
    let mut sign = Command::new("openssl");
    sign.args(["x509", "-req", "-days", "2", "-set_serial", "0x4242", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(pki.ca())
        .arg("-CAkey")
        .arg(pki.dir.join("ca.key"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt);
    let r = run_bounded(sign, LIMIT);
    assert_eq!(r.code, 0, "{}", r.text());
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod key");

    let ctl = Ctl::new(d);
    let bad_plan = d.join("mallory.toml");
    write_plan(
        &bad_plan,
        &pki,
        &(crt.clone(), key.clone()),
        "shop",
        None,
        &[&agent],
    );
    let r = ctl.run(&["status", s(&bad_plan)]);
    assert_ne!(
        r.code,
        0,
        "a two-role certificate got an answer: {}",
        r.text()
    );
    assert!(!r.stdout.contains("shop: current"), "{}", r.text());
    let started = Instant::now();
    let log = loop {
        let log = agent.log_text();
        if log.contains("mallory") || started.elapsed() > Duration::from_secs(10) {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for want in [
        "\"mallory\"",
        "serial 4242",
        "urn:golive:role:viewer, urn:golive:role:admin",
        "ambiguous",
        "golivectl cert",
    ] {
        assert!(log.contains(want), "{want:?} not in the agent log:\n{log}");
    }

    let good_plan = d.join("good.toml");
    write_plan(&good_plan, &pki, &good, "shop", None, &[&agent]);
    let r = ctl.run(&["status", s(&good_plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("shop: current (none)"), "{}", r.text());
}
