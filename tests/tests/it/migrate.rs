//! `golivectl migrate status|up|down` end to end: a real agent over mTLS, a
//! real SQLite database declared in the agent config, migrations shipped in
//! a deployed release.
//!
//! Loopback addresses 127.0.0.130-139 belong to this module.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use golive_tests::*;
use serde_json::Value;

// Both expand: a rollback of the deployment is code-only (issue 13), and
// the schema stays ahead of the release it goes back to.
const UP1: &str =
    "-- golive: expand\nCREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);\n";
const UP2: &str =
    "-- golive: expand\nCREATE TABLE order_notes (id INTEGER PRIMARY KEY, note TEXT);\n";

/// One agent for app `shop` with a SQLite database `main`; `app_extra` is
/// appended inside `[apps.shop]`.
struct Bed {
    _dir: tempfile::TempDir,
    ctl: Ctl,
    root: PathBuf,
    db: PathBuf,
    plan: PathBuf,
    _agent: AgentProc,
}

impl Bed {
    fn new(ip: &str, migrations: bool) -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let root = dir.path().join("srv/shop");
        std::fs::create_dir_all(root.join("shared")).expect("root");
        let db = dir.path().join("shop.db");
        rusqlite::Connection::open(&db)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL;"))
            .expect("create db");
        let mut spec = AgentSpec::new("web1", ip);
        spec.apps_toml = format!(
            "[apps.shop]\nroot = {root:?}\n\n\
             [[apps.shop.databases]]\nengine = \"sqlite\"\nname = \"main\"\npath = {db:?}\n\n\
             [apps.shop.maintenance]\nflag_file = \"shared/maintenance.flag\"\n\n{}",
            if migrations {
                "[apps.shop.migrations]\ndir = \"migrations\"\ndatabase = \"main\"\n"
            } else {
                ""
            }
        );
        let agent = AgentProc::start(dir.path(), &pki, &spec);
        let op = pki.operator("alice", "operator");
        let plan = dir.path().join("plan.toml");
        write_plan(&plan, &pki, &op, "shop", None, &[&agent]);
        let ctl = Ctl::new(dir.path());
        // v1 without migrations, then v2 with them.
        for (id, files) in [
            ("v1", vec![("index.html", b"v1".as_slice())]),
            (
                "v2",
                vec![
                    ("index.html", b"v2".as_slice()),
                    ("migrations/0001_orders.up.sql", UP1.as_bytes()),
                    ("migrations/0001_orders.down.sql", b"DROP TABLE orders;\n"),
                    ("migrations/0002_add_col.up.sql", UP2.as_bytes()),
                    (
                        "migrations/0002_add_col.down.sql",
                        b"DROP TABLE order_notes;\n",
                    ),
                ],
            ),
        ] {
            let art = dir.path().join(format!("dist/shop-{id}.tar.gz"));
            artifact(&art, &files);
            let dplan = dir.path().join(format!("deploy-{id}.toml"));
            write_plan(&dplan, &pki, &op, "shop", Some((id, &art)), &[&agent]);
            let r = ctl.run(&["deploy", s(&dplan)]);
            assert_eq!(r.code, 0, "deploy {id}: {}", r.text());
        }
        Bed {
            _dir: dir,
            ctl,
            root,
            db,
            plan,
            _agent: agent,
        }
    }

    fn ctl(&self, args: &[&str]) -> Run {
        self.ctl.run(args)
    }

    /// `migrate status --release v2` of the one host.
    fn status(&self) -> Value {
        let r = self.ctl(&[
            "--output",
            "json",
            "migrate",
            "status",
            s(&self.plan),
            "--release",
            "v2",
        ]);
        assert_eq!(r.code, 0, "{}", r.text());
        let v = r.json_lines().pop().expect("one JSON object");
        let hosts = v["hosts"].as_array().expect("hosts array");
        assert_eq!(hosts.len(), 1, "{v}");
        hosts[0].clone()
    }

    fn versions(st: &Value, key: &str) -> Vec<u64> {
        st[key]
            .as_array()
            .expect("array")
            .iter()
            .map(|m| m["version"].as_u64().expect("version"))
            .collect()
    }

    fn tables(&self) -> Vec<String> {
        let c = rusqlite::Connection::open(&self.db).expect("open db");
        let mut q = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn tracked(&self) -> Vec<i64> {
        let c = rusqlite::Connection::open(&self.db).expect("open db");
        let mut q = c
            .prepare("SELECT version FROM golive_migrations ORDER BY version")
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn migrate(&self, args: &[&str]) -> Run {
        let mut all = vec!["migrate"];
        all.extend_from_slice(args);
        all.push(s(&self.plan));
        all.extend_from_slice(&["--release", "v2"]);
        self.ctl(&all)
    }
}

fn has_table(tables: &[String], name: &str) -> bool {
    tables.iter().any(|t| t == name)
}

#[test]
fn migrate_status_up_down_through_the_agent() {
    let bed = Bed::new("127.0.0.130", true);
    let st = bed.status();
    assert_eq!(st["release"], "v2", "{st}");
    assert_eq!(st["database"], "main", "{st}");
    let (applied, pending) = (Bed::versions(&st, "applied"), Bed::versions(&st, "pending"));
    // The deploy may or may not have applied them already.
    assert_eq!(applied.len() + pending.len(), 2, "{st}");

    // Down to 0 makes the state deterministic: both pending.
    let r = bed.migrate(&["down", "--to", "0"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let st = bed.status();
    assert!(Bed::versions(&st, "applied").is_empty(), "{st}");
    assert_eq!(Bed::versions(&st, "pending"), [1, 2], "{st}");
    let pending = st["pending"].as_array().unwrap();
    assert_eq!(pending[0]["name"], "orders");
    assert_eq!(pending[0]["tag"], "expand");
    assert_eq!(pending[1]["name"], "add_col");
    assert_eq!(pending[1]["tag"], "expand", "{st}");
    assert!(pending.iter().all(|p| p["has_down"] == true), "{st}");
    let tables = bed.tables();
    assert!(!has_table(&tables, "orders"), "{tables:?}");
    assert!(!has_table(&tables, "order_notes"), "{tables:?}");

    // The human table names both.
    let r = bed.migrate(&["status"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.contains("pending") && r.stdout.contains("expand"),
        "{}",
        r.text()
    );

    // Up applies both, tracked with their versions.
    let r = bed.migrate(&["up"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.contains("0001") && r.stdout.contains("0002"),
        "{}",
        r.text()
    );
    let tables = bed.tables();
    assert!(has_table(&tables, "orders"), "{tables:?}");
    assert!(has_table(&tables, "order_notes"), "{tables:?}");
    assert_eq!(bed.tracked(), [1, 2]);
    let st = bed.status();
    assert_eq!(Bed::versions(&st, "applied"), [1, 2], "{st}");
    assert!(Bed::versions(&st, "pending").is_empty(), "{st}");
    assert_eq!(st["applied"][0]["name"], "orders");

    // Up again: nothing pending, still exit 0.
    let r = bed.migrate(&["up"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // Down to 1 reverts 0002 only.
    let r = bed.migrate(&["down", "--to", "1"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let tables = bed.tables();
    assert!(has_table(&tables, "orders"), "{tables:?}");
    assert!(!has_table(&tables, "order_notes"), "{tables:?}");
    assert_eq!(bed.tracked(), [1]);
    let st = bed.status();
    assert_eq!(Bed::versions(&st, "applied"), [1], "{st}");
    assert_eq!(Bed::versions(&st, "pending"), [2], "{st}");

    // Down to 0, then up again: both directions once more.
    let r = bed.migrate(&["down", "--to", "0"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(bed.tracked().is_empty());
    assert!(!has_table(&bed.tables(), "orders"));
    let r = bed.migrate(&["up"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(bed.tracked(), [1, 2]);
    assert!(has_table(&bed.tables(), "order_notes"));
}

#[test]
fn migrate_refuses_a_changed_applied_migration_naming_the_file() {
    let bed = Bed::new("127.0.0.131", true);
    let r = bed.migrate(&["up"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(bed.tracked(), [1, 2]);

    let file = bed.root.join("releases/v2/migrations/0001_orders.up.sql");
    let dir = file.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if file.exists() {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::write(
        &file,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER, extra TEXT);\n",
    )
    .unwrap();

    let r = bed.migrate(&["status"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("0001_orders.up.sql"), "{}", r.text());
    assert!(r.text().contains("changed"), "{}", r.text());

    let r = bed.migrate(&["up"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("0001_orders.up.sql"), "{}", r.text());
    assert!(r.text().contains("changed"), "{}", r.text());
    // Nothing changed in the database.
    assert_eq!(bed.tracked(), [1, 2]);
}

#[test]
fn migrate_status_of_an_app_without_migrations_is_refused() {
    let bed = Bed::new("127.0.0.132", false);
    let r = bed.migrate(&["status"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("declares no migrations"), "{}", r.text());
    let r = bed.migrate(&["up"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.text().contains("declares no migrations"), "{}", r.text());
}

/// Issue 12 parts 7, 8 and 16: after a code-only rollback to a release that
/// ships no migrations directory, `migrate status` reports the ledger (the
/// migrations are ahead of the live release, exit 0), `down --dry-run` says
/// what the down drops, and `down --to 1 --deployment D` takes a verified
/// backup, reverts with the down text the ledger stored, and is recorded on
/// the deployment.
#[test]
fn issue12_after_a_code_only_rollback_status_and_down_use_the_ledger() {
    let bed = Bed::new("127.0.0.133", true);
    assert_eq!(bed.tracked(), [1, 2], "the deploy of v2 applied both");
    let deployment: String = rusqlite::Connection::open(&bed.db)
        .unwrap()
        .query_row(
            "SELECT deployment FROM golive_migrations WHERE version = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    rusqlite::Connection::open(&bed.db)
        .unwrap()
        .execute_batch("INSERT INTO order_notes (note) VALUES ('a'), ('b'), ('c');")
        .unwrap();
    let r = bed.ctl(&["rollback", &deployment]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(
        std::fs::read_link(bed.root.join("current")).unwrap(),
        Path::new("releases/v1")
    );

    // v1 ships no migrations directory: the ledger, ahead of it.
    let r = bed.ctl(&["--output", "json", "migrate", "status", s(&bed.plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    let v = r.json_lines().pop().expect("one JSON object");
    let st = &v["hosts"][0];
    assert_eq!(st["release"], "v1", "{st}");
    assert_eq!(st["ahead"], serde_json::json!([1, 2]), "{st}");
    assert_eq!(st["applied"][1]["release"], "v2", "{st}");
    assert_eq!(st["applied"][1]["tag"], "expand", "{st}");
    assert_eq!(st["applied"][1]["has_down"], true, "{st}");
    assert_eq!(
        st["applied"][1]["down_drops"][0]["table"], "order_notes",
        "{st}"
    );
    let r = bed.ctl(&["migrate", "status", s(&bed.plan)]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.contains("ahead of release v1") && r.stdout.contains("0002_add_col"),
        "{}",
        r.text()
    );

    // The preview changes nothing.
    let r = bed.ctl(&["migrate", "down", s(&bed.plan), "--to", "1", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.contains("would revert 0002_add_col")
            && r.stdout.contains("drops table order_notes"),
        "{}",
        r.text()
    );
    assert_eq!(bed.tracked(), [1, 2]);

    // An unknown deployment is refused before anything runs.
    let r = bed.ctl(&[
        "migrate",
        "down",
        s(&bed.plan),
        "--to",
        "1",
        "--deployment",
        "nope",
    ]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert_eq!(bed.tracked(), [1, 2]);

    let r = bed.ctl(&[
        "--output",
        "json",
        "migrate",
        "down",
        s(&bed.plan),
        "--to",
        "1",
        "--deployment",
        &deployment,
    ]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(bed.tracked(), [1]);
    assert!(!has_table(&bed.tables(), "order_notes"));
    let lines = r.json_lines();
    let result = lines
        .iter()
        .find(|e| e["event"] == "result")
        .expect("a result event");
    assert_eq!(result["reverted"], serde_json::json!([2]), "{result}");
    assert_eq!(result["drops"][0]["table"], "order_notes", "{result}");
    assert_eq!(result["drops"][0]["rows"], 3, "{result}");
    let backup = result["backup"].as_str().expect("a backup id").to_string();
    assert!(backup.contains("pre-migrate-down"), "{result}");
    // The warning came before the down, as a job event.
    assert!(
        r.stdout
            .contains("the down migrations drop table order_notes (3 rows)"),
        "{}",
        r.stdout
    );
    let r = bed.ctl(&["--output", "json", "backup", "list", s(&bed.plan)]);
    let listed = r.json_lines().pop().expect("list");
    let b = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == backup.as_str())
        .expect("the pre-migrate-down backup is listed")
        .clone();
    assert_eq!(b["verified"], true, "{b}");
    // The backup holds the dropped rows.
    let r = bed.ctl(&["--output", "json", "show", &deployment]);
    assert_eq!(r.code, 0, "{}", r.text());
    let record = r.json_lines().pop().expect("record");
    let actions = record["actions"].as_array().expect("actions");
    let down = actions
        .iter()
        .find(|a| a["action"] == "migrate-down")
        .unwrap_or_else(|| panic!("no migrate-down action in {record}"));
    assert!(
        down["detail"].as_str().unwrap().contains(&backup)
            && down["detail"].as_str().unwrap().contains("order_notes"),
        "{down}"
    );
    assert_eq!(down["by"], "alice", "{down}");

    // No verified backup, no down: a file where the backup directory
    // belongs makes the backup fail; the down is refused, nothing changes.
    let backups = bed._agent.state_dir.join("backups/shop");
    assert!(backups.is_dir(), "{}", backups.display());
    let aside = bed._dir.path().join("backups-aside");
    std::fs::rename(&backups, &aside).unwrap();
    std::fs::write(&backups, "not a directory").unwrap();
    let r = bed.ctl(&["migrate", "down", s(&bed.plan), "--to", "0"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.text().contains("migrate down refused")
            && r.text()
                .contains("could not be taken, so nothing was changed"),
        "{}",
        r.text()
    );
    assert_eq!(bed.tracked(), [1]);
    assert!(has_table(&bed.tables(), "orders"));
    std::fs::remove_file(&backups).unwrap();
    std::fs::rename(&aside, &backups).unwrap();

    // Down once more from v1: 0001 has its stored down text too.
    let r = bed.ctl(&["migrate", "down", s(&bed.plan), "--to", "0"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(bed.tracked().is_empty());
    assert!(!has_table(&bed.tables(), "orders"));
}

/// Issue 14, part 8: a failed migrate job's exit code comes from the code
/// the agent gave the failure, never from its text. A migration whose SQL
/// fails is exit 1 though the error names a table "has no down file" (a
/// phrase of a refusal); a changed applied migration is refused, exit 2.
#[test]
fn issue14_migrate_exit_codes_come_from_the_jobs_error_code_not_its_text() {
    let bed = Bed::new("127.0.0.136", true);
    let r = bed.migrate(&["down", "--to", "1"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(bed.tracked(), [1]);

    let dir = bed.root.join("releases/v2/migrations");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pending = dir.join("0002_add_col.up.sql");
    if pending.exists() {
        std::fs::set_permissions(&pending, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::write(
        &pending,
        "CREATE TABLE \"has no down file\" (x);\nCREATE TABLE \"has no down file\" (x);\n",
    )
    .unwrap();
    let r = bed.migrate(&["up"]);
    assert!(r.text().contains("FAILED"), "{}", r.text());
    assert!(r.text().contains("has no down file"), "{}", r.text());
    assert_eq!(r.code, 1, "a failure whatever its text says: {}", r.text());
    assert_eq!(bed.tracked(), [1], "the failed migration was not recorded");

    let applied = dir.join("0001_orders.up.sql");
    if applied.exists() {
        std::fs::set_permissions(&applied, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::write(&applied, "CREATE TABLE orders (id INTEGER PRIMARY KEY);\n").unwrap();
    let r = bed.migrate(&["up"]);
    assert_eq!(r.code, 2, "a refusal: {}", r.text());
    assert!(
        r.text().contains("0001_orders.up.sql") && r.text().contains("changed"),
        "{}",
        r.text()
    );
    assert_eq!(bed.tracked(), [1]);
}
