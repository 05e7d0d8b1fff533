//! Issue 13, the watchdog: after a release goes live the agent watches it and
//! rolls its own host back when a trigger holds, with no controller running
//! and with the controller's link cut (a network namespace); a quiet window
//! or a go commits, which is when a pending `contract` migration runs. Real
//! `golive-agent` processes over real mTLS, a real web app (a python app
//! whose release decides when it starts failing), real nginx and its access
//! log, a real SQLite database, a real webhook receiver.
//!
//! Most tests arm the watchdog with `golivectl::client::AgentClient` over
//! mTLS, as the deploy does; the last drives the plan's `[watchdog]` through
//! `golivectl deploy`, `show`, `go`, `no-go` and `status`.
//! Loopback 127.0.0.240-249 and 10.213.0.0/16 belong to this module.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use golive_shared::protocol::*;
use golive_tests::*;
use golivectl::client::AgentClient;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::maintenance::Nginx;

world!();

impl World {
    fn client_as(&self, agent: &AgentProc, cert: &(PathBuf, PathBuf)) -> AgentClient {
        let tls = golivectl::tls::client_config(&self.pki.ca(), &cert.0, &cert.1)
            .expect("client TLS config");
        AgentClient::new(&agent.name, &agent.addr.to_string(), None, tls).expect("agent client")
    }

    fn client(&self, agent: &AgentProc) -> AgentClient {
        self.client_as(agent, &self.op)
    }

    /// Deploys `version` with `golivectl deploy`; the deployment id.
    fn deploy(&self, agent: &AgentProc, version: &str, artifact: &Path) -> String {
        let plan = self.path().join(format!("{version}.toml"));
        write_plan(
            &plan,
            &self.pki,
            &self.op,
            "shop",
            Some((version, artifact)),
            &[agent],
        );
        let run = self.ctl.run(&["--output", "json", "deploy", s(&plan)]);
        assert_eq!(run.code, 0, "deploy {version}: {}", run.text());
        let result = run
            .json_lines()
            .into_iter()
            .find(|v| v["event"] == "result")
            .unwrap_or_else(|| panic!("no result event:\n{}", run.text()));
        result["deployment"]
            .as_str()
            .expect("deployment id")
            .to_string()
    }
}

/// A release: `index.html` says "shop VERSION", `health` is the app's
/// behaviour (`ok`, `fail-after SECONDS`), plus `extra` files.
fn release(dir: &Path, version: &str, health: &str, extra: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("dist").join(format!("shop-{version}.tar.gz"));
    let index = format!("shop {version}\n");
    let mut files: Vec<(&str, &[u8])> = vec![
        ("index.html", index.as_bytes()),
        ("health", health.as_bytes()),
    ];
    files.extend_from_slice(extra);
    artifact(&path, &files);
    path
}

/// Runs `f` on a fresh runtime, bounded to 30 s.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
        .expect("request finished within 30 s")
}

fn call(client: &AgentClient, req: Request) -> Result<Response, golivectl::client::ClientError> {
    block_on(client.call(&req))
}

/// The failing-probe trigger on the app's `health` probe.
fn failing(window_secs: u64, for_secs: u64, interval_ms: u64) -> WatchdogSpec {
    WatchdogSpec {
        window_secs,
        interval_ms,
        triggers: vec![Trigger {
            name: "health".into(),
            probe: "health".into(),
            condition: Condition::Failing,
            for_secs,
        }],
        error_limit: 3,
        confirm_within_secs: None,
        restore_allowed: false,
    }
}

fn arm(client: &AgentClient, deployment: &str, spec: WatchdogSpec) -> WatchdogInfo {
    match call(
        client,
        Request::ArmWatchdog(ArmWatchdog {
            app: "shop".into(),
            deployment: deployment.into(),
            spec,
        }),
    ) {
        Ok(Response::Watchdog(info)) => info,
        other => panic!("arming failed: {other:?}"),
    }
}

fn watchdog(client: &AgentClient) -> WatchdogInfo {
    match call(
        client,
        Request::WatchdogStatus(WatchdogStatusRequest {
            app: "shop".into(),
            deployment: None,
        }),
    ) {
        Ok(Response::WatchdogStatus(Some(info))) => info,
        other => panic!("watchdog status: {other:?}"),
    }
}

/// Polls the watchdog's status until `done` (at most `secs`).
fn wait_watchdog(
    client: &AgentClient,
    secs: u64,
    what: &str,
    done: impl Fn(&WatchdogInfo) -> bool,
) -> WatchdogInfo {
    let started = Instant::now();
    loop {
        let info = watchdog(client);
        if done(&info) {
            return info;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s: {info:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ended(client: &AgentClient, secs: u64) -> WatchdogInfo {
    wait_watchdog(client, secs, "the watchdog ended", |i| i.state.is_final())
}

fn current(root: &Path) -> String {
    std::fs::read_link(root.join("current"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Rollback switches recorded by the agent (activations caused by a rollback).
fn rollback_switches(agent: &AgentProc) -> i64 {
    agent
        .journal()
        .query_row(
            "SELECT COUNT(*) FROM activations WHERE cause = 'rollback'",
            [],
            |r| r.get(0),
        )
        .expect("count rollbacks")
}

/// When the app started failing (written by the app).
fn fail_since(root: &Path) -> i64 {
    std::fs::read_to_string(root.join("fail-since"))
        .expect("the app wrote when it started failing")
        .trim()
        .parse()
        .expect("unix ms")
}

/// One host: the flaky app and an agent declaring app `shop` with a
/// critical http probe `health` on it, plus `extra` config.
struct Host {
    ip: String,
    root: PathBuf,
    app: FlakyApp,
    agent: AgentProc,
}

fn host(w: &World, ip: &str, extra: &str) -> Host {
    let root = w.path().join("web1/srv/shop");
    let app = FlakyApp::start(&root, ip, None);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "{}{extra}",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", app.port))
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    Host {
        ip: ip.into(),
        root,
        app,
        agent,
    }
}

/// Deploys v1 (healthy) then v2 with `health`; v2's deployment id.
fn v1_then_v2(w: &World, h: &Host, health: &str) -> String {
    w.deploy(&h.agent, "v1", &release(w.path(), "v1", "ok", &[]));
    w.deploy(&h.agent, "v2", &release(w.path(), "v2", health, &[]))
}

#[test]
fn issue13_a_release_that_starts_failing_is_rolled_back_with_no_controller() {
    let w = World::new();
    let h = host(&w, "127.0.0.240", "");
    let d2 = v1_then_v2(&w, &h, "fail-after 6");
    let client = w.client(&h.agent);
    let armed = arm(&client, &d2, failing(120, 2, 500));
    assert_eq!(armed.state, WatchdogState::Armed);
    assert_eq!(armed.release, "v2");
    assert_eq!(armed.until - armed.armed_at, 120_000);
    assert_eq!(http_get(&h.ip, h.app.port, "/").unwrap().1, "shop v2\n");

    // No golivectl runs from here on: the agent acts alone.
    let info = ended(&client, 40);
    assert_eq!(info.state, WatchdogState::RolledBack, "{info:#?}");
    assert_eq!(info.rollback_to.as_deref(), Some("v1"));
    assert!(
        info.reason
            .as_deref()
            .unwrap()
            .starts_with("trigger health held: failing on probe health for 2 s"),
        "{info:#?}"
    );
    // It fired once the condition had held 2 s (sampled every 0.5 s).
    let lag = info.fired_at.unwrap() - fail_since(&h.root);
    assert!(
        (2000..=3500).contains(&lag),
        "fired {lag} ms after the app failed"
    );
    assert_eq!(
        http_get(&h.ip, h.app.port, "/"),
        Some((200, "shop v1\n".into()))
    );
    assert_eq!(current(&h.root), "releases/v1");
    assert_eq!(rollback_switches(&h.agent), 1);
    let kinds: Vec<&str> = info.events.iter().map(|e| e.kind.as_str()).collect();
    for k in ["armed", "trigger", "fired", "job", "rolled_back"] {
        assert!(kinds.contains(&k), "no {k} event: {:#?}", info.events);
    }

    // The agent's own job list and status say so.
    let jobs = match call(&client, Request::ListJobs(ListJobsRequest { limit: 5 })) {
        Ok(Response::Jobs(j)) => j,
        other => panic!("{other:?}"),
    };
    let rollback = &jobs[0];
    assert_eq!(rollback.id, info.rollback_job.unwrap());
    assert_eq!(rollback.submitted_by, "watchdog");
    assert_eq!(rollback.idempotency_key, format!("rollback:{d2}:web1"));
    assert_eq!(rollback.state, JobState::Succeeded);
    let status = match call(&client, Request::Status(StatusRequest { apps: vec![] })) {
        Ok(Response::Status(s)) => s,
        other => panic!("{other:?}"),
    };
    let summary = status.apps[0].watchdog.as_ref().expect("watchdog summary");
    assert_eq!(summary.state, WatchdogState::RolledBack);
    assert!(summary.events.is_empty());
}

/// Two ends of a veth pair, one in a network namespace: an agent host whose
/// link to the controller can be cut. Everything is removed on drop, even
/// when the test fails.
struct Netns {
    name: String,
    host_veth: String,
    /// This side's and the namespace's addresses.
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) {
    let run = run_bounded(
        {
            let mut c = Command::new("ip");
            c.args(args);
            c
        },
        Duration::from_secs(10),
    );
    assert_eq!(run.code, 0, "ip {args:?}: {}", run.text());
}

impl Netns {
    fn new() -> Netns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test makes a network namespace and needs root (scripts/test runs as root)"
        );
        let id = std::process::id();
        let net = format!("10.213.{}", id % 250);
        let ns = Netns {
            name: format!("golive-wd-{id}"),
            host_veth: format!("gwh{id}"),
            host_ip: format!("{net}.1"),
            ns_ip: format!("{net}.2"),
        };
        let ns_veth = format!("gwn{id}");
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &ns_veth,
        ]);
        ip(&["link", "set", &ns_veth, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_veth,
        ]);
        ip(&["link", "set", &ns.host_veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/24", ns.ns_ip), "dev", &ns_veth]);
        inside(&["link", "set", &ns_veth, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// Cuts (or restores) the link: this side of the pair down (up).
    fn link(&self, up: bool) {
        ip(&[
            "link",
            "set",
            &self.host_veth,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Removing one end removes the pair.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn issue13_the_watchdog_rolls_back_with_the_controllers_link_cut() {
    let net = Netns::new();
    let w = World::new();
    let root = w.path().join("web1/srv/shop");
    // The app lives beside the agent, inside the namespace.
    let app = FlakyApp::start(&root, "0.0.0.0", Some(&net.name));
    let mut spec = AgentSpec::new("web1", &net.ns_ip);
    spec.netns = Some(net.name.clone());
    spec.apps_toml = app_toml(
        "shop",
        &root,
        &format!("http://127.0.0.1:{}/health", app.port),
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    w.deploy(&agent, "v1", &release(w.path(), "v1", "ok", &[]));
    let d2 = w.deploy(&agent, "v2", &release(w.path(), "v2", "fail-after 5", &[]));
    let client = w.client(&agent);
    arm(&client, &d2, failing(120, 2, 500));

    // The controller's link goes down: the agent cannot be reached.
    net.link(false);
    let cut = block_on(async {
        tokio::time::timeout(
            Duration::from_secs(3),
            client.call(&Request::Hello(HelloRequest {
                client_version: "test".into(),
            })),
        )
        .await
    });
    assert!(
        !matches!(cut, Ok(Ok(_))),
        "the agent still answers over a cut link"
    );
    let started = Instant::now();
    let state = loop {
        let state: String = agent
            .journal()
            .query_row(
                "SELECT state FROM watchdogs ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .expect("watchdog row");
        if state != "armed" && state != "fired" {
            break state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the watchdog did not end within 40 s with the link cut (state {state}):\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state, "rolled_back", "{}", agent.log_text());
    assert_eq!(current(&root), "releases/v1");

    // The link back: the old release serves, and the agent says what it did.
    net.link(true);
    let started = Instant::now();
    let answer = loop {
        if let Some(a) = http_get(&net.ns_ip, app.port, "/") {
            break a;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answer, (200, "shop v1\n".into()));
    let info = watchdog(&client);
    assert_eq!(info.state, WatchdogState::RolledBack);
    assert_eq!(info.deployment, d2);
    drop(agent);
    drop(app);
}

#[test]
fn issue13_the_error_rate_of_real_requests_through_nginx_fires_the_trigger() {
    let w = World::new();
    let ip = "127.0.0.241";
    let root = w.path().join("web1/srv/shop");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    // /app is a file of each release; a release without it answers 500.
    let nginx = Nginx::start_with(
        w.path(),
        ip,
        &root.join("current"),
        &root.join("shared/maintenance.flag"),
        "location /app { try_files $uri =500; }",
    );
    let log = nginx.dir.join("access.log");
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n\
         [[apps.shop.probes]]\nkind = \"access-log\"\nname = \"access\"\npath = {log:?}\n\
         window_secs = 10\nmin_requests = 5\nmax_error_rate_percent = 99.0\n"
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    w.deploy(
        &agent,
        "v1",
        &release(w.path(), "v1", "ok", &[("app", b"v1 app\n")]),
    );

    // Real requests, 20 a second, until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let port = nginx.port;
    let traffic = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(90) {
                statuses.push(http_get("127.0.0.241", port, "/app").map_or(0, |a| a.0));
                std::thread::sleep(Duration::from_millis(50));
            }
            statuses
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let d2 = w.deploy(&agent, "v2", &release(w.path(), "v2", "ok", &[]));
    assert_eq!(http_get(ip, nginx.port, "/app").map(|a| a.0), Some(500));
    let client = w.client(&agent);
    let armed = arm(
        &client,
        &d2,
        WatchdogSpec {
            window_secs: 120,
            interval_ms: 500,
            triggers: vec![Trigger {
                name: "error-rate".into(),
                probe: "access".into(),
                condition: Condition::ErrorRateAbove { per_mille: 50 },
                for_secs: 2,
            }],
            error_limit: 3,
            confirm_within_secs: None,
            restore_allowed: false,
        },
    );
    let info = ended(&client, 40);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let statuses = traffic.join().expect("traffic thread");
    assert_eq!(
        info.state,
        WatchdogState::RolledBack,
        "{info:#?}\n{}",
        nginx.logs()
    );
    assert!(
        info.reason.as_deref().unwrap().contains("5xx of"),
        "{info:#?}"
    );
    let fired = info.fired_at.unwrap() - armed.armed_at;
    assert!(
        (2000..=4000).contains(&fired),
        "fired {fired} ms after arming"
    );
    assert_eq!(
        http_get(ip, nginx.port, "/app"),
        Some((200, "v1 app\n".into()))
    );
    // The requests saw v1, then v2's errors, then v1 again.
    let first_500 = statuses.iter().position(|&s| s == 500).expect("some 500s");
    let last_500 = statuses.iter().rposition(|&s| s == 500).unwrap();
    assert!(
        statuses[..first_500].iter().all(|&s| s == 200),
        "{statuses:?}"
    );
    assert!(
        statuses[last_500 + 1..].iter().all(|&s| s == 200) && last_500 + 1 < statuses.len(),
        "{statuses:?}"
    );
}

#[test]
fn issue13_one_bad_sample_does_not_fire_probe_errors_past_the_limit_do() {
    let w = World::new();
    let mut h = host(&w, "127.0.0.242", "");
    let d2 = v1_then_v2(&w, &h, "ok");
    let client = w.client(&h.agent);
    arm(&client, &d2, failing(120, 3, 500));
    std::thread::sleep(Duration::from_millis(1200));

    // The live release misbehaves for 0.7 s: one or two bad samples.
    let health = h.root.join("releases/v2/health");
    std::fs::write(&health, "broken").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&health, "ok").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let info = watchdog(&client);
    assert_eq!(info.state, WatchdogState::Armed, "{info:#?}");
    let lines: Vec<&str> = info.events.iter().map(|e| e.line.as_str()).collect();
    assert!(
        lines.iter().any(|l| l.contains("condition true"))
            && lines.iter().any(|l| l.contains("cleared")),
        "{lines:#?}"
    );
    assert_eq!(current(&h.root), "releases/v2");

    // The app dies: the probe cannot measure (connection refused). Past
    // three errors in a row that counts as the condition, from the first.
    let dead = std::mem::replace(
        &mut h.app,
        FlakyApp::start(&w.path().join("other"), &h.ip, None),
    );
    drop(dead);
    let info = ended(&client, 30);
    assert_eq!(info.state, WatchdogState::RolledBack, "{info:#?}");
    assert!(
        info.events.iter().any(|e| e
            .line
            .contains("3 probe errors in a row count as the condition holding")),
        "{:#?}",
        info.events
    );
    assert_eq!(current(&h.root), "releases/v1");
}

#[test]
fn issue13_kill9_while_armed_rearms_and_kill9_before_the_rollback_ends_finishes_it_once() {
    let w = World::new();
    let pid_file = w.path().join("slow.pid");
    let mut h = host(
        &w,
        "127.0.0.243",
        &format!(
            "[apps.shop.commands.slow]\ncmd = [\"sh\", \"-c\", \"echo $$ > {}; exec sleep 6\"]\n",
            s(&pid_file)
        ),
    );
    let d2 = v1_then_v2(&w, &h, "fail-after 8");
    let armed = arm(&w.client(&h.agent), &d2, failing(60, 2, 500));
    std::thread::sleep(Duration::from_secs(2));
    h.agent.kill9();
    std::thread::sleep(Duration::from_secs(1));
    h.agent.spawn();
    let client = w.client(&h.agent);
    let info = watchdog(&client);
    assert_eq!(info.state, WatchdogState::Armed, "{info:#?}");
    assert_eq!(
        info.until, armed.until,
        "the remaining window, not a new one"
    );
    assert!(
        info.events
            .iter()
            .any(|e| e.line.starts_with("re-armed after the agent restarted")),
        "{:#?}",
        info.events
    );
    let info = ended(&client, 40);
    assert_eq!(info.state, WatchdogState::RolledBack, "{info:#?}");
    assert_eq!(http_get(&h.ip, h.app.port, "/").unwrap().1, "shop v1\n");
    assert_eq!(rollback_switches(&h.agent), 1);

    // v3, with a dead-man of 3 s and no go. A slow command holds the app's
    // queue, so the rollback waits behind it; the agent dies meanwhile.
    let d3 = w.deploy(&h.agent, "v3", &release(w.path(), "v3", "ok", &[]));
    let mut dead_man = failing(60, 30, 500);
    dead_man.confirm_within_secs = Some(3);
    arm(&client, &d3, dead_man);
    let slow = call(
        &client,
        Request::SubmitJob(SubmitJob {
            idempotency_key: "slow-1".into(),
            lease: None,
            spec: JobSpec::RunCommand(RunCommand {
                app: "shop".into(),
                name: "slow".into(),
            }),
        }),
    );
    assert!(matches!(slow, Ok(Response::Job(_))), "{slow:?}");
    let info = wait_watchdog(&client, 10, "the dead-man fired", |i| {
        i.state == WatchdogState::Fired
    });
    let first = info.rollback_job.expect("a rollback job");
    h.agent.kill9();
    // The command's sleep outlives the agent (its own process group): end it.
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(
        current(&h.root),
        "releases/v3",
        "rolled back before the kill"
    );
    h.agent.spawn();
    let client = w.client(&h.agent);
    let info = ended(&client, 30);
    assert_eq!(info.state, WatchdogState::RolledBack, "{info:#?}");
    assert!(
        info.reason
            .as_deref()
            .unwrap()
            .contains("no go before the deadline")
    );
    assert_eq!(current(&h.root), "releases/v1");
    assert_eq!(rollback_switches(&h.agent), 2, "one switch per rollback");
    let j = h.agent.journal();
    let state_of = |key: &str| -> String {
        j.query_row(
            "SELECT state FROM jobs WHERE idempotency_key = ?1",
            [key],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("job {key}: {e}"))
    };
    // The host rollback is resumed at start under its one key: the same
    // job, never a second one.
    assert_eq!(state_of(&format!("rollback:{d3}:web1")), "succeeded");
    let rollbacks: i64 = j
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'host.rollback' AND deployment = ?1",
            [&d3],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rollbacks, 1);
    assert_eq!(info.rollback_job, Some(first));
}

#[test]
fn issue13_a_quiet_window_commits_and_runs_the_pending_contract_migration_then() {
    let w = World::new();
    let ip = "127.0.0.244";
    let root = w.path().join("web1/srv/shop");
    let db = w.path().join("web1/shop.db");
    let app = FlakyApp::start(&root, ip, None);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "{}[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", app.port))
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let expand: (&str, &[u8]) = (
        "migrations/0001_orders.up.sql",
        b"-- golive: expand\nCREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT);",
    );
    // A first install: 0001 applied by the deploy.
    w.deploy(&agent, "v1", &release(w.path(), "v1", "ok", &[expand]));
    // v2 drops the old column: a contract migration, left pending by a
    // deploy that stops before it (staged and activated here by hand).
    let v2 = release(
        w.path(),
        "v2",
        "ok",
        &[
            expand,
            (
                "migrations/0002_drop_note.up.sql",
                b"-- golive: contract\nALTER TABLE orders DROP COLUMN note;",
            ),
        ],
    );
    let client = w.client(&agent);
    let bytes = std::fs::read(&v2).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    block_on(client.upload(&v2, &sha, bytes.len() as u64)).expect("upload v2");
    for (key, spec) in [
        (
            "v2-stage",
            JobSpec::Stage(StageRelease {
                app: "shop".into(),
                release: "v2".into(),
                artifact_sha256: sha.clone(),
            }),
        ),
        (
            "v2-activate",
            JobSpec::Activate(ActivateRelease {
                app: "shop".into(),
                release: "v2".into(),
                rollback: Default::default(),
            }),
        ),
    ] {
        let job = match call(
            &client,
            Request::SubmitJob(SubmitJob {
                idempotency_key: key.into(),
                lease: None,
                spec,
            }),
        ) {
            Ok(Response::Job(j)) => j,
            other => panic!("{other:?}"),
        };
        let started = Instant::now();
        loop {
            let ev = match call(
                &client,
                Request::JobEvents(JobEventsRequest {
                    job_id: job.id,
                    after_seq: 0,
                    wait_ms: 1000,
                }),
            ) {
                Ok(Response::Events(ev)) => ev,
                other => panic!("{other:?}"),
            };
            if ev.job.state.is_final() {
                assert_eq!(ev.job.state, JobState::Succeeded, "{key}: {:?}", ev.job);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{key} hangs");
        }
    }
    let pending = || match call(
        &client,
        Request::MigrationStatus(MigrationStatusRequest {
            app: "shop".into(),
            release: None,
        }),
    ) {
        Ok(Response::MigrationStatus(m)) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        pending()
            .pending
            .iter()
            .map(|p| p.version)
            .collect::<Vec<_>>(),
        [2]
    );
    let columns = || -> Vec<String> {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.prepare("SELECT name FROM pragma_table_info('orders')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .flatten()
            .collect()
    };
    assert_eq!(columns(), ["id", "note"]);

    let armed = arm(&client, "d-v2", failing(6, 2, 500));
    std::thread::sleep(Duration::from_secs(3));
    // Inside the window, nothing irreversible: 0002 waits.
    assert_eq!(watchdog(&client).state, WatchdogState::Armed);
    assert_eq!(
        pending().pending.len(),
        1,
        "the contract ran before the commit"
    );
    let info = ended(&client, 30);
    assert_eq!(info.state, WatchdogState::Committed, "{info:#?}");
    assert!(info.committed_at.unwrap() >= armed.until);
    assert!(info.commit_job.is_some());
    let st = pending();
    assert!(st.pending.is_empty(), "{st:?}");
    let m2 = st
        .applied
        .iter()
        .find(|a| a.version == 2)
        .expect("0002 applied");
    assert_eq!(m2.tag.as_deref(), Some("contract"));
    assert_eq!(m2.deployment.as_deref(), Some("d-v2"));
    assert_eq!(columns(), ["id"]);
    assert!(
        info.events
            .iter()
            .any(|e| e.line.contains("pending migration(s) 2 run now")),
        "{:#?}",
        info.events
    );
    assert_eq!(current(&root), "releases/v2");
    drop(agent);
    drop(app);
}

#[test]
fn issue13_the_dead_man_fires_without_a_go_and_not_with_one() {
    let w = World::new();
    let h = host(&w, "127.0.0.245", "");
    let d2 = v1_then_v2(&w, &h, "ok");
    let client = w.client(&h.agent);
    let mut dead_man = failing(30, 10, 500);
    dead_man.confirm_within_secs = Some(3);
    let armed = arm(&client, &d2, dead_man.clone());
    assert_eq!(armed.confirm_by, Some(armed.armed_at + 3000));
    let info = ended(&client, 20);
    assert_eq!(info.state, WatchdogState::RolledBack, "{info:#?}");
    assert!(
        info.reason
            .as_deref()
            .unwrap()
            .starts_with("dead-man: no go before the deadline"),
        "{info:#?}"
    );
    assert_eq!(http_get(&h.ip, h.app.port, "/").unwrap().1, "shop v1\n");

    // v3 with a go within the deadline: committed, and it stays so.
    let d3 = w.deploy(&h.agent, "v3", &release(w.path(), "v3", "ok", &[]));
    arm(&client, &d3, dead_man);
    std::thread::sleep(Duration::from_secs(1));
    // A viewer may look, not decide.
    let viewer = w.pki.operator("vic", "viewer");
    let as_viewer = w.client_as(&h.agent, &viewer);
    let refused = call(
        &as_viewer,
        Request::ConfirmWatchdog(ConfirmWatchdog {
            app: "shop".into(),
            deployment: d3.clone(),
            by: "vic".into(),
        }),
    )
    .unwrap_err();
    assert_eq!(
        refused.agent_code(),
        Some(ErrorCode::Forbidden),
        "{refused}"
    );
    assert_eq!(refused.exit_code(), 2);
    let go = match call(
        &client,
        Request::ConfirmWatchdog(ConfirmWatchdog {
            app: "shop".into(),
            deployment: d3.clone(),
            by: "carol".into(),
        }),
    ) {
        Ok(Response::Watchdog(i)) => i,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        go.state,
        WatchdogState::Committing | WatchdogState::Committed
    ));
    std::thread::sleep(Duration::from_secs(4));
    let info = watchdog(&client);
    assert_eq!(info.state, WatchdogState::Committed, "{info:#?}");
    assert_eq!(info.fired_at, None);
    assert_eq!(http_get(&h.ip, h.app.port, "/").unwrap().1, "shop v3\n");
    assert_eq!(rollback_switches(&h.agent), 1);
}

#[test]
fn issue13_the_webhook_tells_of_the_rollback_never_delays_it_and_keeps_its_url_secret() {
    const SECRET: &str = "T0GOLIVE/B0WATCH/SECRET-TOKEN-42";
    let w = World::new();
    let ip = "127.0.0.246";
    let receiver = Hook::start_hanging(ip, 1);
    let url = format!("http://{ip}:{}/services/{SECRET}", receiver.port);
    let h = host(
        &w,
        ip,
        &format!("[apps.shop.notify]\nwebhook = {url:?}\ntimeout_secs = 4\nattempts = 3\n"),
    );
    let d2 = v1_then_v2(&w, &h, "fail-after 3");
    let client = w.client(&h.agent);
    arm(&client, &d2, failing(120, 1, 500));
    let info = ended(&client, 30);
    assert_eq!(info.state, WatchdogState::RolledBack, "{info:#?}");
    // The first notice's receiver hangs for its whole 4 s timeout; the
    // rollback did not wait for it.
    let took = info.ended_at.unwrap() - info.fired_at.unwrap();
    assert!(took < 2500, "the rollback took {took} ms after the fire");

    let started = Instant::now();
    while receiver.posts().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "two notices within 30 s: {:?}\n{}",
            receiver.posts(),
            h.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bodies = receiver.posts();
    let mut events: Vec<&str> = bodies
        .iter()
        .map(|(_, b)| b["event"].as_str().unwrap())
        .collect();
    events.sort();
    assert_eq!(events, ["fired", "rolled_back"]);
    for (path, b) in &bodies {
        assert_eq!(path, &format!("/services/{SECRET}"));
        assert_eq!(b["app"], "shop");
        assert_eq!(b["host"], "web1");
        assert_eq!(b["deployment"], d2.as_str());
        assert_eq!(b["release"], "v2");
        assert_eq!(b["rollback_to"], "v1");
        assert!(
            b["reason"]
                .as_str()
                .unwrap()
                .contains("trigger health held"),
            "{b}"
        );
        assert!(b["time"].as_str().unwrap().ends_with('Z'), "{b}");
        assert!(
            b["text"].as_str().unwrap().starts_with("golive on web1: "),
            "{b}"
        );
        if b["event"] == "rolled_back" {
            assert!(
                b["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("rolled back from v2 to v1"),
                "{b}"
            );
        }
    }
    // Delivered after a retry, said in the journal without the URL.
    let info = wait_watchdog(&client, 20, "both deliveries journaled", |i| {
        i.events
            .iter()
            .filter(|e| e.kind == "notify" && e.line.contains("delivered"))
            .count()
            == 2
    });
    let notes: Vec<&str> = info
        .events
        .iter()
        .filter(|e| e.kind == "notify")
        .map(|e| e.line.as_str())
        .collect();
    assert!(
        notes
            .iter()
            .all(|l| l.starts_with(&format!("webhook http://{ip}:{}/*** (", receiver.port))),
        "{notes:#?}"
    );
    assert!(notes.iter().any(|l| l.contains("attempt 2")), "{notes:#?}");
    // The URL is nowhere to be read.
    let log = h.agent.log_text();
    assert!(!log.contains("SECRET-TOKEN-42"), "{log}");
    assert!(log.contains("/***"), "{log}");
    assert!(!format!("{info:?}").contains("SECRET-TOKEN-42"));

    // A bad webhook URL is refused by check-config without showing it.
    let bad = h.agent.config.with_file_name("bad.toml");
    let text = std::fs::read_to_string(&h.agent.config)
        .unwrap()
        .replace(&url, "ftp://hooks.example.com/services/SECRET-TOKEN-42");
    std::fs::write(&bad, text).unwrap();
    let mut cmd = Command::new(bin("golive-agent"));
    cmd.args(["check-config", "--config", s(&bad)]);
    let run = run_bounded(cmd, Duration::from_secs(20));
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("apps.shop.notify.webhook"),
        "{}",
        run.text()
    );
    assert!(!run.text().contains("SECRET-TOKEN-42"), "{}", run.text());
}

#[test]
fn issue13_bad_arming_is_refused_and_the_agent_is_idle_once_the_watchdog_ends() {
    let w = World::new();
    let h = host(&w, "127.0.0.247", "");
    let d1 = w.deploy(&h.agent, "v1", &release(w.path(), "v1", "ok", &[]));
    let client = w.client(&h.agent);
    let refuse = |deployment: &str, spec: WatchdogSpec| {
        let e = call(
            &client,
            Request::ArmWatchdog(ArmWatchdog {
                app: "shop".into(),
                deployment: deployment.into(),
                spec,
            }),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        e.to_string()
    };
    // A first install has nothing to return to.
    let e = refuse(&d1, failing(60, 1, 500));
    assert!(
        e.contains("no earlier release on disk to roll back to"),
        "{e}"
    );
    let d2 = w.deploy(&h.agent, "v2", &release(w.path(), "v2", "ok", &[]));
    let mut unknown = failing(60, 1, 500);
    unknown.triggers[0].probe = "nope".into();
    let e = refuse(&d2, unknown);
    assert!(
        e.contains("names probe \"nope\"") && e.contains("declared probes: health"),
        "{e}"
    );
    let mut wrong_kind = failing(60, 1, 500);
    wrong_kind.triggers[0].condition = Condition::ErrorRateAbove { per_mille: 50 };
    let e = refuse(&d2, wrong_kind);
    assert!(e.contains("needs an access-log probe"), "{e}");
    let e = refuse(&d2, failing(60, 1, 10));
    assert!(e.contains("interval_ms = 10"), "{e}");
    let e = refuse("not a deployment", failing(60, 1, 500));
    assert!(e.contains("invalid deployment id"), "{e}");
    let refused = call(
        &w.client_as(&h.agent, &w.pki.operator("vic", "viewer")),
        Request::ArmWatchdog(ArmWatchdog {
            app: "shop".into(),
            deployment: d2.clone(),
            spec: failing(60, 1, 500),
        }),
    )
    .unwrap_err();
    assert_eq!(refused.agent_code(), Some(ErrorCode::Forbidden));
    assert!(
        h.agent
            .journal()
            .query_row("SELECT COUNT(*) = 0 FROM watchdogs", [], |r| r
                .get::<_, bool>(0))
            .unwrap()
    );

    // The host's defaults (seed 003) when the spec names no trigger: here
    // its one http probe, unresponsive for a minute.
    let armed = arm(&client, &d2, WatchdogSpec::defaults());
    assert_eq!(armed.spec.window_secs, 1800);
    assert_eq!(
        armed.spec.triggers,
        [Trigger {
            name: "unresponsive".into(),
            probe: "health".into(),
            condition: Condition::Unresponsive,
            for_secs: 60,
        }]
    );
    let info = match call(
        &client,
        Request::DisarmWatchdog(DisarmWatchdog {
            app: "shop".into(),
            deployment: d2.clone(),
            reason: "test done".into(),
        }),
    ) {
        Ok(Response::Watchdog(i)) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.state, WatchdogState::Disarmed);
    assert_eq!(info.reason.as_deref(), Some("disarmed by alice: test done"));
    // Nothing armed: no timer runs (100 ticks = one core-second).
    let before = h.agent.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let ticks = h.agent.cpu_ticks() - before;
    assert!(ticks <= 5, "{ticks} ticks in 3 s once the watchdog ended");
}

/// Writes plan `NAME.toml` for `version` with `extra` (a `[watchdog]`, a
/// `[deploy]`) and runs `golivectl deploy`; the result event.
fn deploy_plan(w: &World, agent: &AgentProc, version: &str, artifact: &Path, extra: &str) -> Value {
    let plan = w.path().join(format!("{version}.toml"));
    write_plan(
        &plan,
        &w.pki,
        &w.op,
        "shop",
        Some((version, artifact)),
        &[agent],
    );
    let mut text = std::fs::read_to_string(&plan).unwrap();
    text.push_str(extra);
    std::fs::write(&plan, text).unwrap();
    let run = w.ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(run.code, 0, "deploy {version}: {}", run.text());
    run.json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result event:\n{}", run.text()))
}

/// `golivectl --output json show ID`: the record.
fn record(w: &World, id: &str) -> Value {
    let run = w.ctl.run(&["--output", "json", "show", id]);
    assert_eq!(run.code, 0, "show {id}: {}", run.text());
    run.json_lines()
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no record:\n{}", run.text()))
}

#[test]
fn issue13_the_deploy_arms_each_host_then_the_host_alone_or_go_or_no_go_ends_it() {
    let w = World::new();
    let ip = "127.0.0.248";
    let root = w.path().join("web1/srv/shop");
    let db = w.path().join("web1/shop.db");
    let app = FlakyApp::start(&root, ip, None);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "{}[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", app.port))
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let client = w.client(&agent);
    let watch = "\n[watchdog]\nwindow = \"60s\"\ninterval = \"500ms\"\n\
                 [[watchdog.triggers]]\nprobe = \"health\"\nfailing = true\nfor = \"2s\"\n";
    let expand: (&str, &[u8]) = (
        "migrations/0001_orders.up.sql",
        b"-- golive: expand\nCREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT);",
    );
    let columns = || -> Vec<String> {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c
            .prepare("SELECT name FROM pragma_table_info('orders')")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };

    // A first install has nothing to go back to: not watched, said so.
    let r = deploy_plan(
        &w,
        &agent,
        "v1",
        &release(w.path(), "v1", "ok", &[expand]),
        watch,
    );
    assert_eq!(r["state"], "succeeded", "{r}");
    let d1 = r["deployment"].as_str().unwrap();
    let steps = record(&w, d1)["steps"].clone();
    assert!(
        steps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "watchdog-arm"
                && s["state"] == "skipped"
                && s["detail"].as_str().unwrap().contains("first install")),
        "{steps:#}"
    );

    // v2 passes its gate, is armed, and starts failing 4 s later: the host
    // rolls itself back with no golivectl running; `show` then records it.
    let r = deploy_plan(
        &w,
        &agent,
        "v2",
        &release(w.path(), "v2", "fail-after 4", &[expand]),
        watch,
    );
    assert_eq!(r["state"], "watching", "{r}");
    let d2 = r["deployment"].as_str().unwrap().to_string();
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("watched on web1 for 1 min"), "{message}");
    let info = ended(&client, 40);
    assert_eq!(info.deployment, d2);
    assert_eq!(info.state, WatchdogState::RolledBack, "{info:#?}");
    assert_eq!(current(&root), "releases/v1");
    let rec = record(&w, &d2);
    assert_eq!(rec["state"], "rolled_back", "{rec:#}");
    let actions = rec["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "recorded once: {actions:#?}");
    assert_eq!(actions[0]["by"], "watchdog on web1");
    assert!(
        actions[0]["detail"]
            .as_str()
            .unwrap()
            .contains("rolled back from v2 to v1: trigger health-failing held"),
        "{actions:#?}"
    );
    // Asked again, nothing is recorded twice.
    assert_eq!(record(&w, &d2)["actions"].as_array().unwrap().len(), 1);
    // The JSON form carries the watchdog as the markdown does.
    let json = w.ctl.run(&["--output", "json", "show", &d2]);
    let watchdogs = json
        .json_lines()
        .into_iter()
        .find(|v| v["watchdogs"].is_array())
        .unwrap_or_else(|| panic!("no watchdogs line: {}", json.text()));
    assert_eq!(watchdogs["watchdogs"][0]["watchdog"]["state"], "RolledBack");

    // v3 drops a column (contract): it waits for the commit, which a go
    // brings now (the dead-man of 30 s would roll it back otherwise).
    let contract: (&str, &[u8]) = (
        "migrations/0002_drop_note.up.sql",
        b"-- golive: contract\nALTER TABLE orders DROP COLUMN note;",
    );
    let r = deploy_plan(
        &w,
        &agent,
        "v3",
        &release(w.path(), "v3", "ok", &[expand, contract]),
        &watch.replace(
            "[[watchdog.triggers]]",
            "confirm_within = \"30s\"\n[[watchdog.triggers]]",
        ),
    );
    assert_eq!(r["state"], "watching", "{r}");
    let d3 = r["deployment"].as_str().unwrap().to_string();
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains(&format!("`golivectl go {d3}` came within 30 s")),
        "{r}"
    );
    assert_eq!(columns(), ["id", "note"], "the contract migration waits");
    let go = w
        .ctl
        .run(&["go", &d3, "--by", "bob", "--note", "numbers look right"]);
    assert_eq!(go.code, 0, "{}", go.text());
    assert!(go.stdout.contains("web1: committed"), "{}", go.text());
    assert_eq!(columns(), ["id"], "committed: the contract migration ran");
    let backups: i64 = agent
        .journal()
        .query_row(
            "SELECT COUNT(*) FROM backups WHERE label = 'pre-contract' AND state = 'complete' \
             AND deployment = ?1",
            [&d3],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        backups, 1,
        "a verified backup before the contract migration"
    );
    let rec = record(&w, &d3);
    assert_eq!(rec["state"], "succeeded", "{rec:#}");
    assert!(
        rec["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["decision"] == "go" && d["by"] == "bob"),
        "{rec:#}"
    );
    assert!(
        rec["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "commit"),
        "{rec:#}"
    );
    let status = w.ctl.run(&["status", s(&w.path().join("v3.toml"))]);
    assert!(
        status.stdout.contains(&format!(
            "watchdog of deployment {d3} (release v3): COMMITTED"
        )),
        "{}",
        status.text()
    );

    // v4 is watched; a no-go rolls it back through the host's one job.
    let r = deploy_plan(
        &w,
        &agent,
        "v4",
        &release(w.path(), "v4", "ok", &[expand, contract]),
        watch,
    );
    assert_eq!(r["state"], "watching", "{r}");
    let d4 = r["deployment"].as_str().unwrap().to_string();
    let no = w
        .ctl
        .run(&["no-go", &d4, "--by", "bob", "--reason", "orders look wrong"]);
    assert_eq!(no.code, 0, "{}", no.text());
    assert_eq!(current(&root), "releases/v3");
    assert_eq!(record(&w, &d4)["state"], "rolled_back");
    let info = ended(&client, 20);
    assert_eq!(info.deployment, d4);
    assert_eq!(info.state, WatchdogState::Disarmed, "{info:#?}");
    // A decision on a deployment nobody watches any more is refused.
    let again = w.ctl.run(&["go", &d4, "--by", "bob"]);
    assert_eq!(again.code, 2, "{}", again.text());

    // A host that cannot arm the plan's watchdog (a trigger on a probe it
    // does not declare) does not keep the release live unwatched.
    let plan = w.path().join("v5.toml");
    write_plan(
        &plan,
        &w.pki,
        &w.op,
        "shop",
        Some(("v5", &release(w.path(), "v5", "ok", &[expand, contract]))),
        &[&agent],
    );
    let mut text = std::fs::read_to_string(&plan).unwrap();
    text.push_str(&watch.replace("probe = \"health\"", "probe = \"traffic\""));
    std::fs::write(&plan, text).unwrap();
    let run = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(
        run.stdout
            .contains("the watchdog could not be armed on web1"),
        "{}",
        run.text()
    );
    assert_eq!(current(&root), "releases/v3");
    drop(app);
}

#[test]
fn issue13_a_deploy_still_running_when_a_host_rolled_itself_back_exits_3() {
    let w = World::new();
    let ip = "127.0.0.249";
    let mut hosts = Vec::new();
    for (name, hook) in [("web1", ""), ("web2", "slow")] {
        let root = w.path().join(format!("{name}/srv/shop"));
        let app = FlakyApp::start(&root, ip, None);
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = app_toml("shop", &root, &format!("http://{ip}:{}/health", app.port));
        if hook == "slow" {
            // web2's switch to v2 takes 5 s: web1's watchdog fires meanwhile.
            spec.apps_toml.push_str(
                "[[apps.shop.hooks.before_activate]]\n\
                 cmd = [\"sh\", \"-c\", \"if [ \\\"$GOLIVE_RELEASE\\\" = v2 ]; then sleep 5; fi\"]\n\n",
            );
        }
        let agent = AgentProc::start(w.path(), &w.pki, &spec);
        hosts.push((root, app, agent));
    }
    let agents: Vec<&AgentProc> = hosts.iter().map(|h| &h.2).collect();
    let plan = w.path().join("plan.toml");
    let deploy = |version: &str, health: &str, extra: &str| {
        let art = release(w.path(), version, health, &[]);
        write_plan(&plan, &w.pki, &w.op, "shop", Some((version, &art)), &agents);
        let mut text = std::fs::read_to_string(&plan).unwrap();
        text.push_str(extra);
        std::fs::write(&plan, text).unwrap();
        w.ctl.run(&["deploy", s(&plan)])
    };
    let run = deploy("v1", "ok", "");
    assert_eq!(run.code, 0, "{}", run.text());
    let run = deploy(
        "v2",
        "fail-after 1",
        "\n[watchdog]\nwindow = \"60s\"\ninterval = \"200ms\"\n\
         [[watchdog.triggers]]\nprobe = \"health\"\nfailing = true\nfor = \"1s\"\n",
    );
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(
        run.stdout.contains(
            "the watchdog on web1 fired while the deployment went on: trigger health-failing held"
        ),
        "{}",
        run.text()
    );
    for (root, _, _) in &hosts {
        assert_eq!(current(root), "releases/v1");
    }
    // web1's rollback is the one job its watchdog started, not a second.
    let rollbacks: i64 = hosts[0]
        .2
        .journal()
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'host.rollback'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rollbacks, 1);
}

#[test]
fn issue15_the_plans_webhooks_tell_the_deployment_never_hold_it_and_keep_their_url() {
    let w = World::new();
    let ip = "127.0.0.249";
    let good = Hook::start_hanging(ip, 0);
    let hanging = Hook::start_hanging(ip, usize::MAX);
    let h = host(&w, ip, "");
    let notify = format!(
        "\n[window]\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
         hours = \"00:00-24:00\"\ntimezone = \"Europe/Madrid\"\n\
         [[notify]]\nwebhook = \"http://{ip}:{}/services/T0/SECRET-GOOD\"\n\
         record_url = \"https://ops.example/golive/{{id}}.html\"\n\
         [[notify]]\nwebhook = \"http://{ip}:{}/services/T0/SECRET-HANG\"\nformat = \"json\"\n\
         timeout_secs = 1\nattempts = 2\n",
        good.port, hanging.port
    );
    let started = Instant::now();
    let r = deploy_plan(
        &w,
        &h.agent,
        "v1",
        &release(w.path(), "v1", "ok", &[]),
        &notify,
    );
    // The hanging receiver's bound is 1 s x 2 + 1 s a notice; it holds its
    // connections for a minute.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let d1 = r["deployment"].as_str().unwrap().to_string();
    let plan = w.path().join("v1.toml");
    let refused = w.ctl.run(&["rollback", &d1]);
    // A first install has nothing to go back to: refused, nothing changed,
    // nothing told.
    assert_eq!(refused.code, 2, "{}", refused.text());
    let r2 = deploy_plan(
        &w,
        &h.agent,
        "v2",
        &release(w.path(), "v2", "ok", &[]),
        &notify,
    );
    let d2 = r2["deployment"].as_str().unwrap().to_string();
    let rollback = w.ctl.run(&["rollback", &d2]);
    assert_eq!(rollback.code, 0, "{}", rollback.text());

    let bodies = good.posts();
    let events: Vec<(String, String)> = bodies
        .iter()
        .map(|(_, b)| {
            (
                b["deployment"].as_str().unwrap_or_default().to_string(),
                b["event"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        (d1.clone(), "started"),
        (d1.clone(), "completed"),
        (d2.clone(), "started"),
        (d2.clone(), "completed"),
        (d2.clone(), "rolled_back"),
    ] {
        assert!(
            events.iter().any(|(d, e)| d == &want.0 && e == want.1),
            "no {want:?} in {events:?}"
        );
    }
    let (path, done) = bodies
        .iter()
        .find(|(_, b)| b["deployment"] == d2.as_str() && b["event"] == "completed")
        .unwrap();
    assert_eq!(path, "/services/T0/SECRET-GOOD");
    let text = done["text"].as_str().unwrap();
    assert!(
        text.starts_with("[GO-LIVE] Deploy COMPLETED — shop v2\nTime: "),
        "{text}"
    );
    assert!(
        text.contains(" CET\n") || text.contains(" CEST\n"),
        "the plan's zone: {text}"
    );
    assert!(text.contains("Operator: alice"), "{text}");
    assert!(text.contains("Downtime: "), "{text}");
    assert!(
        text.contains(&format!("Record: https://ops.example/golive/{d2}.html")),
        "{text}"
    );
    assert_eq!(done["release"], "v2");
    assert_eq!(done["hosts"][0], "web1");

    // The hanging receiver is recorded as such; no URL anywhere.
    let show = w.ctl.run(&["show", &d2]);
    assert!(
        show.stdout.contains("webhook http://127.0.0.249:")
            && show.stdout.contains("/*** (completed): not delivered"),
        "{}",
        show.text()
    );
    let plan_text = std::fs::read_to_string(&plan).unwrap();
    assert!(plan_text.contains("SECRET-GOOD"));
    assert!(
        !events
            .iter()
            .any(|(d, e)| d == &d1 && e != "started" && e != "completed"),
        "{events:?}"
    );
    for run in [&show, &rollback, &refused] {
        for secret in ["SECRET-GOOD", "SECRET-HANG"] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{}",
                run.text()
            );
        }
    }
    let json = w.ctl.run(&["--output", "json", "show", &d2]);
    assert!(!json.stdout.contains("SECRET"), "{}", json.text());
}
