//! Issue 16, part 6: the agent's log as structured events. A real agent
//! writes JSON lines with fields (job, app, kind, peer, role) while real
//! deployments run hooks that carry secrets in their config, and none of
//! those secrets reaches the log. Loopback 127.0.0.235-236 belong to this
//! module.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use golive_tests::*;
use serde_json::Value;

const HOOK_SECRET: &str = "S3CRET-HOOK-TOKEN-77";
const NEW_HOOK_SECRET: &str = "S3CRET-HOOK-TOKEN-99";
const WEBHOOK_SECRET: &str = "S3CRET-WEBHOOK-88";

/// `shop` with a hook whose environment holds `secret` (it fails when the
/// release ships a `fail` file), a webhook whose path is a token, and an
/// http probe.
fn apps_toml(root: &Path, ip: &str, port: u16, secret: &str) -> String {
    format!(
        "[apps.shop]\nroot = {root:?}\nkeep_releases = 3\n\n\
         [apps.shop.run]\ntimeout_secs = 30\ngrace_secs = 1\n\n\
         [apps.shop.notify]\nwebhook = \"http://127.0.0.1:9/services/T0/{WEBHOOK_SECRET}\"\n\n\
         [[apps.shop.hooks.after_unpack]]\ncmd = [\"sh\", \"-c\", \"test -n \\\"$API_TOKEN\\\" && test ! -e fail\"]\n\
         env = {{ API_TOKEN = {secret:?} }}\n\n\
         [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
         url = \"http://{ip}:{port}/health\"\nexpect_status = [200]\nseverity = \"critical\"\n\
         timeout_ms = 3000\n\n\
         [log]\nformat = \"json\"\nlevel = \"debug\"\n"
    )
}

fn deploy(dir: &Path, pki: &TestPki, op: &(PathBuf, PathBuf), agent: &AgentProc, v: &str) -> Run {
    let art = dir.join(format!("shop-{v}.tar.gz"));
    let mut files: Vec<(&str, &[u8])> = vec![("index.html", v.as_bytes()), ("health", b"ok\n")];
    if v.ends_with("-fail") {
        files.push(("fail", b"1"));
    }
    artifact(&art, &files);
    let plan = dir.join(format!("{v}.toml"));
    write_plan(&plan, pki, op, "shop", Some((v, &art)), &[agent]);
    Ctl::new(dir).run(&["deploy", s(&plan)])
}

/// The log's lines, each parsed: every line must be a JSON object.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n--- log\n{log}"))
        })
        .collect()
}

/// The first log line containing `needle`, waited for (10 s at most).
fn wait_for(agent: &AgentProc, needle: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = agent.log_text().lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{needle:?} not logged:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn issue16_json_logs_carry_fields_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let root = dir.path().join("srv/shop");
    let http = HttpApp::serve(&root.join("current"), "127.0.0.235");
    let mut spec = AgentSpec::new("web1", "127.0.0.235");
    spec.apps_toml = apps_toml(&root, "127.0.0.235", http.port, HOOK_SECRET);
    let agent = AgentProc::start(dir.path(), &pki, &spec);

    let ok = deploy(dir.path(), &pki, &op, &agent, "v1");
    assert_eq!(ok.code, 0, "{}\n--- agent\n{}", ok.text(), agent.log_text());
    let failed = deploy(dir.path(), &pki, &op, &agent, "v2-fail");
    assert_ne!(failed.code, 0, "{}", failed.text());

    // A reload that changes the secret: logged as a changed app, no value.
    let config = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, config.replace(HOOK_SECRET, NEW_HOOK_SECRET)).unwrap();
    let started = Instant::now();
    while !agent.log_text().contains("apps changed") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no reload logged:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let log = agent.log_text();
    for secret in [HOOK_SECRET, NEW_HOOK_SECRET, WEBHOOK_SECRET] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let lines = json_lines(&log);
    for l in &lines {
        assert!(l["timestamp"].is_string(), "{l}");
        assert!(l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    let listening = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().contains("listening on"))
        .unwrap_or_else(|| panic!("no start line:\n{log}"));
    assert_eq!(listening["level"], "INFO");
    // Each job's start and end carry its id, kind, app and who asked.
    let stage_started = lines
        .iter()
        .find(|l| l["kind"] == "stage" && l["message"].as_str().unwrap().contains("started"))
        .unwrap_or_else(|| panic!("no stage start:\n{log}"));
    assert_eq!(stage_started["app"], "shop", "{stage_started}");
    assert_eq!(stage_started["peer"], "alice", "{stage_started}");
    assert!(stage_started["job"].is_u64(), "{stage_started}");
    let failures: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "stage" && l["state"] == "failed")
        .collect();
    assert_eq!(failures.len(), 1, "{log}");
    assert_eq!(failures[0]["level"], "WARN");
    assert!(failures[0]["secs"].is_f64(), "{}", failures[0]);
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "activate" && l["state"] == "succeeded"),
        "{log}"
    );
    // At debug, every request: the peer and the role from its certificate.
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["operation"] == "job.submit:stage")
        .unwrap_or_else(|| panic!("no request line:\n{log}"));
    assert_eq!(request["level"], "DEBUG");
    assert_eq!(request["peer"], "alice");
    assert_eq!(request["role"], "operator");
}

#[test]
fn issue16_the_flags_override_the_config_and_info_is_the_default_level() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let root = dir.path().join("srv/shop");
    std::fs::create_dir_all(&root).unwrap();
    // The config asks for JSON at debug; the flags for human at warn.
    let mut spec = AgentSpec::new("web2", "127.0.0.236");
    spec.apps_toml =
        format!("[apps.shop]\nroot = {root:?}\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n");
    spec.args = vec![
        "--log-format".into(),
        "human".into(),
        "--log-level".into(),
        "warn".into(),
    ];
    let mut agent = AgentProc::start(dir.path(), &pki, &spec);
    let plan = dir.path().join("plan.toml");
    write_plan(&plan, &pki, &op, "shop", None, &[&agent]);
    let status = Ctl::new(dir.path()).run(&["status", s(&plan)]);
    assert_eq!(status.code, 0, "{}", status.text());
    // Not TLS: a refusal, logged at warn, in the flag's format.
    let mut plain = std::net::TcpStream::connect(agent.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = plain.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let _ = plain.read(&mut [0u8; 64]);
    let refused = wait_for(&agent, "refused");
    assert!(refused.contains(" WARN "), "{refused}");
    assert!(
        !refused.trim_start().starts_with('{'),
        "JSON instead of human: {refused}"
    );
    assert!(agent.stop());
    let log = agent.log_text();
    // Info is below the flag's warn.
    assert!(!log.contains("listening on"), "info logged at warn:\n{log}");
    assert!(
        !log.contains("golive-agent stopped"),
        "info logged at warn:\n{log}"
    );

    // Without flags and without [log]: human lines at info, time first.
    let mut spec = AgentSpec::new("web3", "127.0.0.236");
    spec.apps_toml = format!("[apps.shop]\nroot = {root:?}\n");
    let mut agent = AgentProc::start(dir.path(), &pki, &spec);
    // `agent.addr` is written before the serve loop takes SIGTERM: wait
    // for the serve loop's first line before stopping.
    let line = wait_for(&agent, "listening on");
    assert!(agent.stop());
    let log = agent.log_text();
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{line}");
    assert!(rest.trim_start().starts_with("INFO "), "{line}");
    assert!(log.contains("golive-agent stopped"), "{log}");
}
