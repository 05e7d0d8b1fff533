//! Issue 4 part 5: SQL migrations (`golive_agent::migrate`) against real
//! PostgreSQL and MariaDB servers started by the tests: up, status, down,
//! a failing migration, checksum tamper, and on PostgreSQL two concurrent
//! migrators (the second waits for the advisory lock, then finds nothing
//! pending). SQLite is covered by the unit tests in `migrate.rs`.

use std::path::Path;
use std::sync::{Arc, Barrier};

use golive_agent::migrate::{self, MigrateError, Tag};
use golive_shared::config::DatabaseConfig;
use golive_tests::db::{TestMariadb, TestPostgres};

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write migration");
}

fn quiet(_: String) {}

/// Two migrations with down files; the first is tagged `expand`.
fn two(dir: &Path) {
    write(
        dir,
        "0001_items.up.sql",
        "-- golive: expand\nCREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50));\n\
         INSERT INTO items VALUES (1, 'one');\n",
    );
    write(dir, "0001_items.down.sql", "DROP TABLE items;\n");
    write(
        dir,
        "0002_tags.up.sql",
        "CREATE TABLE tags (id INT PRIMARY KEY); -- the second\n",
    );
    write(dir, "0002_tags.down.sql", "DROP TABLE tags");
}

/// up, status, idempotent up, tamper refusal, a failing migration, down.
fn flow(
    db: &DatabaseConfig,
    dir: &Path,
    tables: &dyn Fn() -> Vec<String>,
    count_items: &dyn Fn() -> String,
    transactional_ddl: bool,
) {
    two(dir);
    let st = migrate::status(db, dir).expect("status before");
    assert!(st.applied.is_empty());
    assert_eq!(st.pending.len(), 2);
    assert_eq!(st.pending[0].tag, Some(Tag::Expand));

    let applied = migrate::up(db, dir, Some("dep-42"), &quiet).expect("up");
    assert_eq!(
        applied.iter().map(|a| a.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(
        applied
            .iter()
            .all(|a| a.deployment.as_deref() == Some("dep-42"))
    );
    assert!(applied[0].applied_at > 1_600_000_000_000, "{applied:?}");
    assert_eq!(applied[0].checksum, st.pending[0].checksum);
    assert_eq!(tables(), ["golive_migrations", "items", "tags"]);
    let st = migrate::status(db, dir).expect("status after");
    assert_eq!(st.applied, applied);
    assert!(st.pending.is_empty());
    assert!(
        migrate::up(db, dir, None, &quiet)
            .expect("up again")
            .is_empty()
    );

    // Tamper: refused, naming the file.
    let original = std::fs::read_to_string(dir.join("0002_tags.up.sql")).unwrap();
    write(
        dir,
        "0002_tags.up.sql",
        "CREATE TABLE tags (id INT PRIMARY KEY, x INT);",
    );
    let e = migrate::status(db, dir).unwrap_err().to_string();
    assert!(
        e.contains("0002_tags.up.sql") && e.contains("changed"),
        "{e}"
    );
    let e = migrate::up(db, dir, None, &quiet).unwrap_err().to_string();
    assert!(e.contains("0002_tags.up.sql"), "{e}");
    write(dir, "0002_tags.up.sql", &original);

    // A failing migration: not recorded, later ones not run, its data
    // changes rolled back (and its DDL too where the engine allows).
    let bad = if transactional_ddl {
        "CREATE TABLE half (id INT);\nINSERT INTO items VALUES (2, 'two');\nINSERT INTO no_such_table VALUES (1);\n"
    } else {
        "INSERT INTO items VALUES (2, 'two');\nINSERT INTO no_such_table VALUES (1);\n"
    };
    write(dir, "0003_bad.up.sql", bad);
    write(
        dir,
        "0004_after.up.sql",
        "CREATE TABLE after_bad (id INT);\n",
    );
    let e = migrate::up(db, dir, None, &quiet).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, MigrateError::Failed { .. }), "{text}");
    assert!(
        text.contains("0003_bad.up.sql") && text.contains("no_such_table"),
        "{text}"
    );
    assert_eq!(tables(), ["golive_migrations", "items", "tags"]);
    assert_eq!(count_items().trim(), "1");
    let st = migrate::status(db, dir).expect("status after failure");
    assert_eq!(st.applied.len(), 2);
    assert_eq!(
        st.pending.iter().map(|m| m.version).collect::<Vec<_>>(),
        [3, 4]
    );
    std::fs::remove_file(dir.join("0003_bad.up.sql")).unwrap();
    std::fs::remove_file(dir.join("0004_after.up.sql")).unwrap();

    // Down: a missing down file is refused before any change.
    std::fs::rename(dir.join("0001_items.down.sql"), dir.join("keep")).unwrap();
    let e = migrate::down(db, dir, 0, &quiet).unwrap_err().to_string();
    assert!(
        e.contains("0001_items.down.sql") && e.contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(tables(), ["golive_migrations", "items", "tags"]);
    std::fs::rename(dir.join("keep"), dir.join("0001_items.down.sql")).unwrap();
    assert_eq!(migrate::down(db, dir, 1, &quiet).expect("down to 1"), [2]);
    assert_eq!(tables(), ["golive_migrations", "items"]);
    assert_eq!(migrate::down(db, dir, 0, &quiet).expect("down to 0"), [1]);
    assert_eq!(tables(), ["golive_migrations"]);
    let st = migrate::status(db, dir).expect("status after down");
    assert!(st.applied.is_empty());
    assert_eq!(st.pending.len(), 2);
}

fn lines(out: String) -> Vec<String> {
    out.lines().map(str::to_string).collect()
}

#[test]
fn issue4_migrations_on_postgres() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = TestPostgres::start(dir.path());
    let mig = dir.path().join("migrations");
    std::fs::create_dir(&mig).unwrap();
    let db = DatabaseConfig::Postgres(pg.db_config("main"));
    flow(
        &db,
        &mig,
        &|| {
            lines(pg.psql("select tablename from pg_tables where schemaname = 'public' order by 1"))
        },
        &|| pg.psql("select count(*) from items"),
        true,
    );
}

#[test]
fn issue4_migrations_on_mariadb() {
    let dir = tempfile::tempdir().expect("temp dir");
    let my = TestMariadb::start(dir.path());
    let mig = dir.path().join("migrations");
    std::fs::create_dir(&mig).unwrap();
    let db = DatabaseConfig::Mariadb(my.db_config("main", false));
    flow(
        &db,
        &mig,
        &|| {
            lines(my.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop' ORDER BY 1"))
        },
        &|| my.sql("SELECT COUNT(*) FROM items"),
        false,
    );
}

#[test]
fn issue4_concurrent_postgres_migrators_apply_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = TestPostgres::start(dir.path());
    let mig = dir.path().join("migrations");
    std::fs::create_dir(&mig).unwrap();
    write(
        &mig,
        "0001_slow.up.sql",
        "CREATE TABLE slow (id INT);\nSELECT pg_sleep(2);\n",
    );
    write(
        &mig,
        "0002_counted.up.sql",
        "CREATE TABLE counted (id INT);\n",
    );
    let db = Arc::new(DatabaseConfig::Postgres(pg.db_config("main")));
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let (db, mig, barrier) = (Arc::clone(&db), mig.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // The second starts once the first holds the lock.
                barrier.wait();
                if i == 1 {
                    std::thread::sleep(std::time::Duration::from_millis(700));
                }
                migrate::up(&db, &mig, Some(&format!("dep-{i}")), &quiet)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").expect("both succeed"))
        .collect();
    // Normally the first applies both and the second, which planned the
    // same two while the first held the lock, waits, sees them applied and
    // plans again: either way each migration is applied exactly once.
    let lens: Vec<usize> = results.iter().map(Vec::len).collect();
    assert!(lens == [2, 0] || lens == [0, 2], "{results:?}");
    let winner = if lens[0] == 2 { "dep-0" } else { "dep-1" };
    assert_eq!(
        pg.psql("select version, deployment from golive_migrations order by 1")
            .trim(),
        format!("1|{winner}\n2|{winner}")
    );
    assert_eq!(pg.psql("select count(*) from slow").trim(), "0");

    // A holder that never lets go: the waiter fails clearly.
    write(&mig, "0003_c.up.sql", "CREATE TABLE c (id INT);\n");
    let e = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            pg.psql(&format!(
                "select pg_advisory_lock({}); select pg_sleep(3);",
                migrate::PG_LOCK_KEY
            ))
        });
        std::thread::sleep(std::time::Duration::from_millis(800));
        let e = migrate::up_with(&db, &mig, None, std::time::Duration::from_secs(1), &quiet)
            .unwrap_err();
        holder.join().expect("holder");
        e
    });
    assert!(matches!(e, MigrateError::Locked { .. }), "{e}");
    assert!(
        e.to_string().contains("another migration holds the lock"),
        "{e}"
    );
    assert_eq!(
        migrate::up(&db, &mig, None, &quiet)
            .expect("after the holder")
            .len(),
        1
    );
}

/// Issue 12: a ledger written before issue 12 (no texts, no release) is
/// upgraded in place by the next `up`, which stores each migration's texts,
/// tag and release; back on the previous release's files the newer
/// migration is *ahead* (a state, not an error) and `down` reverts it with
/// the stored down text, saying first what it drops (rows counted).
fn issue12_flow(db: &DatabaseConfig, root: &Path, sql: &dyn Fn(&str) -> String) {
    let (v1, v2) = (root.join("v1"), root.join("v2"));
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    for dir in [&v1, &v2] {
        write(
            dir,
            "0001_items.up.sql",
            "CREATE TABLE items (id INT PRIMARY KEY);\n",
        );
        write(dir, "0001_items.down.sql", "DROP TABLE items;\n");
    }
    let down2 = "-- it's the down: 'quotes', \"double\", back\\slash; ünïcödé\nDROP TABLE notes;\n";
    write(
        &v2,
        "0002_notes.up.sql",
        "-- golive: expand\nCREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(20));\n",
    );
    write(&v2, "0002_notes.down.sql", down2);
    let sum = migrate::scan(&v1).unwrap()[0].checksum.clone();
    sql(&format!(
        "CREATE TABLE golive_migrations (version INT PRIMARY KEY, name VARCHAR(255) NOT NULL, \
         checksum CHAR(64) NOT NULL, applied_at BIGINT NOT NULL, duration_ms BIGINT NOT NULL, \
         deployment VARCHAR(255)); CREATE TABLE items (id INT PRIMARY KEY); \
         INSERT INTO golive_migrations VALUES (1, 'items', '{sum}', 1, 2, NULL);"
    ));
    let st = migrate::status_of(db, &v1, Some("v1")).expect("status of the old ledger");
    assert_eq!(st.applied.len(), 1);
    assert_eq!(st.applied[0].release, None);

    let origin = migrate::Origin {
        release: Some("v2"),
        deployment: Some("dep-9"),
        ..migrate::Origin::default()
    };
    let applied = migrate::up_from(db, &v2, origin, migrate::LOCK_WAIT, &quiet).expect("up");
    assert_eq!(applied.len(), 1);
    sql("INSERT INTO notes VALUES (1, 'a'), (2, 'b'), (3, 'c');");

    let st = migrate::status_of(db, &v1, Some("v1")).expect("status on v1's files");
    assert_eq!(st.ahead, [2]);
    assert!(st.pending.is_empty());
    let two = &st.applied[1];
    assert_eq!(
        (two.release.as_deref(), two.tag, two.down_sql.as_deref()),
        (Some("v2"), Some(Tag::Expand), Some(down2)),
        "the texts round-trip exactly"
    );
    // A release without a migrations directory reads the same ledger.
    let e = migrate::status_of(db, &root.join("none"), Some("v0"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not say which release applied it"), "{e}");

    let plan = migrate::revert_plan(db, &v1, Some("v1"), 1).expect("plan");
    let dropped: Vec<String> = migrate::drops(db, &plan)
        .iter()
        .map(golive_shared::protocol::DroppedObject::describe)
        .collect();
    assert_eq!(dropped, ["table notes (3 rows)"]);
    let reverted = migrate::down_from(db, &v1, Some("v1"), 1, migrate::LOCK_WAIT, &quiet)
        .expect("down with the stored text");
    assert_eq!(reverted, [2]);
    let st = migrate::status_of(db, &v1, Some("v1")).expect("status after down");
    assert!(st.ahead.is_empty() && st.applied.len() == 1);
    // Applying again from v2 stores the row anew.
    assert_eq!(
        migrate::up_from(db, &v2, origin, migrate::LOCK_WAIT, &quiet)
            .expect("up again")
            .len(),
        1
    );
}

#[test]
fn issue12_postgres_ledger_upgrade_and_stored_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = TestPostgres::start(dir.path());
    let db = DatabaseConfig::Postgres(pg.db_config("main"));
    issue12_flow(&db, dir.path(), &|sql| pg.psql(sql));
    assert_eq!(
        pg.psql("select version, release_id, tag from golive_migrations order by 1")
            .trim(),
        "1||\n2|v2|expand"
    );
}

#[test]
fn issue12_mariadb_ledger_upgrade_and_stored_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let my = TestMariadb::start(dir.path());
    let db = DatabaseConfig::Mariadb(my.db_config("main", false));
    issue12_flow(&db, dir.path(), &|sql| my.sql(sql));
    assert_eq!(
        my.sql("SELECT version, IFNULL(release_id, '-'), IFNULL(tag, '-') FROM golive_migrations ORDER BY 1")
            .trim(),
        "1\t-\t-\n2\tv2\texpand"
    );
}
