//! Issue 16, part 5: the agent's Prometheus metrics on its mutual-TLS port,
//! scraped with curl and a viewer certificate and read with a Prometheus
//! text-format parser. Loopback 127.0.0.221 belongs to this module.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use golive_tests::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

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
    assert!(value(&page, "golive_refused_connections_total", &[]).is_some());
    // The refused anonymous handshake counts (the agent records it as it
    // happens; a second scrape sees it).
    let again = scrape(&pki, Some(&viewer), &agent);
    let page =
        prometheus_parse::Scrape::parse(again.stdout.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(
        value(&page, "golive_refused_connections_total", &[]).unwrap() >= 1.0,
        "{}",
        again.stdout
    );
}
