//! Issue 3: the PostgreSQL and MariaDB backup engines against real servers
//! started by the tests (see `golive_tests::db`): dump, verify, change the
//! data, restore, and the data matches; secrets stay out of errors and argv;
//! truncated or corrupt backups fail verification.
//!
//! Restore returns the database to exactly the backup's state: objects
//! created after the backup (a migration's tables, schemas, routines) are
//! gone afterwards; a PostgreSQL restore that fails changes nothing.
//!
//! These call `golive_agent::backup::{postgres, mariadb}` directly; the
//! end-to-end path through `golivectl` is in `backup_db.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use golive_agent::backup::stream::hash_file;
use golive_agent::backup::{BackupError, mariadb, postgres};
use golive_tests::db::{TestMariadb, TestPostgres, write_private};

/// A fresh output directory under `dir`.
fn out_dir(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir(&p).expect("out dir");
    p
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Processes whose command line contains `needle`, with their arguments.
fn processes_with(needle: &[u8]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(
                cmdline
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            );
        }
    }
    found
}

/// Option files the agent's MariaDB engine left in the temp dir.
fn leftover_option_files() -> Vec<PathBuf> {
    let prefix = format!("golive-my-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn pg_canonical(pg: &TestPostgres) -> String {
    // Digests of every row in order, plus a few rows in full for the messages.
    pg.psql(
        "select count(*), md5(string_agg(concat_ws('|', id, name, encode(photo, 'hex'), created), \
             E'\\n' order by id)) from customers; \
         select count(*), md5(string_agg(concat_ws('|', id, customer_id, total), E'\\n' order by id)) \
             from orders; \
         select count(*), md5(string_agg(concat_ws('|', id, total), E'\\n' order by id)) from big_orders; \
         select id, name, encode(photo, 'hex'), created from customers where id < 4 order by id;",
    )
}

/// Every schema, relation, function and large object in the database.
fn pg_objects(pg: &TestPostgres) -> String {
    pg.psql(
        "select 'schema ' || nspname from pg_namespace \
             where nspname !~ '^pg_' and nspname <> 'information_schema' \
         union all select 'relation ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' \
         union all select 'column ' || attrelid::regclass || '.' || attname from pg_attribute \
             where attrelid = 'customers'::regclass and attnum > 0 and not attisdropped \
         union all select 'function ' || p.oid::regprocedure from pg_proc p \
             join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public' \
         union all select 'large object ' || count(*) from pg_largeobject_metadata \
         order by 1",
    )
}

/// The `public` schema's owner, privileges and comment.
fn pg_public_schema(pg: &TestPostgres) -> String {
    pg.psql(
        "select nspowner::regrole, nspacl, obj_description(oid, 'pg_namespace') \
         from pg_namespace where nspname = 'public'",
    )
}

#[test]
fn issue3_postgres_dump_verify_restore() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = TestPostgres::start(dir.path());
    pg.psql(
        "create table customers (id int primary key, name text not null, photo bytea, \
             created timestamptz not null default '2024-05-01 12:00:00+00'); \
         create table orders (id serial primary key, customer_id int not null references customers, \
             total numeric(10,2) not null); \
         create view big_orders as select id, total from orders where total > 500; \
         insert into customers (id, name, photo) values \
             (1, 'Zoë Ålander — 日本語 🚀', '\\x00ff10deadbeef'::bytea), \
             (2, 'quote''s \"and\" back\\slash', null); \
         insert into customers (id, name, photo) \
             select g, 'customer ' || g, decode(md5(g::text), 'hex') from generate_series(3, 2000) g; \
         insert into orders (customer_id, total) \
             select 1 + g % 2000, (g * 7 % 1000)::numeric / 1.5 from generate_series(1, 5000) g;",
    );
    // A role with a privilege in the dump (restored with the data).
    pg.psql_admin("postgres", "create role reporter");
    pg.psql("grant select on customers to reporter");
    let original = pg_canonical(&pg);
    assert!(original.contains("Zoë Ålander — 日本語 🚀"), "{original}");
    let objects = pg_objects(&pg);
    let cfg = pg.db_config("main");

    // Estimate: the live database size, a few MiB for this one.
    let estimate = postgres::estimate(&cfg).expect("estimate");
    assert!(
        (1 << 20..1 << 30).contains(&estimate),
        "implausible estimate {estimate}"
    );

    // Dump.
    let out = out_dir(dir.path(), "out");
    let mut last = 0;
    let written = postgres::dump(&cfg, &out, &mut |b| last = b).expect("dump");
    assert_eq!(written.path, out.join("main.pgdump"));
    assert!(written.bytes > 1000, "{written:?}");
    assert_eq!(last, written.bytes);
    assert_eq!(
        hash_file(&written.path).unwrap(),
        (written.bytes, written.sha256.clone())
    );
    assert_eq!(
        &std::fs::read(&written.path).unwrap()[..5],
        b"PGDMP",
        "custom format"
    );

    // Verify: a test restore into a scratch database, dropped afterwards.
    let detail = postgres::verify(&cfg, &written.path).expect("verify");
    assert_eq!(detail, "test restore ok, 3 tables");
    let scratch = || {
        pg.psql_admin(
            "postgres",
            "select datname from pg_database where datname like 'golive_verify_%'",
        )
    };
    assert_eq!(scratch(), "", "scratch database left behind");

    // Change the data and the schema (what a migration does), then restore:
    // the database is exactly as it was, objects created since are gone.
    let public_before = pg_public_schema(&pg);
    pg.psql(
        "delete from orders where id % 3 = 0; \
         update customers set name = 'changed', photo = null where id < 10; \
         create table extra (a int); insert into extra values (1); \
         alter table customers add column email text; \
         create view extra_view as select * from extra; \
         create sequence extra_seq; \
         create function extra_fn() returns int language sql as 'select 1'; \
         create schema audit; create table audit.log (line text); \
         select lo_from_bytea(0, 'after the backup');",
    );
    assert_ne!(pg_canonical(&pg), original);
    let detail = postgres::restore(&cfg, &written.path).expect("restore");
    assert_eq!(detail, "restore ok, 3 tables");
    assert_eq!(pg_canonical(&pg), original);
    assert_eq!(
        pg_objects(&pg),
        objects,
        "objects created after the backup remain"
    );
    assert_eq!(
        pg_public_schema(&pg),
        public_before,
        "public schema owner/acl/comment"
    );
    // The privileges in the dump came back.
    assert_eq!(
        pg.psql("select has_table_privilege('reporter', 'customers', 'select')")
            .trim(),
        "t"
    );
    // The sequence came back too: the next order id follows the dumped ones.
    assert_eq!(
        pg.psql("insert into orders (customer_id, total) values (1, 1) returning id")
            .trim(),
        "5001"
    );
    pg.psql("delete from orders where id = 5001; select setval('orders_id_seq', 5000)");
    assert_eq!(pg_canonical(&pg), original);

    // Restore is one transaction. A dump that pg_restore cannot read to the
    // end (cut in half) fails and changes nothing.
    let cut = dir.path().join("cut.pgdump");
    let bytes = std::fs::read(&written.path).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    pg.psql(
        "create table extra (a int); insert into extra values (7); \
         update customers set name = 'changed again' where id = 5;",
    );
    let changed = (pg_canonical(&pg), pg_objects(&pg));
    let err = postgres::restore(&cfg, &cut).expect_err("restore of a truncated dump");
    let text = err.to_string();
    assert!(matches!(err, BackupError::Tool { .. }), "{text}");
    assert!(text.contains("pg_restore"), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    assert_eq!(
        (pg_canonical(&pg), pg_objects(&pg)),
        changed,
        "a failed restore changed the database"
    );
    // A failure late in the load (the dump grants to a role that no longer
    // exists; privileges come last, after the schemas were dropped and the
    // data loaded) rolls back everything too.
    pg.psql_admin("shop", "drop owned by reporter; drop role reporter");
    let err = postgres::restore(&cfg, &written.path).expect_err("grant to a dropped role");
    let text = err.to_string();
    assert!(text.contains("role \"reporter\" does not exist"), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    assert_eq!(
        (pg_canonical(&pg), pg_objects(&pg)),
        changed,
        "a failed restore changed the database"
    );
    assert!(!text.contains(&pg.password), "{text}");
    pg.psql_admin("postgres", "create role reporter");
    postgres::restore(&cfg, &written.path).expect("restore after the role is back");
    assert_eq!(pg_canonical(&pg), original);
    assert_eq!(pg_objects(&pg), objects);

    // Before PostgreSQL 15 `public` belongs to the superuser, not to the
    // database owner: the role cannot drop it, so restore empties it of what
    // the role owns instead, and leaves other roles' objects alone.
    pg.psql_admin(
        "shop",
        "alter schema public owner to postgres; grant create on schema public to golive; \
         create table public.dba_notes (line text)",
    );
    let public_before = pg_public_schema(&pg);
    pg.psql(
        "delete from orders where id % 5 = 0; \
         create table extra (a int); create view extra_view as select * from extra; \
         create sequence extra_seq; create function extra_fn(a int) returns int language sql \
             as 'select a'; \
         create aggregate extra_sum (int) (sfunc = int4pl, stype = int); \
         create type mood as enum ('ok', 'sad'); create domain posint as int check (value > 0); \
         create type pair as (a int, b int); create table moods (m mood, p posint, q pair); \
         alter table customers add column email text;",
    );
    let detail = postgres::restore(&cfg, &written.path).expect("restore, public not owned");
    assert_eq!(detail, "restore ok, 3 tables");
    assert_eq!(
        pg.psql_admin("shop", "select to_regclass('public.dba_notes') is not null")
            .trim(),
        "t",
        "another role's table is left alone"
    );
    assert_eq!(pg_canonical(&pg), original);
    assert_eq!(pg_public_schema(&pg), public_before);
    pg.psql_admin("shop", "drop table public.dba_notes");
    assert_eq!(
        pg_objects(&pg),
        objects,
        "objects created after the backup remain"
    );
    assert_eq!(
        pg.psql(
            "select count(*) from pg_type where typnamespace = 'public'::regnamespace \
                 and typname in ('mood', 'posint', 'pair')"
        )
        .trim(),
        "0"
    );

    // The corrupt dump fails its test restore as well; no scratch left.
    let err = postgres::verify(&cfg, &cut).expect_err("truncated dump must fail");
    assert!(matches!(err, BackupError::Tool { .. }), "{err}");
    assert_eq!(
        scratch(),
        "",
        "scratch database left behind after a failure"
    );

    // A wrong password: the tool's error, without the password; no file left.
    let wrong_pw = format!("wrong-{}", pg.password);
    let wrong_file = dir.path().join("wrong.password");
    write_private(&wrong_file, &wrong_pw);
    let mut wrong = pg.db_config("main");
    wrong.password_file = Some(wrong_file.clone());
    let out2 = out_dir(dir.path(), "out2");
    let err = postgres::dump(&wrong, &out2, &mut |_| {}).expect_err("wrong password");
    let text = err.to_string();
    assert!(matches!(err, BackupError::Tool { .. }), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        !text.contains(&wrong_pw) && !text.contains(&pg.password),
        "{text}"
    );
    assert_eq!(entries(&out2), Vec::<String>::new(), "partial dump left");
    let err = postgres::estimate(&wrong).expect_err("wrong password");
    assert!(!err.to_string().contains(&wrong_pw), "{err}");

    // A password file others can read is refused before anything runs.
    std::fs::set_permissions(&pg.password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = postgres::dump(&cfg, &out2, &mut |_| {}).expect_err("0644 password file");
    let text = err.to_string();
    assert!(text.contains("chmod 600"), "{text}");
    assert!(!text.contains(&pg.password), "{text}");
    assert_eq!(entries(&out2), Vec::<String>::new());
    std::fs::set_permissions(&pg.password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn my_canonical(db: &TestMariadb) -> String {
    db.sql(
        "SET SESSION group_concat_max_len = 1073741824; \
         SELECT COUNT(*), SHA2(GROUP_CONCAT(CONCAT_WS('|', id, name, HEX(photo), created) \
             ORDER BY id SEPARATOR '\\n'), 256) FROM customers; \
         SELECT COUNT(*), SHA2(GROUP_CONCAT(CONCAT_WS('|', id, customer_id, total) \
             ORDER BY id SEPARATOR '\\n'), 256) FROM orders; \
         SELECT id, name, HEX(photo), created FROM customers WHERE id < 4 ORDER BY id; \
         SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop' ORDER BY 1;",
    )
}

#[test]
fn issue3_mariadb_dump_verify_restore() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestMariadb::start(dir.path());
    db.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(200) NOT NULL, photo BLOB, \
             created DATETIME NOT NULL DEFAULT '2024-05-01 12:00:00') CHARACTER SET utf8mb4; \
         CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, \
             total DECIMAL(10,2) NOT NULL, FOREIGN KEY (customer_id) REFERENCES customers(id)); \
         INSERT INTO customers (id, name, photo) VALUES \
             (1, 'Zoë Ålander — 日本語 🚀', X'00FF10DEADBEEF'), \
             (2, 'quote''s \"and\" back\\\\slash', NULL); \
         INSERT INTO customers (id, name, photo) \
             SELECT seq, CONCAT('customer ', seq), RANDOM_BYTES(1024) FROM seq_3_to_3000; \
         INSERT INTO orders (customer_id, total) \
             SELECT 1 + seq % 3000, (seq * 7 % 1000) / 1.5 FROM seq_1_to_5000;",
    );
    let original = my_canonical(&db);
    assert!(original.contains("Zoë Ålander — 日本語 🚀"), "{original}");
    let cfg = db.db_config("main", false);

    let estimate = mariadb::estimate(&cfg).expect("estimate");
    assert!(
        (16 * 1024..1 << 30).contains(&estimate),
        "implausible estimate {estimate}"
    );
    // Over the socket as well.
    assert!(mariadb::estimate(&db.db_config("main", true)).expect("estimate via socket") > 0);
    assert_eq!(leftover_option_files(), Vec::<PathBuf>::new());

    // Dump, watching the process table while mariadb-dump runs: the
    // password is never in any command line or in the dump's environment,
    // and the option file is the first argument.
    let out = out_dir(dir.path(), "out");
    let mut last = 0;
    let mut seen_dump = None;
    // This process's option files (other tests may run dumps too).
    let ours = format!(
        "--defaults-extra-file={}/golive-my-{}-",
        std::env::temp_dir().display(),
        std::process::id()
    );
    let mut leaks = Vec::new();
    let written = mariadb::dump(&cfg, &out, 3, &mut |b| {
        last = b;
        leaks.extend(processes_with(db.password.as_bytes()));
        if seen_dump.is_none() {
            seen_dump = processes_with(ours.as_bytes())
                .into_iter()
                .find(|args| args.iter().any(|a| a == "--single-transaction"));
        }
    })
    .expect("dump");
    assert_eq!(leaks, Vec::<Vec<String>>::new(), "password visible in argv");
    let args = seen_dump.expect("mariadb-dump seen running (the dump is larger than a pipe)");
    assert!(args[1].starts_with("--defaults-extra-file="), "{args:?}");
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--password") || a.starts_with("-p")),
        "{args:?}"
    );
    assert_eq!(
        leftover_option_files(),
        Vec::<PathBuf>::new(),
        "option file left"
    );
    assert_eq!(written.path, out.join("main.sql.zst"));
    assert!(last > 0 && written.bytes > 0);
    assert_eq!(
        hash_file(&written.path).unwrap(),
        (written.bytes, written.sha256.clone())
    );

    let detail = mariadb::verify(&written.path).expect("verify");
    assert!(
        detail.starts_with("dump complete, ") && detail.ends_with(" bytes of SQL"),
        "{detail}"
    );

    // Change the data and the schema (what a migration does), then
    // restore: exactly the backup's state, objects created since are gone.
    db.sql(
        "DELETE FROM orders WHERE id % 3 = 0; \
         UPDATE customers SET name = 'changed', photo = NULL WHERE id < 10; \
         CREATE TABLE extra (a INT PRIMARY KEY, c INT, FOREIGN KEY (c) REFERENCES customers(id)); \
         INSERT INTO extra VALUES (1, 1); \
         CREATE TABLE `odd``name` (a INT); \
         CREATE VIEW extra_view AS SELECT * FROM extra; \
         CREATE SEQUENCE extra_seq; \
         ALTER TABLE customers ADD COLUMN email VARCHAR(100); \
         CREATE PROCEDURE extra_proc() SELECT 1; \
         CREATE FUNCTION extra_fn() RETURNS INT DETERMINISTIC RETURN 1;",
    );
    let changed = my_canonical(&db);
    assert_ne!(changed, original);
    let detail = mariadb::restore(&cfg, &written.path).expect("restore");
    assert_eq!(detail, "restore ok, 2 tables");
    assert_eq!(my_canonical(&db), original);
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'shop'")
            .trim(),
        "0",
        "routines created after the backup remain"
    );
    assert_eq!(
        db.sql(
            "SELECT COUNT(*) FROM information_schema.columns \
                WHERE table_schema = 'shop' AND table_name = 'customers' AND column_name = 'email'"
        )
        .trim(),
        "0"
    );
    assert_eq!(leftover_option_files(), Vec::<PathBuf>::new());

    // A truncated dump fails verify, and restore refuses it without
    // touching the database.
    let cut = dir.path().join("cut.sql.zst");
    let bytes = std::fs::read(&written.path).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = mariadb::verify(&cut).expect_err("truncated dump must fail verify");
    assert!(err.to_string().contains("truncated"), "{err}");
    db.sql("DELETE FROM orders WHERE id = 1; CREATE TABLE extra (a INT)");
    let before = my_canonical(&db);
    assert!(before.contains("extra"), "{before}");
    mariadb::restore(&cfg, &cut).expect_err("restore of a truncated dump");
    assert_eq!(
        my_canonical(&db),
        before,
        "a refused restore changed the database"
    );
    // A complete SQL stream without the trailer (cut before compression).
    let sql = zstd::decode_all(&bytes[..]).unwrap();
    let cut_sql = dir.path().join("cut-sql.sql.zst");
    std::fs::write(
        &cut_sql,
        zstd::encode_all(&sql[..sql.len() * 2 / 3], 3).unwrap(),
    )
    .unwrap();
    let err = mariadb::verify(&cut_sql).expect_err("dump without trailer");
    assert!(err.to_string().contains("Dump completed"), "{err}");

    // A wrong password: the tool's error, without any password; no file or
    // option file left behind.
    let wrong_pw = format!("wrong-{}", db.password);
    let wrong_file = dir.path().join("wrong.password");
    write_private(&wrong_file, &wrong_pw);
    let mut wrong = db.db_config("main", false);
    wrong.password_file = Some(wrong_file);
    let out2 = out_dir(dir.path(), "out2");
    let err = mariadb::dump(&wrong, &out2, 3, &mut |_| {}).expect_err("wrong password");
    let text = err.to_string();
    assert!(matches!(err, BackupError::Tool { .. }), "{text}");
    assert!(text.contains("Access denied"), "{text}");
    assert!(
        !text.contains(&wrong_pw) && !text.contains(&db.password),
        "{text}"
    );
    assert_eq!(entries(&out2), Vec::<String>::new(), "partial dump left");
    let err = mariadb::restore(&wrong, &written.path).expect_err("wrong password");
    assert!(!err.to_string().contains(&wrong_pw), "{err}");
    assert_eq!(leftover_option_files(), Vec::<PathBuf>::new());

    // A password file others can read is refused.
    std::fs::set_permissions(&db.password_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = mariadb::estimate(&cfg).expect_err("0640 password file");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert!(!err.to_string().contains(&db.password), "{err}");
    std::fs::set_permissions(&db.password_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Database names are checked before they reach a command line or SQL.
    let mut evil = db.db_config("main", false);
    evil.database = "shop' OR '1'='1".into();
    let err = mariadb::estimate(&evil).expect_err("bad database name");
    assert!(matches!(err, BackupError::Invalid(_)), "{err}");
}
