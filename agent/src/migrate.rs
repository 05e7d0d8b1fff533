//! SQL migrations (issue 4 part 5): a directory of `NNNN_name.up.sql` /
//! `NNNN_name.down.sql` files applied in order to a SQLite, PostgreSQL or
//! MariaDB database, recorded in a tracking table `golive_migrations`
//! (version, name, checksum, applied_at in Unix milliseconds, duration_ms,
//! deployment) in the same transaction as the migration itself.
//!
//! - [`scan`] reads the directory and refuses gaps in the numbering,
//!   duplicate versions, down files without an up file and malformed names.
//!   A header comment `-- golive: expand` / `-- golive: contract` in the
//!   first lines of an up file tags the migration ([`Tag`], SPEC §6).
//! - [`status`] lists applied and pending migrations, and refuses when an
//!   applied migration's file changed (checksum) or is gone.
//! - [`up`] applies the pending ones in order; [`down`] reverts to a version
//!   with the down files, refusing before any change if one is missing.
//!
//! Transactions and locks per engine:
//! - SQLite (rusqlite): the whole run holds one `BEGIN IMMEDIATE` write
//!   transaction (the lock: a second migrator waits on the busy timeout, then
//!   fails with [`MigrateError::Locked`]; nothing stale survives a crash) and
//!   each migration is a savepoint inside it: a failing one is rolled back
//!   and the ones before it are committed.
//! - PostgreSQL (`psql`): one session per run takes the session-level
//!   `pg_try_advisory_lock(LOCK_KEY)` (retried until the timeout), then runs
//!   each migration in its own `BEGIN`/`COMMIT`; DDL is transactional, so a
//!   failing migration changes nothing.
//! - MariaDB (`mariadb`): one session per run takes `GET_LOCK('golive_migrations')`
//!   and runs each migration in `START TRANSACTION`/`COMMIT`. MariaDB commits
//!   DDL implicitly, so statements of a failing migration that ran before the
//!   error may remain (data-only statements are rolled back); the migration is
//!   not recorded either way. Take a backup first (the deploy does).
//!
//! The script for a run is built before the lock is taken; once it holds the
//! lock, it checks that none of its pending versions was applied meanwhile
//! and otherwise aborts, and the run is planned again (so a migrator that
//! waited behind another finds nothing pending). Migration files must not
//! contain transaction control statements (`BEGIN`, `COMMIT`, ...).
//!
//! Secrets reach the client tools as in [`crate::backup`]: `PGPASSWORD`, or
//! a private MariaDB option file; never argv.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use golive_shared::config::{DatabaseConfig, MariadbDb, PostgresDb, SqliteDb};
use sha2::{Digest, Sha256};

use crate::backup::BackupError;
use crate::backup::tools;

/// The tracking table, the same name on every engine.
pub const TABLE: &str = "golive_migrations";
/// PostgreSQL advisory lock key (`golive` in ASCII, as a number).
pub const PG_LOCK_KEY: i64 = 0x676f_6c69_7665;
/// How long [`up`] and [`down`] wait for another migrator's lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Header lines of an up file searched for the tag.
const TAG_LINES: usize = 10;
const LOCKED_MARK: &str = "golive: another migration holds the lock";
const RACED_MARK: &str = "golive: migrations changed while waiting for the lock";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Expand,
    Contract,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub up: PathBuf,
    pub down: Option<PathBuf>,
    /// sha256 (hex) of the up file.
    pub checksum: String,
    pub tag: Option<Tag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u32,
    pub name: String,
    pub checksum: String,
    /// Unix milliseconds.
    pub applied_at: i64,
    pub duration_ms: u64,
    pub deployment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub applied: Vec<Applied>,
    pub pending: Vec<Migration>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "another migration holds the lock on database {db} (waited {}s); wait for it to \
         finish, or find and stop the other migrator",
        waited.as_secs()
    )]
    Locked { db: String, waited: Duration },
    #[error("migration {} failed and was not recorded{note}: {detail}", file.display())]
    Failed {
        file: PathBuf,
        note: &'static str,
        detail: String,
    },
    #[error("sqlite {}: {detail}", path.display())]
    Sqlite { path: PathBuf, detail: String },
    #[error(transparent)]
    Tool(#[from] BackupError),
}

const ROLLED_BACK: &str = "; its changes were rolled back";
const MARIADB_NOTE: &str = "; MariaDB commits DDL at once, so statements before the error may \
                            have taken effect (data changes were rolled back)";

fn invalid(msg: impl Into<String>) -> MigrateError {
    MigrateError::Invalid(msg.into())
}

// ---------------------------------------------------------------- scanning

/// `NNNN_name.up.sql` / `NNNN_name.down.sql` → (version, name, is_up).
fn parse_name(file: &str) -> Option<(u32, String, bool)> {
    let (stem, is_up) = if let Some(s) = file.strip_suffix(".up.sql") {
        (s, true)
    } else {
        (file.strip_suffix(".down.sql")?, false)
    };
    let (num, name) = stem.split_once('_')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    Some((num.parse().ok()?, name.to_string(), is_up))
}

fn read_tag(path: &Path, text: &str) -> Result<Option<Tag>, MigrateError> {
    for line in text.lines().take(TAG_LINES) {
        let Some(comment) = line.trim().strip_prefix("--") else {
            continue;
        };
        let Some(value) = comment.trim().strip_prefix("golive:") else {
            continue;
        };
        return match value.trim().to_ascii_lowercase().as_str() {
            "expand" => Ok(Some(Tag::Expand)),
            "contract" => Ok(Some(Tag::Contract)),
            other => Err(invalid(format!(
                "{}: unknown migration tag {other:?}; write `-- golive: expand` or `-- golive: contract`",
                path.display()
            ))),
        };
    }
    Ok(None)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the migrations in `dir` (files not ending in `.sql` and hidden
/// files are ignored), sorted by version.
pub fn scan(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        invalid(format!(
            "cannot read migrations directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut ups: BTreeMap<u32, (String, PathBuf)> = BTreeMap::new();
    let mut downs: BTreeMap<u32, (String, PathBuf)> = BTreeMap::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| invalid(format!("cannot read {}: {e}", dir.display())))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with('.') || !file.ends_with(".sql") || entry.path().is_dir() {
            continue;
        }
        files.push((file, entry.path()));
    }
    files.sort();
    for (file, path) in files {
        let Some((version, name, is_up)) = parse_name(&file) else {
            return Err(invalid(format!(
                "migration file {} has a malformed name; expected NNNN_name.up.sql or \
                 NNNN_name.down.sql (NNNN digits, name of letters, digits, '_' or '-')",
                path.display()
            )));
        };
        let map = if is_up { &mut ups } else { &mut downs };
        if let Some((_, other)) = map.get(&version) {
            return Err(invalid(format!(
                "duplicate migration version {version}: {} and {}",
                other.display(),
                path.display()
            )));
        }
        map.insert(version, (name, path));
    }
    for (version, (name, path)) in &downs {
        match ups.get(version) {
            None => {
                return Err(invalid(format!(
                    "down migration {} has no up migration (expected {:04}_{name}.up.sql)",
                    path.display(),
                    version
                )));
            }
            Some((up_name, up_path)) if up_name != name => {
                return Err(invalid(format!(
                    "down migration {} does not match up migration {} (the names differ)",
                    path.display(),
                    up_path.display()
                )));
            }
            Some(_) => {}
        }
    }
    let mut expected: Option<u32> = None;
    let mut out = Vec::with_capacity(ups.len());
    for (version, (name, path)) in ups {
        if let Some(want) = expected
            && version != want
        {
            return Err(invalid(format!(
                "gap in the migration numbering: {want} is missing (before {}); \
                 renumber, or add the missing migration",
                path.display()
            )));
        }
        expected = Some(version + 1);
        let bytes = std::fs::read(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let tag = read_tag(&path, &String::from_utf8_lossy(&bytes))?;
        out.push(Migration {
            version,
            name,
            down: downs.remove(&version).map(|(_, p)| p),
            checksum: sha256_hex(&bytes),
            up: path,
            tag,
        });
    }
    Ok(out)
}

/// Checks the applied rows against the files; returns the pending migrations.
fn pending(applied: &[Applied], migrations: &[Migration]) -> Result<Vec<Migration>, MigrateError> {
    let by_version: BTreeMap<u32, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    for a in applied {
        let Some(m) = by_version.get(&a.version) else {
            return Err(invalid(format!(
                "applied migration {} ({}) has no file in the migrations directory; \
                 restore the file (a release must keep its applied migrations)",
                a.version, a.name
            )));
        };
        if m.checksum != a.checksum {
            return Err(invalid(format!(
                "applied migration {} was changed after it was applied (checksum {} recorded, \
                 the file hashes to {}); never edit an applied migration: restore it and add a new one",
                m.up.display(),
                a.checksum,
                m.checksum
            )));
        }
    }
    let done: BTreeSet<u32> = applied.iter().map(|a| a.version).collect();
    let last = done.last().copied();
    let pending: Vec<Migration> = migrations
        .iter()
        .filter(|m| !done.contains(&m.version))
        .cloned()
        .collect();
    if let (Some(first), Some(last)) = (pending.first(), last)
        && first.version < last
    {
        return Err(invalid(format!(
            "migration {} is pending but the later version {last} is already applied; \
             give it a number after {last}",
            first.up.display()
        )));
    }
    Ok(pending)
}

/// Reads an up or down file, checking the up file still has its checksum.
fn read_sql(path: &Path, checksum: Option<&str>) -> Result<String, MigrateError> {
    let bytes =
        std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    if let Some(sum) = checksum
        && sha256_hex(&bytes) != sum
    {
        return Err(invalid(format!(
            "migration {} changed while migrating; run again",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| invalid(format!("{} is not valid UTF-8", path.display())))
}

fn check_deployment(deployment: Option<&str>) -> Result<(), MigrateError> {
    match deployment {
        Some(d)
            if d.is_empty()
                || d.len() > 128
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)) =>
        {
            Err(invalid(format!(
                "deployment id {d:?} is not supported: use 1-128 letters, digits, '.', '-', '_' or ':'"
            )))
        }
        _ => Ok(()),
    }
}

fn file_label(m: &Migration) -> String {
    m.up.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| m.name.clone())
}

// ---------------------------------------------------------------- public API

/// Applied and pending migrations of `db` against the files in `dir`.
pub fn status(db: &DatabaseConfig, dir: &Path) -> Result<Status, MigrateError> {
    let migrations = scan(dir)?;
    let applied = match db {
        DatabaseConfig::Sqlite(s) => sqlite_applied_readonly(s)?,
        DatabaseConfig::Postgres(p) => Pg::new(p)?.applied()?,
        DatabaseConfig::Mariadb(m) => My::new(m)?.applied()?,
    };
    let pending = pending(&applied, &migrations)?;
    Ok(Status { applied, pending })
}

/// Applies the pending migrations in order, waiting up to [`LOCK_WAIT`] for
/// another migrator; returns what this call applied.
pub fn up(
    db: &DatabaseConfig,
    dir: &Path,
    deployment: Option<&str>,
    log: &dyn Fn(String),
) -> Result<Vec<Applied>, MigrateError> {
    up_with(db, dir, deployment, LOCK_WAIT, log)
}

/// [`up`] with an explicit lock wait.
pub fn up_with(
    db: &DatabaseConfig,
    dir: &Path,
    deployment: Option<&str>,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<Applied>, MigrateError> {
    check_deployment(deployment)?;
    let migrations = scan(dir)?;
    match db {
        DatabaseConfig::Sqlite(s) => sqlite_up(s, &migrations, deployment, lock_wait, log),
        DatabaseConfig::Postgres(p) => {
            let pg = Pg::new(p)?;
            remote_up(&pg, &migrations, deployment, lock_wait, log)
        }
        DatabaseConfig::Mariadb(m) => {
            let my = My::new(m)?;
            remote_up(&my, &migrations, deployment, lock_wait, log)
        }
    }
}

/// Reverts the applied versions above `to_version`, newest first; returns
/// the reverted versions.
pub fn down(
    db: &DatabaseConfig,
    dir: &Path,
    to_version: u32,
    log: &dyn Fn(String),
) -> Result<Vec<u32>, MigrateError> {
    down_with(db, dir, to_version, LOCK_WAIT, log)
}

/// [`down`] with an explicit lock wait.
pub fn down_with(
    db: &DatabaseConfig,
    dir: &Path,
    to_version: u32,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<u32>, MigrateError> {
    let migrations = scan(dir)?;
    match db {
        DatabaseConfig::Sqlite(s) => sqlite_down(s, &migrations, to_version, lock_wait, log),
        DatabaseConfig::Postgres(p) => {
            let pg = Pg::new(p)?;
            remote_down(&pg, &migrations, to_version, lock_wait, log)
        }
        DatabaseConfig::Mariadb(m) => {
            let my = My::new(m)?;
            remote_down(&my, &migrations, to_version, lock_wait, log)
        }
    }
}

/// The migrations to revert (newest first) with their down SQL; refuses if
/// any down file is missing.
fn plan_down(
    applied: &[Applied],
    migrations: &[Migration],
    to_version: u32,
) -> Result<Vec<(Migration, String)>, MigrateError> {
    pending(applied, migrations)?;
    let by_version: BTreeMap<u32, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    let mut out = Vec::new();
    for a in applied.iter().rev().filter(|a| a.version > to_version) {
        let m = by_version[&a.version];
        let Some(down) = m.down.as_deref() else {
            return Err(invalid(format!(
                "cannot go down to version {to_version}: migration {} has no down file \
                 (expected {}); nothing was changed",
                m.up.display(),
                m.up.with_file_name(format!("{:04}_{}.down.sql", m.version, m.name))
                    .display()
            )));
        };
        out.push(((*m).clone(), down.to_path_buf()));
    }
    // Every down file exists: read them all before changing anything.
    out.into_iter()
        .map(|(m, down)| Ok((m, read_sql(&down, None)?)))
        .collect()
}

// ---------------------------------------------------------------- SQLite

const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS golive_migrations (\
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
    applied_at INTEGER NOT NULL, duration_ms INTEGER NOT NULL, deployment TEXT)";

fn sq_err(path: &Path, e: rusqlite::Error) -> MigrateError {
    MigrateError::Sqlite {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn sqlite_rows(conn: &rusqlite::Connection, path: &Path) -> Result<Vec<Applied>, MigrateError> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [TABLE],
            |r| r.get(0),
        )
        .map_err(|e| sq_err(path, e))?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare(
            "SELECT version, name, checksum, applied_at, duration_ms, deployment \
             FROM golive_migrations ORDER BY version",
        )
        .map_err(|e| sq_err(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Applied {
                version: r.get(0)?,
                name: r.get(1)?,
                checksum: r.get(2)?,
                applied_at: r.get(3)?,
                duration_ms: r.get::<_, i64>(4)?.max(0) as u64,
                deployment: r.get(5)?,
            })
        })
        .map_err(|e| sq_err(path, e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| sq_err(path, e))
}

fn sqlite_applied_readonly(db: &SqliteDb) -> Result<Vec<Applied>, MigrateError> {
    if !db.path.exists() {
        // Nothing applied yet; `up` creates the file.
        return Ok(Vec::new());
    }
    let conn = rusqlite::Connection::open_with_flags(
        &db.path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sq_err(&db.path, e))?;
    let _ = conn.busy_timeout(Duration::from_secs(10));
    sqlite_rows(&conn, &db.path)
}

/// Opens the database and takes the write lock (`BEGIN IMMEDIATE`),
/// waiting up to `lock_wait`.
fn sqlite_lock(db: &SqliteDb, lock_wait: Duration) -> Result<rusqlite::Connection, MigrateError> {
    let conn = rusqlite::Connection::open(&db.path).map_err(|e| sq_err(&db.path, e))?;
    conn.busy_timeout(lock_wait)
        .map_err(|e| sq_err(&db.path, e))?;
    match conn.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => Ok(conn),
        Err(rusqlite::Error::SqliteFailure(f, _))
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Err(MigrateError::Locked {
                db: db.path.display().to_string(),
                waited: lock_wait,
            })
        }
        Err(e) => Err(sq_err(&db.path, e)),
    }
}

/// Runs `body` in a savepoint; on error rolls the savepoint back.
fn savepoint(
    conn: &rusqlite::Connection,
    body: impl FnOnce() -> rusqlite::Result<()>,
) -> Result<(), rusqlite::Error> {
    conn.execute_batch("SAVEPOINT golive_migration")?;
    match body() {
        Ok(()) => conn.execute_batch("RELEASE golive_migration"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO golive_migration; RELEASE golive_migration");
            Err(e)
        }
    }
}

fn sqlite_up(
    db: &SqliteDb,
    migrations: &[Migration],
    deployment: Option<&str>,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<Applied>, MigrateError> {
    let conn = sqlite_lock(db, lock_wait)?;
    // Dropping `conn` with the transaction open rolls back (and unlocks).
    conn.execute_batch(SQLITE_TABLE)
        .map_err(|e| sq_err(&db.path, e))?;
    let applied = sqlite_rows(&conn, &db.path)?;
    let todo = pending(&applied, migrations)?;
    let mut done = Vec::new();
    let mut failure = None;
    for m in &todo {
        let sql = read_sql(&m.up, Some(&m.checksum))?;
        let start = Instant::now();
        let applied_at = golive_shared::protocol::now_millis();
        let mut duration_ms = 0;
        let result = savepoint(&conn, || {
            conn.execute_batch(&sql)?;
            duration_ms = start.elapsed().as_millis() as u64;
            conn.execute(
                "INSERT INTO golive_migrations \
                 (version, name, checksum, applied_at, duration_ms, deployment) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    m.version,
                    m.name,
                    m.checksum,
                    applied_at,
                    duration_ms as i64,
                    deployment
                ],
            )?;
            Ok(())
        });
        match result {
            Ok(()) => {
                log(format!("applied {} ({duration_ms} ms)", file_label(m)));
                done.push(Applied {
                    version: m.version,
                    name: m.name.clone(),
                    checksum: m.checksum.clone(),
                    applied_at,
                    duration_ms,
                    deployment: deployment.map(str::to_string),
                });
            }
            Err(e) => {
                failure = Some(MigrateError::Failed {
                    file: m.up.clone(),
                    note: ROLLED_BACK,
                    detail: e.to_string(),
                });
                break;
            }
        }
    }
    conn.execute_batch("COMMIT")
        .map_err(|e| sq_err(&db.path, e))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

fn sqlite_down(
    db: &SqliteDb,
    migrations: &[Migration],
    to_version: u32,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<u32>, MigrateError> {
    let conn = sqlite_lock(db, lock_wait)?;
    let applied = sqlite_rows(&conn, &db.path)?;
    let plan = plan_down(&applied, migrations, to_version)?;
    let mut done = Vec::new();
    let mut failure = None;
    for (m, sql) in &plan {
        let result = savepoint(&conn, || {
            conn.execute_batch(sql)?;
            conn.execute(
                "DELETE FROM golive_migrations WHERE version = ?1",
                [m.version],
            )?;
            Ok(())
        });
        match result {
            Ok(()) => {
                log(format!("reverted {}", file_label(m)));
                done.push(m.version);
            }
            Err(e) => {
                failure = Some(MigrateError::Failed {
                    file: m.down.clone().unwrap_or_else(|| m.up.clone()),
                    note: ROLLED_BACK,
                    detail: e.to_string(),
                });
                break;
            }
        }
    }
    conn.execute_batch("COMMIT")
        .map_err(|e| sq_err(&db.path, e))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

// ---------------------------------------------------------------- client-tool engines

/// What differs between PostgreSQL and MariaDB for [`remote_up`]/[`remote_down`].
trait Remote {
    fn label(&self) -> String;
    fn applied(&self) -> Result<Vec<Applied>, MigrateError>;
    /// Runs a script in one session; the error is redacted.
    fn run_script(&self, script: &str) -> Result<(), BackupError>;
    /// Takes the lock (aborting with LOCKED_MARK after `wait`) and creates the table.
    fn prologue(&self, wait: Duration) -> String;
    /// Aborts with RACED_MARK unless exactly `versions` have `applied` state.
    fn guard(&self, versions: &[u32], applied: bool) -> String;
    fn begin(&self) -> &'static str;
    fn record(&self, m: &Migration, deployment: Option<&str>) -> String;
    fn epilogue(&self) -> &'static str;
    fn failed_note(&self) -> &'static str;
}

/// Makes sure the migration's last statement is terminated before what we append.
fn terminated(sql: &str) -> String {
    let mut out = sql.trim_end().to_string();
    let last = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"));
    // `SELECT 1; -- note` is terminated too (a stray `;` would be an empty
    // query, an error on MariaDB).
    let ends = |l: &str| {
        l.ends_with(';')
            || l.match_indices("--")
                .any(|(i, _)| l[..i].trim_end().ends_with(';'))
    };
    if let Some(last) = last
        && !ends(last)
    {
        out.push_str("\n;");
    }
    out.push('\n');
    out
}

fn version_list(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a planned script ended.
enum Outcome {
    Done,
    /// Another migrator changed the applied set while we waited: plan again.
    Raced,
    Locked,
    Failed(BackupError),
}

fn run_planned(remote: &dyn Remote, script: &str) -> Outcome {
    match remote.run_script(script) {
        Ok(()) => Outcome::Done,
        Err(e) => {
            let text = e.to_string();
            if text.contains(RACED_MARK) {
                Outcome::Raced
            } else if text.contains(LOCKED_MARK) {
                Outcome::Locked
            } else {
                Outcome::Failed(e)
            }
        }
    }
}

fn remote_up(
    remote: &dyn Remote,
    migrations: &[Migration],
    deployment: Option<&str>,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<Applied>, MigrateError> {
    for _attempt in 0..5 {
        let applied = remote.applied()?;
        let todo = pending(&applied, migrations)?;
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let versions: Vec<u32> = todo.iter().map(|m| m.version).collect();
        let mut script = remote.prologue(lock_wait);
        script.push_str(&remote.guard(&versions, false));
        for m in &todo {
            let sql = read_sql(&m.up, Some(&m.checksum))?;
            script.push_str(remote.begin());
            script.push_str(&terminated(&sql));
            script.push_str(&remote.record(m, deployment));
        }
        script.push_str(remote.epilogue());
        log(format!(
            "applying {} migration(s) to {}: {}",
            todo.len(),
            remote.label(),
            todo.iter().map(file_label).collect::<Vec<_>>().join(", ")
        ));
        let outcome = run_planned(remote, &script);
        if matches!(outcome, Outcome::Raced) {
            log("another migrator applied migrations meanwhile; planning again".into());
            continue;
        }
        // Success or failure: what is recorded now for our versions is ours
        // (the guard proved none of them was applied when we took the lock).
        let after = remote.applied()?;
        let ours: Vec<Applied> = after
            .into_iter()
            .filter(|a| versions.contains(&a.version))
            .collect();
        for a in &ours {
            log(format!(
                "applied {:04}_{} ({} ms)",
                a.version, a.name, a.duration_ms
            ));
        }
        return match outcome {
            Outcome::Done | Outcome::Raced => Ok(ours),
            Outcome::Locked => Err(MigrateError::Locked {
                db: remote.label(),
                waited: lock_wait,
            }),
            Outcome::Failed(e) => match todo
                .iter()
                .find(|m| !ours.iter().any(|a| a.version == m.version))
            {
                Some(m) if !ours.is_empty() || !is_connect_error(&e) => Err(MigrateError::Failed {
                    file: m.up.clone(),
                    note: remote.failed_note(),
                    detail: e.to_string(),
                }),
                _ => Err(e.into()),
            },
        };
    }
    Err(invalid(format!(
        "{}: other migrators kept changing the migrations; run again",
        remote.label()
    )))
}

/// Connection failures are reported as tool errors, not as a failing migration.
fn is_connect_error(e: &BackupError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("connection to server")
        || text.contains("can't connect")
        || text.contains("access denied")
        || text.contains("password authentication failed")
        || matches!(e, BackupError::Tool { status, .. } if status == "not started")
}

fn remote_down(
    remote: &dyn Remote,
    migrations: &[Migration],
    to_version: u32,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<u32>, MigrateError> {
    for _attempt in 0..5 {
        let applied = remote.applied()?;
        let plan = plan_down(&applied, migrations, to_version)?;
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let versions: Vec<u32> = plan.iter().map(|(m, _)| m.version).collect();
        let mut script = remote.prologue(lock_wait);
        script.push_str(&remote.guard(&versions, true));
        for (m, sql) in &plan {
            script.push_str(remote.begin());
            script.push_str(&terminated(sql));
            script.push_str(&format!(
                "DELETE FROM golive_migrations WHERE version = {};\nCOMMIT;\n",
                m.version
            ));
        }
        script.push_str(remote.epilogue());
        let outcome = run_planned(remote, &script);
        if matches!(outcome, Outcome::Raced) {
            continue;
        }
        let still: BTreeSet<u32> = remote.applied()?.iter().map(|a| a.version).collect();
        let reverted: Vec<u32> = versions
            .iter()
            .copied()
            .filter(|v| !still.contains(v))
            .collect();
        for (m, _) in plan.iter().filter(|(m, _)| reverted.contains(&m.version)) {
            log(format!("reverted {}", file_label(m)));
        }
        return match outcome {
            Outcome::Done | Outcome::Raced => Ok(reverted),
            Outcome::Locked => Err(MigrateError::Locked {
                db: remote.label(),
                waited: lock_wait,
            }),
            Outcome::Failed(e) => match plan.iter().find(|(m, _)| still.contains(&m.version)) {
                Some((m, _)) if !reverted.is_empty() || !is_connect_error(&e) => {
                    Err(MigrateError::Failed {
                        file: m.down.clone().unwrap_or_else(|| m.up.clone()),
                        note: remote.failed_note(),
                        detail: e.to_string(),
                    })
                }
                _ => Err(e.into()),
            },
        };
    }
    Err(invalid(format!(
        "{}: other migrators kept changing the migrations; run again",
        remote.label()
    )))
}

fn parse_rows(out: &str, what: &str) -> Result<Vec<Applied>, MigrateError> {
    let mut rows = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || invalid(format!("{what}: unexpected row {line:?} in {TABLE}"));
        if f.len() != 6 {
            return Err(bad());
        }
        rows.push(Applied {
            version: f[0].trim().parse().map_err(|_| bad())?,
            name: f[1].to_string(),
            checksum: f[2].to_string(),
            applied_at: f[3].trim().parse().map_err(|_| bad())?,
            duration_ms: f[4].trim().parse::<i64>().map_err(|_| bad())?.max(0) as u64,
            deployment: Some(f[5].trim().to_string()).filter(|d| !d.is_empty()),
        });
    }
    Ok(rows)
}

fn record_values(m: &Migration, deployment: Option<&str>) -> (String, String) {
    // Names, checksums and deployment ids are checked to a plain alphabet.
    let dep = match deployment {
        Some(d) => format!("'{d}'"),
        None => "NULL".into(),
    };
    (
        format!("{}, '{}', '{}'", m.version, m.name, m.checksum),
        dep,
    )
}

/// PostgreSQL through `psql`, password in `PGPASSWORD`.
struct Pg<'a> {
    db: &'a PostgresDb,
    password: Option<String>,
}

impl<'a> Pg<'a> {
    fn new(db: &'a PostgresDb) -> Result<Pg<'a>, MigrateError> {
        let password = db
            .password_file
            .as_deref()
            .map(tools::read_secret)
            .transpose()?;
        Ok(Pg { db, password })
    }

    fn psql(&self) -> Result<Command, BackupError> {
        let tool = tools::find(&["psql"], self.db.bin_dir.as_deref())?;
        let mut cmd = tool.command();
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "golive-agent")
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.db.host)
            .arg("-p")
            .arg(self.db.port.to_string())
            .arg("-U")
            .arg(&self.db.user)
            .arg("-d")
            .arg(&self.db.dbname);
        match &self.password {
            Some(pw) => cmd.env("PGPASSWORD", pw),
            None => cmd.env_remove("PGPASSWORD"),
        };
        Ok(cmd)
    }

    fn query(&self, sql: &str, what: &str) -> Result<String, MigrateError> {
        let mut cmd = self.psql()?;
        cmd.args(["-F", "\t", "-c", sql]);
        tools::run(cmd, what, self.db.tool_timeout())
            .map_err(|e| tools::redact(e, self.password.as_deref()).into())
    }
}

impl Remote for Pg<'_> {
    fn label(&self) -> String {
        format!(
            "PostgreSQL {} ({}:{})",
            self.db.dbname, self.db.host, self.db.port
        )
    }

    fn applied(&self) -> Result<Vec<Applied>, MigrateError> {
        let exists = self.query(
            "SELECT to_regclass('golive_migrations') IS NOT NULL",
            "migrations table",
        )?;
        if exists.trim() != "t" {
            return Ok(Vec::new());
        }
        let out = self.query(
            "SELECT version, name, checksum, applied_at, duration_ms, coalesce(deployment, '') \
             FROM golive_migrations ORDER BY version",
            "applied migrations",
        )?;
        parse_rows(&out, "psql")
    }

    fn run_script(&self, script: &str) -> Result<(), BackupError> {
        feed_script(
            self.psql()?,
            script,
            self.password.as_deref(),
            self.db.tool_timeout(),
        )
    }

    fn prologue(&self, wait: Duration) -> String {
        let tries = (wait.as_millis() / 100).max(1);
        format!(
            "DO $golive$ BEGIN FOR i IN 1..{tries} LOOP \
             IF pg_try_advisory_lock({PG_LOCK_KEY}) THEN RETURN; END IF; \
             PERFORM pg_sleep(0.1); END LOOP; \
             RAISE EXCEPTION '{LOCKED_MARK}'; END $golive$;\n\
             CREATE TABLE IF NOT EXISTS golive_migrations (version integer PRIMARY KEY, \
             name text NOT NULL, checksum text NOT NULL, applied_at bigint NOT NULL, \
             duration_ms bigint NOT NULL, deployment text);\n"
        )
    }

    fn guard(&self, versions: &[u32], applied: bool) -> String {
        format!(
            "DO $golive$ BEGIN IF (SELECT count(*) FROM golive_migrations WHERE version IN ({})) \
             <> {} THEN RAISE EXCEPTION '{RACED_MARK}'; END IF; END $golive$;\n",
            version_list(versions),
            if applied { versions.len() } else { 0 }
        )
    }

    fn begin(&self) -> &'static str {
        "BEGIN;\n"
    }

    fn record(&self, m: &Migration, deployment: Option<&str>) -> String {
        let (head, dep) = record_values(m, deployment);
        format!(
            "INSERT INTO golive_migrations (version, name, checksum, applied_at, duration_ms, \
             deployment) VALUES ({head}, (extract(epoch from now()) * 1000)::bigint, \
             (extract(epoch from clock_timestamp() - now()) * 1000)::bigint, {dep});\nCOMMIT;\n"
        )
    }

    fn epilogue(&self) -> &'static str {
        "SELECT pg_advisory_unlock_all();\n"
    }

    fn failed_note(&self) -> &'static str {
        ROLLED_BACK
    }
}

use crate::backup::mariadb::OptionFile;

/// MariaDB through `mariadb`/`mysql`, password in a private option file.
struct My<'a> {
    db: &'a MariadbDb,
    password: Option<String>,
    option_file: Option<OptionFile>,
}

impl<'a> My<'a> {
    fn new(db: &'a MariadbDb) -> Result<My<'a>, MigrateError> {
        let password = db
            .password_file
            .as_deref()
            .map(tools::read_secret)
            .transpose()?;
        let option_file = password.as_deref().map(OptionFile::create).transpose()?;
        Ok(My {
            db,
            password,
            option_file,
        })
    }

    fn client(&self) -> Result<Command, BackupError> {
        let tool = tools::find(&["mariadb", "mysql"], self.db.bin_dir.as_deref())?;
        let mut cmd = tool.command();
        if let Some(opt) = &self.option_file {
            let mut arg = std::ffi::OsString::from("--defaults-extra-file=");
            arg.push(opt.path());
            cmd.arg(arg);
        }
        cmd.env_remove("MYSQL_PWD");
        cmd.arg(format!("--user={}", self.db.user));
        match &self.db.socket {
            Some(sock) => {
                let mut arg = std::ffi::OsString::from("--socket=");
                arg.push(sock);
                cmd.arg("--protocol=SOCKET").arg(arg);
            }
            None => {
                cmd.arg("--protocol=TCP")
                    .arg(format!("--host={}", self.db.host))
                    .arg(format!("--port={}", self.db.port));
            }
        }
        cmd.arg(format!("--database={}", self.db.database)).args([
            "--connect-timeout=10",
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ]);
        Ok(cmd)
    }
}

impl Remote for My<'_> {
    fn label(&self) -> String {
        format!("MariaDB {}", self.db.database)
    }

    fn applied(&self) -> Result<Vec<Applied>, MigrateError> {
        let mut cmd = self.client()?;
        cmd.args([
            "-e",
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'golive_migrations'",
        ]);
        let exists = tools::run(cmd, "migrations table", self.db.tool_timeout())
            .map_err(|e| tools::redact(e, self.password.as_deref()))?;
        if exists.trim() == "0" {
            return Ok(Vec::new());
        }
        let mut cmd = self.client()?;
        cmd.args([
            "-e",
            "SELECT version, name, checksum, applied_at, duration_ms, IFNULL(deployment, '') \
             FROM golive_migrations ORDER BY version",
        ]);
        let out = tools::run(cmd, "applied migrations", self.db.tool_timeout())
            .map_err(|e| tools::redact(e, self.password.as_deref()))?;
        parse_rows(&out, "mariadb")
    }

    fn run_script(&self, script: &str) -> Result<(), BackupError> {
        feed_script(
            self.client()?,
            script,
            self.password.as_deref(),
            self.db.tool_timeout(),
        )
    }

    fn prologue(&self, wait: Duration) -> String {
        format!(
            "DELIMITER //\n\
             BEGIN NOT ATOMIC IF COALESCE(GET_LOCK('golive_migrations', {}), 0) <> 1 THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{LOCKED_MARK}'; END IF; END//\n\
             DELIMITER ;\n\
             CREATE TABLE IF NOT EXISTS golive_migrations (version INT UNSIGNED PRIMARY KEY, \
             name VARCHAR(255) NOT NULL, checksum CHAR(64) NOT NULL, applied_at BIGINT NOT NULL, \
             duration_ms BIGINT NOT NULL, deployment VARCHAR(255) NULL);\n",
            wait.as_secs().max(1)
        )
    }

    fn guard(&self, versions: &[u32], applied: bool) -> String {
        format!(
            "DELIMITER //\n\
             BEGIN NOT ATOMIC IF (SELECT COUNT(*) FROM golive_migrations WHERE version IN ({})) \
             <> {} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{RACED_MARK}'; END IF; END//\n\
             DELIMITER ;\n",
            version_list(versions),
            if applied { versions.len() } else { 0 }
        )
    }

    fn begin(&self) -> &'static str {
        "SET @golive_t0 = NOW(6);\nSTART TRANSACTION;\n"
    }

    fn record(&self, m: &Migration, deployment: Option<&str>) -> String {
        let (head, dep) = record_values(m, deployment);
        format!(
            "INSERT INTO golive_migrations (version, name, checksum, applied_at, duration_ms, \
             deployment) VALUES ({head}, CAST(UNIX_TIMESTAMP(@golive_t0) * 1000 AS SIGNED), \
             TIMESTAMPDIFF(MICROSECOND, @golive_t0, NOW(6)) DIV 1000, {dep});\nCOMMIT;\n"
        )
    }

    fn epilogue(&self) -> &'static str {
        "DO RELEASE_LOCK('golive_migrations');\n"
    }

    fn failed_note(&self) -> &'static str {
        MARIADB_NOTE
    }
}

/// Feeds a migration script to a database client on stdin; the password
/// never appears in the error.
fn feed_script(
    cmd: std::process::Command,
    script: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<(), BackupError> {
    tools::stream_in(
        cmd,
        &mut script.as_bytes(),
        Path::new("migration script"),
        &mut |_| {},
        timeout,
    )
    .map_err(|e| tools::redact(e, password))
}

// ----- jobs and requests ----------------------------------------------------
//
// The glue between the engine and the agent: which database and which
// directory a request means, as the agent's config declares them.

/// What a migration request means on this host: the release, and the SQL
/// migrations and/or the migration command the app declares.
struct Target<'a> {
    app: &'a golive_shared::config::AppConfig,
    release: String,
    release_dir: PathBuf,
    /// The database and the release's migrations directory.
    sql: Option<(&'a DatabaseConfig, PathBuf)>,
}

/// Resolves a request against the config (default release: current).
fn target<'a>(
    config: &'a golive_shared::config::AgentConfig,
    app_name: &str,
    release: Option<&str>,
) -> Result<Target<'a>, String> {
    let app = config
        .app(app_name)
        .ok_or_else(|| format!("no app {app_name:?}; declared: {}", config.app_names()))?;
    if app.migrations.is_none() && app.migration_command.is_none() {
        return Err(format!(
            "app {app_name} declares no migrations; add [apps.{app_name}.migrations] (dir, database) \
             or [apps.{app_name}.migration_command] to the agent config"
        ));
    }
    let layout = crate::release::layout::AppLayout::new(&app.root);
    let release = match release {
        Some(r) => r.to_string(),
        None => layout
            .current()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("app {app_name} has no current release; name one"))?,
    };
    let release_dir = layout.release_dir(&release);
    if !release_dir.is_dir() {
        return Err(format!(
            "app {app_name} has no release {release:?} on this host"
        ));
    }
    let sql = match &app.migrations {
        None => None,
        Some(m) => {
            let db = app
                .databases
                .iter()
                .find(|d| d.name() == m.database)
                .ok_or_else(|| format!("migrations.database {:?} is not declared", m.database))?;
            Some((db, release_dir.join(&m.dir)))
        }
    };
    Ok(Target {
        app,
        release,
        release_dir,
        sql,
    })
}

fn tag_name(t: Option<Tag>) -> Option<String> {
    t.map(|t| match t {
        Tag::Expand => "expand".to_string(),
        Tag::Contract => "contract".to_string(),
    })
}

/// Applied and pending migrations of a release. A release without a
/// migrations directory has none pending.
pub fn release_status(
    config: &golive_shared::config::AgentConfig,
    req: &golive_shared::protocol::MigrationStatusRequest,
) -> Result<golive_shared::protocol::MigrationStatus, String> {
    use golive_shared::protocol::{AppliedMigration, MigrationStatus, PendingMigration};
    let t = target(config, &req.app, req.release.as_deref())?;
    let (applied, pending) = match &t.sql {
        Some((db, dir)) if dir.is_dir() => {
            let st = status(db, dir).map_err(|e| e.to_string())?;
            (st.applied, st.pending)
        }
        _ => (Vec::new(), Vec::new()),
    };
    Ok(MigrationStatus {
        app: req.app.clone(),
        release: t.release,
        database: t
            .sql
            .map(|(db, _)| db.name().to_string())
            .unwrap_or_default(),
        applied: applied
            .into_iter()
            .map(|a| AppliedMigration {
                version: a.version,
                name: a.name,
                applied_at: a.applied_at,
                duration_ms: a.duration_ms,
                deployment: a.deployment,
            })
            .collect(),
        pending: pending
            .into_iter()
            .map(|m| PendingMigration {
                version: m.version,
                name: m.name,
                tag: tag_name(m.tag),
                has_down: m.down.is_some(),
            })
            .collect(),
        command: t.app.migration_command.as_ref().map(|c| c.cmd.join(" ")),
    })
}

/// The `Migrate` job: up (all pending) or down to a version.
pub fn run_job(
    config: &golive_shared::config::AgentConfig,
    req: &golive_shared::protocol::RunMigrations,
    deployment: Option<&str>,
    emit: &dyn Fn(golive_shared::protocol::EventKind),
) -> Result<golive_shared::protocol::JobResult, String> {
    use golive_shared::protocol::{EventKind, JobResult, LogLevel};
    let log = |line: String| {
        emit(EventKind::Log {
            level: LogLevel::Info,
            line,
        })
    };
    let t = target(config, &req.app, req.release.as_deref())?;
    match req.down_to {
        None => {
            let mut applied = Vec::new();
            match &t.sql {
                Some((db, dir)) if dir.is_dir() => {
                    applied = up(db, dir, deployment, &log).map_err(|e| e.to_string())?;
                    log(format!(
                        "{} migration(s) applied to {} from release {}",
                        applied.len(),
                        db.name(),
                        t.release
                    ));
                }
                Some(_) => log(format!(
                    "release {} ships no migrations directory",
                    t.release
                )),
                None => {}
            }
            if let Some(spec) = &t.app.migration_command {
                run_command(&t, spec, &req.app, &log)?;
            }
            Ok(JobResult::Migrated {
                applied: applied.iter().map(|a| a.version).collect(),
                reverted: vec![],
            })
        }
        Some(to) => {
            let Some((db, dir)) = &t.sql else {
                return Err(format!(
                    "app {} has only a migration command, which has no down; restore the deployment's \
                     pre-deploy backup instead (golivectl backup restore PLAN ID --deployment D)",
                    req.app
                ));
            };
            let reverted = down(db, dir, to, &log).map_err(|e| e.to_string())?;
            log(format!(
                "{} migration(s) reverted on {} (now at version {to})",
                reverted.len(),
                db.name()
            ));
            Ok(JobResult::Migrated {
                applied: vec![],
                reverted,
            })
        }
    }
}

/// Runs the app's migration command in the release (the new code's own
/// migration tool), streaming its output.
fn run_command(
    t: &Target,
    spec: &golive_shared::config::CommandSpec,
    app: &str,
    log: &dyn Fn(String),
) -> Result<(), String> {
    let mut p = crate::exec::Prepared::new(spec, &t.app.run, &t.release_dir);
    p.env.insert("GOLIVE_APP".into(), app.into());
    p.env.insert("GOLIVE_RELEASE".into(), t.release.clone());
    p.env.insert(
        "GOLIVE_RELEASE_DIR".into(),
        t.release_dir.display().to_string(),
    );
    log(format!("migration command: {}", p.display()));
    let outcome = crate::exec::run(&p, &mut |line| log(format!("[migrate] {line}")))
        .map_err(|e| e.to_string())?;
    if outcome.success() {
        log(format!(
            "migration command finished in {} ms",
            outcome.duration.as_millis()
        ));
        Ok(())
    } else {
        Err(format!(
            "migration command `{}` {}; its output ended with:\n{}",
            p.display(),
            outcome.describe(p.timeout),
            outcome.tail.trim_end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    fn sqlite(dir: &Path) -> DatabaseConfig {
        DatabaseConfig::Sqlite(SqliteDb {
            name: "main".into(),
            path: dir.join("app.db"),
        })
    }

    fn quiet(_: String) {}

    fn tables(db: &DatabaseConfig) -> Vec<String> {
        let DatabaseConfig::Sqlite(s) = db else {
            unreachable!()
        };
        let conn = rusqlite::Connection::open(&s.path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn three(dir: &Path) {
        write(
            dir,
            "0001_users.up.sql",
            "-- golive: expand\nCREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n",
        );
        write(dir, "0001_users.down.sql", "DROP TABLE users;\n");
        write(
            dir,
            "0002_posts.up.sql",
            "CREATE TABLE posts (id INTEGER PRIMARY KEY);\nINSERT INTO posts VALUES (1)",
        );
        write(dir, "0002_posts.down.sql", "DROP TABLE posts;");
        write(
            dir,
            "0003_drop_name.up.sql",
            "-- a comment first\n--golive:Contract\nCREATE TABLE archive (id INTEGER);\n",
        );
        write(dir, "0003_drop_name.down.sql", "DROP TABLE archive;\n");
    }

    #[test]
    fn scan_sorts_tags_and_hashes() {
        let d = tempfile::tempdir().unwrap();
        three(d.path());
        write(d.path(), "README.md", "not a migration");
        let m = scan(d.path()).unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (m.version, m.name.as_str(), m.tag))
                .collect::<Vec<_>>(),
            vec![
                (1, "users", Some(Tag::Expand)),
                (2, "posts", None),
                (3, "drop_name", Some(Tag::Contract))
            ]
        );
        assert!(m.iter().all(|m| m.down.is_some() && m.checksum.len() == 64));
        assert_eq!(
            m[1].checksum,
            sha256_hex(
                b"CREATE TABLE posts (id INTEGER PRIMARY KEY);\nINSERT INTO posts VALUES (1)"
            )
        );
    }

    #[test]
    fn scan_refuses_gaps_duplicates_orphans_and_bad_names() {
        let err = |files: &[&str]| {
            let d = tempfile::tempdir().unwrap();
            for f in files {
                write(d.path(), f, "SELECT 1;");
            }
            scan(d.path()).unwrap_err().to_string()
        };
        let e = err(&["0001_a.up.sql", "0002_b.up.sql", "0004_d.up.sql"]);
        assert!(
            e.contains("3 is missing") && e.contains("0004_d.up.sql"),
            "{e}"
        );
        let e = err(&["0001_a.up.sql", "0001_b.up.sql"]);
        assert!(e.contains("duplicate migration version 1"), "{e}");
        let e = err(&["0001_a.up.sql", "0002_b.down.sql"]);
        assert!(
            e.contains("0002_b.down.sql") && e.contains("no up migration"),
            "{e}"
        );
        let e = err(&["0001_a.up.sql", "2_b.sql"]);
        assert!(
            e.contains("2_b.sql") && e.contains("NNNN_name.up.sql"),
            "{e}"
        );
        let e = err(&["0001_a b.up.sql"]);
        assert!(e.contains("malformed"), "{e}");
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "0001_a.up.sql", "-- golive: sideways\nSELECT 1;");
        let e = scan(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("unknown migration tag") && e.contains("0001_a.up.sql"),
            "{e}"
        );
    }

    #[test]
    fn sqlite_up_status_down() {
        let d = tempfile::tempdir().unwrap();
        let mig = d.path().join("m");
        std::fs::create_dir(&mig).unwrap();
        three(&mig);
        let db = sqlite(d.path());
        let lines = std::cell::RefCell::new(Vec::new());
        let log = |l: String| lines.borrow_mut().push(l);
        let applied = up(&db, &mig, Some("dep-1"), &log).unwrap();
        assert_eq!(
            applied.iter().map(|a| a.version).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(applied[0].deployment.as_deref(), Some("dep-1"));
        assert!(
            lines.borrow()[0].contains("0001_users.up.sql"),
            "{:?}",
            lines.borrow()
        );
        let st = status(&db, &mig).unwrap();
        assert_eq!(st.applied, applied);
        assert!(st.pending.is_empty());
        assert!(up(&db, &mig, None, &quiet).unwrap().is_empty());

        write(&mig, "0004_more.up.sql", "CREATE TABLE more (x);");
        let st = status(&db, &mig).unwrap();
        assert_eq!(
            st.pending.iter().map(|m| m.version).collect::<Vec<_>>(),
            [4]
        );
        // Down past a migration without a down file is refused before any change.
        up(&db, &mig, None, &quiet).unwrap();
        let e = down(&db, &mig, 1, &quiet).unwrap_err().to_string();
        assert!(
            e.contains("0004_more.down.sql") && e.contains("nothing was changed"),
            "{e}"
        );
        assert_eq!(status(&db, &mig).unwrap().applied.len(), 4);
        write(&mig, "0004_more.down.sql", "DROP TABLE more;");
        assert_eq!(down(&db, &mig, 1, &quiet).unwrap(), [4, 3, 2]);
        assert_eq!(tables(&db), ["golive_migrations", "users"]);
        let st = status(&db, &mig).unwrap();
        assert_eq!(st.applied.len(), 1);
        assert_eq!(st.pending.len(), 3);
    }

    #[test]
    fn sqlite_tampered_or_missing_applied_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mig = d.path().join("m");
        std::fs::create_dir(&mig).unwrap();
        three(&mig);
        let db = sqlite(d.path());
        up(&db, &mig, None, &quiet).unwrap();
        write(
            &mig,
            "0002_posts.up.sql",
            "CREATE TABLE posts (id INTEGER, extra TEXT);",
        );
        write(&mig, "0004_next.up.sql", "CREATE TABLE next (x);");
        for e in [
            status(&db, &mig).unwrap_err().to_string(),
            up(&db, &mig, None, &quiet).unwrap_err().to_string(),
            down(&db, &mig, 0, &quiet).unwrap_err().to_string(),
        ] {
            assert!(
                e.contains("0002_posts.up.sql") && e.contains("changed"),
                "{e}"
            );
        }
        assert!(!tables(&db).contains(&"next".to_string()));
        std::fs::remove_file(mig.join("0004_next.up.sql")).unwrap();
        std::fs::remove_file(mig.join("0003_drop_name.up.sql")).unwrap();
        std::fs::remove_file(mig.join("0003_drop_name.down.sql")).unwrap();
        std::fs::remove_file(mig.join("0002_posts.up.sql")).unwrap();
        std::fs::remove_file(mig.join("0002_posts.down.sql")).unwrap();
        let e = status(&db, &mig).unwrap_err().to_string();
        assert!(e.contains("applied migration 2 (posts) has no file"), "{e}");
    }

    #[test]
    fn sqlite_failing_migration_changes_nothing_and_stops() {
        let d = tempfile::tempdir().unwrap();
        let mig = d.path().join("m");
        std::fs::create_dir(&mig).unwrap();
        write(&mig, "0001_a.up.sql", "CREATE TABLE a (x);");
        write(
            &mig,
            "0002_bad.up.sql",
            "CREATE TABLE b (x);\nINSERT INTO a VALUES (1);\nINSERT INTO nope VALUES (1);",
        );
        write(&mig, "0003_c.up.sql", "CREATE TABLE c (x);");
        let db = sqlite(d.path());
        let e = up(&db, &mig, None, &quiet).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, MigrateError::Failed { .. }), "{text}");
        assert!(
            text.contains("0002_bad.up.sql") && text.contains("nope"),
            "{text}"
        );
        assert_eq!(tables(&db), ["a", "golive_migrations"]);
        let st = status(&db, &mig).unwrap();
        assert_eq!(
            st.applied.iter().map(|a| a.version).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(st.pending.len(), 2);
        let DatabaseConfig::Sqlite(s) = &db else {
            unreachable!()
        };
        let rows: i64 = rusqlite::Connection::open(&s.path)
            .unwrap()
            .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn sqlite_concurrent_migrators_apply_once_or_fail_clearly() {
        let d = tempfile::tempdir().unwrap();
        let mig = d.path().join("m");
        std::fs::create_dir(&mig).unwrap();
        // Slow enough that the two runs overlap.
        write(
            &mig,
            "0001_slow.up.sql",
            "CREATE TABLE n (x);\nWITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 \
             FROM c WHERE i < 300000) INSERT INTO n SELECT i FROM c;",
        );
        write(&mig, "0002_b.up.sql", "CREATE TABLE b (x);");
        let db = Arc::new(sqlite(d.path()));
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (db, mig, barrier) = (Arc::clone(&db), mig.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    up(&db, &mig, None, &quiet)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let applied: usize = results.iter().map(|r| r.as_ref().map_or(0, Vec::len)).sum();
        assert_eq!(applied, 2, "{results:?}");
        let st = status(&db, &mig).unwrap();
        assert_eq!(st.applied.len(), 2);

        // A holder that does not let go: the waiter fails clearly.
        write(&mig, "0003_c.up.sql", "CREATE TABLE c (x);");
        let DatabaseConfig::Sqlite(s) = &*db else {
            unreachable!()
        };
        let holder = rusqlite::Connection::open(&s.path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let e = up_with(&db, &mig, None, Duration::from_millis(300), &quiet).unwrap_err();
        assert!(matches!(e, MigrateError::Locked { .. }), "{e}");
        assert!(
            e.to_string().contains("another migration holds the lock"),
            "{e}"
        );
        holder.execute_batch("ROLLBACK").unwrap();
        assert_eq!(up(&db, &mig, None, &quiet).unwrap().len(), 1);
    }

    #[test]
    fn deployment_ids_and_terminators() {
        assert!(check_deployment(Some("d-2024.01:7")).is_ok());
        assert!(check_deployment(Some("x'; DROP")).is_err());
        assert_eq!(terminated("SELECT 1"), "SELECT 1\n;\n");
        assert_eq!(terminated("SELECT 1; -- done\n"), "SELECT 1; -- done\n");
        assert_eq!(
            terminated("SELECT 1;\n-- trailing\n"),
            "SELECT 1;\n-- trailing\n"
        );
    }
}
