//! Issue 3: PostgreSQL and MariaDB backups end to end through the real
//! binaries: `golivectl backup create --verify`, `list`, `restore` against a
//! real agent over mTLS whose app declares a database on a real server
//! started by the test (see `golive_tests::db`). A restore returns the
//! database to exactly the backup's state (a table a migration added is
//! gone), after a `failed-state` backup of what was there, which can itself
//! be restored. Also: `check-config` names a missing client tool.
//!
//! Loopback addresses 127.0.0.100-109 belong to this module.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use golive_tests::db::{TestMariadb, TestPostgres};
use golive_tests::*;
use serde_json::Value;

/// A temp dir, a CA, an operator and an admin, one agent for app `shop`
/// (a small copy of the `Bed` in `backup.rs`).
struct Bed {
    _dir: tempfile::TempDir,
    ctl: Ctl,
    /// Plan with the operator certificate.
    plan: PathBuf,
    /// Plan with the admin certificate.
    admin_plan: PathBuf,
    _agent: AgentProc,
}

impl Bed {
    /// `app_extra` is appended inside `[apps.shop]` (database tables).
    fn new(ip: &str, app_extra: &str) -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(dir.path());
        let root = dir.path().join("srv/shop");
        std::fs::create_dir_all(root.join("shared")).expect("root");
        let mut spec = AgentSpec::new("web1", ip);
        spec.apps_toml = format!("[apps.shop]\nroot = {root:?}\n{app_extra}\n");
        let agent = AgentProc::start(dir.path(), &pki, &spec);
        let op = pki.operator("alice", "operator");
        let admin = pki.operator("root-admin", "admin");
        let plan = dir.path().join("plan.toml");
        let admin_plan = dir.path().join("admin-plan.toml");
        write_plan(&plan, &pki, &op, "shop", None, &[&agent]);
        write_plan(&admin_plan, &pki, &admin, "shop", None, &[&agent]);
        let ctl = Ctl::new(dir.path());
        Bed {
            _dir: dir,
            ctl,
            plan,
            admin_plan,
            _agent: agent,
        }
    }

    fn ctl(&self, args: &[&str]) -> Run {
        self.ctl.run(args)
    }

    /// Backups of `shop` on the host, newest first.
    fn list(&self) -> Vec<Value> {
        let r = self.ctl(&["--output", "json", "backup", "list", s(&self.plan)]);
        assert_eq!(r.code, 0, "{}", r.text());
        let v = r.json_lines().pop().expect("one JSON object");
        v["backups"].as_array().expect("backups array").clone()
    }

    fn get(&self, id: &str) -> Value {
        self.list()
            .into_iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("backup {id} is listed"))
    }

    /// Creates a backup with `--verify` and returns its id (the newest with this label).
    fn create_verified(&self, label: &str) -> String {
        let r = self.ctl(&[
            "backup",
            "create",
            s(&self.plan),
            "--label",
            label,
            "--verify",
        ]);
        assert_eq!(r.code, 0, "{}", r.text());
        self.list()
            .into_iter()
            .find(|b| b["label"] == label)
            .and_then(|b| b["id"].as_str().map(String::from))
            .expect("the new backup is listed")
    }

    /// Restores `id` with the admin plan; returns the failed-state backup's id.
    fn restore(&self, id: &str) -> String {
        let before: Vec<Value> = self.list();
        let r = self.ctl(&["backup", "restore", s(&self.admin_plan), id]);
        assert_eq!(r.code, 0, "{}", r.text());
        assert!(r.text().contains("restore ok"), "{}", r.text());
        let failed = self
            .list()
            .into_iter()
            .find(|b| b["label"] == "failed-state" && !before.iter().any(|o| o["id"] == b["id"]))
            .expect("a failed-state backup was taken before the restore");
        assert_eq!(failed["state"], "complete", "{failed}");
        let failed_id = failed["id"].as_str().expect("id").to_string();
        assert!(r.stdout.contains(&failed_id), "{}", r.text());
        failed_id
    }
}

fn pg_state(pg: &TestPostgres) -> String {
    pg.psql(
        "select count(*), md5(string_agg(concat_ws('|', id, name, price), E'\\n' order by id)) \
             from products; \
         select string_agg(c.relname || ':' || c.relkind::text, ',' order by c.relname) \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'public'; \
         select string_agg(nspname, ',' order by nspname) from pg_namespace \
             where nspname !~ '^pg_' and nspname <> 'information_schema';",
    )
}

#[test]
fn issue3_postgres_backup_verify_restore_through_golivectl() {
    let db_dir = tempfile::tempdir().expect("temp dir");
    let pg = TestPostgres::start(db_dir.path());
    pg.psql(
        "create table products (id serial primary key, name text not null, price numeric(8,2)); \
         insert into products (name, price) \
             select 'product ' || g, g * 1.25 from generate_series(1, 3000) g; \
         insert into products (name, price) values ('Ünïcödé ✓', 9.99);",
    );
    let original = pg_state(&pg);
    let bed = Bed::new("127.0.0.100", &pg.database_toml("shop", "main"));

    let id = bed.create_verified("manual");
    let b = bed.get(&id);
    assert_eq!(b["state"], "complete", "{b}");
    assert_eq!(b["verified"], true, "{b}");
    let detail = b["verify_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("test restore ok"), "{b}");

    // A migration: a new table, a new schema, a new column, changed rows.
    pg.psql(
        "create table coupons (code text primary key); insert into coupons values ('SAVE10'); \
         create schema audit; create table audit.log (line text); \
         alter table products add column stock int default 0; \
         update products set price = 0 where id <= 100; delete from products where id > 2900;",
    );
    let migrated = pg_state(&pg);
    assert_ne!(migrated, original);

    let failed_state = bed.restore(&id);
    assert_eq!(
        pg_state(&pg),
        original,
        "the database is as it was backed up"
    );
    assert_eq!(
        pg.psql("select to_regclass('public.coupons') is null")
            .trim(),
        "t",
        "the table added after the backup is gone"
    );

    // The failed-state backup holds the migrated database: restoring it
    // brings that back (the way forward again).
    bed.restore(&failed_state);
    assert_eq!(pg_state(&pg), migrated);
    assert_eq!(pg.psql("select code from coupons").trim(), "SAVE10");
}

fn my_state(db: &TestMariadb) -> String {
    db.sql(
        "SELECT COUNT(*), SHA2(GROUP_CONCAT(CONCAT_WS('|', id, name, price) ORDER BY id \
             SEPARATOR '\\n'), 256) FROM products; \
         SELECT GROUP_CONCAT(CONCAT(table_name, ':', table_type) ORDER BY table_name) \
             FROM information_schema.tables WHERE table_schema = 'shop'; \
         SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_schema = 'shop' AND table_name = 'products';",
    )
}

#[test]
fn issue3_mariadb_backup_verify_restore_through_golivectl() {
    let db_dir = tempfile::tempdir().expect("temp dir");
    let db = TestMariadb::start(db_dir.path());
    db.sql(
        "CREATE TABLE products (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
             price DECIMAL(8,2)) CHARACTER SET utf8mb4; \
         INSERT INTO products (name, price) SELECT CONCAT('product ', seq), seq * 1.25 \
             FROM seq_1_to_3000; \
         INSERT INTO products (name, price) VALUES ('Ünïcödé ✓', 9.99);",
    );
    let original = my_state(&db);
    let bed = Bed::new("127.0.0.101", &db.database_toml("shop", "main"));

    let id = bed.create_verified("manual");
    let b = bed.get(&id);
    assert_eq!(b["state"], "complete", "{b}");
    assert_eq!(b["verified"], true, "{b}");
    let detail = b["verify_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("dump complete"), "{b}");

    // A migration, run as the app's account: a new table referencing the
    // old one, a view, a new column, changed rows.
    db.sql_as_app(
        "CREATE TABLE coupons (code VARCHAR(20) PRIMARY KEY, product INT, \
             FOREIGN KEY (product) REFERENCES products(id)); \
         INSERT INTO coupons VALUES ('SAVE10', 1); \
         CREATE VIEW coupon_view AS SELECT code FROM coupons; \
         ALTER TABLE products ADD COLUMN stock INT DEFAULT 0; \
         UPDATE products SET price = 0 WHERE id <= 100; DELETE FROM products WHERE id > 2900;",
    );
    let migrated = my_state(&db);
    assert_ne!(migrated, original);

    let failed_state = bed.restore(&id);
    assert_eq!(
        my_state(&db),
        original,
        "the database is as it was backed up"
    );
    assert!(
        !my_state(&db).contains("coupons"),
        "the table added after the backup is gone"
    );

    // The failed-state backup (MariaDB's safety net: its DDL is not
    // transactional) holds the migrated database and restores it.
    bed.restore(&failed_state);
    assert_eq!(my_state(&db), migrated);
    assert_eq!(db.sql("SELECT code FROM coupons").trim(), "SAVE10");
}

#[test]
fn issue3_check_config_names_a_missing_postgres_tool() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let pki = TestPki::new(d);
    let (cert, key) = pki.agent("cfg", &["127.0.0.102"]);
    let config = d.join("agent.toml");
    let write = |bin_dir: &str| {
        let text = format!(
            "[agent]\nname = \"cfg\"\nlisten = \"127.0.0.102:0\"\nstate_dir = {state:?}\n\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n\
             [apps.shop]\nroot = {root:?}\n\n\
             [[apps.shop.databases]]\nengine = \"postgres\"\nname = \"main\"\nhost = \"127.0.0.1\"\n\
             port = 5432\nuser = \"golive\"\ndbname = \"shop\"\nbin_dir = {bin_dir:?}\n",
            state = d.join("state"),
            ca = pki.ca(),
            root = d.join("srv/shop"),
        );
        std::fs::write(&config, text).expect("write config");
    };
    let check = || {
        let mut cmd = Command::new(bin("golive-agent"));
        cmd.args(["check-config", "--config"]).arg(&config);
        run_bounded(cmd, Duration::from_secs(60))
    };

    // The same config with the real client tools is fine.
    write(s(&golive_tests::db::pg_bindir()));
    let r = check();
    assert_eq!(r.code, 0, "{}", r.text());

    write("/nonexistent");
    let r = check();
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(
        r.stderr.contains("apps.shop.databases.0.engine"),
        "{}",
        r.text()
    );
    assert!(r.stderr.contains("`pg_dump`"), "{}", r.text());
    assert!(r.stderr.contains("/nonexistent"), "{}", r.text());
}

#[test]
fn issue3_a_dump_stuck_behind_a_lock_is_killed_at_its_deadline() {
    let db_dir = tempfile::tempdir().expect("temp dir");
    let pg = TestPostgres::start(db_dir.path());
    pg.psql("create table orders (id int primary key); insert into orders values (1);");
    // Another session holds an exclusive lock: pg_dump waits on it forever.
    let mut holder = pg.psql_command(
        "golive",
        "shop",
        "begin; lock table orders in access exclusive mode; select pg_sleep(120);",
    );
    holder
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _holder = KillOnDrop(holder.spawn().expect("psql starts"));
    let mut held = false;
    for _ in 0..200 {
        let n = pg.psql(
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
             where c.relname = 'orders' and l.mode = 'AccessExclusiveLock' and l.granted",
        );
        if n.trim() == "1" {
            held = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(held, "the lock holder took its lock");

    let toml = format!("{}timeout_secs = 2\n", pg.database_toml("shop", "main"));
    let bed = Bed::new("127.0.0.103", &toml);
    let started = std::time::Instant::now();
    let r = bed.ctl(&["backup", "create", s(&bed.plan), "--label", "stuck"]);
    assert_ne!(r.code, 0, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let text = r.text();
    assert!(text.contains("pg_dump"), "{text}");
    assert!(text.contains("deadline of 2 s"), "{text}");
    assert!(text.contains("timeout_secs"), "{text}");
    assert!(
        bed.list().iter().all(|b| b["state"] != "complete"),
        "no complete backup is listed"
    );
}

/// A restore through golivectl with `--output json`; the result event.
fn restore_json(bed: &Bed, id: &str) -> Value {
    let r = bed.ctl(&[
        "--output",
        "json",
        "backup",
        "restore",
        s(&bed.admin_plan),
        id,
    ]);
    assert_eq!(r.code, 0, "{}", r.text());
    r.json_lines()
        .into_iter()
        .find(|e| e["event"] == "result")
        .expect("a result event")
}

/// `table: now/backup` for every table the restore reported.
fn row_figures(result: &Value) -> Vec<String> {
    result["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            format!(
                "{}: {}/{}",
                t["table"].as_str().unwrap(),
                t["now"],
                t["backup"]
            )
        })
        .collect()
}

/// Issue 12 part 9 on PostgreSQL: the rows per table now (counted in the
/// live database) and in the backup (counted in the dump's COPY data)
/// before the restore replaces the database.
#[test]
fn issue12_postgres_restore_reports_rows_now_and_in_the_backup() {
    let db_dir = tempfile::tempdir().expect("temp dir");
    let pg = TestPostgres::start(db_dir.path());
    pg.psql(
        "create table orders (id serial primary key, note text); \
         insert into orders (note) select E'line\\nbreak ' || g from generate_series(1, 16) g; \
         create schema audit; create table audit.\"Log\" (line text); \
         insert into audit.\"Log\" values ('a'), ('b'); create table empty (id int);",
    );
    let bed = Bed::new("127.0.0.102", &pg.database_toml("shop", "main"));
    let id = bed.create_verified("manual");
    pg.psql(
        "insert into orders (note) select 'later ' || g from generate_series(1, 71) g; \
         create table coupons (code text); insert into coupons values ('X');",
    );
    let result = restore_json(&bed, &id);
    assert_eq!(
        row_figures(&result),
        [
            "audit.Log: 2/2",
            "coupons: 1/null",
            "empty: 0/0",
            "orders: 87/16",
        ],
        "{result}"
    );
    assert_eq!(result["rows_discarded"], 72, "{result}");
    assert_eq!(pg.psql("select count(*) from orders").trim(), "16");
}

/// Issue 12 part 9 on MariaDB: live counts by `COUNT(*)`, backup counts
/// from the dump's extended INSERTs.
#[test]
fn issue12_mariadb_restore_reports_rows_now_and_in_the_backup() {
    let db_dir = tempfile::tempdir().expect("temp dir");
    let db = TestMariadb::start(db_dir.path());
    db.sql(
        "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT) CHARACTER SET utf8mb4; \
         INSERT INTO orders (note) SELECT CONCAT('it''s (', seq, '),\\n;') FROM seq_1_to_16; \
         CREATE TABLE empty (id INT);",
    );
    db.sql_as_app("CREATE VIEW order_view AS SELECT id FROM orders;");
    let bed = Bed::new("127.0.0.103", &db.database_toml("shop", "main"));
    let id = bed.create_verified("manual");
    db.sql_as_app(
        "INSERT INTO orders (note) SELECT CONCAT('later ', seq) FROM seq_1_to_71; \
         CREATE TABLE coupons (code VARCHAR(9)); INSERT INTO coupons VALUES ('X');",
    );
    let result = restore_json(&bed, &id);
    assert_eq!(
        row_figures(&result),
        ["coupons: 1/null", "empty: 0/0", "orders: 87/16"],
        "{result}"
    );
    assert_eq!(db.sql("SELECT COUNT(*) FROM orders").trim(), "16");
}
