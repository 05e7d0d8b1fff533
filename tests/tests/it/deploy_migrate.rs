//! Issue 4: a deployment whose release ships pending migrations goes into
//! maintenance, takes a verified backup (even when the plan did not ask),
//! applies the migrations while the old release serves behind maintenance,
//! then switches. Loopback 127.0.0.140-149 belong to this module.

use std::path::Path;

use golive_tests::*;
use serde_json::Value;

#[test]
fn issue4_pending_migrations_bring_maintenance_a_verified_backup_and_run_before_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let root = dir.path().join("srv/shop");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    let db = root.join("shared/shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE seen (n INTEGER); INSERT INTO seen VALUES (1);")
        .unwrap();
    let flag = root.join("shared/maintenance.flag");
    let mut spec = AgentSpec::new("web1", "127.0.0.140");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n\n\
         [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n"
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());

    // v1 ships no migrations: a zero-downtime switch, no backup asked for.
    let v1 = dir.path().join("dist/shop-v1.tar.gz");
    artifact(&v1, &[("index.html", b"v1")]);
    let plan = dir.path().join("plan.toml");
    write_plan(&plan, &pki, &op, "shop", Some(("v1", &v1)), &[&agent]);
    let r = ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let events = r.json_lines();
    assert!(
        !events
            .iter()
            .any(|e| e["step"] == "maintenance-on" || e["step"] == "backup"),
        "{}",
        r.stdout
    );

    // v2 ships two migrations: maintenance, verified backup, migrate, switch.
    let v2 = dir.path().join("dist/shop-v2.tar.gz");
    artifact(
        &v2,
        &[
            ("index.html", b"v2"),
            (
                "migrations/0001_orders.up.sql",
                b"CREATE TABLE orders (id INTEGER PRIMARY KEY);",
            ),
            ("migrations/0001_orders.down.sql", b"DROP TABLE orders;"),
            (
                "migrations/0002_items.up.sql",
                b"-- golive: expand\nCREATE TABLE items (id INTEGER PRIMARY KEY);",
            ),
            ("migrations/0002_items.down.sql", b"DROP TABLE items;"),
        ],
    );
    write_plan(&plan, &pki, &op, "shop", Some(("v2", &v2)), &[&agent]);
    let r = ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let events = r.json_lines();
    let steps: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "step" && e["state"] != "started")
        .map(|e| {
            format!(
                "{}:{}",
                e["step"].as_str().unwrap(),
                e["state"].as_str().unwrap()
            )
        })
        .collect();
    let pos = |needle: &str| {
        steps
            .iter()
            .position(|x| x == needle)
            .unwrap_or_else(|| panic!("no {needle} in {steps:?}"))
    };
    assert!(
        pos("migrations:pending") < pos("maintenance-on:ok"),
        "{steps:?}"
    );
    assert!(pos("maintenance-on:ok") < pos("backup:ok"), "{steps:?}");
    assert!(pos("backup:ok") < pos("migrate:ok"), "{steps:?}");
    assert!(pos("migrate:ok") < pos("activate:ok"), "{steps:?}");
    assert!(pos("activate:ok") < pos("maintenance-off:ok"), "{steps:?}");
    let result = events.iter().find(|e| e["event"] == "result").unwrap();
    assert!(
        result["downtime_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{result}"
    );
    assert!(!flag.exists(), "maintenance is off at the end");

    // The schema moved, tracked with this deployment; the backup was verified.
    let c = rusqlite::Connection::open(&db).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        tables.contains(&"orders".to_string()) && tables.contains(&"items".to_string()),
        "{tables:?}"
    );
    let deployment = result["deployment"].as_str().unwrap();
    let tracked: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM golive_migrations WHERE deployment = ?1",
            [deployment],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tracked, 2);
    let r = ctl.run(&["--output", "json", "backup", "list", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let listed: Value = r.json_lines().pop().unwrap();
    let pre = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["deployment"] == deployment)
        .expect("a pre-deploy backup for this deployment");
    assert_eq!(pre["verified"], true, "{pre}");
    assert_eq!(pre["release"], "v1", "taken while v1 served");
}

/// Issue 4 part 6: the app's own migration tool runs in the new release on
/// every deployment, behind maintenance, after a verified backup; a failing
/// command stops the deployment before the switch.
#[test]
fn issue4_migration_command_runs_in_the_new_release_and_a_failure_stops_before_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let root = dir.path().join("srv/shop");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    let db = root.join("shared/shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (n INTEGER);")
        .unwrap();
    let flag = root.join("shared/maintenance.flag");
    let mut spec = AgentSpec::new("web1", "127.0.0.141");
    // The release decides what its migration does: `migrate.sh` in it.
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migration_command]\ncmd = [\"sh\", \"migrate.sh\"]\ntimeout_secs = 30\n\n\
         [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n"
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let plan = dir.path().join("plan.toml");
    let deploy = |v: &str, script: &[u8]| {
        let art = dir.path().join(format!("dist/shop-{v}.tar.gz"));
        artifact(
            &art,
            &[("index.html", v.as_bytes()), ("migrate.sh", script)],
        );
        write_plan(&plan, &pki, &op, "shop", Some((v, &art)), &[&agent]);
        ctl.run(&["--output", "json", "deploy", s(&plan)])
    };
    let log = root.join("shared/migrated.log");
    let ok_script =
        b"echo \"$GOLIVE_RELEASE in $(basename \"$PWD\")\" >> ../../shared/migrated.log\n";
    let r = deploy("v1", ok_script);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = deploy("v2", ok_script);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}:\n{}", r.text())),
        "v1 in v1\nv2 in v2\n",
        "the command ran once per deployment, in the new release"
    );
    let events = r.json_lines();
    for step in ["maintenance-on", "backup", "migrate", "maintenance-off"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "step" && e["step"] == step && e["state"] == "ok"),
            "{step} missing:\n{}",
            r.stdout
        );
    }

    // A failing migration command: the deployment stops before the switch.
    let r = deploy(
        "v3",
        b"echo 'update 9001 failed: column exists' >&2\nexit 5\n",
    );
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.text().contains("exit 5"), "{}", r.text());
    assert!(r.text().contains("update 9001 failed"), "{}", r.text());
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        Path::new("releases/v2"),
        "the old release still serves"
    );
    assert!(!flag.exists(), "maintenance is off again");
    // Command-only migrations have no down: the controller says what to do.
    let r = ctl.run(&["migrate", "down", s(&plan), "--to", "0"]);
    assert_ne!(r.code, 0, "{}", r.text());
    assert!(r.text().contains("pre-deploy backup"), "{}", r.text());
}

/// Issue 12 part 7: the gate rolls back the code of a release whose
/// migration is `expand`. The schema stays migrated, and that is normal:
/// the final line says so (and how to revert it), `migrate status` exits 0
/// with the migration ahead of the live release, and preflight is READY.
#[test]
fn issue12_gate_rollback_after_an_expand_migration_leaves_a_normal_state() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let root = dir.path().join("srv/shop");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    let db = root.join("shared/shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA journal_mode=WAL;")
        .unwrap();
    let ip = "127.0.0.142";
    let http = HttpApp::serve(&root.join("current"), ip);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n\n\
         [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\n\
         [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
         url = \"http://{ip}:{}/health\"\nexpect_status = [200]\nseverity = \"critical\"\n\
         timeout_ms = 3000\n",
        http.port
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let plan = dir.path().join("plan.toml");
    let up1: &[u8] = b"CREATE TABLE orders (id INTEGER PRIMARY KEY);";
    let deploy = |v: &str, files: &[(&str, &[u8])]| {
        let art = dir.path().join(format!("dist/shop-{v}.tar.gz"));
        artifact(&art, files);
        write_plan(&plan, &pki, &op, "shop", Some((v, &art)), &[&agent]);
        ctl.run(&["--output", "json", "deploy", s(&plan)])
    };

    // v1 is healthy and ships migration 1.
    let r = deploy(
        "v1",
        &[
            ("health", b"ok\n"),
            ("migrations/0001_orders.up.sql", up1),
            ("migrations/0001_orders.down.sql", b"DROP TABLE orders;"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.text());

    // v2 adds an expand migration and breaks the health probe: the gate
    // switches back to v1 after the migration ran.
    let r = deploy(
        "v2",
        &[
            ("index.html", b"v2"),
            ("migrations/0001_orders.up.sql", up1),
            ("migrations/0001_orders.down.sql", b"DROP TABLE orders;"),
            (
                "migrations/0002_add_note.up.sql",
                b"-- golive: expand\nALTER TABLE orders ADD COLUMN note TEXT;",
            ),
            (
                "migrations/0002_add_note.down.sql",
                b"ALTER TABLE orders DROP COLUMN note;",
            ),
        ],
    );
    assert_eq!(r.code, 3, "{}", r.text());
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        Path::new("releases/v1")
    );
    let result = r
        .json_lines()
        .into_iter()
        .find(|e| e["event"] == "result")
        .expect("a result event");
    let message = result["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains(&format!(
            "the schema stays at version 2 (migration 0002_add_note is expand: the previous \
             release runs on it; `golivectl migrate down {} --to 1` reverts it)",
            plan.display()
        )),
        "{result}"
    );

    // A normal state: status exits 0 and shows it; preflight is READY.
    let r = ctl.run(&["--output", "json", "migrate", "status", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let st = r.json_lines().pop().unwrap();
    assert_eq!(st["hosts"][0]["ahead"], serde_json::json!([2]), "{st}");
    assert_eq!(st["hosts"][0]["release"], "v1", "{st}");
    // Preflight of the fixed release, v3, on the live v1.
    let v3 = dir.path().join("dist/shop-v3.tar.gz");
    artifact(&v3, &[("health", b"ok\n")]);
    write_plan(&plan, &pki, &op, "shop", Some(("v3", &v3)), &[&agent]);
    let r = ctl.run(&["preflight", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("verdict: READY"), "{}", r.text());
    assert!(
        r.stdout
            .contains("the schema is ahead of the release by 0002_add_note (expand"),
        "{}",
        r.text()
    );
    drop(http);
}

/// Issue 12 part 4, a first install with migrations: the SQLite database
/// does not exist yet, so preflight calls it n/a (not a failure) and the
/// pre-deploy backup has nothing to save; nothing is live, so the
/// migrations run without maintenance; `migrate up` creates the database.
/// Once a release is live, a missing database is a failure again.
#[test]
fn issue12_a_first_install_creates_its_database_with_its_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let root = dir.path().join("srv/shop");
    let db = root.join("shared/data/shop.db");
    let mut spec = AgentSpec::new("web1", "127.0.0.148");
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\nshared = [\"data/\"]\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n\n\
         [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n"
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let v1 = dir.path().join("dist/shop-v1.tar.gz");
    artifact(
        &v1,
        &[
            ("index.html", b"v1"),
            (
                "migrations/0001_orders.up.sql",
                b"CREATE TABLE orders (id INTEGER PRIMARY KEY);",
            ),
            ("migrations/0001_orders.down.sql", b"DROP TABLE orders;"),
        ],
    );
    let plan = dir.path().join("plan.toml");
    write_plan(&plan, &pki, &op, "shop", Some(("v1", &v1)), &[&agent]);
    let mut text = std::fs::read_to_string(&plan).unwrap();
    text.push_str("\n[deploy]\nbackup = \"verified\"\n");
    std::fs::write(&plan, text).unwrap();

    let pre = ctl.run(&["preflight", s(&plan)]);
    assert_eq!(pre.code, 0, "{}", pre.text());
    assert!(
        pre.stdout.contains("n/a    database main [critical]")
            && pre
                .stdout
                .contains("does not exist yet: the first release's migrations create it"),
        "{}",
        pre.text()
    );

    let r = ctl.run(&["--output", "json", "deploy", s(&plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let events = r.json_lines();
    assert!(
        !events.iter().any(|e| e["step"] == "maintenance-on"),
        "a first install has nothing live to keep users off: {}",
        r.stdout
    );
    assert!(
        events.iter().any(|e| e["event"] == "log"
            && e["line"].as_str().is_some_and(
                |l| l.contains("database main: nothing to save, it does not exist yet")
            )),
        "{}",
        r.stdout
    );
    let tables: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'orders'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
    let windows: i64 = agent
        .journal()
        .query_row("SELECT COUNT(*) FROM maintenance_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(windows, 0);

    // Live now: a database that disappears is a failure, not "not yet".
    std::fs::remove_file(&db).unwrap();
    let v2 = dir.path().join("dist/shop-v2.tar.gz");
    artifact(&v2, &[("index.html", b"v2")]);
    write_plan(&plan, &pki, &op, "shop", Some(("v2", &v2)), &[&agent]);
    let pre = ctl.run(&["preflight", s(&plan)]);
    assert_eq!(pre.code, 1, "{}", pre.text());
    assert!(
        pre.stdout.contains("FAIL   database main [critical]"),
        "{}",
        pre.text()
    );
}

/// Issue 13 part 4: a deployment's `contract` migrations (and those after
/// them) do not run before the switch: a rollback inside that time is
/// code-only and the old release keeps the column it reads. When the
/// release passes its gate it is committed and they run, behind a verified
/// `pre-contract` backup. `[deploy] contract = "with-deploy"` runs them
/// before the switch like the others.
#[test]
fn issue13_contract_migrations_run_at_commit_not_before_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let root = dir.path().join("srv/shop");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    let db = root.join("shared/shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA journal_mode=WAL;")
        .unwrap();
    let ip = "127.0.0.143";
    let http = HttpApp::serve(&root.join("current"), ip);
    let mut spec = AgentSpec::new("web1", ip);
    spec.apps_toml = format!(
        "[apps.shop]\nroot = {root:?}\n\n\
         [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
         [apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n\n\
         [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\n\
         [[apps.shop.probes]]\nkind = \"http\"\nname = \"health\"\n\
         url = \"http://{ip}:{}/health\"\nexpect_status = [200]\nseverity = \"critical\"\n\
         timeout_ms = 3000\n",
        http.port
    );
    let agent = AgentProc::start(dir.path(), &pki, &spec);
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let plan = dir.path().join("plan.toml");
    let deploy = |v: &str, files: &[(&str, &[u8])], extra: &str| {
        let art = dir.path().join(format!("dist/shop-{v}.tar.gz"));
        artifact(&art, files);
        write_plan(&plan, &pki, &op, "shop", Some((v, &art)), &[&agent]);
        let mut text = std::fs::read_to_string(&plan).unwrap();
        text.push_str(extra);
        std::fs::write(&plan, text).unwrap();
        ctl.run(&["--output", "json", "deploy", s(&plan)])
    };
    let columns = || -> Vec<String> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('orders')")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let m1: (&str, &[u8]) = (
        "migrations/0001_orders.up.sql",
        b"CREATE TABLE orders (id INTEGER PRIMARY KEY, legacy TEXT);",
    );
    let m2: (&str, &[u8]) = (
        "migrations/0002_total.up.sql",
        b"-- golive: expand\nALTER TABLE orders ADD COLUMN total INTEGER;",
    );
    let m3: (&str, &[u8]) = (
        "migrations/0003_drop_legacy.up.sql",
        b"-- golive: contract\nALTER TABLE orders DROP COLUMN legacy;",
    );
    let r = deploy("v1", &[("health", b"ok\n"), m1], "");
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(columns(), ["id", "legacy"]);

    // v2 is broken: the expand migration runs before the switch, the
    // contract one waits, the gate switches back: the old release still
    // has its `legacy` column.
    let r = deploy("v2", &[("index.html", b"v2"), m1, m2, m3], "");
    assert_eq!(r.code, 3, "{}", r.text());
    assert!(
        r.stdout
            .contains("0003_drop_legacy (contract) wait for the release's commit"),
        "{}",
        r.text()
    );
    assert_eq!(columns(), ["id", "legacy", "total"]);

    // v3 is healthy: committed after its gate, the contract migration runs
    // then, after a verified pre-contract backup.
    let r = deploy("v3", &[("health", b"ok\n"), m1, m2, m3], "");
    assert_eq!(r.code, 0, "{}", r.text());
    let events = r.json_lines();
    let steps: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "step" && e["state"] == "ok")
        .map(|e| e["step"].as_str().unwrap_or_default().to_string())
        .collect();
    let gate = steps.iter().position(|s| s == "gate").expect("gate");
    let commit = steps
        .iter()
        .position(|s| s == "commit-migrate")
        .unwrap_or_else(|| panic!("no commit step: {steps:?}"));
    assert!(gate < commit, "{steps:?}");
    assert_eq!(columns(), ["id", "total"]);
    let result = events.iter().find(|e| e["event"] == "result").unwrap();
    assert!(
        result["message"]
            .as_str()
            .unwrap_or_default()
            .contains("committed: the 1 migration(s) kept for the commit ran"),
        "{result}"
    );
    let backups: i64 = agent
        .journal()
        .query_row(
            "SELECT COUNT(*) FROM backups WHERE label = 'pre-contract' AND state = 'complete'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(backups, 1);

    // With "with-deploy", a contract migration runs before the switch.
    let m4: (&str, &[u8]) = (
        "migrations/0004_drop_total.up.sql",
        b"-- golive: contract\nALTER TABLE orders DROP COLUMN total;",
    );
    let r = deploy(
        "v4",
        &[("health", b"ok\n"), m1, m2, m3, m4],
        "\n[deploy]\ncontract = \"with-deploy\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(!r.stdout.contains("commit-migrate"), "{}", r.text());
    assert_eq!(columns(), ["id"]);
    drop(http);
}
