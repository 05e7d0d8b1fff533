//! Issue 16, part 5: the agent's Prometheus metrics on its mutual-TLS port,
//! scraped with curl and a viewer certificate and read with a Prometheus
//! text-format parser; per-probe metrics and the plain loopback port.
//! Loopback 127.0.0.221-222 belong to this module.

use std::process::Command;
use std::time::Duration;

use golive_tests::*;

fn scrape(
    pki: &TestPki,
    cert: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    agent: &AgentProc,
) -> Run {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert"])
        .arg(pki.ca());
    if let Some((crt, key)) = cert {
        c.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    c.arg(format!("https://{}/metrics", agent.addr));
    run_bounded(c, Duration::from_secs(20))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn issue16_the_agent_serves_prometheus_metrics_to_a_viewer_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let viewer = pki.operator("grafana", "viewer");
    let root = dir.path().join("srv/shop");
    std::fs::create_dir_all(root.join("shared/uploads")).unwrap();
    std::fs::write(root.join("shared/uploads/a.jpg"), vec![7u8; 4096]).unwrap();
    let mut spec = AgentSpec::new("web1", "127.0.0.221");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n[[apps.shop.files]]\nname = \"uploads\"\npaths = [\"shared/uploads\"]\n"
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let plan = dir.path().join("plan.toml");
    write_plan(&plan, &pki, &op, "shop", None, &[&agent]);
    let ctl = Ctl::new(dir.path());
    let backup = ctl.run(&["backup", "create", s(&plan), "--verify"]);
    assert_eq!(backup.code, 0, "{}", backup.text());

    // Without a client certificate: no TLS session, no metrics.
    let anonymous = scrape(&pki, None, &agent);
    assert_ne!(anonymous.code, 0, "{}", anonymous.text());

    let run = scrape(&pki, Some(&viewer), &agent);
    assert_eq!(run.code, 0, "{}", run.text());
    let lines = run.stdout.lines().map(|l| Ok(l.to_string()));
    let page = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
    assert_eq!(
        value(&page, "golive_agent_info", &[("name", "web1")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &page,
            "golive_jobs",
            &[("kind", "backup"), ("state", "succeeded")]
        ),
        Some(1.0),
        "{}",
        run.stdout
    );
    assert_eq!(
        value(&page, "golive_backups", &[("app", "shop")]),
        Some(1.0)
    );
    // Compressed: 4 KiB of one byte value is far smaller on disk.
    assert!(value(&page, "golive_backup_bytes", &[("app", "shop")]).unwrap() > 0.0);
    assert!(
        value(
            &page,
            "golive_job_duration_seconds_count",
            &[("kind", "backup")]
        )
        .unwrap()
            >= 1.0
    );
    for reason in ["limit", "handshake", "handshake_timeout", "certificate"] {
        assert!(
            value(
                &page,
                "golive_refused_connections_total",
                &[("reason", reason)]
            )
            .is_some(),
            "{reason}"
        );
    }
    // The refused anonymous handshake counts (the agent records it as it
    // happens; a second scrape sees it).
    let again = scrape(&pki, Some(&viewer), &agent);
    let page =
        prometheus_parse::Scrape::parse(again.stdout.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(
        value(
            &page,
            "golive_refused_connections_total",
            &[("reason", "handshake")]
        )
        .unwrap()
            >= 1.0,
        "{}",
        again.stdout
    );
    assert_eq!(
        value(
            &page,
            "golive_refused_connections_total",
            &[("reason", "limit")]
        ),
        Some(0.0),
        "{}",
        again.stdout
    );
}

/// `curl` of the plain port: (HTTP status, body).
fn plain(args: &[&str], url: &str) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url);
    let run = run_bounded(c, Duration::from_secs(20));
    assert_eq!(run.code, 0, "{}", run.text());
    let (body, code) = run.stdout.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("HTTP status"), body.to_string())
}

#[test]
fn issue16_per_probe_metrics_on_the_plain_loopback_port() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let ip = "127.0.0.222";
    let root = dir.path().join("srv/shop");
    std::fs::create_dir_all(root.join("current")).unwrap();
    std::fs::write(root.join("current/health"), "ok\n").unwrap();
    let http = HttpApp::serve(&root.join("current"), ip);
    let closed = free_port(ip);
    let metrics_port = free_port(ip);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n\
         [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
         url = \"http://{ip}:{port}/health\"\nexpect_status = [200]\nseverity = \"critical\"\n\n\
         [[apps.shop.probes]]\nkind = \"tcp\"\nname = \"queue\"\naddress = \"{ip}:{closed}\"\n\
         severity = \"low\"\ntimeout_ms = 2000\n\n\
         [metrics]\nlisten = \"{ip}:{metrics_port}\"\n",
        port = http.port
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let url = format!("http://{ip}:{metrics_port}/metrics");

    // Before any probe ran: no probe series, and the page parses.
    let (code, body) = plain(&[], &url);
    assert_eq!(code, 200, "{body}");
    let page = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        value(&page, "golive_agent_info", &[("name", "web1")]),
        Some(1.0)
    );
    assert_eq!(
        value(&page, "golive_probe_success", &[("probe", "health")]),
        None
    );

    // A controller's probe round: one pass, one failure.
    let plan = dir.path().join("plan.toml");
    write_plan(&plan, &pki, &op, "shop", None, &[&agent]);
    let probe = Ctl::new(dir.path()).run(&["probe", s(&plan)]);
    assert!(probe.stdout.contains("health"), "{}", probe.text());

    let (code, body) = plain(&[], &url);
    assert_eq!(code, 200, "{body}");
    let page = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text format");
    let health = [("app", "shop"), ("probe", "health")];
    let queue = [("app", "shop"), ("probe", "queue")];
    assert_eq!(
        value(&page, "golive_probe_success", &health),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&page, "golive_probe_success", &queue),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        value(
            &page,
            "golive_probe_status",
            &[
                ("probe", "health"),
                ("status", "pass"),
                ("kind", "http"),
                ("severity", "critical")
            ]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &page,
            "golive_probe_status",
            &[("probe", "health"), ("status", "fail")]
        ),
        Some(0.0)
    );
    let latency = value(&page, "golive_probe_duration_seconds", &health).unwrap();
    assert!(latency > 0.0 && latency < 10.0, "{latency}");
    assert_eq!(
        value(
            &page,
            "golive_probe_runs_total",
            &[("probe", "health"), ("status", "pass")]
        ),
        Some(1.0)
    );
    let queue_failed = value(
        &page,
        "golive_probe_runs_total",
        &[("probe", "queue"), ("status", "fail")],
    )
    .unwrap()
        + value(
            &page,
            "golive_probe_runs_total",
            &[("probe", "queue"), ("status", "error")],
        )
        .unwrap();
    assert_eq!(queue_failed, 1.0, "{body}");
    assert!(value(&page, "golive_probe_last_run_time_seconds", &health).unwrap() > 1.0e9);

    // The same page over mutual TLS.
    let viewer = pki.operator("grafana", "viewer");
    let tls = scrape(&pki, Some(&viewer), &agent);
    let tls_page =
        prometheus_parse::Scrape::parse(tls.stdout.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(value(&tls_page, "golive_probe_success", &health), Some(1.0));

    // GET /metrics and nothing else.
    let (code, body) = plain(&["-X", "POST", "-d", "x"], &url);
    assert_eq!(code, 405, "{body}");
    let (code, body) = plain(&["-X", "DELETE"], &url);
    assert_eq!(code, 405, "{body}");
    let (code, body) = plain(&[], &format!("http://{ip}:{metrics_port}/v1/rpc"));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("only GET /metrics"), "{body}");
    let audited: i64 = agent
        .journal()
        .query_row(
            "SELECT count(*) FROM audit WHERE operation LIKE '%metrics%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 0);
}

#[test]
fn issue16_a_plain_metrics_port_off_loopback_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let (cert, key) = pki.agent("web9", &["127.0.0.222"]);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"web9\"\nlisten = \"127.0.0.222:0\"\nstate_dir = {state:?}\n\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n\
             [metrics]\nlisten = \"0.0.0.0:9102\"\n",
            state = dir.path().join("state"),
            ca = pki.ca(),
        ),
    )
    .unwrap();
    for sub in ["check-config", "serve"] {
        let mut c = Command::new(bin("golive-agent"));
        c.args([sub, "--config", s(&config)]);
        let run = run_bounded(c, Duration::from_secs(20));
        assert_eq!(run.code, 2, "{sub}: {}", run.text());
        assert!(
            run.stderr.contains("metrics.listen")
                && run.stderr.contains("loopback")
                && run.stderr.contains("127.0.0.1:9102"),
            "{sub}: {}",
            run.text()
        );
    }
    // Refused before anything was made.
    assert!(!dir.path().join("state").exists());
}
