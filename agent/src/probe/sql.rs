//! The sql probe: a query on a database the app declares, in a read-only
//! session, whose first column of the first row is compared with `expect`.
//!
//! Connections are made as the migration and backup code make them: SQLite
//! through rusqlite (opened read-only, interrupted at the timeout);
//! PostgreSQL through `psql` (password in `PGPASSWORD`, the session
//! read-only with a `statement_timeout`); MariaDB/MySQL through `mariadb` or
//! `mysql` (password in a private option file, `SET SESSION TRANSACTION READ
//! ONLY` first, and on MariaDB a `max_statement_time` of the probe's timeout
//! so that the server stops the query too). Passwords never appear in argv, and are cut out of any
//! output quoted in a result. The clients run through [`crate::exec`], so
//! they are killed with their process group at the timeout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use golive_shared::config::{AppConfig, DatabaseConfig, MariadbDb, PostgresDb, SqlProbe, SqliteDb};

use super::{Check, blocking, clip, ms};
use crate::backup::mariadb::OptionFile;
use crate::backup::tools;
use crate::exec::{self, Prepared};

/// Separator for psql's unaligned output: never part of a sane value.
const UNIT_SEPARATOR: &str = "\x1f";

pub(super) async fn check(app: &AppConfig, p: &SqlProbe, limit: Duration) -> Check {
    let Some(db) = app
        .databases
        .iter()
        .find(|d| d.name() == p.database)
        .cloned()
    else {
        return Check::error(format!(
            "no database {:?} is declared for this app",
            p.database
        ));
    };
    let p = p.clone();
    blocking(move || {
        let started = Instant::now();
        let got = match &db {
            DatabaseConfig::Sqlite(d) => sqlite(d, &p.query, limit),
            DatabaseConfig::Postgres(d) => postgres(d, &p.query, limit),
            DatabaseConfig::Mariadb(d) => mariadb(d, &p.query, limit),
        };
        let took = ms(started.elapsed());
        let on = format!("{} database {}", db.engine(), p.database);
        match (got, &p.expect) {
            (Err(e), _) => Check::error(format!("query on {on}: {e}")),
            (Ok(None), Some(want)) => Check::fail(
                "no rows",
                format!("query on {on} returned no rows, expected {want:?}"),
            ),
            (Ok(None), None) => Check::pass("no rows", format!("query on {on} ran in {took}")),
            (Ok(Some(v)), None) => Check::pass(
                clip(&v, 100),
                format!("query on {on} returned {:?} in {took}", clip(&v, 100)),
            ),
            (Ok(Some(v)), Some(want)) => Check::judge(
                v == *want,
                clip(&v, 100),
                format!(
                    "query on {on} returned {:?} in {took}, expected {want:?}",
                    clip(&v, 100)
                ),
            ),
        }
    })
    .await
}

/// Read-only connection; an interrupt at the deadline stops a long query.
fn sqlite(db: &SqliteDb, query: &str, limit: Duration) -> Result<Option<String>, String> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open_with_flags(
        &db.path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {} read-only: {e}", db.path.display()))?;
    conn.busy_timeout(limit).map_err(|e| e.to_string())?;
    let interrupt = conn.get_interrupt_handle();
    let (done, wait) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            interrupt.interrupt();
        }
    });
    let result = (|| {
        let mut stmt = conn.prepare(query)?;
        let mut rows = stmt.query([])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(match row.get_ref(0)? {
            ValueRef::Null => "NULL".to_string(),
            ValueRef::Integer(i) => i.to_string(),
            ValueRef::Real(f) => f.to_string(),
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            ValueRef::Blob(b) => format!("<blob of {} bytes>", b.len()),
        }))
    })();
    let _ = done.send(());
    let _ = watchdog.join();
    result.map_err(|e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::OperationInterrupted) => format!(
            "the query did not finish within {} ms and was interrupted",
            limit.as_millis()
        ),
        _ => e.to_string(),
    })
}

fn postgres(db: &PostgresDb, query: &str, limit: Duration) -> Result<Option<String>, String> {
    let psql = tools::find(&["psql"], db.bin_dir.as_deref()).map_err(|e| e.to_string())?;
    let password = secret(db.password_file.as_ref())?;
    let mut env = BTreeMap::new();
    let connect_secs = limit.as_secs().max(2);
    env.insert("PGCONNECT_TIMEOUT".to_string(), connect_secs.to_string());
    env.insert("PGAPPNAME".to_string(), "golive-agent probe".to_string());
    env.insert(
        "PGOPTIONS".to_string(),
        format!(
            "-c client_min_messages=warning -c default_transaction_read_only=on \
             -c statement_timeout={}",
            limit.as_millis()
        ),
    );
    // Empty when there is none: libpq then ignores an inherited PGPASSWORD.
    env.insert(
        "PGPASSWORD".to_string(),
        password.clone().unwrap_or_default(),
    );
    let mut argv = vec![psql.path.display().to_string()];
    argv.extend(
        [
            "-X",
            "-q",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            UNIT_SEPARATOR,
            "-h",
            &db.host,
            "-p",
            &db.port.to_string(),
            "-U",
            &db.user,
            "-d",
            &db.dbname,
            "-c",
            query,
        ]
        .map(String::from),
    );
    let out = run_client(argv, env, limit, password.as_deref())?;
    Ok(first_field(&out, UNIT_SEPARATOR))
}

fn mariadb(db: &MariadbDb, query: &str, limit: Duration) -> Result<Option<String>, String> {
    let client =
        tools::find(&["mariadb", "mysql"], db.bin_dir.as_deref()).map_err(|e| e.to_string())?;
    let password = secret(db.password_file.as_ref())?;
    // The option file must outlive the client; it is removed on drop.
    let option_file = password
        .as_deref()
        .map(OptionFile::create)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut argv = vec![client.path.display().to_string()];
    if let Some(opt) = &option_file {
        // Must be the first option.
        argv.push(format!("--defaults-extra-file={}", opt.path().display()));
    }
    argv.push(format!("--user={}", db.user));
    match &db.socket {
        Some(sock) => {
            argv.push("--protocol=SOCKET".into());
            argv.push(format!("--socket={}", sock.display()));
        }
        None => {
            argv.push("--protocol=TCP".into());
            argv.push(format!("--host={}", db.host));
            argv.push(format!("--port={}", db.port));
        }
    }
    argv.push(format!("--database={}", db.database));
    argv.push(format!("--connect-timeout={}", limit.as_secs().max(2)));
    argv.extend(
        [
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
            "-e",
        ]
        .map(String::from),
    );
    // The server stops the query at the probe's timeout too (the client is
    // killed then; without this the query would keep running). `/*M! */`
    // runs on MariaDB only: MySQL has no max_statement_time.
    argv.push(format!(
        "SET SESSION TRANSACTION READ ONLY; \
         /*M! SET SESSION max_statement_time = {:.3} */; {query}",
        limit.as_secs_f64()
    ));
    let mut env = BTreeMap::new();
    // Never an inherited password from the environment.
    env.insert("MYSQL_PWD".to_string(), String::new());
    let out = run_client(argv, env, limit, password.as_deref())?;
    Ok(first_field(&out, "\t"))
}

fn secret(file: Option<&PathBuf>) -> Result<Option<String>, String> {
    file.map(|f| tools::read_secret(f))
        .transpose()
        .map_err(|e| e.to_string())
}

/// Runs a database client to its end or the timeout; its output on
/// success, else an error quoting the end of its output (password cut out).
fn run_client(
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    limit: Duration,
    password: Option<&str>,
) -> Result<String, String> {
    let client = PathBuf::from(&argv[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let p = Prepared {
        argv,
        cwd: PathBuf::from("/"),
        env,
        user: None,
        timeout: limit,
        grace: Duration::from_secs(1),
        max_output: 64 * 1024,
    };
    let outcome = exec::run(&p, &mut |_| {}).map_err(|e| format!("cannot run {client}: {e}"))?;
    let redact = |text: &str| match password.filter(|s| !s.is_empty()) {
        Some(pw) => text.replace(pw, "<redacted>"),
        None => text.to_string(),
    };
    if outcome.timed_out {
        return Err(format!(
            "{client} did not finish within {} ms and was stopped",
            limit.as_millis()
        ));
    }
    if !outcome.success() {
        // The line that says what went wrong, not the caret under the query.
        let lines: Vec<&str> = outcome
            .tail
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let said = lines
            .iter()
            .find(|l| ["ERROR", "FATAL", "error"].iter().any(|w| l.contains(w)))
            .or(lines.last())
            .copied()
            .unwrap_or("(no output)");
        return Err(format!(
            "{client} failed ({}): {}",
            outcome.describe(limit),
            clip(&redact(said), 300)
        ));
    }
    Ok(redact(&outcome.tail))
}

/// The first column of the first output line; `None` when there is no row.
fn first_field(out: &str, separator: &str) -> Option<String> {
    let line = out.lines().next()?;
    Some(line.split(separator).next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_field_of_first_line() {
        assert_eq!(first_field("7\x1fx\n8\n", UNIT_SEPARATOR), Some("7".into()));
        assert_eq!(first_field("ok\tmore\n", "\t"), Some("ok".into()));
        assert_eq!(first_field("", "\t"), None);
        assert_eq!(first_field("\n", "\t"), Some(String::new()));
    }

    #[test]
    fn sqlite_reads_scalars_without_writing_and_stops_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('ok');")
            .unwrap();
        let db = SqliteDb {
            name: "main".into(),
            path: path.clone(),
        };
        let limit = Duration::from_secs(5);
        assert_eq!(
            sqlite(&db, "SELECT v FROM t", limit).unwrap(),
            Some("ok".into())
        );
        assert_eq!(
            sqlite(&db, "SELECT count(*) FROM t", limit).unwrap(),
            Some("1".into())
        );
        assert_eq!(sqlite(&db, "SELECT v FROM t WHERE 0", limit).unwrap(), None);
        let e = sqlite(&db, "DELETE FROM t", limit).unwrap_err();
        assert!(e.contains("readonly"), "{e}");
        let started = Instant::now();
        let e = sqlite(
            &db,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
             SELECT count(*) FROM c",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("interrupted"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
