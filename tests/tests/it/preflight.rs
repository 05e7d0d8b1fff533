//! Issue 5 parts 2-3: `golivectl probe` (matrix, tags, go/no-go),
//! `golivectl preflight` (agent checks, probes, window, artifact scan) and the
//! deployment window of `golivectl deploy` (`--hotfix --reason`). Real
//! `golivectl` and `golive-agent` processes over mTLS, real HTTP servers,
//! real SQLite files, a real PostgreSQL and MariaDB; journals read back.
//!
//! Windows are chosen relative to the real clock (an hour around now is
//! open, two hours ahead is closed), so no clock is faked.
//!
//! Each test owns a temp dir and loopback addresses in 127.0.0.180-189.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use golive_shared::protocol::{LockRequest, LockResponse, Request, Response};
use golive_tests::db::{TestMariadb, TestPostgres};
use golive_tests::*;
use golivectl::client::AgentClient;
use serde_json::Value;

// A temp dir, a CA, an operator (deploys) and a viewer (probes, preflight).
world!(viewer: (PathBuf, PathBuf));

impl World {
    fn new() -> World {
        let common = Base::new();
        let viewer = common.pki.operator("vera", "viewer");
        World {
            base: common,
            viewer,
        }
    }

    /// A plan for `agents` (as `who`), with extra TOML appended.
    fn plan(
        &self,
        file: &str,
        who: &(PathBuf, PathBuf),
        release: Option<(&str, &Path)>,
        agents: &[&AgentProc],
        extra: &str,
    ) -> PathBuf {
        let path = self.path().join(file);
        write_plan(&path, &self.pki, who, "shop", release, agents);
        let mut text = std::fs::read_to_string(&path).expect("plan");
        text.push_str(extra);
        std::fs::write(&path, text).expect("plan");
        path
    }
}

/// A directory served by a real HTTP server: `health` says ok.
fn site(dir: &Path, ip: &str) -> HttpApp {
    let site = dir.join("site");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("health"), "ok\n").expect("health");
    HttpApp::serve(&site, ip)
}

fn http_probe(name: &str, url: &str, severity: &str, tags: &[&str]) -> String {
    format!(
        "[[apps.shop.probes]]\nkind = \"http\"\nname = {name:?}\nurl = {url:?}\n\
         expect_status = [200]\nseverity = {severity:?}\ntimeout_ms = 3000\ntags = {tags:?}\n\n"
    )
}

/// `HH:MM` in UTC, `offset_min` minutes from now.
fn utc_hhmm(offset_min: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let m = (now / 60 + offset_min).rem_euclid(1440);
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn open_window() -> String {
    format!(
        "[window]\nhours = \"{}-{}\"\ntimezone = \"UTC\"\n\n",
        utc_hhmm(-60),
        utc_hhmm(60)
    )
}

fn closed_window() -> String {
    format!(
        "[window]\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
         hours = \"{}-{}\"\ntimezone = \"UTC\"\n\n",
        utc_hhmm(120),
        utc_hhmm(180)
    )
}

const FORBIDDEN: &str = "[preflight]\nforbidden = [\"dd(\", \"var_dump(\", \"console.log(\"]\n\n";

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn last_json(run: &Run) -> Value {
    run.json_lines()
        .pop()
        .unwrap_or_else(|| panic!("no JSON: {}", run.text()))
}

#[test]
fn probe_matrix_tags_json_and_an_unreachable_host() {
    let w = World::new();
    let http = site(w.path(), "127.0.0.180");
    let base = format!("http://127.0.0.180:{}", http.port);
    let mut agents = Vec::new();
    for (name, ip) in [("web1", "127.0.0.180"), ("web2", "127.0.0.181")] {
        live_release(&w.path().join(name).join("srv/shop"), "r0");
        let mut spec = AgentSpec::new(name, ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {:?}\n\n{}{}",
            w.path().join(name).join("srv/shop"),
            http_probe("health", &format!("{base}/health"), "critical", &["smoke"]),
            http_probe(
                "agro",
                &format!("{base}/registro/agroconecta"),
                "medium",
                &["vertical:agroconecta"]
            ),
        );
        agents.push(AgentProc::start(w.path(), &w.pki, &spec));
    }
    let plan = w.plan("probe.toml", &w.viewer, None, &[&agents[0], &agents[1]], "");

    let run = w.ctl.run(&["probe", s(&plan)]);
    assert_eq!(run.code, 0, "medium failures are warnings: {}", run.text());
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .find(|l| l.starts_with("host"))
        .unwrap_or_else(|| panic!("{}", run.text()));
    assert!(
        header.contains("health (critical)") && header.contains("agro (medium)"),
        "{}",
        run.text()
    );
    for host in ["web1", "web2"] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no row for {host}: {}", run.text()));
        assert!(
            row.contains("pass status 200") && row.contains("FAIL status 404"),
            "{row}"
        );
        assert!(!row.contains('\x1b'), "no colors when piped: {row:?}");
    }
    assert!(
        run.stdout.contains("verdict: GO with 2 warning(s)")
            && run.stdout.contains("warning: web1 agro (medium, fail)"),
        "{}",
        run.text()
    );

    // On a terminal (a pty from util-linux `script`), cells are colored.
    let mut tty = std::process::Command::new("script");
    let line = format!(
        "{} --state {} probe {}",
        bin("golivectl").display(),
        w.ctl.state.display(),
        plan.display()
    );
    tty.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("NO_COLOR");
    let colored = run_bounded(tty, std::time::Duration::from_secs(60));
    assert_eq!(colored.code, 0, "{}", colored.text());
    assert!(
        colored.stdout.contains("\x1b[32mpass status 200")
            && colored.stdout.contains("\x1b[33mFAIL status 404"),
        "{}",
        colored.text()
    );

    // Tags select suites.
    let smoke = w.ctl.run(&["probe", s(&plan), "--tag", "smoke"]);
    assert_eq!(smoke.code, 0, "{}", smoke.text());
    assert!(
        smoke.stdout.contains("verdict: GO\n") && !smoke.stdout.contains("agro"),
        "{}",
        smoke.text()
    );
    let agro = w
        .ctl
        .run(&["probe", s(&plan), "--tag", "vertical:agroconecta"]);
    assert_eq!(agro.code, 0, "{}", agro.text());
    assert!(
        agro.stdout.contains("agro (medium)") && !agro.stdout.contains("health"),
        "{}",
        agro.text()
    );
    let unknown = w.ctl.run(&[
        "probe",
        s(&plan),
        "--tag",
        "smoke",
        "--tag",
        "vertical:nope",
    ]);
    assert_eq!(unknown.code, 2, "{}", unknown.text());
    assert!(
        unknown.stderr.contains("carries the tag(s) vertical:nope")
            && unknown
                .stderr
                .contains("tags that exist: smoke, vertical:agroconecta"),
        "{}",
        unknown.text()
    );

    // JSON: every result with its value, threshold, duration, severity, tags.
    let json = w.ctl.run(&["--output", "json", "probe", s(&plan)]);
    assert_eq!(json.code, 0, "{}", json.text());
    let v = last_json(&json);
    assert_eq!(v["verdict"], "go", "{v}");
    assert_eq!(v["exit"], 0, "{v}");
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 2, "{v}");
    let health = &hosts[0]["results"][0];
    assert_eq!(health["name"], "health", "{v}");
    assert_eq!(health["kind"], "http");
    assert_eq!(health["severity"], "critical");
    assert_eq!(health["tags"], serde_json::json!(["smoke"]));
    assert_eq!(health["status"], "pass");
    assert!(
        health["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("status 200, ")),
        "{v}"
    );
    assert!(
        health["threshold"]
            .as_str()
            .is_some_and(|t| t.contains("status in [200]")),
        "{v}"
    );
    assert!(health["duration_ms"].is_u64(), "{v}");
    assert!(
        health["message"]
            .as_str()
            .is_some_and(|m| m.contains("/health"))
    );
    assert_eq!(hosts[1]["results"][1]["status"], "fail", "{v}");
    assert_eq!(
        v["reasons"]["warnings"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );

    // A host that cannot be reached is a row naming it, and NO-GO.
    let port = free_port("127.0.0.189");
    let with_dead = w.plan("dead.toml", &w.viewer, None, &[&agents[0], &agents[1]], "");
    let mut text = std::fs::read_to_string(&with_dead).expect("plan");
    text.push_str(&format!(
        "[[hosts]]\nname = \"web3\"\naddress = \"127.0.0.189:{port}\"\n\n"
    ));
    std::fs::write(&with_dead, text).expect("plan");
    let dead = w.ctl.run(&["probe", s(&with_dead)]);
    assert_eq!(dead.code, 1, "{}", dead.text());
    let row = dead
        .stdout
        .lines()
        .find(|l| l.starts_with("web3"))
        .unwrap_or_else(|| panic!("{}", dead.text()));
    assert!(
        row.contains(&format!("UNREACHABLE 127.0.0.189:{port}"))
            && row.contains("cannot reach agent web3"),
        "{row}"
    );
    assert!(
        dead.stdout.contains("verdict: NO-GO (1 blocking)"),
        "{}",
        dead.text()
    );
    let dead_json = last_json(&w.ctl.run(&["--output", "json", "probe", s(&with_dead)]));
    assert_eq!(dead_json["verdict"], "no-go", "{dead_json}");
    assert_eq!(dead_json["hosts"][2]["ok"], false, "{dead_json}");
    assert_eq!(dead_json["exit"], 1, "{dead_json}");
}

/// One host with app `shop` serving ROOT/current, a SQLite database and
/// the given extra app TOML.
struct Host {
    root: PathBuf,
    _http: HttpApp,
    agent: AgentProc,
}

fn shop_host(w: &World, name: &str, ip: &str, extra: &str) -> Host {
    let root = w.path().join(name).join("srv/shop");
    std::fs::create_dir_all(root.join("shared")).expect("shared dir");
    let db = root.join("shared/orders.db");
    rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.execute_batch(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY); INSERT INTO orders DEFAULT VALUES;",
            )
        })
        .expect("orders db");
    let http = HttpApp::serve(&root.join("current"), ip);
    let mut spec = AgentSpec::new(name, ip);
    spec.apps_toml = format!(
        "{}[[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"orders\"\npath = {db:?}\n\n{extra}",
        app_toml("shop", &root, &format!("http://{ip}:{}/health", http.port)),
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    Host {
        root,
        _http: http,
        agent,
    }
}

fn release(w: &World, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let path = w.path().join(format!("dist/{name}.tar.gz"));
    artifact(&path, files);
    path
}

#[test]
fn preflight_clean_is_ready_and_changes_nothing() {
    let w = World::new();
    let mut h = shop_host(
        &w,
        "web1",
        "127.0.0.182",
        "[apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\n",
    );
    let v1 = release(
        &w,
        "v1",
        &[("health", b"ok\n"), ("index.php", b"<?php echo 1;\n")],
    );
    let deploy_plan = w.plan("v1.toml", &w.op, Some(("v1", &v1)), &[&h.agent], "");
    let d = w.ctl.run(&["deploy", s(&deploy_plan)]);
    assert_eq!(d.code, 0, "{}", d.text());

    let v2 = release(
        &w,
        "v2",
        &[
            ("health", b"ok\n"),
            ("web/index.php", b"<?php\n$this->add($item);\necho 'v2';\n"),
            ("web/js/app.js", b"const x = 1;\n"),
            ("vendor/acme/debug.php", b"<?php dd($x);\n"),
        ],
    );
    let extra = format!(
        "[deploy]\nbackup = \"verified\"\n\n{}{FORBIDDEN}",
        open_window()
    );
    let plan = w.plan("v2.toml", &w.viewer, Some(("v2", &v2)), &[&h.agent], &extra);

    let j = h.agent.journal();
    let jobs_before = count(&j, "SELECT COUNT(*) FROM jobs");
    let audit_before = count(&j, "SELECT COALESCE(MAX(seq), 0) FROM audit");

    let run = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    for needle in [
        "web1 (127.0.0.182:",
        "pass   lock [critical]: app shop is not locked",
        "database orders [critical]: sqlite",
        "opens read-only",
        "backup space [critical]: the backup needs about",
        "maintenance flag [high]:",
        "health (critical)",
        "pass status 200",
        "open: every day",
        "2 file(s)",
        "clean",
        "verdict: READY",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?}:\n{}",
            run.text()
        );
    }

    let json = w.ctl.run(&["--output", "json", "preflight", s(&plan)]);
    assert_eq!(json.code, 0, "{}", json.text());
    let v = last_json(&json);
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["window"]["open"], true, "{v}");
    assert_eq!(v["scan"]["hits"], serde_json::json!([]), "{v}");
    assert_eq!(v["scan"]["files"], 2, "vendor/ is excluded: {v}");
    let checks = v["hosts"][0]["checks"].as_array().expect("checks");
    assert!(
        checks
            .iter()
            .all(|c| c["status"] == "pass" && c["message"].is_string()),
        "{v}"
    );
    assert_eq!(
        v["hosts"][0]["probes"]["results"][0]["status"], "pass",
        "{v}"
    );

    // Nothing changed: no job, no lock, no release v2, the controller
    // recorded nothing, and the agent audited reads only.
    assert_eq!(count(&j, "SELECT COUNT(*) FROM jobs"), jobs_before);
    assert_eq!(count(&j, "SELECT COUNT(*) FROM locks"), 0);
    assert_eq!(
        count(&j, "SELECT COUNT(*) FROM releases WHERE id = 'v2'"),
        0
    );
    assert!(!h.root.join("releases/v2").exists());
    assert!(!h.root.join("shared/maintenance.flag").exists());
    // Reads are audited in a batch (issue 14): all are written by the stop.
    drop(j);
    assert!(h.agent.stop(), "{}", h.agent.log_text());
    let j = h.agent.journal();
    let mut stmt = j
        .prepare("SELECT DISTINCT operation, peer_name FROM audit WHERE seq > ?1 ORDER BY 1")
        .expect("audit");
    let ops: Vec<(String, String)> = stmt
        .query_map([audit_before], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("audit rows")
        .collect::<Result<_, _>>()
        .expect("audit rows");
    let names: Vec<&str> = ops.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(names, ["preflight", "probe.run", "status"], "{ops:?}");
    assert!(ops.iter().all(|(_, who)| who == "vera"), "{ops:?}");
    let hist = last_json(&w.ctl.run(&["--output", "json", "history"]));
    assert_eq!(
        hist["deployments"].as_array().map(Vec::len),
        Some(1),
        "{hist}"
    );
}

#[test]
fn preflight_names_forbidden_text_in_the_artifact() {
    let w = World::new();
    let http = site(w.path(), "127.0.0.183");
    let mut spec = AgentSpec::new("web1", "127.0.0.183");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {:?}\n\n{}",
        w.path().join("web1/srv/shop"),
        http_probe(
            "health",
            &format!("http://127.0.0.183:{}/health", http.port),
            "critical",
            &[]
        )
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let dirty = release(
        &w,
        "v7",
        &[
            ("web/index.php", b"<?php\n$cart->add($item);\ndd($user);\n"),
            ("web/js/app.js", b"init();\n  console.log(state)\n"),
            ("web/js/app.min.js", b"console.log(1)"),
            ("node_modules/x/index.js", b"console.log(2)\n"),
            ("docs/notes.md", b"var_dump( is fine in docs\n"),
        ],
    );
    let plan = w.plan(
        "v7.toml",
        &w.viewer,
        Some(("v7", &dirty)),
        &[&agent],
        FORBIDDEN,
    );
    let run = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stdout.contains("2 hit(s)")
            && run.stdout.contains("    web/index.php:3: dd(\n")
            && run.stdout.contains("    web/js/app.js:2: console.log(\n"),
        "{}",
        run.text()
    );
    assert!(
        !run.stdout.contains("node_modules") && !run.stdout.contains("app.min.js"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains("verdict: NOT READY (1 blocking)")
            && run
                .stdout
                .contains("blocking: the release artifact contains forbidden text: 2 hit(s), first web/index.php:3: dd("),
        "{}",
        run.text()
    );
    let v = last_json(&w.ctl.run(&["--output", "json", "preflight", s(&plan)]));
    assert_eq!(v["verdict"], "not-ready", "{v}");
    assert_eq!(
        v["scan"]["hits"],
        serde_json::json!([
            {"path": "web/index.php", "line": 3, "pattern": "dd("},
            {"path": "web/js/app.js", "line": 2, "pattern": "console.log("},
        ]),
        "{v}"
    );

    // Without forbidden patterns the scan is skipped, and says why.
    let plain = w.plan("plain.toml", &w.viewer, Some(("v7", &dirty)), &[&agent], "");
    let run = w.ctl.run(&["preflight", s(&plain)]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout
            .contains("skipped: the plan lists no forbidden patterns"),
        "{}",
        run.text()
    );
    // A bad [preflight] key is a plan error naming it.
    let bad = w.plan(
        "bad.toml",
        &w.viewer,
        None,
        &[&agent],
        "[preflight]\nforbidden = [\"\"]\n",
    );
    let run = w.ctl.run(&["preflight", s(&bad)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("key `preflight.forbidden`"),
        "{}",
        run.text()
    );
}

#[test]
fn preflight_reports_the_lock_holder() {
    let w = World::new();
    let http = site(w.path(), "127.0.0.184");
    let mut spec = AgentSpec::new("web1", "127.0.0.184");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {:?}\n\n{}",
        w.path().join("web1/srv/shop"),
        http_probe(
            "health",
            &format!("http://127.0.0.184:{}/health", http.port),
            "critical",
            &[]
        )
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let bob = w.pki.operator("bob", "operator");
    let tls = golivectl::tls::client_config(&w.pki.ca(), &bob.0, &bob.1).expect("tls");
    let client = AgentClient::new("web1", &agent.addr.to_string(), None, tls).expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let held = rt
        .block_on(client.call(&Request::Lock(LockRequest::Acquire {
            app: "shop".into(),
            deployment: "d-other".into(),
            ttl_secs: 600,
        })))
        .expect("acquire");
    assert!(
        matches!(held, Response::Lock(LockResponse::Held { .. })),
        "{held:?}"
    );

    let plan = w.plan("p.toml", &w.viewer, None, &[&agent], "");
    let run = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stdout.contains(
            "FAIL   lock [critical]: app shop is locked by deployment d-other, started by bob at"
        ) && run.stdout.contains("golivectl unlock PLAN --reason TEXT")
            && run.stdout.contains("verdict: NOT READY"),
        "{}",
        run.text()
    );
    // Preflight took nothing away from bob.
    let j = agent.journal();
    assert_eq!(
        count(
            &j,
            "SELECT COUNT(*) FROM locks WHERE deployment = 'd-other' AND holder = 'bob'"
        ),
        1
    );
}

#[test]
fn preflight_with_a_failing_critical_probe_is_not_ready() {
    let w = World::new();
    let http = site(w.path(), "127.0.0.185");
    let base = format!("http://127.0.0.185:{}", http.port);
    let mut spec = AgentSpec::new("web1", "127.0.0.185");
    live_release(&w.path().join("web1/srv/shop"), "r0");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {:?}\n\n{}{}",
        w.path().join("web1/srv/shop"),
        http_probe(
            "checkout",
            &format!("{base}/checkout"),
            "critical",
            &["smoke"]
        ),
        http_probe("docs", &format!("{base}/docs"), "low", &[]),
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let plan = w.plan("p.toml", &w.viewer, None, &[&agent], "");
    let run = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stdout.contains("FAIL status 404")
            && run
                .stdout
                .contains("blocking: web1 checkout (critical, fail): GET")
            && run.stdout.contains("info: web1 docs (low, fail)")
            && run.stdout.contains("verdict: NOT READY (1 blocking)"),
        "{}",
        run.text()
    );
}

#[test]
fn deploy_outside_the_window_is_refused_and_a_hotfix_is_recorded() {
    let w = World::new();
    let h = shop_host(&w, "web1", "127.0.0.186", "");
    let v1 = release(&w, "v1", &[("health", b"ok\n")]);
    let plan = w.plan(
        "v1.toml",
        &w.op,
        Some(("v1", &v1)),
        &[&h.agent],
        &closed_window(),
    );

    let refused = w.ctl.run(&["deploy", s(&plan)]);
    assert_eq!(refused.code, 2, "{}", refused.text());
    assert!(
        refused
            .stderr
            .contains("outside the deployment window (every day")
            && refused.stderr.contains("it opens next at")
            && refused.stderr.contains("--hotfix --reason TEXT")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.text()
    );
    let j = h.agent.journal();
    for table in ["jobs", "locks", "releases", "uploads"] {
        assert_eq!(
            count(&j, &format!("SELECT COUNT(*) FROM {table}")),
            0,
            "{table}"
        );
    }
    assert!(!h.root.join("current").exists());
    let hist = last_json(&w.ctl.run(&["--output", "json", "history"]));
    assert_eq!(hist["deployments"], serde_json::json!([]), "{hist}");

    // Preflight says the window is closed and when it opens (a warning).
    let pre = w.ctl.run(&["preflight", s(&plan)]);
    assert!(
        pre.stdout.contains("closed: every day")
            && pre.stdout.contains("`golivectl deploy` refuses until then"),
        "{}",
        pre.text()
    );
    let v = last_json(&w.ctl.run(&["--output", "json", "preflight", s(&plan)]));
    assert_eq!(v["window"]["open"], false, "{v}");
    assert!(v["window"]["opens"].is_string(), "{v}");

    // --hotfix needs --reason; with one it goes through and is recorded.
    let no_reason = w.ctl.run(&["deploy", s(&plan), "--hotfix"]);
    assert_eq!(no_reason.code, 2, "{}", no_reason.text());
    let hot = w.ctl.run(&[
        "--output",
        "json",
        "deploy",
        s(&plan),
        "--hotfix",
        "--reason",
        "database locked timeout in checkout",
    ]);
    assert_eq!(hot.code, 0, "{}", hot.text());
    let events = hot.json_lines();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "window" && e["hotfix"] == true),
        "{}",
        hot.text()
    );
    let id = events
        .iter()
        .find(|e| e["event"] == "result")
        .and_then(|e| e["deployment"].as_str())
        .unwrap_or_else(|| panic!("{}", hot.text()))
        .to_string();
    let show = last_json(&w.ctl.run(&["--output", "json", "show", &id]));
    assert_eq!(
        show["hotfix_reason"], "database locked timeout in checkout",
        "{show}"
    );
    assert_eq!(show["state"], "succeeded", "{show}");
    let md = w.ctl.run(&["show", &id]);
    assert!(
        md.stdout
            .contains("- hotfix: database locked timeout in checkout"),
        "{}",
        md.text()
    );

    // Inside the window a deploy needs no hotfix.
    let v2 = release(&w, "v2", &[("health", b"ok\n")]);
    let open = w.plan(
        "v2.toml",
        &w.op,
        Some(("v2", &v2)),
        &[&h.agent],
        &open_window(),
    );
    let d = w.ctl.run(&["deploy", s(&open)]);
    assert_eq!(d.code, 0, "{}", d.text());
    // A bad window is a plan error naming the key and its line.
    let bad = w.plan(
        "bad.toml",
        &w.op,
        None,
        &[&h.agent],
        "[window]\ndays = [\"mon\", \"caturday\"]\nhours = \"06:00-09:00\"\ntimezone = \"Europe/Madrid\"\n",
    );
    let run = w.ctl.run(&["deploy", s(&bad)]);
    assert_eq!(run.code, 2, "{}", run.text());
    let line = std::fs::read_to_string(&bad)
        .expect("plan")
        .lines()
        .position(|l| l.starts_with("days = "))
        .expect("days line")
        + 1;
    assert!(
        run.stderr.contains(&format!(
            "{}:{line}: key `window.days`: \"caturday\" is not a day",
            bad.display()
        )),
        "{}",
        run.text()
    );
}

#[test]
fn preflight_agent_checks_name_what_is_wrong_and_the_fix() {
    let w = World::new();
    let root = w.path().join("web1/srv/shop");
    std::fs::create_dir_all(root.join("shared")).expect("shared");
    let orders = root.join("shared/orders.db");
    rusqlite::Connection::open(&orders)
        .and_then(|c| c.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY);"))
        .expect("orders");
    let app_db = root.join("shared/app.db");
    let http = HttpApp::serve(&root.join("current"), "127.0.0.187");
    let mut spec = AgentSpec::new("web1", "127.0.0.187");
    rusqlite::Connection::open(&app_db).expect("app db");
    spec.apps_toml = format!(
        "{}[[apps.shop.permissions]]\npath = \"settings.php\"\nmode = \"0444\"\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"orders\"\npath = {orders:?}\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"app\"\npath = {app_db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"app\"\n\n\
         [apps.shop.maintenance]\nflag_file = \"shared/flags/maintenance.flag\"\n\n",
        app_toml(
            "shop",
            &root,
            &format!("http://127.0.0.187:{}/health", http.port)
        )
        .replace(
            "shared = [\"uploads/\"]",
            "shared = [\"uploads/\", \"config\"]\nrequired_files = [\"config/settings.local.php\"]"
        ),
    );
    let h = Host {
        agent: AgentProc::start(w.path(), &w.pki, &spec),
        root,
        _http: http,
    };
    let v1 = release(
        &w,
        "v1",
        &[
            ("health", b"ok\n"),
            ("settings.php", b"<?php $db = 'x';\n"),
            ("config/settings.local.php", b"<?php\n"),
            (
                "migrations/0001_init.up.sql",
                b"CREATE TABLE customers (id INTEGER PRIMARY KEY);",
            ),
        ],
    );
    let deploy_plan = w.plan("v1.toml", &w.op, Some(("v1", &v1)), &[&h.agent], "");
    let d = w.ctl.run(&["deploy", s(&deploy_plan)]);
    assert_eq!(d.code, 0, "{}", d.text());

    let plan = w.plan(
        "pre.toml",
        &w.viewer,
        None,
        &[&h.agent],
        "[deploy]\nbackup = \"before\"\n",
    );
    let clean = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(clean.code, 0, "{}", clean.text());
    assert!(
        clean
            .stdout
            .contains("migrations [high]: 1 applied to database app match release v1")
            && clean
                .stdout
                .contains("permissions [medium]: 1 permission rule(s) hold")
            && clean
                .stdout
                .contains("required files [high]: 1 required file(s) present"),
        "{}",
        clean.text()
    );

    // Now break everything preflight looks at.
    let release_dir = h.root.join("releases/v1");
    std::fs::write(
        release_dir.join("migrations/0001_init.up.sql"),
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, edited TEXT);",
    )
    .expect("edit the applied migration");
    std::fs::remove_file(h.root.join("shared/config/settings.local.php")).expect("rm shared file");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        release_dir.join("settings.php"),
        std::fs::Permissions::from_mode(0o664),
    )
    .expect("chmod");
    std::fs::remove_file(h.root.join("shared/orders.db")).expect("rm orders db");
    // (A first install's migrations ran without maintenance: the flag
    // file's directory may never have been made.)
    let _ = std::fs::remove_dir_all(h.root.join("shared/flags"));
    std::fs::write(
        h.root.join("shared/flags"),
        "a file where a directory should be",
    )
    .expect("flags");

    let run = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(run.code, 1, "{}", run.text());
    for needle in [
        "FAIL   database orders [critical]: sqlite database `orders`:",
        "does not exist; fix its `path`",
        "ERROR  backup space [critical]: the plan takes a pre-deploy backup; its size cannot be estimated until database(s) orders answer",
        "FAIL   maintenance flag [high]:",
        "shared/flags is not a directory",
        "FAIL   permissions [medium]: permission rules of [[apps.shop.permissions]] do not hold on the live release v1: settings.php has mode 0664, the rule wants 0444",
        "FAIL   required files [high]:",
        "config/settings.local.php",
        "FAIL   migrations [high]: migrations of release v1: applied migration",
        "was changed after it was applied",
        "verdict: NOT READY",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?}:\n{}",
            run.text()
        );
    }
    let v = last_json(&w.ctl.run(&["--output", "json", "preflight", s(&plan)]));
    let failed: Vec<&str> = v["hosts"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] != "pass")
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        failed,
        [
            "maintenance flag",
            "database orders",
            "backup space",
            "permissions",
            "required files",
            "migrations"
        ],
        "{v}"
    );
}

#[test]
fn preflight_reaches_postgres_and_mariadb_without_revealing_passwords() {
    let w = World::new();
    let pg = TestPostgres::start(w.path());
    let my = TestMariadb::start(w.path());
    let root = w.path().join("web1/srv/shop");
    let mut spec = AgentSpec::new("web1", "127.0.0.188");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n{}{}",
        pg.database_toml("shop", "main"),
        my.database_toml("shop", "shopdb")
    );
    let agent = AgentProc::start(w.path(), &w.pki, &spec);
    let plan = w.plan(
        "p.toml",
        &w.viewer,
        None,
        &[&agent],
        "[deploy]\nbackup = \"verified\"\n",
    );
    let run = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains(&format!(
            "pass   database main [critical]: postgres 127.0.0.1:{} database shop answers as golive",
            pg.port()
        )) && run.stdout.contains(&format!(
            "pass   database shopdb [critical]: mariadb 127.0.0.1:{} database shop answers as golive",
            my.port()
        )) && run.stdout.contains("pass   backup tools [critical]: found")
            && run.stdout.contains("pass   backup space [critical]"),
        "{}",
        run.text()
    );

    // Wrong passwords: the checks fail, and no password is anywhere.
    let wrong = "Wr0ng-S3cret-Preflight";
    db::write_private(&pg.password_file, wrong);
    db::write_private(&my.password_file, wrong);
    let run = w.ctl.run(&["--output", "json", "preflight", s(&plan)]);
    assert_eq!(run.code, 1, "{}", run.text());
    let v = last_json(&run);
    let main = v["hosts"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "database main")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(main["status"], "fail", "{v}");
    assert!(
        main["message"]
            .as_str()
            .is_some_and(|m| m.contains("password authentication failed")),
        "{main}"
    );
    let shopdb = v["hosts"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "database shopdb")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(shopdb["status"], "fail", "{v}");
    assert!(
        shopdb["message"]
            .as_str()
            .is_some_and(|m| m.contains("Access denied")),
        "{shopdb}"
    );
    for (what, text) in [
        ("stdout", run.stdout.clone()),
        ("stderr", run.stderr.clone()),
        ("agent log", agent.log_text()),
    ] {
        assert!(!text.contains(wrong), "{what} reveals the password");
        assert!(!text.contains(&pg.password), "{what} reveals the password");
        assert!(!text.contains(&my.password), "{what} reveals the password");
    }
    let j = agent.journal();
    let leaked = count(
        &j,
        &format!("SELECT COUNT(*) FROM audit WHERE outcome LIKE '%{wrong}%'"),
    );
    assert_eq!(leaked, 0);
}

/// Issue 12 parts 2 and 14: `golivectl deploy` enforces what preflight
/// blocks (here forbidden text in the artifact), `--force --reason`
/// overrides it and is recorded with what it overrode; `[deploy] approvals`
/// asks for distinct `--approved-by` names, recorded as decisions; a later
/// rollback is appended to the record and does not move its end.
#[test]
fn issue12_deploy_enforces_preflight_force_and_approvals_are_recorded() {
    let w = World::new();
    let h = shop_host(&w, "web1", "127.0.0.187", "");
    let v1 = release(&w, "v1", &[("health", b"ok\n")]);
    let d = w.ctl.run(&[
        "deploy",
        s(&w.plan("v1.toml", &w.op, Some(("v1", &v1)), &[&h.agent], "")),
    ]);
    assert_eq!(d.code, 0, "{}", d.text());

    let v2 = release(
        &w,
        "v2",
        &[
            ("health", b"ok\n"),
            ("web/index.php", b"<?php\n$cart->add($item);\ndd($user);\n"),
        ],
    );
    let extra = format!("[deploy]\napprovals = 2\n\n{FORBIDDEN}");
    let plan = w.plan("v2.toml", &w.op, Some(("v2", &v2)), &[&h.agent], &extra);
    let j = h.agent.journal();
    let jobs_before = count(&j, "SELECT COUNT(*) FROM jobs");
    let unchanged = |run: &Run| {
        assert_eq!(run.code, 2, "{}", run.text());
        assert_eq!(count(&j, "SELECT COUNT(*) FROM jobs"), jobs_before);
        assert_eq!(count(&j, "SELECT COUNT(*) FROM locks"), 0);
        assert!(!h.root.join("releases/v2").exists());
        assert_eq!(
            std::fs::read_link(h.root.join("current")).ok(),
            Some(PathBuf::from("releases/v1"))
        );
    };

    // Approvals first: none, or one name twice, is not two.
    let none = w.ctl.run(&["deploy", s(&plan)]);
    unchanged(&none);
    assert!(
        none.stderr.contains(
            "the plan asks for 2 approval(s) before a deployment ([deploy] approvals = 2"
        ) && none.stderr.contains("got 0")
            && none.stderr.contains("--approved-by NAME"),
        "{}",
        none.text()
    );
    let twice = w.ctl.run(&[
        "deploy",
        s(&plan),
        "--approved-by",
        "ana",
        "--approved-by",
        " ana ",
    ]);
    unchanged(&twice);
    assert!(twice.stderr.contains("got 1 (ana)"), "{}", twice.text());

    // Preflight blocks: the deploy refuses with the reasons, a dry run too.
    let approved = ["--approved-by", "ana", "--approved-by", "luis"];
    for dry in [false, true] {
        let mut args = vec!["deploy", s(&plan)];
        args.extend(approved);
        if dry {
            args.push("--dry-run");
        }
        let run = w.ctl.run(&args);
        unchanged(&run);
        assert!(
            run.stderr.contains("preflight: NOT READY, nothing changed")
                && run.stderr.contains(
                    "the release artifact contains forbidden text: 1 hit(s), first web/index.php:3: dd("
                )
                && run.stderr.contains("--force --reason TEXT"),
            "{}",
            run.text()
        );
    }
    // --force needs a reason; a reason needs --force or --hotfix.
    let mut no_reason = vec!["deploy", s(&plan), "--force"];
    no_reason.extend(approved);
    unchanged(&w.ctl.run(&no_reason));
    let mut stray = vec!["deploy", s(&plan), "--reason", "because"];
    stray.extend(approved);
    let stray = w.ctl.run(&stray);
    unchanged(&stray);
    assert!(
        stray.stderr.contains("--reason goes with --hotfix"),
        "{}",
        stray.text()
    );

    // Forced: it goes live, and the record says who approved and what was
    // overridden, and why.
    let mut forced = vec![
        "--output",
        "json",
        "deploy",
        s(&plan),
        "--force",
        "--reason",
        "dd( is in a dead branch, fixed in v3",
    ];
    forced.extend(approved);
    let run = w.ctl.run(&forced);
    assert_eq!(run.code, 0, "{}", run.text());
    let events = run.json_lines();
    let pre = events
        .iter()
        .find(|e| e["event"] == "preflight")
        .unwrap_or_else(|| panic!("{}", run.text()));
    assert_eq!(pre["ready"], false, "{pre}");
    assert_eq!(pre["forced"], true, "{pre}");
    let id = events
        .iter()
        .find(|e| e["event"] == "result")
        .and_then(|e| e["deployment"].as_str())
        .unwrap_or_else(|| panic!("{}", run.text()))
        .to_string();
    let show = last_json(&w.ctl.run(&["--output", "json", "show", &id]));
    assert_eq!(
        show["forced_reason"], "dd( is in a dead branch, fixed in v3",
        "{show}"
    );
    assert!(
        show["forced_over"][0]
            .as_str()
            .is_some_and(|r| r.contains("web/index.php:3: dd(")),
        "{show}"
    );
    let approvals: Vec<(&str, &str)> = show["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| (d["by"].as_str().unwrap(), d["decision"].as_str().unwrap()))
        .collect();
    assert_eq!(
        approvals,
        [("ana", "approve"), ("luis", "approve")],
        "{show}"
    );
    let finished = show["finished_at"].as_i64().expect("finished");
    assert_eq!(
        show["duration_ms"].as_i64(),
        Some(finished - show["started_at"].as_i64().unwrap()),
        "{show}"
    );
    let md = w.ctl.run(&["show", &id]);
    for needle in [
        "- approved by: ana, luis",
        "- duration: ",
        "- forced over blocking preflight checks: dd( is in a dead branch, fixed in v3 (overrode: the release artifact contains forbidden text",
    ] {
        assert!(md.stdout.contains(needle), "{needle}: {}", md.text());
    }

    // A later rollback is an action on the record; the deployment's end stays.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let rb = w.ctl.run(&["rollback", &id]);
    assert_eq!(rb.code, 0, "{}", rb.text());
    let show = last_json(&w.ctl.run(&["--output", "json", "show", &id]));
    assert_eq!(show["state"], "rolled_back", "{show}");
    assert_eq!(show["finished_at"].as_i64(), Some(finished), "{show}");
    assert_eq!(show["actions"][0]["action"], "rollback", "{show}");
    assert_eq!(show["actions"][0]["by"], "alice", "{show}");
    assert!(
        show["actions"][0]["at"].as_i64().unwrap() > finished,
        "{show}"
    );
    let md = w.ctl.run(&["show", &id]);
    assert!(
        md.stdout.contains("## Later actions") && md.stdout.contains("| alice | rollback |"),
        "{}",
        md.text()
    );
    // `history` takes the plan like every other command (its app's
    // deployments); a plan of another app lists none of them.
    let hist = last_json(&w.ctl.run(&["--output", "json", "history", s(&plan)]));
    assert_eq!(hist["deployments"][0]["id"], id.as_str(), "{hist}");
    assert_eq!(
        hist["deployments"].as_array().map(Vec::len),
        Some(2),
        "{hist}"
    );
    let other = w.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&plan)
            .unwrap()
            .replace("app = \"shop\"", "app = \"blog\""),
    )
    .unwrap();
    let run = w.ctl.run(&["history", s(&other)]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("no deployments of blog recorded"),
        "{}",
        run.text()
    );
}

/// Issue 12, part 4: a first install. Before the first release the app's
/// own probes are n/a ("nothing live yet") and never block; host-level
/// probes still run; checks of the live release are n/a. So `preflight` is
/// READY and `probe` GO; the first deploy succeeds, its "before" figures
/// read n/a, and the gate judges the new release's probes.
#[test]
fn issue12_first_install_is_ready_and_its_probes_are_not_applicable() {
    let w = World::new();
    let extra = "[[apps.shop.probes]]\nkind = \"disk\"\nname = \"disk\"\npath = \"/\"\n\
                 min_free_bytes = 1\nseverity = \"high\"\n\n\
                 [[apps.shop.permissions]]\npath = \"index.php\"\nmode = \"0444\"\n\n";
    let h = shop_host(&w, "web1", "127.0.0.188", extra);
    assert!(std::fs::symlink_metadata(h.root.join("current")).is_err());
    let v1 = release(
        &w,
        "v1",
        &[("health", b"ok\n"), ("index.php", b"<?php echo 1;\n")],
    );
    let plan = w.plan("v1.toml", &w.op, Some(("v1", &v1)), &[&h.agent], "");

    let pre = w.ctl.run(&["preflight", s(&plan)]);
    assert_eq!(pre.code, 0, "{}", pre.text());
    for needle in [
        "n/a    permissions [medium]: nothing live yet: no release at",
        "health (critical)",
        "web1  n/a (nothing live yet)  pass ",
        "info: host web1: nothing live yet, 1 probe(s) n/a",
        "verdict: READY",
    ] {
        assert!(
            pre.stdout.contains(needle),
            "missing {needle:?}:\n{}",
            pre.text()
        );
    }
    let v = last_json(&w.ctl.run(&["--output", "json", "preflight", s(&plan)]));
    assert_eq!(v["ready"], true, "{v}");
    let results = v["hosts"][0]["probes"]["results"]
        .as_array()
        .expect("results");
    let status = |name: &str| {
        results
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["status"].clone())
            .unwrap_or_else(|| panic!("no {name}: {v}"))
    };
    assert_eq!(status("health"), "n/a", "{v}");
    assert_eq!(status("disk"), "pass", "host-level probes run: {v}");
    let probe = w.ctl.run(&["probe", s(&plan)]);
    assert_eq!(probe.code, 0, "{}", probe.text());
    assert!(probe.stdout.contains("verdict: GO"), "{}", probe.text());

    // The first deploy: figures before are n/a, the gate judges the new
    // release's probes (both run now and pass).
    let (run, id) = {
        let run = w.ctl.run(&["--output", "json", "deploy", s(&plan)]);
        let id = run
            .json_lines()
            .iter()
            .find(|e| e["event"] == "start")
            .and_then(|e| e["deployment"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no start: {}", run.text()));
        (run, id)
    };
    assert_eq!(run.code, 0, "{}", run.text());
    let events = run.json_lines();
    let before = events
        .iter()
        .find(|e| e["event"] == "step" && e["step"] == "probe-before")
        .unwrap_or_else(|| panic!("{}", run.text()));
    assert_eq!(
        before["detail"], "1/1 passed on the live release; 1 n/a (nothing live yet)",
        "{before}"
    );
    let gate = events
        .iter()
        .find(|e| e["event"] == "gate")
        .unwrap_or_else(|| panic!("{}", run.text()));
    assert_eq!(gate["action"], "continue", "{gate}");
    assert_eq!(gate["summary"], "2/2 probes passed", "{gate}");
    assert_eq!(
        std::fs::read_link(h.root.join("current")).expect("current"),
        PathBuf::from("releases/v1")
    );
    let show = w.ctl.run(&["show", &id]);
    assert_eq!(show.code, 0, "{}", show.text());
    let row = show
        .stdout
        .lines()
        .find(|l| l.starts_with("| web1 | health |"))
        .unwrap_or_else(|| panic!("{}", show.text()));
    assert!(
        row.contains("| n/a (nothing live yet) | pass status 200"),
        "{row}"
    );

    // Live now: the probes run and the checks look at the release.
    let pre = w.ctl.run(&[
        "preflight",
        s(&w.plan("v2.toml", &w.viewer, Some(("v2", &v1)), &[&h.agent], "")),
    ]);
    assert_eq!(pre.code, 0, "{}", pre.text());
    assert!(
        pre.stdout.contains("pass   permissions [medium]")
            && pre.stdout.contains("pass status 200")
            && !pre.stdout.contains("n/a"),
        "{}",
        pre.text()
    );
}
