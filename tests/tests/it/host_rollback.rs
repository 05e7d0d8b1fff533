//! Issue 13, parts 1-3 on the agent: the host rollback job (code, database
//! the gentlest correct way, flags, hooks, maintenance), the rollback point
//! each deployment records at activation, resumption after kill -9, and
//! `golive-agent rollback` through the running agent's local socket or in
//! its own process. Real deployments with `golivectl deploy`, real SQLite
//! databases, the job driven over mutual TLS with `AgentClient` and through
//! the local CLI.
//!
//! Loopback addresses 127.0.0.240-249 belong to this module.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use golive_shared::protocol::{
    DatabaseChoice, ErrorCode, HostRollback, HostRolledBack, JobEventsRequest, JobInfo, JobResult,
    JobSpec, JobState, PointState, Request, Response, RestorePolicy, RollbackRequester,
    StatusRequest, StepState, SubmitJob,
};
use golive_tests::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), f).await })
        .expect("finished within 120 s")
}

/// v1's migrations: the orders table.
const V1: &[(&str, &[u8])] = &[
    (
        "migrations/0001_orders.up.sql",
        b"CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT);",
    ),
    ("migrations/0001_orders.down.sql", b"DROP TABLE orders;"),
];

/// One host with app `shop`: a SQLite database with SQL migrations, a
/// maintenance flag file, and whatever `extra` declares.
struct Site {
    dir: tempfile::TempDir,
    pki: TestPki,
    op: (PathBuf, PathBuf),
    ctl: Ctl,
    agent: AgentProc,
    root: PathBuf,
    db: PathBuf,
    plan: PathBuf,
}

impl Site {
    fn new(ip: &str, extra: impl Fn(&Path) -> String) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let root = dir.path().join("srv/shop");
        std::fs::create_dir_all(root.join("shared")).expect("shared dir");
        let db = root.join("shared/shop.db");
        let mut spec = AgentSpec::new("web1", ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {root:?}\n\n\
             [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
             [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n\n\
             [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\n{}",
            extra(&root)
        );
        let agent = AgentProc::start(dir.path(), &pki, &spec);
        let op = pki.operator("alice", "operator");
        let ctl = Ctl::new(dir.path());
        let plan = dir.path().join("plan.toml");
        Site {
            dir,
            pki,
            op,
            ctl,
            agent,
            root,
            db,
            plan,
        }
    }

    /// Deploys release `v` (an index.html and `files`); returns the
    /// deployment id.
    fn deploy(&self, v: &str, files: &[(&str, &[u8])]) -> String {
        let art = self.dir.path().join(format!("dist/shop-{v}.tar.gz"));
        let mut all: Vec<(&str, &[u8])> = vec![("index.html", v.as_bytes())];
        all.extend_from_slice(files);
        artifact(&art, &all);
        self.write_plan(Some((v, &art)));
        let r = self.ctl.run(&["--output", "json", "deploy", s(&self.plan)]);
        assert_eq!(r.code, 0, "deploy {v}: {}", r.text());
        let result = r
            .json_lines()
            .into_iter()
            .find(|e| e["event"] == "result")
            .expect("a result event");
        result["deployment"]
            .as_str()
            .expect("deployment id")
            .to_string()
    }

    fn write_plan(&self, release: Option<(&str, &Path)>) {
        write_plan(
            &self.plan,
            &self.pki,
            &self.op,
            "shop",
            release,
            &[&self.agent],
        );
    }

    fn client(&self) -> golivectl::client::AgentClient {
        let tls = golivectl::tls::client_config(&self.pki.ca(), &self.op.0, &self.op.1)
            .expect("client TLS config");
        golivectl::client::AgentClient::new("web1", &self.agent.addr.to_string(), None, tls)
            .expect("agent client")
    }

    /// Submits a host rollback over mutual TLS (not followed).
    fn submit(&self, req: HostRollback) -> JobInfo {
        let c = self.client();
        match block_on(c.call(&Request::SubmitJob(SubmitJob {
            idempotency_key: "anything".into(),
            lease: None,
            spec: JobSpec::HostRollback(req),
        })))
        .expect("submit the host rollback")
        {
            Response::Job(j) => j,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// Follows job `id` to its end; returns it with its log lines.
    fn follow(&self, id: u64) -> (JobInfo, Vec<String>) {
        let c = self.client();
        block_on(async {
            let mut after = 0;
            let mut lines = Vec::new();
            let started = Instant::now();
            loop {
                assert!(
                    started.elapsed() < Duration::from_secs(100),
                    "job {id} did not finish"
                );
                let req = Request::JobEvents(JobEventsRequest {
                    job_id: id,
                    after_seq: after,
                    wait_ms: 5_000,
                });
                match c.call(&req).await.expect("job events") {
                    Response::Events(ev) => {
                        for e in &ev.events {
                            after = after.max(e.seq);
                            if let golive_shared::protocol::EventKind::Log { line, .. } = &e.kind {
                                lines.push(line.clone());
                            }
                        }
                        if ev.job.state.is_final() && ev.events.is_empty() {
                            return (ev.job, lines);
                        }
                    }
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        })
    }

    fn rollback(&self, req: HostRollback) -> (JobInfo, Vec<String>) {
        let job = self.submit(req);
        self.follow(job.id)
    }

    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("current"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    fn count(&self, sql: &str) -> i64 {
        rusqlite::Connection::open(&self.db)
            .expect("open the app database")
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn exec(&self, sql: &str) {
        rusqlite::Connection::open(&self.db)
            .expect("open the app database")
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn has_table(&self, t: &str) -> bool {
        self.count(&format!(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{t}'"
        )) == 1
    }

    /// A count from the agent's journal.
    fn journal_count(&self, sql: &str) -> i64 {
        self.agent
            .journal()
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn maintenance_flag(&self) -> bool {
        self.root.join("shared/maintenance.flag").exists()
    }

    /// `golive-agent rollback shop ARGS` (60 s limit).
    fn local(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin("golive-agent"));
        cmd.args(["rollback", "shop", "--config"])
            .arg(&self.agent.config)
            .args(args);
        run_bounded(cmd, Duration::from_secs(60))
    }
}

fn request(deployment: Option<&str>) -> HostRollback {
    HostRollback {
        app: "shop".into(),
        deployment: deployment.map(str::to_string),
        to: None,
        reason: "the release fails its probes".into(),
        requested_by: RollbackRequester::Controller,
        force: false,
        restore: None,
    }
}

fn outcome(job: &JobInfo, lines: &[String]) -> HostRolledBack {
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{}",
        job.error,
        lines.join("\n")
    );
    match &job.result {
        Some(JobResult::HostRolledBack(r)) => r.clone(),
        other => panic!("unexpected result {other:?}"),
    }
}

fn step<'a>(r: &'a HostRolledBack, name: &str) -> &'a golive_shared::protocol::RollbackStepReport {
    r.steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step {name} in {:?}", r.steps))
}

fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", lines.join("\n")))
}

/// Expand-only: the code goes back alone; every row written after the
/// deployment survives; no maintenance, no snapshot. Asked again, the same
/// job answers (one key per deployment and host).
#[test]
fn issue13_expand_only_rollback_is_code_only_and_keeps_every_row() {
    let site = Site::new("127.0.0.240", |_| String::new());
    site.deploy("v1", V1);
    site.exec("INSERT INTO orders (note) VALUES ('a'), ('b');");
    let mut v2 = V1.to_vec();
    v2.push((
        "migrations/0002_reviews.up.sql",
        b"-- golive: expand\nCREATE TABLE reviews (id INTEGER PRIMARY KEY, body TEXT);",
    ));
    let d2 = site.deploy("v2", &v2);
    // Writes after the deployment, in the old table and the new one.
    site.exec(
        "INSERT INTO orders (note) VALUES ('c'), ('d'), ('e'); INSERT INTO reviews (body) VALUES ('ok');",
    );
    let windows = site.journal_count("SELECT COUNT(*) FROM maintenance_log");

    let (job, lines) = site.rollback(request(None));
    let r = outcome(&job, &lines);
    assert_eq!(job.idempotency_key, format!("rollback:{d2}:web1"));
    assert_eq!((r.from.as_deref(), r.to.as_str()), (Some("v2"), "v1"));
    assert_eq!(r.deployment.as_deref(), Some(d2.as_str()));
    assert!(
        matches!(&r.database, DatabaseChoice::CodeOnly { why } if why.contains("expand")),
        "{:?}",
        r.database
    );
    for skipped in ["maintenance-on", "snapshot", "database", "maintenance-off"] {
        assert_eq!(step(&r, skipped).state, StepState::Skipped, "{:?}", r.steps);
    }
    assert_eq!(step(&r, "reactivate").state, StepState::Done);
    assert_eq!(site.current().as_deref(), Some("v1"));
    assert_eq!(site.count("SELECT COUNT(*) FROM orders"), 5);
    assert_eq!(site.count("SELECT COUNT(*) FROM reviews"), 1);
    assert_eq!(
        site.journal_count("SELECT COUNT(*) FROM backups WHERE label = 'failed-state'"),
        0,
        "no snapshot for a code-only rollback"
    );
    assert_eq!(
        site.journal_count("SELECT COUNT(*) FROM maintenance_log"),
        windows,
        "no maintenance for a code-only rollback"
    );
    assert!(!site.maintenance_flag());

    // The host's status carries the point, now rolled back.
    let status = match block_on(site.client().call(&Request::Status(StatusRequest {
        apps: vec!["shop".into()],
    })))
    .expect("status")
    {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    };
    let point = status.apps[0]
        .rollback_point
        .clone()
        .expect("a rollback point");
    assert_eq!(
        (point.deployment.as_str(), point.state, point.rollback_job),
        (d2.as_str(), PointState::RolledBack, Some(job.id))
    );
    assert_eq!(point.previous.as_deref(), Some("v1"));
    assert_eq!(point.schema_before, Some(1));
    assert_eq!(point.migrations.len(), 1);
    assert_eq!(point.migrations[0].tag.as_deref(), Some("expand"));

    // Over mutual TLS nobody may pose as the watchdog (no lease needed).
    let mut posing = request(Some(&d2));
    posing.requested_by = RollbackRequester::Watchdog;
    match block_on(site.client().call(&Request::SubmitJob(SubmitJob {
        idempotency_key: "k".into(),
        lease: None,
        spec: JobSpec::HostRollback(posing),
    }))) {
        Err(golivectl::client::ClientError::Agent { body, .. }) => {
            assert_eq!(body.code, ErrorCode::BadRequest, "{}", body.message);
            assert!(
                body.message.contains("agent's own submissions"),
                "{}",
                body.message
            );
        }
        other => panic!("{other:?}"),
    }
    // Another asker (the local CLI, the watchdog) gets the same job.
    let again = site.submit(request(Some(&d2)));
    assert!(again.deduplicated);
    assert_eq!(again.id, job.id);
    assert_eq!(
        site.journal_count("SELECT COUNT(*) FROM activations WHERE cause = 'rollback'"),
        1
    );
}

/// Every migration of the deployment has a down: down to the version
/// before, behind maintenance, after one verified failed-state snapshot.
#[test]
fn issue13_down_migrations_revert_to_the_version_before_after_a_snapshot() {
    let site = Site::new("127.0.0.241", |_| String::new());
    site.deploy("v1", V1);
    site.exec("INSERT INTO orders (note) VALUES ('a'), ('b');");
    let mut v2 = V1.to_vec();
    v2.push((
        "migrations/0002_notes.up.sql",
        b"CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
    ));
    v2.push(("migrations/0002_notes.down.sql", b"DROP TABLE notes;"));
    let d2 = site.deploy("v2", &v2);
    site.exec(
        "INSERT INTO orders (note) VALUES ('c'); INSERT INTO notes (body) VALUES ('x'), ('y');",
    );
    let before = golive_shared::protocol::now_millis();

    let (job, lines) = site.rollback(request(Some(&d2)));
    let r = outcome(&job, &lines);
    let DatabaseChoice::DownMigrations {
        to_version,
        reverted,
        snapshot,
        drops,
    } = &r.database
    else {
        panic!("{:?}", r.database)
    };
    assert_eq!((*to_version, reverted.as_slice()), (1, &[2][..]));
    assert!(
        drops
            .iter()
            .any(|d| d.table == "notes" && d.rows == Some(2)),
        "{drops:?}"
    );
    let snapshot = snapshot.clone().expect("a failed-state snapshot");
    assert_eq!(step(&r, "snapshot").state, StepState::Done);
    assert_eq!(step(&r, "maintenance-on").state, StepState::Done);
    assert_eq!(step(&r, "maintenance-off").state, StepState::Done);
    // The choice is said before the database step acts.
    assert!(
        position(&lines, "database choice: v2 -> v1: down migrations")
            < position(&lines, "step 4/8 database: started")
    );
    assert!(!site.has_table("notes"));
    assert_eq!(site.count("SELECT COUNT(*) FROM orders"), 3);
    assert_eq!(site.count("SELECT MAX(version) FROM golive_migrations"), 1);
    assert_eq!(site.current().as_deref(), Some("v1"));
    // One backup for the rollback, verified: no second one by the down.
    let j = site.agent.journal();
    let (label, verified, deployment): (String, bool, String) = j
        .query_row(
            "SELECT label, verified, deployment FROM backups WHERE id = ?1",
            [&snapshot],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the snapshot's row");
    assert_eq!(
        (label.as_str(), verified, deployment.as_str()),
        ("failed-state", true, d2.as_str())
    );
    assert_eq!(
        site.journal_count(&format!(
            "SELECT COUNT(*) FROM backups WHERE created_at >= {before}"
        )),
        1
    );
    let by: String = j
        .query_row(
            "SELECT on_by FROM maintenance_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a maintenance window");
    assert!(
        by.contains(&format!("host rollback job {}", job.id)),
        "{by}"
    );
    assert!(!site.maintenance_flag());
}

/// A migration without a down: the pre-deploy backup is restored after
/// the restore's failed-state backup; the discarded rows are reported per
/// table, with the window of discarded writes.
#[test]
fn issue13_no_down_file_restores_the_pre_deploy_backup_and_reports_what_it_discards() {
    let site = Site::new("127.0.0.242", |_| String::new());
    site.deploy("v1", V1);
    site.exec("INSERT INTO orders (note) VALUES ('a'), ('b');");
    let mut v2 = V1.to_vec();
    v2.push((
        "migrations/0002_notes.up.sql",
        b"CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
    ));
    let d2 = site.deploy("v2", &v2);
    site.exec(
        "INSERT INTO orders (note) VALUES ('c'), ('d'), ('e'); INSERT INTO notes (body) VALUES ('x');",
    );
    let (pre, pre_at): (String, i64) = site
        .agent
        .journal()
        .query_row(
            "SELECT id, created_at FROM backups WHERE label = 'pre-deploy' AND deployment = ?1",
            [&d2],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the pre-deploy backup");

    let (job, lines) = site.rollback(request(None));
    let r = outcome(&job, &lines);
    let DatabaseChoice::Restore {
        backup,
        window_from,
        window_to,
        failed_state_backup,
        tables,
    } = &r.database
    else {
        panic!("{:?}", r.database)
    };
    assert_eq!(backup, &pre);
    assert_eq!(*window_from, pre_at);
    assert!(window_to >= window_from, "{window_from}..{window_to}");
    let orders = tables
        .iter()
        .find(|t| t.table == "orders")
        .expect("orders counted");
    assert_eq!(
        (orders.now, orders.backup, orders.lost()),
        (Some(5), Some(2), 3)
    );
    let notes = tables
        .iter()
        .find(|t| t.table == "notes")
        .expect("notes counted");
    assert_eq!((notes.now, notes.backup), (Some(1), None));
    assert_eq!(
        step(&r, "snapshot").state,
        StepState::Skipped,
        "the restore takes its own"
    );
    let (label, deployment): (String, String) = site
        .agent
        .journal()
        .query_row(
            "SELECT label, deployment FROM backups WHERE id = ?1 AND state = 'complete'",
            [failed_state_backup],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the failed-state backup is there");
    assert_eq!(
        (label.as_str(), deployment.as_str()),
        ("failed-state", d2.as_str())
    );
    assert!(
        position(
            &lines,
            "database choice: v2 -> v1: restore of the pre-deploy backup"
        ) < position(&lines, "step 4/8 database: started")
    );
    assert_eq!(site.count("SELECT COUNT(*) FROM orders"), 2);
    assert!(!site.has_table("notes"));
    assert_eq!(site.count("SELECT MAX(version) FROM golive_migrations"), 1);
    assert_eq!(site.current().as_deref(), Some("v1"));
    assert!(!site.maintenance_flag());
}

/// A restore is needed and forbidden: the code goes back, the schema stays,
/// and the outcome says an operator must act.
#[test]
fn issue13_a_forbidden_restore_rolls_the_code_back_and_leaves_the_schema() {
    let site = Site::new("127.0.0.243", |_| String::new());
    site.deploy("v1", V1);
    let mut v2 = V1.to_vec();
    v2.push((
        "migrations/0002_notes.up.sql",
        b"CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
    ));
    site.deploy("v2", &v2);
    site.exec("INSERT INTO orders (note) VALUES ('c'); INSERT INTO notes (body) VALUES ('x');");

    let mut req = request(None);
    req.restore = Some(RestorePolicy::Forbid);
    let (job, lines) = site.rollback(req);
    let r = outcome(&job, &lines);
    let DatabaseChoice::RestoreForbidden {
        why,
        migrations,
        snapshot,
    } = &r.database
    else {
        panic!("{:?}", r.database)
    };
    assert!(why.contains("restore = \"forbid\""), "{why}");
    assert_eq!(migrations, &[2]);
    assert!(snapshot.is_some(), "a snapshot for the operator");
    let action = r.operator_action.clone().expect("an operator action");
    assert!(action.contains("migrations 2 stay applied"), "{action}");
    assert!(
        lines.iter().any(|l| l.contains("OPERATOR ACTION NEEDED")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(site.current().as_deref(), Some("v1"));
    assert!(site.has_table("notes"), "the schema stays");
    assert_eq!(site.count("SELECT COUNT(*) FROM notes"), 1);
    assert_eq!(site.count("SELECT MAX(version) FROM golive_migrations"), 2);
    assert_eq!(step(&r, "maintenance-on").state, StepState::Skipped);
}

/// A failing step (an after_rollback hook) leaves the host in maintenance
/// and names the step; asked again once fixed, the rollback resumes from
/// that step (the switch is not repeated) and turns maintenance off.
#[test]
fn issue13_a_failing_step_leaves_maintenance_on_and_resumes_from_it() {
    // The agent's webhook, received for real.
    let hook = Hook::start("127.0.0.244");
    let hook_port = hook.port;
    let site = Site::new("127.0.0.244", |root| {
        format!(
            "[[apps.shop.hooks.after_rollback]]\ncmd = [\"sh\", \"-c\", \"test ! -e {}\"]\n\n\
             [apps.shop.notify]\nwebhook = \"http://127.0.0.244:{hook_port}/hooks/SECRET\"\n",
            root.join("shared/hook-fails").display()
        )
    });
    site.deploy("v1", V1);
    let d2 = site.deploy("v2", V1);
    std::fs::write(site.root.join("shared/hook-fails"), b"").unwrap();

    let (job, lines) = site.rollback(request(None));
    assert_eq!(job.state, JobState::Failed, "{}", lines.join("\n"));
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("failed at step 6/8 (after-rollback)")
            && error.contains("MAINTENANCE IS NOW ON"),
        "{error}"
    );
    assert!(site.maintenance_flag(), "never serve a half-state");
    assert_eq!(
        site.journal_count("SELECT COUNT(*) FROM maintenance WHERE app = 'shop'"),
        1
    );
    let (state, err): (String, String) = site
        .agent
        .journal()
        .query_row(
            "SELECT state, error FROM rollback_points WHERE deployment = ?1",
            [&d2],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "rollback_failed");
    assert!(err.contains("after-rollback"), "{err}");
    // Loud on the agent's webhook too, though no watchdog asked for it.
    let post = hook
        .wait_for("rollback_failed", 20)
        .expect("the agent posted the failed rollback");
    assert!(
        post.contains("\"event\":\"rollback_failed\"")
            && post.contains("ROLLBACK FAILED for shop")
            && post.contains("rollback asked by controller"),
        "{post}"
    );

    // Fixed: asked again, the same job resumes from the failed step.
    std::fs::remove_file(site.root.join("shared/hook-fails")).unwrap();
    let again = site.submit(request(None));
    assert_eq!(again.id, job.id);
    let (job, lines) = site.follow(again.id);
    let r = outcome(&job, &lines);
    assert_eq!(
        step(&r, "reactivate").attempts,
        1,
        "the switch is not repeated"
    );
    assert_eq!(step(&r, "after-rollback").attempts, 2);
    assert_eq!(step(&r, "maintenance-off").state, StepState::Done);
    assert!(!site.maintenance_flag());
    assert_eq!(
        site.journal_count("SELECT COUNT(*) FROM activations WHERE cause = 'rollback'"),
        1
    );
    assert_eq!(site.current().as_deref(), Some("v1"));
}

/// kill -9 in the middle of the rollback (in its after_rollback hook): the
/// restarted agent resumes the job, and it completes exactly once.
#[test]
fn issue13_a_rollback_killed_midway_is_resumed_and_completes_once() {
    let mut site = Site::new("127.0.0.245", |root| {
        let log = root.join("shared/hook.log");
        format!(
            "[[apps.shop.hooks.after_rollback]]\n\
             cmd = [\"sh\", \"-c\", \"echo start >> {log}; sleep 3; echo end >> {log}\"]\n",
            log = log.display()
        )
    });
    site.deploy("v1", V1);
    site.deploy("v2", V1);
    let hook_log =
        || std::fs::read_to_string(site.root.join("shared/hook.log")).unwrap_or_default();
    let job = site.submit(request(None));
    let started = Instant::now();
    while !hook_log().contains("start") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the hook did not start:\n{}",
            site.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    site.agent.kill9();
    assert!(
        site.agent.state_dir.join("agent.sock").exists(),
        "a killed agent leaves its socket behind"
    );
    site.agent.spawn();
    let (job, lines) = site.follow(job.id);
    let r = outcome(&job, &lines);
    assert!(
        lines.iter().any(|l| l.contains("it is resumed")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(step(&r, "reactivate").attempts, 1);
    assert_eq!(step(&r, "after-rollback").attempts, 2);
    assert_eq!(
        site.journal_count("SELECT COUNT(*) FROM activations WHERE cause = 'rollback'"),
        1,
        "switched back once"
    );
    assert_eq!(
        site.journal_count(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'host.rollback' AND state = 'succeeded'"
        ),
        1
    );
    assert_eq!(site.current().as_deref(), Some("v1"));
    // The restarted agent's own run of the hook finished.
    let started = Instant::now();
    while hook_log().matches("end").count() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            hook_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(hook_log().matches("start").count(), 2, "{}", hook_log());
}

/// The host restores the flags alone from its rollback point, asked by the
/// local CLI through the running agent's socket (no controller involved).
#[test]
fn issue13_flags_go_back_to_the_rollback_point_from_the_host_alone() {
    let site = Site::new("127.0.0.246", |_| {
        "[apps.shop.flags]\nfile = \"shared/flags.json\"\n\n\
         [apps.shop.flags.declared.new_checkout]\n"
            .into()
    });
    std::fs::write(
        site.root.join("shared/flags.json"),
        br#"{"new_checkout": {"enabled": false}, "other": 1}"#,
    )
    .unwrap();
    site.deploy("v1", V1);
    site.deploy("v2", V1);
    // The new release's rollout turns the flag on.
    let set = site.ctl.run(&[
        "flag",
        "set",
        s(&site.plan),
        "new_checkout",
        "on",
        "--percent",
        "50",
    ]);
    assert_eq!(set.code, 0, "{}", set.text());

    let run = site.local(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("asking it through its local socket")
            && run.stdout.contains("shop: rolled back from v2 to v1"),
        "{}",
        run.text()
    );
    let flags: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(site.root.join("shared/flags.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(flags["new_checkout"]["enabled"], false, "{flags}");
    assert!(flags["new_checkout"].get("percent").is_none(), "{flags}");
    assert_eq!(flags["other"], 1, "{flags}");
    let by: String = site
        .agent
        .journal()
        .query_row(
            "SELECT by FROM flag_changes ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        by.contains("host rollback job") && by.contains("local:"),
        "{by}"
    );
    // The job is the agent's own, with who asked.
    let (by, spec): (String, String) = site
        .agent
        .journal()
        .query_row(
            "SELECT submitted_by, spec FROM jobs WHERE kind = 'host.rollback'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(by.starts_with("local:"), "{by}");
    assert!(spec.contains("LocalCli"), "{spec}");
}

/// `golive-agent rollback` runs in its own process when the agent is
/// stopped and through the socket when it runs; the socket takes nothing
/// but a host rollback and its events, and nobody but the agent's user or
/// root.
/// Issue 14: a host rollback with nothing to roll back to is `NotFound`,
/// the words as before. Of a deployment that was the first install: the
/// agent refuses it when submitted (no job). A rollback job (the code
/// steps) with no earlier release fails before any change, the code
/// journaled with it. `golivectl rollback` of that deployment refuses it
/// itself from its record (exit 2).
/// Nothing changes: current stays, no maintenance.
#[test]
fn issue14_a_host_rollback_with_nothing_to_roll_back_to_is_not_found() {
    let site = Site::new("127.0.0.250", |_| String::new());
    let d1 = site.deploy("v1", V1);

    let c = site.client();
    let refused = block_on(c.call(&Request::SubmitJob(SubmitJob {
        idempotency_key: "anything".into(),
        lease: None,
        spec: JobSpec::HostRollback(request(Some(&d1))),
    })));
    match refused {
        Err(golivectl::client::ClientError::Agent { body, .. }) => {
            assert_eq!(body.code, ErrorCode::NotFound, "{body:?}");
            assert!(
                body.message.contains(&format!(
                    "deployment {d1} was the first install of shop on web1: there is no earlier \
                     release to go back to"
                )),
                "{body:?}"
            );
        }
        other => panic!("not refused: {other:?}"),
    }

    // Every way back resolves to that deployment's point; the older
    // protocol's rollback job (the host rollback's code steps) finds no
    // earlier release when it runs.
    let submitted = block_on(c.call(&Request::SubmitJob(SubmitJob {
        idempotency_key: "older-rollback".into(),
        lease: None,
        spec: JobSpec::Rollback(golive_shared::protocol::RollbackRelease {
            app: "shop".into(),
            to: None,
            reason: "test".into(),
        }),
    })))
    .expect("submit the rollback job");
    let Response::Job(submitted) = submitted else {
        panic!("unexpected answer {submitted:?}")
    };
    let (job, lines) = site.follow(submitted.id);
    assert_eq!(job.state, JobState::Failed, "{}", lines.join("\n"));
    assert_eq!(job.error_code, Some(ErrorCode::NotFound), "{job:?}");
    assert_eq!(
        job.error.as_deref(),
        Some(
            "host rollback of shop on web1 refused before any change: app shop has no earlier \
             release to roll back to (current: v1)"
        )
    );
    assert_eq!(
        site.journal_count(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'rollback' AND error_code = 'NotFound'"
        ),
        1
    );

    site.write_plan(None);
    let run = site.ctl.run(&["rollback", &d1]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.text().contains("there is nothing to roll back to"),
        "{}",
        run.text()
    );
    assert_eq!(site.current().as_deref(), Some("v1"));
    assert!(!site.maintenance_flag());
}

#[test]
fn issue13_the_local_cli_runs_in_process_or_through_an_owner_only_socket() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test connects to the socket as user nobody: the tests run as root"
    );
    let mut site = Site::new("127.0.0.247", |_| String::new());
    site.deploy("v1", V1);
    let d2 = site.deploy("v2", V1);
    let d3 = site.deploy("v3", V1);

    // Stopped: in this process, the same journaled job.
    assert!(site.agent.stop(), "the agent did not exit on SIGTERM");
    assert!(
        !site.agent.state_dir.join("agent.sock").exists(),
        "the socket is removed at stop"
    );
    let run = site.local(&[]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("rolling back in this process")
            && run.stdout.contains("shop: rolled back from v3 to v2"),
        "{}",
        run.text()
    );
    assert_eq!(site.current().as_deref(), Some("v2"));

    site.agent.spawn();
    // The controller learns of it when it looks: recorded once, by the host
    // (the plan names the agent's new port).
    site.write_plan(None);
    let show = site.ctl.run(&["--output", "json", "show", &d3]);
    assert_eq!(show.code, 0, "{}", show.text());
    let rec = show
        .json_lines()
        .into_iter()
        .find(|v| v["id"] == d3.as_str())
        .expect("the record");
    assert_eq!(rec["state"], "rolled_back", "{}", show.text());
    let actions = rec["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert!(
        actions[0]["by"]
            .as_str()
            .unwrap()
            .starts_with("web1 (golive-agent rollback"),
        "{actions:#?}"
    );
    let detail = actions[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("web1: rolled back from v3 to v2")
            && detail.contains("database: code only")
            && detail.contains("reactivate done"),
        "{detail}"
    );
    let history = site.ctl.run(&["show", &d3]);
    assert!(
        history.stdout.contains("| rollback |"),
        "{}",
        history.text()
    );
    let sock = site.agent.state_dir.join("agent.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same rollback again: the job that did it answers.
    let again = site.local(&[]);
    assert_eq!(again.code, 0, "{}", again.text());
    assert!(
        again.stdout.contains("asking it through its local socket")
            && again.stdout.contains("asked for before"),
        "{}",
        again.text()
    );
    assert_eq!(site.current().as_deref(), Some("v2"));
    // An older deployment, through the socket.
    let run = site.local(&["--deployment", &d2]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("shop: rolled back from v2 to v1"),
        "{}",
        run.text()
    );
    assert_eq!(site.current().as_deref(), Some("v1"));
    // A target other than the point's previous release needs --force.
    let refused = site.local(&["--deployment", &d2, "--to", "v3"]);
    assert_eq!(refused.code, 2, "{}", refused.text());
    assert!(refused.stderr.contains("--force"), "{}", refused.text());

    // Anything but a host rollback and its events is refused.
    let mut c = golive_agent::local::Client::connect(&site.agent.state_dir).expect("connect");
    let forbidden = |r: Result<Response, String>, what: &str| match r {
        Ok(Response::Error(e)) => assert_eq!(e.code, ErrorCode::Forbidden, "{what}: {e:?}"),
        other => panic!("{what}: {other:?}"),
    };
    forbidden(
        c.call(&Request::Status(StatusRequest { apps: vec![] })),
        "status",
    );
    let stage_job: i64 = site.journal_count("SELECT MIN(id) FROM jobs WHERE kind = 'stage'");
    forbidden(
        c.call(&Request::JobEvents(JobEventsRequest {
            job_id: stage_job as u64,
            after_seq: 0,
            wait_ms: 0,
        })),
        "events of a stage job",
    );
    forbidden(
        c.call(&Request::SubmitJob(SubmitJob {
            idempotency_key: "k".into(),
            lease: None,
            spec: JobSpec::Maintenance(golive_shared::protocol::SetMaintenance {
                app: "shop".into(),
                on: true,
                reason: "x".into(),
            }),
        })),
        "a maintenance job",
    );
    match c.call(&Request::SubmitJob(SubmitJob {
        idempotency_key: "k".into(),
        lease: None,
        spec: JobSpec::HostRollback(request(None)),
    })) {
        Ok(Response::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}"),
        other => panic!("requested_by controller over the socket: {other:?}"),
    }
    assert!(!site.maintenance_flag());
    drop(c);

    // Another uid is refused by its credentials, even where the file mode
    // would let it in.
    for p in [
        site.dir.path().to_path_buf(),
        site.dir.path().join("web1"),
        site.agent.state_dir.clone(),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let frame = golive_shared::codec::encode(&Request::Status(StatusRequest { apps: vec![] }));
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_local_socket_peer"))
        .args([s(&sock), &hex::encode(&frame)]);
    let run = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}", run.text());
    let bytes = hex::decode(run.stdout.trim()).expect("hex answer");
    assert!(bytes.len() > 4, "{}", run.text());
    match golive_shared::codec::decode::<Response>(&bytes[4..]) {
        Ok(Response::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}");
            assert!(e.message.contains("uid 65534"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    let (role, op, outcome): (String, String, String) = site
        .agent
        .journal()
        .query_row(
            "SELECT role, operation, outcome FROM audit WHERE peer_name LIKE '%uid 65534%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the refusal is audited");
    assert_eq!((role.as_str(), op.as_str()), ("local", "local.connect"));
    assert!(outcome.starts_with("Forbidden"), "{outcome}");
    assert_eq!(
        site.journal_count(
            "SELECT COUNT(*) FROM audit WHERE role = 'local' AND operation = 'local.job.submit:host.rollback' AND outcome = 'ok'"
        ),
        2
    );
}
