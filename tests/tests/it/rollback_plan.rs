//! Issue 14, the rollback plan: `golivectl rollback ID --hosts ...` rolls
//! back only the named hosts of the deployment, each through the agent's
//! single host rollback job, and refuses a host the deployment does not
//! have (exit 2, naming its hosts, nothing changed). Each host's
//! rollback is an executor step: a rollback killed mid-job and run again
//! runs no agent job twice.
//!
//! Real agents on loopback addresses in 127.0.23.0/24 (this module's own).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use golive_tests::*;

/// The app's root on agent `name` under `dir`.
fn root(dir: &Path, name: &str) -> PathBuf {
    dir.join(name).join("srv/shop")
}

fn agent(dir: &Path, pki: &TestPki, name: &str, ip: &str) -> AgentProc {
    let mut spec = AgentSpec::new(name, ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {:?}\nkeep_releases = 3\n\n\
         [[apps.shop.probes]]\nkind = \"command\"\nname = \"health\"\n\
         cmd = [\"true\"]\nseverity = \"critical\"\ntimeout_ms = 5000\n\n",
        root(dir, name)
    );
    AgentProc::start(dir, pki, &spec)
}

/// Deploys `release` of shop to `agents`; its deployment id.
fn deploy(
    dir: &Path,
    pki: &TestPki,
    op: &(PathBuf, PathBuf),
    ctl: &Ctl,
    release: &str,
    agents: &[&AgentProc],
) -> String {
    let art = dir.join(format!("dist/shop-{release}.tar.gz"));
    artifact(
        &art,
        &[("index.html", format!("shop {release}\n").as_bytes())],
    );
    let plan = dir.join(format!("golive-{release}.toml"));
    write_plan(&plan, pki, op, "shop", Some((release, &art)), agents);
    let run = ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    let res = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .expect("deploy result");
    res["deployment"]
        .as_str()
        .expect("deployment id")
        .to_string()
}

fn current(dir: &Path, name: &str) -> PathBuf {
    std::fs::read_link(root(dir, name).join("current")).expect("current")
}

/// The agent's host rollback jobs.
fn rollback_jobs(agent: &AgentProc) -> usize {
    agent
        .journal()
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'host.rollback'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("count jobs") as usize
}

/// v1 then v2 on web1 and web2; `rollback D2 --hosts nope` is refused
/// (exit 2, naming web1 and web2) and changes nothing; `rollback D2
/// --hosts web2` puts web2 back on v1 through one host rollback job and
/// leaves web1 on v2, untouched.
#[test]
fn issue14_rollback_id_with_hosts_rolls_back_only_those_hosts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = TestPki::new(d);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(d);
    let a1 = agent(d, &pki, "web1", "127.0.23.1");
    let a2 = agent(d, &pki, "web2", "127.0.23.2");
    deploy(d, &pki, &op, &ctl, "v1", &[&a1, &a2]);
    let d2 = deploy(d, &pki, &op, &ctl, "v2", &[&a1, &a2]);

    let refused = ctl.run(&["rollback", &d2, "--hosts", "web2,nope"]);
    assert_eq!(refused.code, 2, "{}", refused.text());
    assert!(
        refused.stderr.contains("nope is not a host of deployment")
            && refused.stderr.contains("web1, web2"),
        "{}",
        refused.text()
    );
    for name in ["web1", "web2"] {
        assert_eq!(current(d, name), Path::new("releases/v2"), "{name}");
    }
    assert_eq!((rollback_jobs(&a1), rollback_jobs(&a2)), (0, 0));

    let rb = ctl.run(&["--output", "json", "rollback", &d2, "--hosts", "web2"]);
    assert_eq!(rb.code, 0, "{}", rb.text());
    assert_eq!(current(d, "web2"), Path::new("releases/v1"));
    assert_eq!(current(d, "web1"), Path::new("releases/v2"));
    assert_eq!((rollback_jobs(&a1), rollback_jobs(&a2)), (0, 1));
    let res = rb
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .expect("rollback result");
    assert_eq!(
        res["message"],
        format!("deployment {d2} rolled back on 1 host(s); web1 keep release v2 (not in --hosts)"),
        "{}",
        rb.text()
    );
    // Partly rolled back: not marked rolled back; the record says partial.
    let show = ctl.run(&["--output", "json", "show", &d2]);
    assert_eq!(show.code, 0, "{}", show.text());
    let record: serde_json::Value = serde_json::from_str(show.stdout.trim()).expect("show JSON");
    assert_eq!(record["state"], "partial", "{record}");
    // The journal keeps the rollback's key and request (its intent).
    let conn = rusqlite::Connection::open(ctl.state.join("golivectl.db")).expect("journal");
    let keys: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT host, idem_key, state FROM steps WHERE deployment = ?1 AND step = 'rollback' \
             AND request LIKE '%HostRollback%' ORDER BY seq",
        )
        .expect("prepare")
        .query_map([&d2], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(
        keys,
        // The agent's own key for the deployment's host rollback job.
        [("web2".into(), format!("rollback:{d2}:web2"), "ok".into())]
    );
}

/// A deployment that stopped before switching any host (its staging hook
/// failed on web1): `golivectl rollback ID` says there is nothing to roll
/// back, runs no host rollback job, exits 0, and leaves the deployment's
/// state and record as they were (not "rolled back on 0 host(s)").
#[test]
fn issue14_rollback_of_a_deployment_that_switched_no_host_says_so_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = TestPki::new(d);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(d);
    let mut spec = AgentSpec::new("web1", "127.0.23.11");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {:?}\n\n\
         [[apps.shop.hooks.after_unpack]]\n\
         cmd = [\"sh\", \"-c\", \"test ! -f BROKEN\"]\n\
         timeout_secs = 10\n",
        root(d, "web1")
    );
    let a1 = AgentProc::start(d, &pki, &spec);
    deploy(d, &pki, &op, &ctl, "v1", &[&a1]);

    let art = d.join("dist/shop-v2.tar.gz");
    artifact(&art, &[("index.html", b"shop v2\n"), ("BROKEN", b"1\n")]);
    let plan = d.join("golive-v2.toml");
    write_plan(&plan, &pki, &op, "shop", Some(("v2", &art)), &[&a1]);
    let run = ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_ne!(run.code, 0, "{}", run.text());
    let res = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .expect("deploy result");
    let d2 = res["deployment"].as_str().expect("id").to_string();
    let state_before = res["state"].as_str().expect("state").to_string();

    let rb = ctl.run(&["rollback", &d2]);
    assert_eq!(rb.code, 0, "{}", rb.text());
    assert!(
        rb.stdout.contains("switched no host: nothing to roll back"),
        "{}",
        rb.text()
    );
    assert!(!rb.stdout.contains("rolled back on 0"), "{}", rb.text());
    assert_eq!(rollback_jobs(&a1), 0);
    assert_eq!(current(d, "web1"), PathBuf::from("releases/v1"));
    let show = ctl.run(&["--output", "json", "show", &d2]);
    assert_eq!(show.code, 0, "{}", show.text());
    let v: serde_json::Value = serde_json::from_str(&show.stdout).expect("show json");
    assert_eq!(v["state"], state_before.as_str(), "{}", show.stdout);
}

/// A child process killed and reaped on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// v1 then v2 on web1 and web2, whose host rollback takes 3 s (an
/// `after_rollback` hook that counts its runs). `golivectl rollback D2` is
/// killed (SIGKILL) while web2's rollback job runs: its intent is in the
/// journal under the agent's key, with no outcome. Run again, the
/// rollback resends web2's request under that key (the agent follows the
/// job it has) and rolls web1 back: both run v1, each agent ran one host
/// rollback job and its hook once, and the record shows the killed
/// intent interrupted, then done.
#[test]
fn issue14_a_rollback_killed_mid_job_and_run_again_runs_no_agent_job_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = TestPki::new(d);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(d);
    let hook_runs = |name: &str| d.join(format!("{name}.rollbacks"));
    let slow = |name: &str, ip: &str| {
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {:?}\nkeep_releases = 3\n\n\
             [[apps.shop.hooks.after_rollback]]\n\
             cmd = [\"sh\", \"-c\", \"echo ran >> {}; sleep 3\"]\ntimeout_secs = 20\n\n\
             [[apps.shop.probes]]\nkind = \"command\"\nname = \"health\"\n\
             cmd = [\"true\"]\nseverity = \"critical\"\ntimeout_ms = 5000\n\n",
            root(d, name),
            s(&hook_runs(name))
        );
        AgentProc::start(d, &pki, &spec)
    };
    let a1 = slow("web1", "127.0.23.21");
    let a2 = slow("web2", "127.0.23.22");
    deploy(d, &pki, &op, &ctl, "v1", &[&a1, &a2]);
    let d2 = deploy(d, &pki, &op, &ctl, "v2", &[&a1, &a2]);

    let mut cmd = ctl.cmd(&["rollback", &d2]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = Reap(cmd.spawn().expect("spawn golivectl rollback"));
    let conn = rusqlite::Connection::open(ctl.state.join("golivectl.db")).expect("journal");
    let rows = |host: &str| -> Vec<(String, String)> {
        conn.prepare(
            "SELECT idem_key, state FROM steps WHERE deployment = ?1 AND host = ?2 \
             AND step = 'rollback' ORDER BY seq",
        )
        .expect("prepare")
        .query_map([&d2, host], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
    };
    let key2 = format!("rollback:{d2}:web2");
    // Newest activation first: web2's job runs (its hook sleeps) while
    // its intent waits for an outcome. Kill the controller then.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < until, "web2's rollback job never ran");
        assert!(
            child.0.try_wait().expect("try_wait").is_none(),
            "the rollback ended before it was killed"
        );
        let hook = std::fs::read_to_string(hook_runs("web2")).unwrap_or_default();
        if !hook.is_empty() && rows("web2") == [(key2.clone(), "running".to_string())] {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().expect("SIGKILL golivectl");
    child.0.wait().expect("reap");
    assert_eq!(rows("web2"), [(key2.clone(), "running".to_string())]);
    assert!(rows("web1").is_empty(), "web1 was not asked yet");

    let again = ctl.run(&["rollback", &d2]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(
        again
            .stdout
            .contains(&format!("deployment {d2} rolled back on 2 host(s)")),
        "{}",
        again.text()
    );
    for (agent, name) in [(&a1, "web1"), (&a2, "web2")] {
        assert_eq!(current(d, name), Path::new("releases/v1"), "{name}");
        assert_eq!(rollback_jobs(agent), 1, "{name}: one host rollback job");
        let hook = std::fs::read_to_string(hook_runs(name)).expect("hook ran");
        assert_eq!(hook.lines().count(), 1, "{name}: the job ran once");
    }
    assert_eq!(
        rows("web2"),
        [
            (key2.clone(), "interrupted".to_string()),
            (key2, "ok".to_string())
        ]
    );
    assert_eq!(
        rows("web1"),
        [(format!("rollback:{d2}:web1"), "ok".to_string())]
    );
    // Done: a third run sends nothing.
    let third = ctl.run(&["rollback", &d2]);
    assert_eq!(third.code, 0, "{}", third.text());
    assert_eq!((rollback_jobs(&a1), rollback_jobs(&a2)), (1, 1));
}
