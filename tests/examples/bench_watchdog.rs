//! The watchdog's benchmark (issue 13), run by `scripts/bench-watchdog`: a
//! real `golive-agent` (release build) over real mTLS, the test app whose
//! release starts answering 500 a few seconds after it goes live, and:
//!
//! - per run: the time from the moment the app starts failing to the
//!   moment the old release answers 200 again (a code-only rollback by the
//!   watchdog, trigger `failing` for `FOR_SECS` sampled every
//!   `INTERVAL_MS`), and how much of it is the rollback after the fire;
//! - the armed agent's CPU per minute and its RSS, at the default interval
//!   (10 s) and at the benchmark's short one, and idle once disarmed.
//!
//! Prints `key=value` lines.

use std::path::Path;
use std::time::{Duration, Instant};

use golive_shared::protocol::*;
use golive_tests::*;
use golivectl::client::AgentClient;

const FOR_SECS: u64 = 3;
const INTERVAL_MS: u64 = 250;
const IP: &str = "127.0.0.1";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
        .expect("answered within 30 s")
}

fn call(client: &AgentClient, req: Request) -> Response {
    block_on(client.call(&req)).unwrap_or_else(|e| panic!("{e}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

struct Bench {
    dir: tempfile::TempDir,
    pki: TestPki,
    op: (std::path::PathBuf, std::path::PathBuf),
    ctl: Ctl,
}

impl Bench {
    fn deploy(&self, agent: &AgentProc, id: &str, health: &str) -> String {
        let art = self.dir.path().join(format!("dist/{id}.tar.gz"));
        let index = format!("shop {id}\n");
        artifact(
            &art,
            &[
                ("index.html", index.as_bytes()),
                ("health", health.as_bytes()),
            ],
        );
        let plan = self.dir.path().join(format!("{id}.toml"));
        write_plan(
            &plan,
            &self.pki,
            &self.op,
            "shop",
            Some((id, &art)),
            &[agent],
        );
        let run = self
            .ctl
            .run(&["--output", "json", "deploy", plan.to_str().expect("utf-8")]);
        assert_eq!(run.code, 0, "deploy {id}: {}", run.text());
        run.json_lines()
            .into_iter()
            .find(|v| v["event"] == "result")
            .and_then(|v| v["deployment"].as_str().map(str::to_string))
            .expect("deployment id")
    }
}

fn spec(interval_ms: u64, for_secs: u64) -> WatchdogSpec {
    WatchdogSpec {
        window_secs: 3600,
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
        Response::Watchdog(i) => i,
        other => panic!("{other:?}"),
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
        Response::WatchdogStatus(Some(i)) => i,
        other => panic!("{other:?}"),
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read status")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a kB figure")
}

fn ticks_over(agent: &AgentProc, secs: u64) -> u64 {
    let before = agent.cpu_ticks();
    std::thread::sleep(Duration::from_secs(secs));
    agent.cpu_ticks() - before
}

fn fail_since(root: &Path) -> i64 {
    let path = root.join("fail-since");
    let at = std::fs::read_to_string(&path)
        .expect("the app wrote when it started failing")
        .trim()
        .parse()
        .expect("unix ms");
    std::fs::remove_file(&path).expect("remove fail-since");
    at
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let op = pki.operator("bench", "operator");
    let ctl = Ctl::new(dir.path());
    let b = Bench { dir, pki, op, ctl };
    let root = b.dir.path().join("srv/shop");
    let app = FlakyApp::start(&root, IP, None);
    let mut spec_agent = AgentSpec::new("bench", IP);
    spec_agent.apps_toml = app_toml("shop", &root, &format!("http://{IP}:{}/health", app.port));
    let agent = AgentProc::start(b.dir.path(), &b.pki, &spec_agent);
    let pid = agent.pid().expect("agent pid");
    let tls = golivectl::tls::client_config(&b.pki.ca(), &b.op.0, &b.op.1).expect("client TLS");
    let client =
        AgentClient::new("bench", &agent.addr.to_string(), None, tls).expect("agent client");
    b.deploy(&agent, "good1", "ok");
    std::thread::sleep(Duration::from_secs(1));
    println!("rss_idle_kib={}", status_kib(pid, "VmRSS"));
    println!("for_secs={FOR_SECS}");
    println!("interval_ms={INTERVAL_MS}");
    println!("runs={runs}");

    let mut lags = Vec::new();
    let mut after_fire = Vec::new();
    for i in 1..=runs {
        let id = format!("bad{i}");
        let d = b.deploy(&agent, &id, "fail-after 2");
        arm(&client, &d, spec(INTERVAL_MS, FOR_SECS));
        let started = Instant::now();
        let back = loop {
            if http_get(IP, app.port, "/")
                .is_some_and(|(s, body)| s == 200 && body == "shop good1\n")
            {
                break now_ms();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "run {i}: the old release did not come back within 60 s:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let failed = fail_since(&root);
        let info = watchdog(&client);
        let fired = info.fired_at.expect("it fired");
        lags.push(back - failed);
        after_fire.push(back - fired);
        println!(
            "run_{i}=failing at +0 ms, fired at +{} ms, old release answering at +{} ms",
            fired - failed,
            back - failed
        );
        // Let the rollback job finish its bookkeeping before the next deploy.
        let started = Instant::now();
        while !watchdog(&client).state.is_final() {
            assert!(started.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let stats = |v: &mut Vec<i64>| {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (min, median, max) = stats(&mut lags);
    println!("lag_min_ms={min}");
    println!("lag_median_ms={median}");
    println!("lag_max_ms={max}");
    let (min, median, max) = stats(&mut after_fire);
    println!("after_fire_min_ms={min}");
    println!("after_fire_median_ms={median}");
    println!("after_fire_max_ms={max}");

    // An armed agent on a healthy release: one minute at the default
    // interval, half a minute at the short one.
    let d = b.deploy(&agent, "good2", "ok");
    arm(&client, &d, spec(DEFAULT_INTERVAL_MS, 60));
    std::thread::sleep(Duration::from_secs(2));
    println!("cpu_ticks_armed_default_60s={}", ticks_over(&agent, 60));
    println!("rss_armed_default_kib={}", status_kib(pid, "VmRSS"));
    let d3 = b.deploy(&agent, "good3", "ok");
    arm(&client, &d3, spec(INTERVAL_MS, 60));
    std::thread::sleep(Duration::from_secs(2));
    println!("cpu_ticks_armed_short_30s={}", ticks_over(&agent, 30));
    println!("rss_armed_short_kib={}", status_kib(pid, "VmRSS"));
    call(
        &client,
        Request::DisarmWatchdog(DisarmWatchdog {
            app: "shop".into(),
            deployment: d3,
            reason: "benchmark done".into(),
        }),
    );
    std::thread::sleep(Duration::from_secs(1));
    println!("cpu_ticks_disarmed_10s={}", ticks_over(&agent, 10));
    println!("rss_hwm_kib={}", status_kib(pid, "VmHWM"));
    drop(agent);
    drop(app);
}
