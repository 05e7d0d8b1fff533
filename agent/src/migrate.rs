//! SQL migrations (issue 4 part 5): a directory of `NNNN_name.up.sql` /
//! `NNNN_name.down.sql` files applied in order to a SQLite, PostgreSQL or
//! MariaDB database, recorded in a tracking table `golive_migrations` (the
//! ledger: version, name, checksum, applied_at in Unix milliseconds,
//! duration_ms, deployment, and since issue 12 the up text, the down text
//! when there was one, the tag and the release that applied it) in the same
//! transaction as the migration itself. A ledger without the newer columns
//! is upgraded in place by the next `up` (`ALTER TABLE ... ADD COLUMN`);
//! until then it reads as rows without stored texts.
//!
//! - [`scan`] reads the directory and refuses gaps in the numbering,
//!   duplicate versions, down files without an up file and malformed names.
//!   A header comment `-- golive: expand` / `-- golive: contract` in the
//!   first lines of an up file tags the migration ([`Tag`], SPEC §6).
//! - [`status_of`] lists applied and pending migrations, and refuses when an
//!   applied migration's file changed (checksum) or is gone. One case of
//!   "gone" is normal: after a code-only rollback the live release does not
//!   ship the migrations a later release applied. Those are *ahead* of the
//!   release ([`Status::ahead`]) when the ledger names another release as
//!   the one that applied them and they are the newest versions.
//! - [`up`] applies the pending ones in order; [`down`] reverts to a version
//!   with the down files, or, for a migration ahead of the release, with the
//!   down text the ledger stored; it refuses before any change if one has
//!   neither. [`revert_plan`] says what a down would run (and [`drops`] what
//!   it drops) without changing anything.
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
//! contain transaction control statements (`BEGIN`, `COMMIT`, ...). Texts
//! reach the client tools' scripts hex-encoded, and come back hex-encoded,
//! so no quoting or line break in them can break a script or a result row.
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
    /// The tag the up file had (issue 12; `None` in older ledgers too).
    pub tag: Option<Tag>,
    /// The release whose directory it was applied from.
    pub release: Option<String>,
    /// The down file's text when it was applied, if it had one.
    pub down_sql: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Every applied migration, the ones ahead of the release included.
    pub applied: Vec<Applied>,
    /// Applied versions the release has no file for, applied by another
    /// (later) release: the schema is ahead of the code.
    pub ahead: Vec<u32>,
    pub pending: Vec<Migration>,
}

/// Where a run's migrations come from and on whose behalf it runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The release whose migrations directory this is (recorded by `up`).
    pub release: Option<&'a str>,
    pub deployment: Option<&'a str>,
    /// Apply only the pending migrations before the first `contract` one:
    /// it and every later one wait for the release's commit (issue 13).
    pub stop_before_contract: bool,
}

/// `todo` cut before its first `contract` migration when `origin` asks
/// (issue 13: what cannot be undone by the old release waits until the new
/// one is committed); says what waits.
fn until_contract(
    mut todo: Vec<Migration>,
    origin: Origin,
    log: &dyn Fn(String),
) -> Vec<Migration> {
    if !origin.stop_before_contract {
        return todo;
    }
    if let Some(at) = todo.iter().position(|m| m.tag == Some(Tag::Contract)) {
        let waiting: Vec<String> = todo[at..]
            .iter()
            .map(|m| format!("{:04}_{}", m.version, m.name))
            .collect();
        log(format!(
            "{} wait(s) for the release's commit (contract: the previous release may not run \
             after it): {}",
            waiting.len(),
            waiting.join(", ")
        ));
        todo.truncate(at);
    }
    todo
}

/// One migration a down reverts, with the SQL it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revert {
    pub version: u32,
    pub name: String,
    /// The down file, or a description of the stored text, for messages.
    pub source: PathBuf,
    pub sql: String,
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
    /// A file or the ledger could not be read: a failure, not the
    /// operator's migrations being wrong.
    #[error("{0}")]
    Unreadable(String),
    /// The migrations changed under this run: a failure to run again.
    #[error("{0}")]
    Raced(String),
}

impl MigrateError {
    /// The job error class (issue 14): migrations that are wrong (changed,
    /// missing, misnumbered, no down) are refused before the database is
    /// touched; everything else is a failure.
    pub fn code(&self) -> golive_shared::protocol::ErrorCode {
        use golive_shared::protocol::ErrorCode;
        match self {
            MigrateError::Invalid(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

impl From<MigrateError> for crate::jobs::JobError {
    fn from(e: MigrateError) -> crate::jobs::JobError {
        crate::jobs::JobError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

const ROLLED_BACK: &str = "; its changes were rolled back";
const MARIADB_NOTE: &str = "; MariaDB commits DDL at once, so statements before the error may \
                            have taken effect (data changes were rolled back)";

use crate::jobs::JobError;

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
        MigrateError::Unreadable(format!(
            "cannot read migrations directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut ups: BTreeMap<u32, (String, PathBuf)> = BTreeMap::new();
    let mut downs: BTreeMap<u32, (String, PathBuf)> = BTreeMap::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| MigrateError::Unreadable(format!("cannot read {}: {e}", dir.display())))?;
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
        let bytes = std::fs::read(&path).map_err(|e| {
            MigrateError::Unreadable(format!("cannot read {}: {e}", path.display()))
        })?;
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

/// Checks the applied rows against the files of `release`'s directory;
/// returns the pending migrations and the applied versions ahead of the
/// release (see the module docs).
fn classify(
    applied: &[Applied],
    migrations: &[Migration],
    release: Option<&str>,
) -> Result<(Vec<Migration>, Vec<u32>), MigrateError> {
    let by_version: BTreeMap<u32, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    let newest_file = migrations.last().map_or(0, |m| m.version);
    let mut ahead = Vec::new();
    for a in applied {
        let Some(m) = by_version.get(&a.version) else {
            let what = format!("applied migration {} ({})", a.version, a.name);
            return match &a.release {
                _ if a.version <= newest_file => Err(invalid(format!(
                    "{what} has no file in the migrations directory; \
                     restore the file (a release must keep its applied migrations)"
                ))),
                Some(by) if Some(by.as_str()) != release => {
                    ahead.push(a.version);
                    continue;
                }
                Some(by) => Err(invalid(format!(
                    "{what} has no file in the migrations directory, yet the ledger says this \
                     release ({by}) applied it; restore the file (a release must keep its applied \
                     migrations)"
                ))),
                None => Err(invalid(format!(
                    "{what} has no file in the migrations directory, and the ledger does not say \
                     which release applied it (this golive predates the ledger's release column); activate \
                     the release that ships it, or restore the file"
                ))),
            };
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
    Ok((pending, ahead))
}

/// [`classify`] without the versions ahead.
fn pending(
    applied: &[Applied],
    migrations: &[Migration],
    release: Option<&str>,
) -> Result<Vec<Migration>, MigrateError> {
    classify(applied, migrations, release).map(|(p, _)| p)
}

/// Reads an up or down file, checking the up file still has its checksum.
fn read_sql(path: &Path, checksum: Option<&str>) -> Result<String, MigrateError> {
    let bytes = std::fs::read(path)
        .map_err(|e| MigrateError::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    if let Some(sum) = checksum
        && sha256_hex(&bytes) != sum
    {
        return Err(MigrateError::Raced(format!(
            "migration {} changed while migrating; run again",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| invalid(format!("{} is not valid UTF-8", path.display())))
}

/// Deployment and release ids reach SQL as literals: a plain alphabet only.
fn check_ident(what: &str, value: Option<&str>) -> Result<(), MigrateError> {
    match value {
        Some(d)
            if d.is_empty()
                || d.len() > 128
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)) =>
        {
            Err(invalid(format!(
                "{what} {d:?} is not supported: use 1-128 letters, digits, '.', '-', '_' or ':'"
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
    status_of(db, dir, None)
}

/// [`status`] for the migrations directory of `release` (which may be
/// missing: a release that ships no migrations has none). Applied
/// migrations that another release applied and this one has no file for
/// are [`Status::ahead`].
pub fn status_of(
    db: &DatabaseConfig,
    dir: &Path,
    release: Option<&str>,
) -> Result<Status, MigrateError> {
    let migrations = scan_if_present(dir)?;
    let applied = applied(db)?;
    let (pending, ahead) = classify(&applied, &migrations, release)?;
    Ok(Status {
        applied,
        ahead,
        pending,
    })
}

/// The ledger's rows (read-only).
fn applied(db: &DatabaseConfig) -> Result<Vec<Applied>, MigrateError> {
    match db {
        DatabaseConfig::Sqlite(s) => sqlite_applied_readonly(s),
        DatabaseConfig::Postgres(p) => Ok(Pg::new(p)?.ledger()?.0),
        DatabaseConfig::Mariadb(m) => Ok(My::new(m)?.ledger()?.0),
    }
}

/// The ledger's rows of `db`, read-only, oldest first: what the rollback
/// point and the host rollback's database choice read (issue 13).
pub fn ledger(db: &DatabaseConfig) -> Result<Vec<Applied>, MigrateError> {
    applied(db)
}

/// What `deployment` applied, oldest first, and the schema version before
/// it: the newest version below the deployment's first one, or, when it
/// applied nothing, the newest version (0 for an empty ledger).
pub fn applied_by<'a>(rows: &'a [Applied], deployment: &str) -> (u32, Vec<&'a Applied>) {
    let mine: Vec<&Applied> = rows
        .iter()
        .filter(|a| a.deployment.as_deref() == Some(deployment))
        .collect();
    let first = mine.iter().map(|a| a.version).min().unwrap_or(u32::MAX);
    let before = rows
        .iter()
        .map(|a| a.version)
        .filter(|v| *v < first)
        .max()
        .unwrap_or(0);
    (before, mine)
}

/// `expand`/`contract` as the ledger and the protocol write it.
pub fn tag_text(t: Option<Tag>) -> Option<String> {
    tag_name(t)
}

/// [`scan`], or no migrations when `dir` does not exist.
fn scan_if_present(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    if dir.exists() {
        scan(dir)
    } else {
        Ok(Vec::new())
    }
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
    let origin = Origin {
        release: None,
        deployment,
        ..Origin::default()
    };
    up_from(db, dir, origin, lock_wait, log)
}

/// [`up`] recording the release (and deployment) it runs for.
pub fn up_from(
    db: &DatabaseConfig,
    dir: &Path,
    origin: Origin,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<Applied>, MigrateError> {
    check_ident("deployment id", origin.deployment)?;
    check_ident("release id", origin.release)?;
    let migrations = scan(dir)?;
    match db {
        DatabaseConfig::Sqlite(s) => sqlite_up(s, &migrations, origin, lock_wait, log),
        DatabaseConfig::Postgres(p) => {
            let pg = Pg::new(p)?;
            remote_up(&pg, &migrations, origin, lock_wait, log)
        }
        DatabaseConfig::Mariadb(m) => {
            let my = My::new(m)?;
            remote_up(&my, &migrations, origin, lock_wait, log)
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
    down_from(db, dir, None, to_version, lock_wait, log)
}

/// [`down`] against the migrations directory of `release` (which may be
/// missing): migrations ahead of it are reverted with their stored down text.
pub fn down_from(
    db: &DatabaseConfig,
    dir: &Path,
    release: Option<&str>,
    to_version: u32,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<u32>, MigrateError> {
    let migrations = scan_if_present(dir)?;
    match db {
        DatabaseConfig::Sqlite(s) => {
            sqlite_down(s, &migrations, release, to_version, lock_wait, log)
        }
        DatabaseConfig::Postgres(p) => {
            let pg = Pg::new(p)?;
            remote_down(&pg, &migrations, release, to_version, lock_wait, log)
        }
        DatabaseConfig::Mariadb(m) => {
            let my = My::new(m)?;
            remote_down(&my, &migrations, release, to_version, lock_wait, log)
        }
    }
}

/// What [`down_from`] would revert now, newest first, with the SQL it
/// would run; changes nothing. Refuses as the down itself would.
pub fn revert_plan(
    db: &DatabaseConfig,
    dir: &Path,
    release: Option<&str>,
    to_version: u32,
) -> Result<Vec<Revert>, MigrateError> {
    let migrations = scan_if_present(dir)?;
    plan_down(&applied(db)?, &migrations, release, to_version)
}

/// The migrations to revert (newest first) with their down SQL: the
/// release's down file, or, for a migration ahead of the release (no file),
/// the down text the ledger stored when it was applied. Refuses, before any
/// change, if one has neither.
fn plan_down(
    applied: &[Applied],
    migrations: &[Migration],
    release: Option<&str>,
    to_version: u32,
) -> Result<Vec<Revert>, MigrateError> {
    classify(applied, migrations, release)?;
    let by_version: BTreeMap<u32, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    let mut out = Vec::new();
    for a in applied.iter().rev().filter(|a| a.version > to_version) {
        let stored = || {
            a.down_sql.as_ref().map(|sql| Revert {
                version: a.version,
                name: a.name.clone(),
                source: PathBuf::from(format!(
                    "{:04}_{}.down.sql as stored in {TABLE}{}",
                    a.version,
                    a.name,
                    a.release
                        .as_deref()
                        .map(|r| format!(" by release {r}"))
                        .unwrap_or_default()
                )),
                sql: sql.clone(),
            })
        };
        match by_version.get(&a.version) {
            // A migration the release ships goes down with the release's
            // down file only: a release without one says it has no down.
            Some(m) => match m.down.as_deref() {
                // Every down file exists: read them all before changing anything.
                Some(down) => out.push(Revert {
                    version: m.version,
                    name: m.name.clone(),
                    source: down.to_path_buf(),
                    sql: read_sql(down, None)?,
                }),
                None => {
                    return Err(invalid(format!(
                        "cannot go down to version {to_version}: migration {} has no down file \
                         (expected {}); nothing was changed",
                        m.up.display(),
                        m.up.with_file_name(format!("{:04}_{}.down.sql", m.version, m.name))
                            .display()
                    )));
                }
            },
            None => match stored() {
                Some(r) => out.push(r),
                None => {
                    return Err(invalid(format!(
                        "cannot go down to version {to_version}: migration {} ({}) has no down file \
                         here (it is ahead of {}) and the ledger holds no down text for it (applied \
                         by {}, which {}); nothing was changed. Activate that release and go down \
                         there, or restore the backup taken before it was applied",
                        a.version,
                        a.name,
                        release.map_or("this release".to_string(), |r| format!("release {r}")),
                        a.release
                            .as_deref()
                            .map_or("an older golive".to_string(), |r| format!("release {r}")),
                        if a.release.is_some() {
                            "shipped no down file for it"
                        } else {
                            "did not store down texts"
                        }
                    )));
                }
            },
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- SQLite

const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS golive_migrations (\
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
    applied_at INTEGER NOT NULL, duration_ms INTEGER NOT NULL, deployment TEXT, \
    up_sql TEXT, down_sql TEXT, tag TEXT, release_id TEXT)";

/// The ledger columns added in issue 12, with their SQLite types; a ledger
/// without them is upgraded in place by the next `up`.
const LEDGER_COLUMNS: [(&str, &str); 4] = [
    ("up_sql", "TEXT"),
    ("down_sql", "TEXT"),
    ("tag", "TEXT"),
    ("release_id", "TEXT"),
];

fn sq_err(path: &Path, e: rusqlite::Error) -> MigrateError {
    MigrateError::Sqlite {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn parse_tag(text: &str) -> Option<Tag> {
    match text {
        "expand" => Some(Tag::Expand),
        "contract" => Some(Tag::Contract),
        _ => None,
    }
}

/// The ledger's columns that exist (empty when there is no ledger).
fn sqlite_columns(conn: &rusqlite::Connection, path: &Path) -> Result<Vec<String>, MigrateError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('golive_migrations')")
        .map_err(|e| sq_err(path, e))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| sq_err(path, e))?;
    names
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sq_err(path, e))
}

/// Adds the issue-12 columns to an older ledger (inside the caller's
/// write transaction, so a crash leaves the old or the new table).
fn sqlite_upgrade(conn: &rusqlite::Connection, path: &Path) -> Result<(), MigrateError> {
    let have = sqlite_columns(conn, path)?;
    for (column, kind) in LEDGER_COLUMNS {
        if !have.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE golive_migrations ADD COLUMN {column} {kind}"
            ))
            .map_err(|e| sq_err(path, e))?;
        }
    }
    Ok(())
}

fn sqlite_rows(conn: &rusqlite::Connection, path: &Path) -> Result<Vec<Applied>, MigrateError> {
    let have = sqlite_columns(conn, path)?;
    if have.is_empty() {
        return Ok(Vec::new());
    }
    let current = LEDGER_COLUMNS
        .iter()
        .all(|(c, _)| have.iter().any(|h| h == c));
    let sql = if current {
        "SELECT version, name, checksum, applied_at, duration_ms, deployment, tag, release_id, \
         down_sql FROM golive_migrations ORDER BY version"
    } else {
        "SELECT version, name, checksum, applied_at, duration_ms, deployment, NULL, NULL, NULL \
         FROM golive_migrations ORDER BY version"
    };
    let mut stmt = conn.prepare(sql).map_err(|e| sq_err(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Applied {
                version: r.get(0)?,
                name: r.get(1)?,
                checksum: r.get(2)?,
                applied_at: r.get(3)?,
                duration_ms: r.get::<_, i64>(4)?.max(0) as u64,
                deployment: r.get(5)?,
                tag: r
                    .get::<_, Option<String>>(6)?
                    .as_deref()
                    .and_then(parse_tag),
                release: r.get(7)?,
                down_sql: r.get(8)?,
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
    origin: Origin,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<Applied>, MigrateError> {
    let conn = sqlite_lock(db, lock_wait)?;
    // Dropping `conn` with the transaction open rolls back (and unlocks).
    conn.execute_batch(SQLITE_TABLE)
        .map_err(|e| sq_err(&db.path, e))?;
    sqlite_upgrade(&conn, &db.path)?;
    let applied = sqlite_rows(&conn, &db.path)?;
    let todo = until_contract(pending(&applied, migrations, origin.release)?, origin, log);
    let mut done = Vec::new();
    let mut failure = None;
    for m in &todo {
        let sql = read_sql(&m.up, Some(&m.checksum))?;
        let down_sql = m.down.as_deref().map(|d| read_sql(d, None)).transpose()?;
        let start = Instant::now();
        let applied_at = golive_shared::protocol::now_millis();
        let mut duration_ms = 0;
        let result = savepoint(&conn, || {
            conn.execute_batch(&sql)?;
            duration_ms = start.elapsed().as_millis() as u64;
            conn.execute(
                "INSERT INTO golive_migrations \
                 (version, name, checksum, applied_at, duration_ms, deployment, up_sql, down_sql, \
                 tag, release_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    m.version,
                    m.name,
                    m.checksum,
                    applied_at,
                    duration_ms as i64,
                    origin.deployment,
                    sql,
                    down_sql,
                    tag_name(m.tag),
                    origin.release,
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
                    deployment: origin.deployment.map(str::to_string),
                    tag: m.tag,
                    release: origin.release.map(str::to_string),
                    down_sql,
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
    release: Option<&str>,
    to_version: u32,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<u32>, MigrateError> {
    let conn = sqlite_lock(db, lock_wait)?;
    let applied = sqlite_rows(&conn, &db.path)?;
    let plan = plan_down(&applied, migrations, release, to_version)?;
    let mut done = Vec::new();
    let mut failure = None;
    for r in &plan {
        let result = savepoint(&conn, || {
            conn.execute_batch(&r.sql)?;
            conn.execute(
                "DELETE FROM golive_migrations WHERE version = ?1",
                [r.version],
            )?;
            Ok(())
        });
        match result {
            Ok(()) => {
                log(format!("reverted {}", revert_label(r)));
                done.push(r.version);
            }
            Err(e) => {
                failure = Some(MigrateError::Failed {
                    file: r.source.clone(),
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

/// `0002_add_note (with 0002_add_note.down.sql)` for logs.
fn revert_label(r: &Revert) -> String {
    format!(
        "{:04}_{} (with {})",
        r.version,
        r.name,
        r.source
            .file_name()
            .filter(|_| r.source.exists())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| r.source.display().to_string())
    )
}

// ---------------------------------------------------------------- client-tool engines

/// What differs between PostgreSQL and MariaDB for [`remote_up`]/[`remote_down`].
trait Remote {
    fn label(&self) -> String;
    /// The ledger's rows, and whether it has the issue-12 columns.
    fn ledger(&self) -> Result<(Vec<Applied>, bool), MigrateError>;
    fn applied(&self) -> Result<Vec<Applied>, MigrateError> {
        self.ledger().map(|(rows, _)| rows)
    }
    /// Runs a script in one session; the error is redacted.
    fn run_script(&self, script: &str) -> Result<(), BackupError>;
    /// Takes the lock (aborting with LOCKED_MARK after `wait`) and creates
    /// the table, or upgrades an older one (`upgrade`).
    fn prologue(&self, wait: Duration, upgrade: bool) -> String;
    /// Aborts with RACED_MARK unless exactly `versions` have `applied` state.
    fn guard(&self, versions: &[u32], applied: bool) -> String;
    fn begin(&self) -> &'static str;
    fn record(&self, m: &Migration, origin: Origin, texts: &Texts) -> String;
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
    origin: Origin,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<Applied>, MigrateError> {
    for _attempt in 0..5 {
        let (applied, current) = remote.ledger()?;
        let todo = until_contract(pending(&applied, migrations, origin.release)?, origin, log);
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let versions: Vec<u32> = todo.iter().map(|m| m.version).collect();
        let mut script = remote.prologue(lock_wait, !current);
        script.push_str(&remote.guard(&versions, false));
        for m in &todo {
            let sql = read_sql(&m.up, Some(&m.checksum))?;
            let texts = Texts {
                up: hex::encode(sql.as_bytes()),
                down: m
                    .down
                    .as_deref()
                    .map(|d| read_sql(d, None))
                    .transpose()?
                    .map(|d| hex::encode(d.as_bytes())),
            };
            script.push_str(remote.begin());
            script.push_str(&terminated(&sql));
            script.push_str(&remote.record(m, origin, &texts));
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
    Err(MigrateError::Raced(format!(
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
    release: Option<&str>,
    to_version: u32,
    lock_wait: Duration,
    log: &dyn Fn(String),
) -> Result<Vec<u32>, MigrateError> {
    for _attempt in 0..5 {
        let applied = remote.applied()?;
        let plan = plan_down(&applied, migrations, release, to_version)?;
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let versions: Vec<u32> = plan.iter().map(|r| r.version).collect();
        // A down never needs the newer columns: no upgrade here.
        let mut script = remote.prologue(lock_wait, false);
        script.push_str(&remote.guard(&versions, true));
        for r in &plan {
            script.push_str(remote.begin());
            script.push_str(&terminated(&r.sql));
            script.push_str(&format!(
                "DELETE FROM golive_migrations WHERE version = {};\nCOMMIT;\n",
                r.version
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
        for r in plan.iter().filter(|r| reverted.contains(&r.version)) {
            log(format!("reverted {}", revert_label(r)));
        }
        return match outcome {
            Outcome::Done | Outcome::Raced => Ok(reverted),
            Outcome::Locked => Err(MigrateError::Locked {
                db: remote.label(),
                waited: lock_wait,
            }),
            Outcome::Failed(e) => match plan.iter().find(|r| still.contains(&r.version)) {
                Some(r) if !reverted.is_empty() || !is_connect_error(&e) => {
                    Err(MigrateError::Failed {
                        file: r.source.clone(),
                        note: remote.failed_note(),
                        detail: e.to_string(),
                    })
                }
                _ => Err(e.into()),
            },
        };
    }
    Err(MigrateError::Raced(format!(
        "{}: other migrators kept changing the migrations; run again",
        remote.label()
    )))
}

/// A migration's texts as hex, for a ledger row.
struct Texts {
    up: String,
    down: Option<String>,
}

/// Ledger rows as the clients print them: tab-separated, texts hex-encoded
/// (`-` for a NULL down text), empty strings for NULLs.
fn parse_rows(out: &str, what: &str) -> Result<Vec<Applied>, MigrateError> {
    let mut rows = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let bad =
            || MigrateError::Unreadable(format!("{what}: unexpected row {line:?} in {TABLE}"));
        if f.len() != 9 {
            return Err(bad());
        }
        let opt = |s: &str| Some(s.trim().to_string()).filter(|d| !d.is_empty());
        let down_sql = match f[8].trim() {
            "-" => None,
            hex_text => Some(
                hex::decode(hex_text)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(bad)?,
            ),
        };
        rows.push(Applied {
            version: f[0].trim().parse().map_err(|_| bad())?,
            name: f[1].to_string(),
            checksum: f[2].to_string(),
            applied_at: f[3].trim().parse().map_err(|_| bad())?,
            duration_ms: f[4].trim().parse::<i64>().map_err(|_| bad())?.max(0) as u64,
            deployment: opt(f[5]),
            tag: parse_tag(f[6].trim()),
            release: opt(f[7]),
            down_sql,
        });
    }
    Ok(rows)
}

/// The plain values of a ledger row: `version, 'name', 'checksum'`, then
/// deployment, tag and release as literals or NULL. Names, checksums and
/// ids are checked to a plain alphabet before they get here.
fn record_values(m: &Migration, origin: Origin) -> (String, String) {
    let lit = |v: Option<&str>| v.map_or("NULL".to_string(), |v| format!("'{v}'"));
    (
        format!("{}, '{}', '{}'", m.version, m.name, m.checksum),
        format!(
            "{}, {}, {}",
            lit(origin.deployment),
            lit(tag_name(m.tag).as_deref()),
            lit(origin.release)
        ),
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

    fn ledger(&self) -> Result<(Vec<Applied>, bool), MigrateError> {
        let exists = self.query(
            "SELECT to_regclass('golive_migrations') IS NOT NULL, (SELECT count(*) FROM \
             pg_attribute WHERE attrelid = to_regclass('golive_migrations') AND NOT attisdropped \
             AND attname IN ('up_sql', 'down_sql', 'tag', 'release_id'))",
            "migrations table",
        )?;
        let (table, columns) = exists.trim().split_once('\t').unwrap_or(("f", "0"));
        if table != "t" {
            return Ok((Vec::new(), false));
        }
        let current = columns.trim() == "4";
        let newer = if current {
            "coalesce(tag, ''), coalesce(release_id, ''), \
             coalesce(encode(convert_to(down_sql, 'UTF8'), 'hex'), '-')"
        } else {
            "'', '', '-'"
        };
        let out = self.query(
            &format!(
                "SELECT version, name, checksum, applied_at, duration_ms, coalesce(deployment, ''), \
                 {newer} FROM golive_migrations ORDER BY version"
            ),
            "applied migrations",
        )?;
        Ok((parse_rows(&out, "psql")?, current))
    }

    fn run_script(&self, script: &str) -> Result<(), BackupError> {
        feed_script(
            self.psql()?,
            script,
            self.password.as_deref(),
            self.db.tool_timeout(),
        )
    }

    fn prologue(&self, wait: Duration, upgrade: bool) -> String {
        let tries = (wait.as_millis() / 100).max(1);
        let mut out = format!(
            "DO $golive$ BEGIN FOR i IN 1..{tries} LOOP \
             IF pg_try_advisory_lock({PG_LOCK_KEY}) THEN RETURN; END IF; \
             PERFORM pg_sleep(0.1); END LOOP; \
             RAISE EXCEPTION '{LOCKED_MARK}'; END $golive$;\n\
             CREATE TABLE IF NOT EXISTS golive_migrations (version integer PRIMARY KEY, \
             name text NOT NULL, checksum text NOT NULL, applied_at bigint NOT NULL, \
             duration_ms bigint NOT NULL, deployment text, up_sql text, down_sql text, tag text, \
             release_id text);\n"
        );
        if upgrade {
            out.push_str(
                "ALTER TABLE golive_migrations ADD COLUMN IF NOT EXISTS up_sql text, \
                 ADD COLUMN IF NOT EXISTS down_sql text, ADD COLUMN IF NOT EXISTS tag text, \
                 ADD COLUMN IF NOT EXISTS release_id text;\n",
            );
        }
        out
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

    fn record(&self, m: &Migration, origin: Origin, texts: &Texts) -> String {
        let (head, tail) = record_values(m, origin);
        let text = |hex: &str| format!("convert_from(decode('{hex}', 'hex'), 'UTF8')");
        format!(
            "INSERT INTO golive_migrations (version, name, checksum, applied_at, duration_ms, \
             deployment, tag, release_id, up_sql, down_sql) VALUES ({head}, \
             (extract(epoch from now()) * 1000)::bigint, \
             (extract(epoch from clock_timestamp() - now()) * 1000)::bigint, {tail}, {}, {});\n\
             COMMIT;\n",
            text(&texts.up),
            texts.down.as_deref().map_or("NULL".to_string(), text)
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

    fn ledger(&self) -> Result<(Vec<Applied>, bool), MigrateError> {
        let mut cmd = self.client()?;
        cmd.args([
            "-e",
            "SELECT (SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'golive_migrations'), \
             (SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() \
             AND table_name = 'golive_migrations' \
             AND column_name IN ('up_sql', 'down_sql', 'tag', 'release_id'))",
        ]);
        let exists = tools::run(cmd, "migrations table", self.db.tool_timeout())
            .map_err(|e| tools::redact(e, self.password.as_deref()))?;
        let (table, columns) = exists.trim().split_once('\t').unwrap_or(("0", "0"));
        if table.trim() == "0" {
            return Ok((Vec::new(), false));
        }
        let current = columns.trim() == "4";
        let newer = if current {
            "IFNULL(tag, ''), IFNULL(release_id, ''), IF(down_sql IS NULL, '-', HEX(down_sql))"
        } else {
            "'', '', '-'"
        };
        let mut cmd = self.client()?;
        cmd.args([
            "-e",
            &format!(
                "SELECT version, name, checksum, applied_at, duration_ms, IFNULL(deployment, ''), \
                 {newer} FROM golive_migrations ORDER BY version"
            ),
        ]);
        let out = tools::run(cmd, "applied migrations", self.db.tool_timeout())
            .map_err(|e| tools::redact(e, self.password.as_deref()))?;
        Ok((parse_rows(&out, "mariadb")?, current))
    }

    fn run_script(&self, script: &str) -> Result<(), BackupError> {
        feed_script(
            self.client()?,
            script,
            self.password.as_deref(),
            self.db.tool_timeout(),
        )
    }

    fn prologue(&self, wait: Duration, upgrade: bool) -> String {
        let mut out = format!(
            "DELIMITER //\n\
             BEGIN NOT ATOMIC IF COALESCE(GET_LOCK('golive_migrations', {}), 0) <> 1 THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{LOCKED_MARK}'; END IF; END//\n\
             DELIMITER ;\n\
             CREATE TABLE IF NOT EXISTS golive_migrations (version INT UNSIGNED PRIMARY KEY, \
             name VARCHAR(255) NOT NULL, checksum CHAR(64) NOT NULL, applied_at BIGINT NOT NULL, \
             duration_ms BIGINT NOT NULL, deployment VARCHAR(255) NULL, \
             up_sql LONGTEXT CHARACTER SET utf8mb4 NULL, down_sql LONGTEXT CHARACTER SET utf8mb4 NULL, \
             tag VARCHAR(16) NULL, release_id VARCHAR(255) NULL);\n",
            wait.as_secs().max(1)
        );
        if upgrade {
            out.push_str(
                "ALTER TABLE golive_migrations \
                 ADD COLUMN IF NOT EXISTS up_sql LONGTEXT CHARACTER SET utf8mb4 NULL, \
                 ADD COLUMN IF NOT EXISTS down_sql LONGTEXT CHARACTER SET utf8mb4 NULL, \
                 ADD COLUMN IF NOT EXISTS tag VARCHAR(16) NULL, \
                 ADD COLUMN IF NOT EXISTS release_id VARCHAR(255) NULL;\n",
            );
        }
        out
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

    fn record(&self, m: &Migration, origin: Origin, texts: &Texts) -> String {
        let (head, tail) = record_values(m, origin);
        let text = |hex: &str| format!("CONVERT(X'{hex}' USING utf8mb4)");
        format!(
            "INSERT INTO golive_migrations (version, name, checksum, applied_at, duration_ms, \
             deployment, tag, release_id, up_sql, down_sql) VALUES ({head}, \
             CAST(UNIX_TIMESTAMP(@golive_t0) * 1000 AS SIGNED), \
             TIMESTAMPDIFF(MICROSECOND, @golive_t0, NOW(6)) DIV 1000, {tail}, {}, {});\nCOMMIT;\n",
            text(&texts.up),
            texts.down.as_deref().map_or("NULL".to_string(), text)
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

/// Refuses an app that declares no migrations (no directory, no command),
/// naming what to add; the request handler answers it with
/// `ErrorCode::NotDeclared`.
pub fn declared(app_name: &str, app: &golive_shared::config::AppConfig) -> Result<(), String> {
    if app.migrations.is_none() && app.migration_command.is_none() {
        return Err(format!(
            "app {app_name} declares no migrations; add [apps.{app_name}.migrations] (dir, database) \
             or [apps.{app_name}.migration_command] to the agent config"
        ));
    }
    Ok(())
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
    declared(app_name, app)?;
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

/// The tables and columns `sql` (a down migration of `version`) drops.
fn drops_of(version: u32, sql: &str) -> Vec<golive_shared::protocol::DroppedObject> {
    crate::sqldrops::find(sql)
        .into_iter()
        .map(|d| golive_shared::protocol::DroppedObject {
            version,
            table: d.table_name(),
            column: d.column,
            rows: None,
        })
        .collect()
}

/// What `reverts` drop, with the rows of each table counted where that is
/// cheap: a `count(*)` under a 5 s statement limit (SQLite: a read-only
/// connection). A table that cannot be counted (gone already, too slow) is
/// reported without a count.
pub fn drops(
    db: &DatabaseConfig,
    reverts: &[Revert],
) -> Vec<golive_shared::protocol::DroppedObject> {
    let mut out = Vec::new();
    let mut counted: BTreeMap<Vec<String>, Option<u64>> = BTreeMap::new();
    for r in reverts {
        for d in crate::sqldrops::find(&r.sql) {
            let rows = *counted
                .entry(d.table.clone())
                .or_insert_with(|| count_rows(db, &d.table));
            out.push(golive_shared::protocol::DroppedObject {
                version: r.version,
                table: d.table_name(),
                column: d.column,
                rows,
            });
        }
    }
    out
}

/// `"a"."b"` (or with backticks): a quoted qualified name.
fn quoted(parts: &[String], q: char) -> String {
    parts
        .iter()
        .map(|p| {
            let doubled = p.replace(q, &format!("{q}{q}"));
            format!("{q}{doubled}{q}")
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn count_rows(db: &DatabaseConfig, table: &[String]) -> Option<u64> {
    match db {
        DatabaseConfig::Sqlite(s) => {
            let conn = rusqlite::Connection::open_with_flags(
                &s.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok()?;
            let _ = conn.busy_timeout(Duration::from_secs(5));
            conn.query_row(
                &format!("SELECT count(*) FROM {}", quoted(table, '"')),
                [],
                |r| r.get::<_, i64>(0),
            )
            .ok()
            .map(|n| n.max(0) as u64)
        }
        DatabaseConfig::Postgres(p) => {
            let pg = Pg::new(p).ok()?;
            pg.query(
                &format!(
                    "SET statement_timeout = 5000; SELECT count(*) FROM {}",
                    quoted(table, '"')
                ),
                "row count",
            )
            .ok()?
            .trim()
            .parse()
            .ok()
        }
        DatabaseConfig::Mariadb(m) => {
            let my = My::new(m).ok()?;
            let mut cmd = my.client().ok()?;
            cmd.args([
                "-e",
                &format!(
                    "SET STATEMENT max_statement_time=5 FOR SELECT COUNT(*) FROM {}",
                    quoted(table, '`')
                ),
            ]);
            tools::run(cmd, "row count", m.tool_timeout())
                .ok()?
                .trim()
                .parse()
                .ok()
        }
    }
}

/// Applied and pending migrations of a release. A release without a
/// migrations directory has none pending; what the ledger holds is still
/// reported (ahead of it, when a later release applied it).
pub fn release_status(
    config: &golive_shared::config::AgentConfig,
    req: &golive_shared::protocol::MigrationStatusRequest,
) -> Result<golive_shared::protocol::MigrationStatus, String> {
    use golive_shared::protocol::{AppliedMigration, MigrationStatus, PendingMigration};
    let t = target(config, &req.app, req.release.as_deref())?;
    let (st, files) = match &t.sql {
        Some((db, dir)) => {
            let st = status_of(db, dir, Some(&t.release)).map_err(|e| e.to_string())?;
            (st, scan_if_present(dir).map_err(|e| e.to_string())?)
        }
        None => (
            Status {
                applied: Vec::new(),
                ahead: Vec::new(),
                pending: Vec::new(),
            },
            Vec::new(),
        ),
    };
    let by_version: BTreeMap<u32, &Migration> = files.iter().map(|m| (m.version, m)).collect();
    let applied = st
        .applied
        .iter()
        .map(|a| {
            let file = by_version.get(&a.version);
            // The down a `migrate down` would run: the file's, else the stored text.
            let down = match file {
                Some(m) => m
                    .down
                    .as_deref()
                    .and_then(|p| std::fs::read_to_string(p).ok()),
                None => a.down_sql.clone(),
            };
            AppliedMigration {
                version: a.version,
                name: a.name.clone(),
                applied_at: a.applied_at,
                duration_ms: a.duration_ms,
                deployment: a.deployment.clone(),
                tag: tag_name(a.tag.or(file.and_then(|m| m.tag))),
                release: a.release.clone(),
                ahead: st.ahead.contains(&a.version),
                has_down: down.is_some(),
                down_drops: down
                    .map(|sql| drops_of(a.version, &sql))
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok(MigrationStatus {
        app: req.app.clone(),
        release: t.release,
        database: t
            .sql
            .map(|(db, _)| db.name().to_string())
            .unwrap_or_default(),
        applied,
        pending: st
            .pending
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

/// The `Migrate` job: up (all pending) or down to a version. A down first
/// says what it drops and takes a verified backup of the database
/// (`pre-migrate-down`); it refuses, changing nothing, when it cannot.
pub fn run_job(
    config: &golive_shared::config::AgentConfig,
    journal: &crate::journal::Journal,
    req: &golive_shared::protocol::RunMigrations,
    deployment: Option<&str>,
    emit: &dyn Fn(golive_shared::protocol::EventKind),
) -> Result<golive_shared::protocol::JobResult, JobError> {
    use golive_shared::protocol::{CreateBackup, EventKind, JobResult, LogLevel};
    let log = |line: String| {
        emit(EventKind::Log {
            level: LogLevel::Info,
            line,
        })
    };
    let warn = |line: String| {
        emit(EventKind::Log {
            level: LogLevel::Warn,
            line,
        })
    };
    // What the request names (the app's migrations, its release) is the
    // operator's to fix: refused before anything runs.
    let t = target(config, &req.app, req.release.as_deref()).map_err(JobError::refused)?;
    match req.down_to {
        None => {
            let mut applied = Vec::new();
            match &t.sql {
                Some((db, dir)) if dir.is_dir() => {
                    if req.backup_first {
                        let st = status_of(db, dir, Some(&t.release))?;
                        if !st.pending.is_empty() {
                            let id = backup_before(config, journal, req, db, deployment, emit)
                                .map_err(JobError::refused)?;
                            log(format!(
                                "verified backup {id} of {} taken before the commit's migrations",
                                db.name()
                            ));
                        }
                    }
                    let origin = Origin {
                        release: Some(&t.release),
                        deployment,
                        stop_before_contract: req.stop_before_contract,
                    };
                    applied = up_from(db, dir, origin, LOCK_WAIT, &log)?;
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
                backup: None,
                drops: vec![],
            })
        }
        Some(to) => {
            let Some((db, dir)) = &t.sql else {
                return Err(JobError::refused(format!(
                    "app {} has only a migration command, which has no down; restore the deployment's \
                     pre-deploy backup instead (golivectl backup restore PLAN ID --deployment D)",
                    req.app
                )));
            };
            if !dir.is_dir() {
                log(format!(
                    "release {} ships no migrations directory: reverting with the down texts the \
                     ledger stored",
                    t.release
                ));
            }
            let plan = revert_plan(db, dir, Some(&t.release), to)?;
            if plan.is_empty() {
                log(format!(
                    "nothing to revert on {}: no migration above version {to} is applied",
                    db.name()
                ));
                return Ok(JobResult::Migrated {
                    applied: vec![],
                    reverted: vec![],
                    backup: None,
                    drops: vec![],
                });
            }
            let dropped = drops(db, &plan);
            log(format!(
                "going down to version {to} reverts {}",
                plan.iter().map(revert_label).collect::<Vec<_>>().join(", ")
            ));
            if dropped.is_empty() {
                log("the down migrations drop no table and no column".into());
            } else {
                warn(format!(
                    "the down migrations drop {}",
                    dropped
                        .iter()
                        .map(golive_shared::protocol::DroppedObject::describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            // Nothing is lost: a verified backup of the database first.
            let backup = crate::backup::run::create(
                config,
                journal,
                &CreateBackup {
                    app: req.app.clone(),
                    label: "pre-migrate-down".into(),
                    only: vec![db.name().to_string()],
                    deployment: deployment.map(str::to_string),
                    verify: true,
                },
                emit,
            )
            .map_err(|e| {
                JobError::refused(format!(
                    "migrate down refused: the verified backup of database {} could not be taken, \
                     so nothing was changed: {e}",
                    db.name()
                ))
            })?;
            let JobResult::BackedUp { id: backup_id, .. } = backup else {
                return Err("unexpected result of the pre-migrate-down backup".into());
            };
            let reverted =
                down_from(db, dir, Some(&t.release), to, LOCK_WAIT, &log).map_err(|e| {
                    JobError::from(e)
                        .map(|e| format!("{e} (backup {backup_id} holds the database as it was)"))
                })?;
            log(format!(
                "{} migration(s) reverted on {} (now at version {to}); backup {backup_id} holds \
                 the database as it was",
                reverted.len(),
                db.name()
            ));
            Ok(JobResult::Migrated {
                applied: vec![],
                reverted,
                backup: Some(backup_id),
                drops: dropped,
            })
        }
    }
}

/// A verified backup of one database before a commit's migrations: the
/// contract ones are the lossy kind, so nothing runs without it.
fn backup_before(
    config: &golive_shared::config::AgentConfig,
    journal: &crate::journal::Journal,
    req: &golive_shared::protocol::RunMigrations,
    db: &DatabaseConfig,
    deployment: Option<&str>,
    emit: &dyn Fn(golive_shared::protocol::EventKind),
) -> Result<String, String> {
    use golive_shared::protocol::{CreateBackup, JobResult};
    let backup = crate::backup::run::create(
        config,
        journal,
        &CreateBackup {
            app: req.app.clone(),
            label: "pre-contract".into(),
            only: vec![db.name().to_string()],
            deployment: deployment.map(str::to_string),
            verify: true,
        },
        emit,
    )
    .map_err(|e| {
        format!(
            "the commit's migrations were not run: the verified backup of database {} could not \
             be taken, so nothing was changed: {e}",
            db.name()
        )
    })?;
    match backup {
        JobResult::BackedUp { id, .. } => Ok(id),
        _ => Err("unexpected result of the pre-contract backup".into()),
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

    /// A job's error code comes from the kind of failure (issue 14): a
    /// changed applied migration is refused (BadRequest: exit 2 on the
    /// controller), failing SQL is a failure (Internal: exit 1).
    #[test]
    fn issue14_refusals_and_failures_carry_their_codes() {
        use golive_shared::protocol::ErrorCode;
        let d = tempfile::tempdir().unwrap();
        let mig = d.path().join("m");
        std::fs::create_dir(&mig).unwrap();
        three(&mig);
        let db = sqlite(d.path());
        up(&db, &mig, None, &quiet).unwrap();
        write(&mig, "0002_posts.up.sql", "CREATE TABLE posts (changed);");
        let refused = crate::jobs::JobError::from(up(&db, &mig, None, &quiet).unwrap_err());
        assert_eq!(refused.code, ErrorCode::BadRequest, "{refused}");
        assert!(refused.message.contains("changed"), "{refused}");

        let d = tempfile::tempdir().unwrap();
        let mig = d.path().join("m");
        std::fs::create_dir(&mig).unwrap();
        write(&mig, "0001_bad.up.sql", "INSERT INTO nope VALUES (1);");
        let failed =
            crate::jobs::JobError::from(up(&sqlite(d.path()), &mig, None, &quiet).unwrap_err());
        assert_eq!(failed.code, ErrorCode::Internal, "{failed}");
        assert_eq!(
            MigrateError::Raced("run again".into()).code(),
            ErrorCode::Internal
        );
        assert_eq!(
            MigrateError::Unreadable("cannot read".into()).code(),
            ErrorCode::Internal
        );
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

    /// The ledger as golive wrote it before issue 12.
    const OLD_LEDGER: &str = "CREATE TABLE golive_migrations (version INTEGER PRIMARY KEY, \
        name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL, \
        duration_ms INTEGER NOT NULL, deployment TEXT)";

    #[test]
    fn issue12_sqlite_old_ledger_is_upgraded_and_down_runs_stored_texts() {
        let d = tempfile::tempdir().unwrap();
        let (v1, v2) = (d.path().join("v1"), d.path().join("v2"));
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        for dir in [&v1, &v2] {
            write(
                dir,
                "0001_users.up.sql",
                "CREATE TABLE users (id INTEGER PRIMARY KEY);\n",
            );
            write(dir, "0001_users.down.sql", "DROP TABLE users;\n");
        }
        let down2 = "-- it's the down; with a quote\nDROP TABLE notes;\n";
        write(
            &v2,
            "0002_notes.up.sql",
            "-- golive: expand\nCREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n\
             INSERT INTO notes (body) VALUES ('a'), ('b');\n",
        );
        write(&v2, "0002_notes.down.sql", down2);
        write(
            &v2,
            "0003_flag.up.sql",
            "ALTER TABLE users ADD COLUMN flag INTEGER;\n",
        );

        // Version 1 applied by a golive that kept no texts.
        let db = sqlite(d.path());
        let DatabaseConfig::Sqlite(s) = &db else {
            unreachable!()
        };
        let sum = scan(&v1).unwrap()[0].checksum.clone();
        rusqlite::Connection::open(&s.path)
            .unwrap()
            .execute_batch(&format!(
                "{OLD_LEDGER}; CREATE TABLE users (id INTEGER PRIMARY KEY); \
                 INSERT INTO golive_migrations VALUES (1, 'users', '{sum}', 1, 2, NULL);"
            ))
            .unwrap();
        let st = status_of(&db, &v1, Some("v1")).unwrap();
        assert_eq!(st.applied.len(), 1);
        assert_eq!(
            (
                st.applied[0].release.clone(),
                st.applied[0].down_sql.clone()
            ),
            (None, None)
        );

        // Release v2 applies 2 and 3: the ledger is upgraded in place and
        // keeps their texts, tag and release; the old row stays.
        let origin = Origin {
            release: Some("v2"),
            deployment: Some("dep-7"),
            ..Origin::default()
        };
        let applied = up_from(&db, &v2, origin, LOCK_WAIT, &quiet).unwrap();
        assert_eq!(
            applied.iter().map(|a| a.version).collect::<Vec<_>>(),
            [2, 3]
        );
        let st = status_of(&db, &v2, Some("v2")).unwrap();
        assert_eq!(st.applied[1..], applied[..]);
        assert!(st.ahead.is_empty());
        let conn = rusqlite::Connection::open(&s.path).unwrap();
        let row: (String, Option<String>, String, String) = conn
            .query_row(
                "SELECT up_sql, down_sql, tag, release_id FROM golive_migrations WHERE version = 2",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert!(row.0.contains("CREATE TABLE notes"), "{row:?}");
        assert_eq!(row.1.as_deref(), Some(down2));
        assert_eq!((row.2.as_str(), row.3.as_str()), ("expand", "v2"));

        // Back on v1's code: 2 and 3 are ahead of it, a state, not an error;
        // the same with no migrations directory at all.
        let st = status_of(&db, &v1, Some("v1")).unwrap();
        assert_eq!(st.ahead, [2, 3]);
        assert!(st.pending.is_empty());
        assert_eq!(st.applied[1].tag, Some(Tag::Expand));
        let none = d.path().join("none");
        // Version 1 has no recorded release: without its file it is an error.
        let e = status_of(&db, &none, Some("v0")).unwrap_err().to_string();
        assert!(e.contains("does not say which release applied it"), "{e}");
        // The release that applied it no longer ships it: an error too.
        std::fs::rename(v2.join("0003_flag.up.sql"), d.path().join("0003.bak")).unwrap();
        let e = status_of(&db, &v2, Some("v2")).unwrap_err().to_string();
        assert!(
            e.contains("the ledger says this release (v2) applied it"),
            "{e}"
        );
        std::fs::rename(d.path().join("0003.bak"), v2.join("0003_flag.up.sql")).unwrap();

        // 3 had no down file: going below it from v1 is refused, unchanged.
        let e = down_from(&db, &v1, Some("v1"), 1, LOCK_WAIT, &quiet)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("migration 3 (flag)")
                && e.contains("the ledger holds no down text")
                && e.contains("nothing was changed"),
            "{e}"
        );
        assert_eq!(status_of(&db, &v1, Some("v1")).unwrap().ahead, [2, 3]);
        // Give 3 a down in the ledger (as if its release had shipped one).
        conn.execute_batch("UPDATE golive_migrations SET down_sql = 'ALTER TABLE users DROP COLUMN flag' WHERE version = 3")
            .unwrap();

        // The plan and what it drops, counted; then the down itself.
        let plan = revert_plan(&db, &v1, Some("v1"), 1).unwrap();
        assert_eq!(plan.iter().map(|r| r.version).collect::<Vec<_>>(), [3, 2]);
        assert!(
            plan[1]
                .source
                .display()
                .to_string()
                .contains("stored in golive_migrations by release v2"),
            "{:?}",
            plan[1].source
        );
        let dropped: Vec<String> = drops(&db, &plan)
            .iter()
            .map(golive_shared::protocol::DroppedObject::describe)
            .collect();
        assert_eq!(
            dropped,
            ["column users.flag (0 rows)", "table notes (2 rows)"]
        );
        assert_eq!(
            down_from(&db, &v1, Some("v1"), 1, LOCK_WAIT, &quiet).unwrap(),
            [3, 2]
        );
        assert_eq!(tables(&db), ["golive_migrations", "users"]);
        let st = status_of(&db, &v1, Some("v1")).unwrap();
        assert!(st.ahead.is_empty() && st.pending.is_empty() && st.applied.len() == 1);
    }

    #[test]
    fn deployment_ids_and_terminators() {
        assert!(check_ident("deployment id", Some("d-2024.01:7")).is_ok());
        assert!(check_ident("release id", Some("x'; DROP")).is_err());
        assert_eq!(terminated("SELECT 1"), "SELECT 1\n;\n");
        assert_eq!(terminated("SELECT 1; -- done\n"), "SELECT 1; -- done\n");
        assert_eq!(
            terminated("SELECT 1;\n-- trailing\n"),
            "SELECT 1;\n-- trailing\n"
        );
    }

    /// Issue 16: the bundled SQLite is built without extension loading
    /// (`.cargo/config.toml`, for the agent's size) but keeps what apps' own
    /// migrations and schemas may use: FTS3/5, R*Tree, JSON, DBSTAT.
    #[test]
    fn issue16_bundled_sqlite_keeps_app_extensions_without_extension_loading() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let used = |opt: &str| -> bool {
            conn.query_row("SELECT sqlite_compileoption_used(?1)", [opt], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
                == 1
        };
        assert!(used("OMIT_LOAD_EXTENSION"));
        for opt in [
            "ENABLE_FTS3",
            "ENABLE_FTS5",
            "ENABLE_RTREE",
            "ENABLE_DBSTAT_VTAB",
        ] {
            assert!(used(opt), "{opt}");
        }
        conn.execute_batch(
            "CREATE VIRTUAL TABLE docs USING fts5(body);
             INSERT INTO docs VALUES ('hello world');
             CREATE VIRTUAL TABLE old_docs USING fts3(body);
             CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1);
             INSERT INTO boxes VALUES (1, 0.0, 2.0);",
        )
        .unwrap();
        let hits: i64 = conn
            .query_row(
                "SELECT count(*) FROM docs WHERE docs MATCH 'hello'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(hits, 1);
        let inside: i64 = conn
            .query_row(
                "SELECT count(*) FROM boxes WHERE x0 <= 1.0 AND x1 >= 1.0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(inside, 1);
        let second: i64 = conn
            .query_row(r#"SELECT json_extract('{"a":[1,2]}', '$.a[1]')"#, [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(second, 2);
        let pages: i64 = conn
            .query_row("SELECT count(*) FROM dbstat", [], |r| r.get(0))
            .unwrap();
        assert!(pages >= 1, "{pages}");
        // Not refused at run time: not there at all.
        let err = conn
            .execute_batch("SELECT load_extension('x')")
            .unwrap_err();
        assert!(err.to_string().contains("no such function"), "{err}");
    }
}
