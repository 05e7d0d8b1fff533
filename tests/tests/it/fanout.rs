//! Issue 14, part 9: reads are cheap on the agent. `golivectl status` and
//! `golivectl probe` use one connection per host (counted by the agent's
//! metrics), and a read leaves the agent journal's files untouched (no
//! audit row written at once, so no fsync); the reads' audit rows are
//! written later, at the latest when the agent stops. Timings live in
//! `scripts/bench-fanout`, never here. Loopback 127.0.0.60-61 belong to
//! this module.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use golive_tests::*;

/// `golive_accepted_connections_total`, scraped with curl (its own
/// connection is counted too).
fn accepted(pki: &TestPki, viewer: &(PathBuf, PathBuf), agent: &AgentProc) -> u64 {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert"])
        .arg(pki.ca())
        .arg("--cert")
        .arg(&viewer.0)
        .arg("--key")
        .arg(&viewer.1)
        .arg(format!("https://{}/metrics", agent.addr));
    let run = run_bounded(c, Duration::from_secs(20));
    assert_eq!(run.code, 0, "{}", run.text());
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("golive_accepted_connections_total "))
        .unwrap_or_else(|| panic!("no accepted-connections counter:\n{}", run.stdout))
        .trim()
        .parse()
        .expect("a count")
}

/// Size and mtime of the journal's database and write-ahead log: a write
/// (and its fsync) changes one of them.
fn journal_files(agent: &AgentProc) -> Vec<(u64, SystemTime)> {
    ["journal.db", "journal.db-wal"]
        .iter()
        .map(|f| {
            std::fs::metadata(agent.state_dir.join(f))
                .map(|m| (m.len(), m.modified().expect("mtime")))
                .unwrap_or((0, SystemTime::UNIX_EPOCH))
        })
        .collect()
}

#[test]
fn issue14_status_and_probe_use_one_connection_per_host_and_write_nothing_on_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let viewer = pki.operator("grafana", "viewer");
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("health"), "ok\n").unwrap();
    let http = HttpApp::serve(&site, "127.0.0.61");
    let root = dir.path().join("srv/shop");
    live_release(&root, "v0");
    let mut spec = AgentSpec::new("web1", "127.0.0.60");
    spec.apps_toml = app_toml(
        "shop",
        &root,
        &format!("http://127.0.0.61:{}/health", http.port),
    );
    let mut agent = AgentProc::start(dir.path(), &pki, &spec);
    let plan = dir.path().join("plan.toml");
    write_plan(&plan, &pki, &op, "shop", None, &[&agent]);
    let ctl = Ctl::new(dir.path());

    let a = accepted(&pki, &viewer, &agent);
    let files = journal_files(&agent);
    let status = ctl.run(&["status", s(&plan)]);
    assert_eq!(status.code, 0, "{}", status.text());
    assert!(
        status.stdout.contains("web1 (127.0.0.60:"),
        "{}",
        status.text()
    );
    assert_eq!(
        journal_files(&agent),
        files,
        "golivectl status wrote to the agent journal"
    );
    let b = accepted(&pki, &viewer, &agent);
    // One for status, one for the scrape itself.
    assert_eq!(
        b - a,
        2,
        "golivectl status opened {} connection(s)",
        b - a - 1
    );

    let probe = ctl.run(&["probe", s(&plan)]);
    assert_eq!(probe.code, 0, "{}", probe.text());
    assert!(probe.stdout.contains("verdict: GO"), "{}", probe.text());
    assert_eq!(
        journal_files(&agent),
        files,
        "golivectl probe wrote to the agent journal"
    );
    let c = accepted(&pki, &viewer, &agent);
    assert_eq!(
        c - b,
        2,
        "golivectl probe opened {} connection(s)",
        c - b - 1
    );

    // The reads are still audited: their rows are written at the stop.
    assert!(
        agent.stop(),
        "the agent did not stop:\n{}",
        agent.log_text()
    );
    let j = agent.journal();
    let mut stmt = j
        .prepare("SELECT operation FROM audit WHERE peer_name = 'alice' ORDER BY seq")
        .unwrap();
    let ops: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ops, ["status", "preflight.probes", "probe.run"], "{ops:?}");
}

/// Issue 14, speed: a deployment keeps one connection per host for its
/// calls (lock, upload, stage and its follow, probes, activate, unlock)
/// instead of a TCP and mutual-TLS handshake for each; before, a deploy
/// to one host opened about a dozen. The agents' metrics count them. The
/// intents are still journaled before each call (the executor's tests
/// check that they are fsync'd first). Loopback 127.0.0.62-64.
#[test]
fn issue14_a_deploy_reuses_one_connection_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let viewer = pki.operator("grafana", "viewer");
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("health"), "ok\n").unwrap();
    let http = HttpApp::serve(&site, "127.0.0.64");
    let probe = format!("http://127.0.0.64:{}/health", http.port);
    let agents: Vec<AgentProc> = ["127.0.0.62", "127.0.0.63"]
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let name = format!("web{}", i + 1);
            let root = dir.path().join(&name).join("srv/shop");
            live_release(&root, "v0");
            let mut spec = AgentSpec::new(&name, ip);
            spec.apps_toml = app_toml("shop", &root, &probe);
            AgentProc::start(dir.path(), &pki, &spec)
        })
        .collect();
    let art = dir.path().join("dist/v1.tar.gz");
    artifact(&art, &[("health", b"ok\n")]);
    let plan = dir.path().join("plan.toml");
    let refs: Vec<&AgentProc> = agents.iter().collect();
    write_plan(&plan, &pki, &op, "shop", Some(("v1", &art)), &refs);
    let mut text = std::fs::read_to_string(&plan).unwrap();
    text.push_str("[deploy]\nparallel = 2\n\n[[waves]]\npercent = 100\n");
    std::fs::write(&plan, text).unwrap();
    let ctl = Ctl::new(dir.path());

    let before: Vec<u64> = agents.iter().map(|a| accepted(&pki, &viewer, a)).collect();
    let deploy = ctl.run(&["deploy", s(&plan)]);
    assert_eq!(deploy.code, 0, "{}", deploy.text());
    assert!(deploy.stdout.contains("succeeded"), "{}", deploy.text());
    for (a, b) in agents.iter().zip(before) {
        // Less the scrape's own connection. One, unless a pause between
        // two calls outlasted the reuse window on a slow machine.
        let opened = accepted(&pki, &viewer, a) - b - 1;
        assert!(
            (1..=3).contains(&opened),
            "the deploy opened {opened} connection(s) to {} (one is kept per host):\n{}",
            a.name,
            deploy.text()
        );
        assert_eq!(
            std::fs::read_link(a.state_dir.parent().unwrap().join("srv/shop/current"))
                .ok()
                .map(|p| p.ends_with("v1")),
            Some(true),
            "{} does not run v1",
            a.name
        );
    }
}
