//! The agent's journal: one SQLite file (WAL) in the state directory, the
//! source of truth for jobs and their events, releases and activations, app
//! locks, uploads, backups, maintenance, flags, watchdogs and the audit
//! trail.
//!
//! The pattern everywhere is *write the intent, act, write the outcome*, so a
//! crash leaves rows that the next start recognises ([`Journal::recover`]).
//! The audit table is append-only: triggers refuse UPDATE and DELETE.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use golive_shared::protocol::{
    ErrorCode, EventKind, JobEvent, JobInfo, JobResult, JobSpec, JobState, LockInfo,
    ReleaseSummary, UnixMillis, WatchdogEvent, WatchdogInfo, WatchdogSpec, WatchdogState,
};
use rusqlite::{Connection, OptionalExtension, params};

/// Bump when the schema changes, and add a step to `MIGRATIONS`.
pub const SCHEMA_VERSION: i64 = 8;

/// Schema steps; step `i` takes the journal from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at INTEGER NOT NULL,
    finished_at INTEGER,
    result TEXT,
    error TEXT
);
CREATE TABLE events (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE releases (
    app TEXT NOT NULL,
    id TEXT NOT NULL,
    artifact_sha256 TEXT,
    staged_at INTEGER NOT NULL,
    rolled_back_at INTEGER,
    PRIMARY KEY (app, id)
);
CREATE TABLE activations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    release TEXT NOT NULL,
    previous TEXT,
    at INTEGER NOT NULL,
    cause TEXT NOT NULL
);
CREATE TABLE locks (
    app TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    deployment TEXT NOT NULL,
    holder TEXT NOT NULL,
    since INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    partial_path TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    uploaded_by TEXT NOT NULL,
    error TEXT
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    peer_name TEXT NOT NULL,
    role TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    serial TEXT NOT NULL,
    operation TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
"#,
    r#"
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    dir TEXT NOT NULL,
    partial_dir TEXT NOT NULL,
    release TEXT,
    deployment TEXT,
    parts TEXT NOT NULL DEFAULT '[]',
    total_bytes INTEGER NOT NULL DEFAULT 0,
    verified INTEGER,
    verified_at INTEGER,
    verify_detail TEXT,
    offsite TEXT,
    error TEXT,
    finished_at INTEGER
);
CREATE INDEX backups_app ON backups (app, created_at);
ALTER TABLE releases ADD COLUMN deployment TEXT;
ALTER TABLE jobs ADD COLUMN deployment TEXT;
"#,
    r#"
CREATE TABLE maintenance (
    app TEXT PRIMARY KEY,
    on_since INTEGER NOT NULL,
    reason TEXT NOT NULL,
    by TEXT NOT NULL
);
CREATE TABLE maintenance_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    on_since INTEGER NOT NULL,
    off_at INTEGER NOT NULL,
    downtime_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    on_by TEXT NOT NULL,
    off_by TEXT NOT NULL
);
CREATE INDEX maintenance_log_app ON maintenance_log (app, seq);
"#,
    r#"
CREATE TABLE flag_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    percent INTEGER,
    previous_enabled INTEGER NOT NULL,
    previous_percent INTEGER,
    by TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX flag_changes_app ON flag_changes (app, name, seq);
"#,
    // The commit a git-sourced release was exported from.
    r#"
ALTER TABLE releases ADD COLUMN git_commit TEXT;
"#,
    // Issue 13: the rollback point of each deployment that activated here,
    // and the steps of each host rollback (intent, then outcome).
    r#"
CREATE TABLE rollback_points (
    app TEXT NOT NULL,
    deployment TEXT NOT NULL,
    release TEXT NOT NULL,
    previous TEXT,
    recorded_at INTEGER NOT NULL,
    backup TEXT,
    database TEXT,
    schema_before INTEGER,
    migrations TEXT NOT NULL DEFAULT '[]',
    migration_command INTEGER NOT NULL DEFAULT 0,
    flags TEXT,
    restore TEXT NOT NULL DEFAULT 'allow',
    maintenance INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    state_at INTEGER NOT NULL,
    rollback_job INTEGER,
    error TEXT,
    PRIMARY KEY (app, deployment)
);
CREATE INDEX rollback_points_app ON rollback_points (app, recorded_at);
CREATE TABLE rollback_steps (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    data TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (job_id, step)
);
"#,
    // Issue 13: the watchdog of each deployment (one live per app) and its
    // events. `attempts` counts rollback or commit job submissions: a job
    // an agent crash interrupted is submitted again under a new key.
    r#"
CREATE TABLE watchdogs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    deployment TEXT NOT NULL,
    release TEXT NOT NULL,
    spec TEXT NOT NULL,
    armed_by TEXT NOT NULL,
    armed_at INTEGER NOT NULL,
    until INTEGER NOT NULL,
    confirm_by INTEGER,
    state TEXT NOT NULL,
    reason TEXT,
    rollback_to TEXT,
    fired_at INTEGER,
    rollback_job INTEGER,
    commit_job INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    committed_at INTEGER,
    ended_at INTEGER
);
CREATE INDEX watchdogs_app ON watchdogs (app, id);
CREATE TABLE watchdog_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    watchdog INTEGER NOT NULL REFERENCES watchdogs(id),
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX watchdog_events_of ON watchdog_events (watchdog, seq);
"#,
    // Issue 14: why a failed job failed, as a protocol `ErrorCode` name
    // (`BadRequest`, `Internal`, ...); rows from before read as no code.
    r#"
ALTER TABLE jobs ADD COLUMN error_code TEXT;
"#,
];

/// Job kinds that a restart resumes instead of marking interrupted: the
/// host rollback's steps are journaled and idempotent (issue 13), and a
/// rollback left half done would serve a half-state.
pub const RESUMED_KINDS: [&str; 2] = ["host.rollback", "rollback"];

/// See [`Journal::metrics`].
#[derive(Debug, Default)]
pub struct MetricRows {
    pub jobs: Vec<JobCount>,
    /// (app, state, count) of rollback jobs.
    pub rollbacks: Vec<(String, String, u64)>,
    /// (app, complete backups, their bytes, the newest's time).
    pub backups: Vec<(String, u64, u64, i64)>,
    /// (app, its latest watchdog's state).
    pub watchdogs: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct JobCount {
    pub kind: String,
    pub state: String,
    pub count: u64,
    /// Submission to end, summed over the finished ones.
    pub duration_ms: u64,
    pub finished: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "journal {path} has schema version {found}, newer than this agent understands ({SCHEMA_VERSION}); \
         run the newer golive-agent, or restore the state directory from before the upgrade"
    )]
    TooNew { path: String, found: i64 },
    #[error(
        "cannot make the journal {path} owner-only (0600): {source}; the agent's user must own \
         the state directory and its files"
    )]
    Private {
        path: String,
        source: std::io::Error,
    },
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("journal: stored value is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
    #[error(
        "cannot fsync the journal's WAL: {0}; check the state directory's disk (full, read-only, \
         failing)"
    )]
    Sync(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, JournalError>;

pub use golive_shared::private::make_private_db;

/// What start-up found unfinished after a crash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub interrupted_jobs: Vec<u64>,
    /// Unfinished host rollbacks, to run again (their finished steps are
    /// not repeated).
    pub resumed_jobs: Vec<u64>,
    /// Partial upload files to delete (the caller owns the filesystem).
    pub partial_uploads: Vec<String>,
    /// Partial backup directories to delete.
    pub partial_backups: Vec<String>,
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: UnixMillis,
    pub peer_name: String,
    pub role: String,
    pub fingerprint: String,
    pub serial: String,
    pub operation: String,
    pub outcome: String,
}

pub struct Journal {
    // rusqlite connections are not Sync; every access is short, so one mutex
    // serialises them without measurable contention at agent request rates.
    conn: Mutex<Connection>,
    /// Deferred commits (issue 14, speed) and the one fsync that makes
    /// them durable: [`Journal::sync`].
    durability: Durability,
}

/// Group commit on the agent (issue 14, speed). Most commits still carry
/// their own fsync (`synchronous = FULL`). A few are *deferred*: written
/// to the WAL without one, because what follows them waits for
/// [`Journal::sync`] (or another fsync'd commit, which syncs the same WAL)
/// before anything relies on them: a write request's answer, a job's work
/// on the disk, its `Finished` report. One fdatasync of the WAL then
/// covers every commit written before it, in WAL order. Which commits are
/// deferred, and the fsync that covers each, is listed in the README
/// ("Which fsyncs a deployment waits for").
struct Durability {
    wal: PathBuf,
    dir: PathBuf,
    /// Deferred commits written so far (incremented under the
    /// connection's lock, after the commit is in the WAL).
    written: AtomicU64,
    /// How many of them are known to be on disk: a count of `written` read
    /// before an fsync of the WAL that then completed (only ever raised).
    durable: AtomicU64,
    /// Held while an fdatasync runs: callers that arrive meanwhile find
    /// their commits covered by it, or run the next one.
    syncing: Mutex<bool>,
    /// fdatasyncs run by [`Journal::sync`] (tests).
    rounds: AtomicU64,
}

/// Prepared statements the journal's connection keeps (rusqlite's cache,
/// least recently used out first).
const STATEMENT_CACHE: usize = 64;

impl Journal {
    pub fn open(path: &Path) -> Result<Journal> {
        let shown = path.display().to_string();
        make_private_db(path).map_err(|source| JournalError::Private {
            path: shown.clone(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|source| JournalError::Open {
            path: shown.clone(),
            source,
        })?;
        // A small page cache keeps the idle agent small (issue 2: < 8 MiB RSS).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -512;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(|source| JournalError::Open {
            path: shown.clone(),
            source,
        })?;
        // Every statement is prepared once and kept (issue 14, speed: a
        // third of the journal's CPU was SQLite parsing them again); the
        // journal has about 90, the hot ones a job's and a request's.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(JournalError::TooNew { path: shown, found });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Journal {
            conn: Mutex::new(conn),
            durability: Durability {
                wal: PathBuf::from(wal),
                dir: path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
                written: AtomicU64::new(0),
                durable: AtomicU64::new(0),
                syncing: Mutex::new(false),
                rounds: AtomicU64::new(0),
            },
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `write` (one transaction) as a deferred commit: in the WAL
    /// without an fsync of its own, on disk at the next [`Journal::sync`]
    /// or fsync'd commit ([`Durability`]). Counted even when it fails: a
    /// needless fsync is cheaper than a missed one.
    fn deferred<T>(&self, write: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn();
        // Not a cached statement: SQLite applies this pragma when it
        // prepares it, not when it runs.
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        let written = write(&conn);
        self.durability.written.fetch_add(1, Ordering::SeqCst);
        // Back to an fsync per commit for everything else, whatever happened.
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        written
    }

    /// An fsync'd commit `write`: it syncs the WAL, so the deferred commits
    /// written before it are on disk too, and need no fdatasync of their own.
    fn covering<T>(&self, write: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn();
        // Under the connection's lock: exactly the deferred commits before
        // this one.
        let before = self.durability.written.load(Ordering::SeqCst);
        let out = write(&conn)?;
        self.durability.durable.fetch_max(before, Ordering::SeqCst);
        Ok(out)
    }

    /// The barrier (issue 14, speed): every commit written before this call
    /// is on disk when it returns. Free when no deferred commit waits; one
    /// fdatasync of the WAL otherwise, shared by the callers that arrive
    /// while it runs. Blocking: call it where a commit may block.
    pub fn sync(&self) -> Result<()> {
        let d = &self.durability;
        // Every deferred commit counted here was in the WAL before this
        // call: those are the ones to cover.
        let target = d.written.load(Ordering::SeqCst);
        if d.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let mut dir_synced = d.syncing.lock().unwrap_or_else(|p| p.into_inner());
        // A sync that ran while this one waited may have covered them.
        if d.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        // Read again: the fdatasync below covers what is written by now.
        let target = d.written.load(Ordering::SeqCst);
        match std::fs::File::open(&d.wal) {
            Ok(f) => f.sync_data()?,
            // No WAL: every commit is in the database file, which SQLite
            // fsyncs when it checkpoints.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // Once: the WAL's name in the state directory (SQLite syncs it when
        // it creates the WAL under FULL; this covers a WAL only deferred
        // commits wrote to).
        if !*dir_synced {
            std::fs::File::open(&d.dir)?.sync_all()?;
            *dir_synced = true;
        }
        d.durable.fetch_max(target, Ordering::SeqCst);
        d.rounds.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Deferred commits written and not yet on disk (tests).
    pub fn unsynced(&self) -> u64 {
        let d = &self.durability;
        d.written
            .load(Ordering::SeqCst)
            .saturating_sub(d.durable.load(Ordering::SeqCst))
    }

    /// fdatasyncs run by [`Journal::sync`] (tests).
    pub fn sync_rounds(&self) -> u64 {
        self.durability.rounds.load(Ordering::SeqCst)
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// At start-up: jobs and uploads that a crash interrupted are marked
    /// `interrupted`, never taken as done.
    pub fn recover(&self, now: UnixMillis) -> Result<Recovery> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let mut out = Recovery::default();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, kind FROM jobs WHERE state IN ('queued', 'running') ORDER BY id",
            )?;
            let unfinished: Vec<(u64, String)> = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, kind) in unfinished {
                if RESUMED_KINDS.contains(&kind.as_str()) {
                    out.resumed_jobs.push(id);
                } else {
                    out.interrupted_jobs.push(id);
                }
            }
            let mut stmt =
                tx.prepare_cached("SELECT partial_path FROM uploads WHERE state = 'receiving'")?;
            out.partial_uploads = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt =
                tx.prepare_cached("SELECT partial_dir FROM backups WHERE state = 'running'")?;
            out.partial_backups = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
        }
        tx.prepare_cached(
            "UPDATE backups SET state = 'interrupted', finished_at = ?1,
             error = 'the agent stopped while this backup was written; it was never complete'
             WHERE state = 'running'",
        )?
        .execute(params![now])?;
        for id in &out.interrupted_jobs {
            tx.prepare_cached("UPDATE jobs SET state = 'interrupted', finished_at = ?1,
                 error = 'the agent stopped while this job ran; check the app and resubmit' WHERE id = ?2")?.execute(params![now, *id as i64])?;
            let seq = next_seq(&tx, *id)?;
            let kind = serde_json::to_string(&EventKind::Finished {
                state: JobState::Interrupted,
            })?;
            tx.prepare_cached(
                "INSERT INTO events (job_id, seq, at, kind) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![*id as i64, seq as i64, now, kind])?;
        }
        for id in &out.resumed_jobs {
            let seq = next_seq(&tx, *id)?;
            let kind = serde_json::to_string(&EventKind::Log {
                level: golive_shared::protocol::LogLevel::Warn,
                line: "the agent stopped while this rollback ran; it is resumed: steps that \
                       finished are not repeated, the step that was running runs again"
                    .into(),
            })?;
            tx.prepare_cached(
                "INSERT INTO events (job_id, seq, at, kind) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![*id as i64, seq as i64, now, kind])?;
        }
        tx.prepare_cached(
            "UPDATE uploads SET state = 'interrupted', finished_at = ?1,
             error = 'the agent stopped during the upload' WHERE state = 'receiving'",
        )?
        .execute(params![now])?;
        tx.commit()?;
        Ok(out)
    }

    /// At a stop whose drain bound passed (issue 16): every queued or
    /// running job but a host rollback is marked interrupted, with `why`,
    /// and gets its `Finished` event, so nothing is left looking alive; a
    /// host rollback stays unfinished, with a note, and is resumed at the
    /// next start like after a crash. Returns (interrupted, left to resume).
    pub fn interrupt_at_stop(&self, now: UnixMillis, why: &str) -> Result<(Vec<u64>, Vec<u64>)> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let unfinished: Vec<(u64, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, kind FROM jobs WHERE state IN ('queued', 'running') ORDER BY id",
            )?;
            stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let (mut interrupted, mut resumed) = (Vec::new(), Vec::new());
        for (id, kind) in unfinished {
            let seq = next_seq(&tx, id)?;
            if RESUMED_KINDS.contains(&kind.as_str()) {
                let note = serde_json::to_string(&EventKind::Log {
                    level: golive_shared::protocol::LogLevel::Warn,
                    line: format!("{why}; this rollback is resumed at the next start"),
                })?;
                tx.prepare_cached(
                    "INSERT INTO events (job_id, seq, at, kind) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id as i64, seq as i64, now, note])?;
                resumed.push(id);
                continue;
            }
            tx.prepare_cached(
                "UPDATE jobs SET state = 'interrupted', finished_at = ?1, error = ?2 WHERE id = ?3",
            )?
            .execute(params![now, why, id as i64])?;
            let kind = serde_json::to_string(&EventKind::Finished {
                state: JobState::Interrupted,
            })?;
            tx.prepare_cached(
                "INSERT INTO events (job_id, seq, at, kind) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id as i64, seq as i64, now, kind])?;
            interrupted.push(id);
        }
        // A backup row that was being written stays `running`: the next
        // start removes its partial directory and marks it (`recover`).
        tx.commit()?;
        Ok((interrupted, resumed))
    }

    // ----- jobs -------------------------------------------------------------

    /// Inserts a job, or returns the existing one with the same key.
    /// Returns `(job, inserted)`.
    pub fn insert_job(
        &self,
        key: &str,
        spec: &JobSpec,
        submitted_by: &str,
        now: UnixMillis,
    ) -> Result<(JobInfo, bool)> {
        insert_job_in(&self.conn(), key, spec, submitted_by, now, None)
    }

    /// [`Journal::insert_job`] of a job submitted over the wire, with the
    /// deployment whose lease it runs under: one deferred commit (issue 14,
    /// speed; it was two fsync'd ones). The submit's answer waits for the
    /// fsync of its audit row, or [`Journal::sync`], and the job acts only
    /// after [`Journal::sync`] (`jobs::run`).
    pub fn insert_job_deferred(
        &self,
        key: &str,
        spec: &JobSpec,
        submitted_by: &str,
        now: UnixMillis,
        deployment: Option<&str>,
    ) -> Result<(JobInfo, bool)> {
        self.deferred(|conn| insert_job_in(conn, key, spec, submitted_by, now, deployment))
    }

    pub fn job_by_key(&self, key: &str) -> Result<Option<JobInfo>> {
        job_by_key(&self.conn(), key)
    }

    pub fn job(&self, id: u64) -> Result<Option<JobInfo>> {
        let conn = self.conn();
        query_job(&conn, "WHERE id = ?1", params![id as i64])
    }

    pub fn jobs(&self, limit: u32) -> Result<Vec<JobInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{JOB_SELECT} ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map(params![limit as i64], row_to_job)?;
        rows.map(|r| r?.into_job()).collect()
    }

    /// A deferred commit (issue 14, speed): `queued` and `running` are the
    /// same to crash recovery (both unfinished: interrupted, or resumed for
    /// a host rollback), so a `running` lost to a crash changes nothing
    /// the next start does. On disk with the job's next fsync'd commit.
    pub fn set_job_running(&self, id: u64) -> Result<()> {
        self.deferred(|conn| {
            conn.prepare_cached("UPDATE jobs SET state = 'running' WHERE id = ?1")?
                .execute(params![id as i64])?;
            Ok(())
        })
    }

    pub fn finish_job(
        &self,
        id: u64,
        state: JobState,
        result: Option<&JobResult>,
        error: Option<(ErrorCode, &str)>,
        now: UnixMillis,
    ) -> Result<()> {
        let result = result.map(serde_json::to_string).transpose()?;
        let code = error.map(|(c, _)| code_name(c));
        let error = error.map(|(_, m)| m);
        // fsync'd: a job's outcome is on disk before it is reported
        // (`Finished`), and with it the job's deferred commits before it.
        self.covering(|conn| {
            conn.prepare_cached(// An interrupted job stays so: the stop marked it and ended its
                // programs (issue 16), whatever its task reports afterwards.
                "UPDATE jobs SET state = ?1, result = ?2, error = ?3, finished_at = ?4, error_code = ?6
                 WHERE id = ?5 AND state != 'interrupted'")?.execute(params![state.as_str(), result, error, now, id as i64, code])?;
            Ok(())
        })
    }

    /// A job's event (its log and progress, read only by the controller's
    /// follow) is committed without an fsync of its own (issue 14, speed:
    /// a job wrote three to five, each an fsync on the request's path): it
    /// reaches the disk with the next fsync'd commit, in WAL order (the
    /// job's final state for all but its `Finished` event, the next audit
    /// row for that one). What crash recovery reads
    /// (the job's row and state) is fsync'd as before; a power cut may lose
    /// the last lines of a job's log, never its state.
    pub fn append_event(&self, job_id: u64, kind: &EventKind, now: UnixMillis) -> Result<JobEvent> {
        let conn = self.conn();
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        let written = (|| -> Result<u64> {
            let tx = conn.unchecked_transaction()?;
            let seq = next_seq(&tx, job_id)?;
            tx.prepare_cached(
                "INSERT INTO events (job_id, seq, at, kind) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                job_id as i64,
                seq as i64,
                now,
                serde_json::to_string(kind)?
            ])?;
            tx.commit()?;
            Ok(seq)
        })();
        // Back to an fsync per commit for everything else, whatever happened.
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        let seq = written?;
        Ok(JobEvent {
            seq,
            at: now,
            kind: kind.clone(),
        })
    }

    pub fn events_after(&self, job_id: u64, after: u64, limit: u32) -> Result<Vec<JobEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, kind FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![job_id as i64, after as i64, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, at, kind) = row?;
            Ok(JobEvent {
                seq: seq as u64,
                at,
                kind: serde_json::from_str(&kind)?,
            })
        })
        .collect()
    }

    // ----- releases ---------------------------------------------------------

    /// Records a staged release: from an uploaded artifact (`sha`) or a git
    /// commit (`commit`).
    pub fn record_staged(
        &self,
        app: &str,
        id: &str,
        sha: Option<&str>,
        commit: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        self.record_staged_for(app, id, sha, commit, now, None)
    }

    /// [`Journal::record_staged`] of a release staged by `deployment`'s
    /// stage job: one commit, where the release row and then its
    /// deployment were two (issue 14, speed). Deferred: the stage job's
    /// outcome ([`Journal::finish_job`], fsync'd) follows it at once and is
    /// what makes it durable; a crash between the two leaves the release
    /// on disk unrecorded and its job interrupted, as a crash just before
    /// this commit did (golive does not remove a release it has no record
    /// of).
    pub fn record_staged_for(
        &self,
        app: &str,
        id: &str,
        sha: Option<&str>,
        commit: Option<&str>,
        now: UnixMillis,
        deployment: Option<&str>,
    ) -> Result<()> {
        self.deferred(|conn| {
            conn.prepare_cached("INSERT OR REPLACE INTO releases (app, id, artifact_sha256, git_commit, staged_at, deployment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![app, id, sha, commit, now, deployment])?;
            Ok(())
        })
    }

    /// Records a switch of `current`. `cause` is `activate` or `rollback`.
    /// Activating a release clears an earlier rolled-back mark on it: the
    /// operator chose it again.
    pub fn record_activation(
        &self,
        app: &str,
        release: &str,
        previous: Option<&str>,
        cause: &str,
        now: UnixMillis,
    ) -> Result<()> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        tx.prepare_cached("INSERT INTO activations (app, release, previous, at, cause) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![app, release, previous, now, cause])?;
        tx.prepare_cached("UPDATE releases SET rolled_back_at = NULL WHERE app = ?1 AND id = ?2")?
            .execute(params![app, release])?;
        if cause == "rollback"
            && let Some(from) = previous
        {
            tx.prepare_cached(
                "UPDATE releases SET rolled_back_at = ?3 WHERE app = ?1 AND id = ?2",
            )?
            .execute(params![app, from, now])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Releases known to the journal, newest staged first.
    pub fn releases(&self, app: &str) -> Result<Vec<ReleaseSummary>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT r.id, r.artifact_sha256, r.staged_at,
                    (SELECT MAX(a.at) FROM activations a WHERE a.app = r.app AND a.release = r.id),
                    r.git_commit
             FROM releases r WHERE r.app = ?1 ORDER BY r.staged_at DESC, r.rowid DESC",
        )?;
        let rows = stmt.query_map(params![app], |r| {
            Ok(ReleaseSummary {
                id: r.get(0)?,
                artifact_sha256: r.get(1)?,
                staged_at: r.get(2)?,
                activated_at: r.get(3)?,
                commit: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The release a rollback from `current` returns to: the most recently
    /// active release other than `current` that was not itself rolled back
    /// and still satisfies `exists`. Rolling back twice therefore walks
    /// further back instead of returning to the bad release.
    pub fn rollback_target(
        &self,
        app: &str,
        current: Option<&str>,
        exists: impl Fn(&str) -> bool,
    ) -> Result<Option<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT a.release FROM activations a
             LEFT JOIN releases r ON r.app = a.app AND r.id = a.release
             WHERE a.app = ?1 AND r.rolled_back_at IS NULL
             ORDER BY a.seq DESC",
        )?;
        let rows = stmt.query_map(params![app], |r| r.get::<_, String>(0))?;
        for row in rows {
            let id = row?;
            if Some(id.as_str()) != current && exists(&id) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    // ----- locks ------------------------------------------------------------

    /// The lock row of an app, expired or not, with its token.
    pub fn lock(&self, app: &str) -> Result<Option<(LockInfo, String)>> {
        let conn = self.conn();
        Ok(conn
            .prepare_cached(
                "SELECT deployment, holder, since, expires_at, token FROM locks WHERE app = ?1",
            )?
            .query_row(params![app], |r| {
                Ok((
                    LockInfo {
                        app: app.to_string(),
                        deployment: r.get(0)?,
                        holder: r.get(1)?,
                        since: r.get(2)?,
                        expires_at: r.get(3)?,
                    },
                    r.get(4)?,
                ))
            })
            .optional()?)
    }

    /// A lock taken, renewed or moved. Deferred (issue 14, speed): the only
    /// writer is the `Lock` request, whose answer waits for the fsync of its
    /// audit row (`server::rpc`, then [`Journal::sync`]), so a controller
    /// never holds a lease the disk does not.
    pub fn put_lock(&self, info: &LockInfo, token: &str) -> Result<()> {
        self.deferred(|conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO locks (app, token, deployment, holder, since, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                info.app,
                token,
                info.deployment,
                info.holder,
                info.since,
                info.expires_at
            ])?;
            Ok(())
        })
    }

    /// A lock released or broken: deferred like [`Journal::put_lock`].
    pub fn delete_lock(&self, app: &str) -> Result<()> {
        self.deferred(|conn| {
            conn.prepare_cached("DELETE FROM locks WHERE app = ?1")?
                .execute(params![app])?;
            Ok(())
        })
    }

    // ----- uploads ----------------------------------------------------------

    pub fn upload_started(
        &self,
        sha: &str,
        size: u64,
        partial: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<i64> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO uploads (sha256, size, partial_path, state, started_at, uploaded_by)
             VALUES (?1, ?2, ?3, 'receiving', ?4, ?5)",
        )?
        .execute(params![sha, size as i64, partial, now, by])?;
        Ok(conn.last_insert_rowid())
    }

    /// An upload's outcome. Deferred (issue 14, speed): the upload's answer
    /// waits for the fsync of its audit row (`server::route`, then
    /// [`Journal::sync`]). A crash before that leaves the row `receiving`:
    /// the next start marks it interrupted; the artifact, fsync'd and
    /// renamed into the store before this commit, is complete either way.
    pub fn upload_finished(&self, id: i64, error: Option<&str>, now: UnixMillis) -> Result<()> {
        let state = if error.is_some() { "failed" } else { "stored" };
        self.deferred(|conn| {
            conn.prepare_cached(
                "UPDATE uploads SET state = ?1, error = ?2, finished_at = ?3 WHERE id = ?4",
            )?
            .execute(params![state, error, now, id])?;
            Ok(())
        })
    }

    /// `(sha256, declared size)` of uploads being received: bytes the
    /// artifact store must keep room for, and artifacts it must not evict.
    pub fn uploads_in_flight(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT sha256, size FROM uploads WHERE state = 'receiving'")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that an artifact's file left the store (`evicted` to make
    /// room, `discarded` after a failed stage): its `stored` upload rows say
    /// so, and the row of a file that is gone never reads as `stored`.
    pub fn artifact_removed(&self, sha: &str, state: &str, why: &str) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE uploads SET state = ?2, error = ?3 WHERE sha256 = ?1 AND state = 'stored'",
            )?
            .execute(params![sha, state, why])?;
        Ok(())
    }

    /// `(job id, artifact sha256)` of stage jobs queued or running: the
    /// artifacts they are about to read.
    pub fn stage_jobs_in_flight(&self) -> Result<Vec<(u64, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, spec FROM jobs WHERE kind = 'stage' AND state IN ('queued', 'running')",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, spec) = row?;
            if let JobSpec::Stage(s) = serde_json::from_str(&spec)? {
                out.push((id as u64, s.artifact_sha256));
            }
        }
        Ok(out)
    }

    /// `(app, release id, artifact sha256)` of every release staged from an
    /// uploaded artifact.
    pub fn release_artifacts(&self) -> Result<Vec<(String, String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT app, id, artifact_sha256 FROM releases WHERE artifact_sha256 IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the oldest app lock still in force at `now` was taken: a
    /// deployment holding it may be about to stage an artifact it uploaded
    /// or found present since then.
    pub fn oldest_live_lock(&self, now: UnixMillis) -> Result<Option<UnixMillis>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT MIN(since) FROM locks WHERE expires_at > ?1")?
            .query_row(params![now], |r| r.get(0))?)
    }

    /// `(state, count)` of upload rows, for tests and status.
    pub fn upload_states(&self) -> Result<Vec<(String, i64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM uploads GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ----- audit ------------------------------------------------------------

    pub fn audit(&self, rec: &AuditRecord) -> Result<()> {
        self.audit_all(std::slice::from_ref(rec))
    }

    /// Appends `recs` in one transaction: one flush to disk for all.
    /// fsync'd, and so the barrier of the request it audits: the request's
    /// deferred commits are on disk with it (issue 14, speed).
    pub fn audit_all(&self, recs: &[AuditRecord]) -> Result<()> {
        self.covering(|conn| {
            let tx = conn.unchecked_transaction()?;
            for rec in recs {
                tx.prepare_cached("INSERT INTO audit (at, peer_name, role, fingerprint, serial, operation, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(params![
                        rec.at,
                        rec.peer_name,
                        rec.role,
                        rec.fingerprint,
                        rec.serial,
                        rec.operation,
                        rec.outcome
                    ])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn audit_tail(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, peer_name, role, fingerprint, serial, operation, outcome
             FROM audit ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(AuditRecord {
                at: r.get(0)?,
                peer_name: r.get(1)?,
                role: r.get(2)?,
                fingerprint: r.get(3)?,
                serial: r.get(4)?,
                operation: r.get(5)?,
                outcome: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn next_seq(conn: &Connection, job_id: u64) -> Result<u64> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM events WHERE job_id = ?1")?
        .query_row(params![job_id as i64], |r| r.get(0))?;
    Ok(max.unwrap_or(0) as u64 + 1)
}

const JOB_SELECT: &str = "SELECT id, idempotency_key, spec, state, submitted_by, submitted_at,
    finished_at, result, error, error_code FROM jobs";

struct JobRow {
    id: i64,
    key: String,
    spec: String,
    state: String,
    by: String,
    at: i64,
    finished: Option<i64>,
    result: Option<String>,
    error: Option<String>,
    error_code: Option<String>,
}

/// An `ErrorCode` as stored in `jobs.error_code`: its variant name, so the
/// column reads the same whatever the protocol's encoding.
fn code_name(code: ErrorCode) -> String {
    format!("{code:?}")
}

/// A stored `jobs.error_code` back; an unknown name (a newer agent's)
/// reads as no code, which the controller takes as a failure.
fn parse_code(name: &str) -> Option<ErrorCode> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

impl JobRow {
    fn into_job(self) -> Result<JobInfo> {
        Ok(JobInfo {
            id: self.id as u64,
            idempotency_key: self.key,
            spec: serde_json::from_str(&self.spec)?,
            state: JobState::parse(&self.state).unwrap_or(JobState::Interrupted),
            submitted_by: self.by,
            submitted_at: self.at,
            finished_at: self.finished,
            result: self.result.map(|r| serde_json::from_str(&r)).transpose()?,
            error: self.error,
            deduplicated: false,
            error_code: self.error_code.as_deref().and_then(parse_code),
        })
    }
}

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        key: r.get(1)?,
        spec: r.get(2)?,
        state: r.get(3)?,
        by: r.get(4)?,
        at: r.get(5)?,
        finished: r.get(6)?,
        result: r.get(7)?,
        error: r.get(8)?,
        error_code: r.get(9)?,
    })
}

/// One transaction: the job under `key`, inserted `queued` unless a job
/// with that key exists (then that one, not inserted).
fn insert_job_in(
    conn: &Connection,
    key: &str,
    spec: &JobSpec,
    submitted_by: &str,
    now: UnixMillis,
    deployment: Option<&str>,
) -> Result<(JobInfo, bool)> {
    let tx = conn.unchecked_transaction()?;
    if let Some(existing) = job_by_key(&tx, key)? {
        return Ok((existing, false));
    }
    tx.prepare_cached(
        "INSERT INTO jobs (idempotency_key, app, kind, spec, state, submitted_by,
         submitted_at, deployment)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
    )?
    .execute(params![
        key,
        spec.app(),
        spec.kind(),
        serde_json::to_string(spec)?,
        submitted_by,
        now,
        deployment
    ])?;
    let job = job_by_key(&tx, key)?.expect("job just inserted");
    tx.commit()?;
    Ok((job, true))
}

fn query_job(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Option<JobInfo>> {
    conn.prepare_cached(&format!("{JOB_SELECT} {filter}"))?
        .query_row(params, row_to_job)
        .optional()?
        .map(JobRow::into_job)
        .transpose()
}

fn job_by_key(conn: &Connection, key: &str) -> Result<Option<JobInfo>> {
    query_job(conn, "WHERE idempotency_key = ?1", params![key])
}

#[cfg(test)]
mod tests {
    use super::*;
    use golive_shared::protocol::{ActivateRelease, LogLevel};

    fn spec(app: &str) -> JobSpec {
        JobSpec::Activate(ActivateRelease {
            app: app.into(),
            release: "v1".into(),
            rollback: Default::default(),
        })
    }

    /// Issue 14 (speed): a job's life costs one fsync'd commit of its own,
    /// its outcome. Its submission (with its deployment), `running`, its
    /// staged release and N events are written without an fsync each, and
    /// the outcome's fsync covers them: no fdatasync is left to run.
    #[test]
    fn issue14_a_jobs_deferred_commits_and_events_ride_on_its_outcomes_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let (job, inserted) = j
            .insert_job_deferred("k1", &spec("shop"), "ctl", 1, Some("d1"))
            .unwrap();
        assert!(inserted);
        assert_eq!(j.job_deployment(job.id).unwrap().as_deref(), Some("d1"));
        // The same key again: the same job, not a second row.
        let (again, inserted) = j
            .insert_job_deferred("k1", &spec("shop"), "ctl", 2, None)
            .unwrap();
        assert!(!inserted);
        assert_eq!(again.id, job.id);
        j.set_job_running(job.id).unwrap();
        for i in 0..20 {
            j.append_event(
                job.id,
                &EventKind::Log {
                    level: LogLevel::Info,
                    line: format!("line {i}"),
                },
                3,
            )
            .unwrap();
        }
        j.record_staged_for("shop", "v1", Some("ab"), None, 4, Some("d1"))
            .unwrap();
        assert!(j.unsynced() > 0, "deferred commits wait for an fsync");
        j.finish_job(job.id, JobState::Succeeded, None, None, 5)
            .unwrap();
        assert_eq!(j.unsynced(), 0, "the outcome's fsync covered them");
        j.sync().unwrap();
        assert_eq!(j.sync_rounds(), 0, "nothing was left to fdatasync");
        assert_eq!(j.events_after(job.id, 0, 100).unwrap().len(), 20);
        let done = j.job(job.id).unwrap().unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(
            j.release_deployment("shop", "v1").unwrap().as_deref(),
            Some("d1")
        );
    }

    /// Issue 14 (speed): deferred commits (a lock, an upload's outcome)
    /// are made durable by the fsync of the request's audit row, or by one
    /// `sync` shared by all of them; a `sync` with nothing to cover is free.
    #[test]
    fn issue14_deferred_commits_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let j = Journal::open(&path).unwrap();
        let info = |app: &str| LockInfo {
            app: app.into(),
            deployment: "d1".into(),
            holder: "ctl".into(),
            since: 1,
            expires_at: 100,
        };
        j.put_lock(&info("shop"), "t1").unwrap();
        assert_eq!(j.unsynced(), 1);
        j.audit(&AuditRecord {
            at: 1,
            peer_name: "ctl".into(),
            role: "operator".into(),
            fingerprint: "f".into(),
            serial: "s".into(),
            operation: "lock.acquire".into(),
            outcome: "ok".into(),
        })
        .unwrap();
        assert_eq!(j.unsynced(), 0, "the audit row's fsync covered the lock");
        for app in ["a", "b", "c"] {
            j.put_lock(&info(app), "t").unwrap();
        }
        j.delete_lock("a").unwrap();
        assert_eq!(j.unsynced(), 4);
        j.sync().unwrap();
        assert_eq!(
            (j.unsynced(), j.sync_rounds()),
            (0, 1),
            "one fdatasync for four commits"
        );
        j.sync().unwrap();
        assert_eq!(j.sync_rounds(), 1, "nothing new: no fdatasync");
        drop(j);
        // What was synced is what a reopened journal reads.
        let j = Journal::open(&path).unwrap();
        assert!(j.lock("a").unwrap().is_none());
        assert_eq!(j.lock("b").unwrap().unwrap().1, "t");
        assert_eq!(j.lock("shop").unwrap().unwrap().1, "t1");
    }

    /// Issue 14 (speed): deferred commits, fsync'd commits and syncs from
    /// several threads at once: the count of what waits for an fsync stays
    /// true (an fsync'd commit and a sync covering the same commits must
    /// not count them twice), and a last sync leaves nothing waiting.
    #[test]
    fn issue14_concurrent_syncs_and_covering_commits_keep_the_count_true() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::open(&dir.path().join("j.db")).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let j = std::sync::Arc::clone(&j);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let info = LockInfo {
                            app: format!("a{t}"),
                            deployment: "d".into(),
                            holder: "ctl".into(),
                            since: i,
                            expires_at: 100,
                        };
                        j.put_lock(&info, "t").unwrap();
                        if i % 2 == 0 {
                            j.sync().unwrap();
                        } else {
                            j.finish_job(999, JobState::Succeeded, None, None, i)
                                .unwrap();
                        }
                        assert!(j.unsynced() <= 100, "the count never wraps");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        j.sync().unwrap();
        assert_eq!(j.unsynced(), 0);
        let rounds = j.sync_rounds();
        j.sync().unwrap();
        assert_eq!(j.sync_rounds(), rounds, "nothing left: no fdatasync");
    }

    /// A failed job's error code is journaled and read back; a job a
    /// version-7 journal failed (before the column) reads as no code.
    #[test]
    fn issue14_a_failed_jobs_error_code_is_journaled_and_old_rows_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            // A journal as the previous agent left it: schema 7, a failed job.
            let conn = Connection::open(&path).unwrap();
            for (i, step) in MIGRATIONS.iter().take(7).enumerate() {
                conn.execute_batch(step).unwrap();
                conn.pragma_update(None, "user_version", i as i64 + 1)
                    .unwrap();
            }
            conn.execute(
                "INSERT INTO jobs (idempotency_key, app, kind, spec, state, submitted_by,
                 submitted_at, finished_at, error)
                 VALUES ('old', 'shop', 'activate', ?1, 'failed', 'ops', 1, 2, 'it broke')",
                params![serde_json::to_string(&spec("shop")).unwrap()],
            )
            .unwrap();
        }
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
        let old = j.job_by_key("old").unwrap().unwrap();
        assert_eq!(old.error.as_deref(), Some("it broke"));
        assert_eq!(old.error_code, None);

        let (refused, _) = j.insert_job("k1", &spec("shop"), "ops", 3).unwrap();
        j.finish_job(
            refused.id,
            JobState::Failed,
            None,
            Some((ErrorCode::BadRequest, "migration 2 has no down file")),
            4,
        )
        .unwrap();
        let (ok, _) = j.insert_job("k2", &spec("shop"), "ops", 5).unwrap();
        j.finish_job(ok.id, JobState::Succeeded, None, None, 6)
            .unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        let refused = j.job(refused.id).unwrap().unwrap();
        assert_eq!(refused.state, JobState::Failed);
        assert_eq!(refused.error_code, Some(ErrorCode::BadRequest));
        assert_eq!(
            refused.error.as_deref(),
            Some("migration 2 has no down file")
        );
        assert_eq!(j.job(ok.id).unwrap().unwrap().error_code, None);
        assert_eq!(
            parse_code(&code_name(ErrorCode::NotDeclared)),
            Some(ErrorCode::NotDeclared)
        );
        assert_eq!(parse_code("SomethingNewer"), None);
    }

    /// Whatever the umask gave before (a 0644 journal of an older agent),
    /// the journal and the WAL files SQLite creates beside it are 0600.
    #[test]
    fn issue11_the_journal_and_its_wal_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mode = |suffix: &str| {
            let p = dir.path().join(format!("j.db{suffix}"));
            std::fs::metadata(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .permissions()
                .mode()
                & 0o777
        };
        let j = Journal::open(&path).unwrap();
        j.insert_job("k1", &spec("shop"), "alice", 1).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "j.db{suffix}");
        }
        drop(j);
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("j.db{suffix}"));
            if p.exists() {
                std::fs::set_permissions(&p, PermissionsExt::from_mode(0o644)).unwrap();
            }
        }
        let j = Journal::open(&path).unwrap();
        j.insert_job("k2", &spec("shop"), "alice", 2).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "j.db{suffix} after a reopen");
        }
    }

    #[test]
    fn same_key_returns_same_job() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let (a, inserted_a) = j.insert_job("k1", &spec("shop"), "alice", 1).unwrap();
        let (b, inserted_b) = j.insert_job("k1", &spec("shop"), "alice", 2).unwrap();
        assert!(inserted_a && !inserted_b);
        assert_eq!(a.id, b.id);
        assert_eq!(j.jobs(10).unwrap().len(), 1);
    }

    #[test]
    fn recover_marks_running_jobs_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let id = {
            let j = Journal::open(&path).unwrap();
            let (job, _) = j.insert_job("k", &spec("shop"), "alice", 1).unwrap();
            j.set_job_running(job.id).unwrap();
            j.append_event(
                job.id,
                &EventKind::Log {
                    level: LogLevel::Info,
                    line: "started".into(),
                },
                2,
            )
            .unwrap();
            job.id
        };
        let j = Journal::open(&path).unwrap();
        let rec = j.recover(3).unwrap();
        assert_eq!(rec.interrupted_jobs, vec![id]);
        let job = j.job(id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Interrupted);
        let events = j.events_after(id, 0, 100).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].kind,
            EventKind::Finished {
                state: JobState::Interrupted
            }
        );
        assert!(j.recover(4).unwrap().interrupted_jobs.is_empty());
    }

    /// Issue 14 (speed): a release staged by a deployment's job is
    /// recorded with its deployment in one commit; restaging replaces both.
    #[test]
    fn issue14_a_staged_release_is_recorded_with_its_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        j.record_staged_for("shop", "v2", Some("ab"), None, 5, Some("d1"))
            .unwrap();
        assert_eq!(
            j.release_deployment("shop", "v2").unwrap().as_deref(),
            Some("d1")
        );
        j.record_staged("shop", "v2", Some("ab"), None, 6).unwrap();
        assert_eq!(j.release_deployment("shop", "v2").unwrap(), None);
    }

    #[test]
    fn audit_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let rec = AuditRecord {
            at: 1,
            peer_name: "alice".into(),
            role: "operator".into(),
            fingerprint: "ff".into(),
            serial: "1".into(),
            operation: "status".into(),
            outcome: "ok".into(),
        };
        j.audit(&rec).unwrap();
        assert!(j.conn().execute("DELETE FROM audit", []).is_err());
        assert!(
            j.conn()
                .execute("UPDATE audit SET outcome = 'x'", [])
                .is_err()
        );
        assert_eq!(j.audit_tail(5).unwrap(), vec![rec]);
    }

    #[test]
    fn rollback_walks_back_past_rolled_back_releases() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        for (i, r) in ["v0", "v1", "v2"].iter().enumerate() {
            j.record_staged("shop", r, Some("sha"), None, i as i64)
                .unwrap();
        }
        j.record_activation("shop", "v0", None, "activate", 10)
            .unwrap();
        j.record_activation("shop", "v1", Some("v0"), "activate", 11)
            .unwrap();
        j.record_activation("shop", "v2", Some("v1"), "activate", 12)
            .unwrap();
        let all = |_: &str| true;
        assert_eq!(
            j.rollback_target("shop", Some("v2"), all)
                .unwrap()
                .as_deref(),
            Some("v1")
        );
        j.record_activation("shop", "v1", Some("v2"), "rollback", 13)
            .unwrap();
        assert_eq!(
            j.rollback_target("shop", Some("v1"), all)
                .unwrap()
                .as_deref(),
            Some("v0")
        );
        assert_eq!(
            j.rollback_target("shop", Some("v1"), |r| r != "v0")
                .unwrap(),
            None
        );
    }

    #[test]
    fn schema_version_is_recorded_and_newer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let j = Journal::open(&path).unwrap();
            assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
            j.conn()
                .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = Journal::open(&path).err().unwrap();
        assert!(
            err.to_string()
                .contains("newer than this agent understands")
        );
    }
}

/// One backup's catalog row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRow {
    pub info: golive_shared::protocol::BackupInfo,
    /// Final directory of the backup.
    pub dir: String,
    pub partial_dir: String,
}

impl Journal {
    /// Records the intent to write a backup (state `running`).
    #[allow(clippy::too_many_arguments)]
    pub fn backup_started(
        &self,
        id: &str,
        app: &str,
        label: &str,
        dir: &str,
        partial_dir: &str,
        release: Option<&str>,
        deployment: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        self.conn().prepare_cached("INSERT INTO backups (id, app, label, created_at, state, dir, partial_dir, release, deployment)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8)")?.execute(params![id, app, label, now, dir, partial_dir, release, deployment])?;
        Ok(())
    }

    pub fn backup_exists(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM backups WHERE id = ?1", params![id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    pub fn backup_complete(
        &self,
        id: &str,
        parts: &[golive_shared::protocol::BackupPart],
        total: u64,
        now: UnixMillis,
    ) -> Result<()> {
        self.conn().prepare_cached("UPDATE backups SET state = 'complete', parts = ?2, total_bytes = ?3, finished_at = ?4 WHERE id = ?1")?.execute(params![id, serde_json::to_string(parts)?, total as i64, now])?;
        Ok(())
    }

    pub fn backup_failed(&self, id: &str, error: &str, now: UnixMillis) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE backups SET state = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, error, now])?;
        Ok(())
    }

    pub fn backup_verified(&self, id: &str, ok: bool, detail: &str, now: UnixMillis) -> Result<()> {
        self.conn().prepare_cached("UPDATE backups SET verified = ?2, verify_detail = ?3, verified_at = ?4 WHERE id = ?1")?.execute(params![id, ok, detail, now])?;
        Ok(())
    }

    pub fn backup_offsite(&self, id: &str, location: &str) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE backups SET offsite = ?2 WHERE id = ?1")?
            .execute(params![id, location])?;
        Ok(())
    }

    /// Marks a pruned backup (its files are gone; the row stays as history).
    pub fn backup_deleted(&self, id: &str) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE backups SET state = 'deleted' WHERE id = ?1")?
            .execute(params![id])?;
        Ok(())
    }

    pub fn backup(&self, id: &str) -> Result<Option<BackupRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{BACKUP_SELECT} WHERE id = ?1"))?;
        let row = stmt.query_row(params![id], row_to_backup).optional()?;
        row.map(BackupRowRaw::into_row).transpose()
    }

    /// Backups of an app other than deleted ones, newest first.
    pub fn backups(&self, app: &str) -> Result<Vec<BackupRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{BACKUP_SELECT} WHERE app = ?1 AND state != 'deleted' ORDER BY created_at DESC, rowid DESC"
        ))?;
        let rows = stmt.query_map(params![app], row_to_backup)?;
        rows.map(|r| r?.into_row()).collect()
    }

    pub fn set_release_deployment(&self, app: &str, release: &str, deployment: &str) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE releases SET deployment = ?3 WHERE app = ?1 AND id = ?2")?
            .execute(params![app, release, deployment])?;
        Ok(())
    }

    pub fn release_deployment(&self, app: &str, release: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT deployment FROM releases WHERE app = ?1 AND id = ?2",
                params![app, release],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// When release `id` first went live (its first activation, by a deploy
    /// or a rollback), `None` if it never did (issue 12: such a release's id
    /// may be staged again).
    pub fn first_live(&self, app: &str, id: &str) -> Result<Option<UnixMillis>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT MIN(at) FROM activations WHERE app = ?1 AND release = ?2")?
            .query_row(params![app, id], |r| r.get::<_, Option<i64>>(0))?)
    }

    /// When the journal recorded release `id` as staged, `None` when it
    /// does not know it (a directory made by hand, or an agent crash
    /// between the rename and this row).
    pub fn staged_at(&self, app: &str, id: &str) -> Result<Option<UnixMillis>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT staged_at FROM releases WHERE app = ?1 AND id = ?2",
                params![app, id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?)
    }

    pub fn set_job_deployment(&self, id: u64, deployment: &str) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE jobs SET deployment = ?2 WHERE id = ?1")?
            .execute(params![id as i64, deployment])?;
        Ok(())
    }

    pub fn job_deployment(&self, id: u64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT deployment FROM jobs WHERE id = ?1",
                params![id as i64],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }
}

const BACKUP_SELECT: &str = "SELECT id, app, label, created_at, state, dir, partial_dir, release,
    deployment, parts, total_bytes, verified, verified_at, verify_detail, offsite, error FROM backups";

struct BackupRowRaw {
    info: golive_shared::protocol::BackupInfo,
    parts: String,
    dir: String,
    partial_dir: String,
}

impl BackupRowRaw {
    fn into_row(mut self) -> Result<BackupRow> {
        self.info.parts = serde_json::from_str(&self.parts)?;
        Ok(BackupRow {
            info: self.info,
            dir: self.dir,
            partial_dir: self.partial_dir,
        })
    }
}

fn row_to_backup(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRowRaw> {
    Ok(BackupRowRaw {
        info: golive_shared::protocol::BackupInfo {
            id: r.get(0)?,
            app: r.get(1)?,
            label: r.get(2)?,
            created_at: r.get(3)?,
            state: r.get(4)?,
            release: r.get(7)?,
            deployment: r.get(8)?,
            verified: r.get(11)?,
            verified_at: r.get(12)?,
            verify_detail: r.get(13)?,
            parts: Vec::new(),
            total_bytes: r.get::<_, i64>(10)? as u64,
            offsite: r.get(14)?,
            error: r.get(15)?,
        },
        dir: r.get(5)?,
        partial_dir: r.get(6)?,
        parts: r.get(9)?,
    })
}

/// An app in maintenance mode, as journaled when it was turned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceState {
    pub on_since: UnixMillis,
    pub reason: String,
    pub by: String,
}

/// One finished maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    pub on_since: UnixMillis,
    pub off_at: UnixMillis,
    pub downtime_ms: u64,
    pub reason: String,
    pub on_by: String,
    pub off_by: String,
}

impl Journal {
    /// The app's maintenance state: `None` when it is off.
    pub fn maintenance(&self, app: &str) -> Result<Option<MaintenanceState>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT on_since, reason, by FROM maintenance WHERE app = ?1",
                params![app],
                |r| {
                    Ok(MaintenanceState {
                        on_since: r.get(0)?,
                        reason: r.get(1)?,
                        by: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records that the app goes into maintenance. When it already is, the
    /// original row (and its `on_since`) is kept; returns the state in force
    /// and whether this call changed it.
    pub fn maintenance_on(
        &self,
        app: &str,
        reason: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<(MaintenanceState, bool)> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let inserted = tx.prepare_cached("INSERT OR IGNORE INTO maintenance (app, on_since, reason, by) VALUES (?1, ?2, ?3, ?4)")?.execute(params![app, now, reason, by])?;
        let state = tx
            .prepare_cached("SELECT on_since, reason, by FROM maintenance WHERE app = ?1")?
            .query_row(params![app], |r| {
                Ok(MaintenanceState {
                    on_since: r.get(0)?,
                    reason: r.get(1)?,
                    by: r.get(2)?,
                })
            })?;
        tx.commit()?;
        Ok((state, inserted == 1))
    }

    /// Records that the app left maintenance: clears the state and appends
    /// the window to `maintenance_log`. `None` when it was not on.
    pub fn maintenance_off(
        &self,
        app: &str,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<MaintenanceWindow>> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let state = tx
            .prepare_cached("SELECT on_since, reason, by FROM maintenance WHERE app = ?1")?
            .query_row(params![app], |r| {
                Ok(MaintenanceState {
                    on_since: r.get(0)?,
                    reason: r.get(1)?,
                    by: r.get(2)?,
                })
            })
            .optional()?;
        let Some(state) = state else {
            return Ok(None);
        };
        let downtime_ms = (now - state.on_since).max(0) as u64;
        tx.prepare_cached("DELETE FROM maintenance WHERE app = ?1")?
            .execute(params![app])?;
        tx.prepare_cached("INSERT INTO maintenance_log (app, on_since, off_at, downtime_ms, reason, on_by, off_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(params![
                app,
                state.on_since,
                now,
                downtime_ms as i64,
                state.reason,
                state.by,
                by
            ])?;
        tx.commit()?;
        Ok(Some(MaintenanceWindow {
            on_since: state.on_since,
            off_at: now,
            downtime_ms,
            reason: state.reason,
            on_by: state.by,
            off_by: by.to_string(),
        }))
    }

    /// Finished maintenance windows of an app, newest first.
    pub fn maintenance_log(&self, app: &str, limit: u32) -> Result<Vec<MaintenanceWindow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT on_since, off_at, downtime_ms, reason, on_by, off_by FROM maintenance_log
             WHERE app = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![app, limit], |r| {
            Ok(MaintenanceWindow {
                on_since: r.get(0)?,
                off_at: r.get(1)?,
                downtime_ms: r.get::<_, i64>(2)? as u64,
                reason: r.get(3)?,
                on_by: r.get(4)?,
                off_by: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `(on_since, off_at)` of the app's finished maintenance windows that
    /// ended at or after `since`, newest first, at most `limit`.
    pub fn maintenance_windows_since(
        &self,
        app: &str,
        since: UnixMillis,
        limit: u32,
    ) -> Result<Vec<(UnixMillis, UnixMillis)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT on_since, off_at FROM maintenance_log
             WHERE app = ?1 AND off_at >= ?2 ORDER BY seq DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![app, since, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Who submitted the job of `kind` now running for `app` (one job runs
    /// at a time per app, so this is the caller of the running job).
    pub fn running_job_submitter(&self, app: &str, kind: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT submitted_by FROM jobs WHERE app = ?1 AND kind = ?2 AND state = 'running'
                 ORDER BY id DESC LIMIT 1",
                params![app, kind],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// One journaled flag change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    pub name: String,
    pub on: bool,
    pub percent: Option<u8>,
    pub previous_on: bool,
    pub previous_percent: Option<u8>,
    pub by: String,
    pub at: UnixMillis,
}

impl Journal {
    /// Records a flag change of `app`.
    pub fn record_flag_change(&self, app: &str, c: &FlagChange) -> Result<()> {
        self.conn().prepare_cached("INSERT INTO flag_changes (app, name, enabled, percent, previous_enabled, previous_percent, by, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(params![
                app,
                c.name,
                c.on,
                c.percent,
                c.previous_on,
                c.previous_percent,
                c.by,
                c.at
            ])?;
        Ok(())
    }

    /// Flag changes of `app`, newest first.
    pub fn flag_changes(&self, app: &str, limit: u32) -> Result<Vec<FlagChange>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, enabled, percent, previous_enabled, previous_percent, by, at
             FROM flag_changes WHERE app = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![app, limit], |r| {
            Ok(FlagChange {
                name: r.get(0)?,
                on: r.get(1)?,
                percent: r.get(2)?,
                previous_on: r.get(3)?,
                previous_percent: r.get(4)?,
                by: r.get(5)?,
                at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// A journaled watchdog: its public form (no live trigger states, no
/// events) and how many rollback or commit jobs it submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogRow {
    pub id: i64,
    pub info: WatchdogInfo,
    pub attempts: u32,
}

/// What a new watchdog row holds.
pub struct NewWatchdog<'a> {
    pub app: &'a str,
    pub deployment: &'a str,
    pub release: &'a str,
    pub spec: &'a WatchdogSpec,
    pub armed_by: &'a str,
    pub armed_at: UnixMillis,
    pub until: UnixMillis,
    pub confirm_by: Option<UnixMillis>,
}

const WATCHDOG_SELECT: &str = "SELECT id, app, deployment, release, spec, armed_by, armed_at, \
     until, confirm_by, state, reason, rollback_to, fired_at, rollback_job, commit_job, attempts, \
     committed_at, ended_at FROM watchdogs";

fn row_to_watchdog(r: &rusqlite::Row<'_>) -> rusqlite::Result<(WatchdogRow, String, String)> {
    let job = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    Ok((
        WatchdogRow {
            id: r.get(0)?,
            info: WatchdogInfo {
                app: r.get(1)?,
                deployment: r.get(2)?,
                release: r.get(3)?,
                rollback_to: r.get(11)?,
                state: WatchdogState::Armed,
                spec: WatchdogSpec::defaults(),
                armed_by: r.get(5)?,
                armed_at: r.get(6)?,
                until: r.get(7)?,
                confirm_by: r.get(8)?,
                triggers: Vec::new(),
                reason: r.get(10)?,
                fired_at: r.get(12)?,
                rollback_job: job(13)?,
                commit_job: job(14)?,
                committed_at: r.get(16)?,
                ended_at: r.get(17)?,
                events: Vec::new(),
            },
            attempts: r.get::<_, i64>(15)? as u32,
        },
        r.get(4)?,
        r.get(9)?,
    ))
}

fn into_watchdog((mut row, spec, state): (WatchdogRow, String, String)) -> Result<WatchdogRow> {
    row.info.spec = serde_json::from_str(&spec)?;
    row.info.state = WatchdogState::parse(&state).unwrap_or(WatchdogState::Disarmed);
    Ok(row)
}

impl Journal {
    /// Journals a newly armed watchdog, and ends `replaces` (the app's live
    /// one) as disarmed with `why`, in one transaction. Returns the new id.
    pub fn watchdog_arm(&self, w: &NewWatchdog<'_>, replaces: Option<(i64, &str)>) -> Result<i64> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        if let Some((old, why)) = replaces {
            tx.prepare_cached(
                "UPDATE watchdogs SET state = 'disarmed', reason = ?2, ended_at = ?3 WHERE id = ?1",
            )?
            .execute(params![old, why, w.armed_at])?;
            tx.prepare_cached("INSERT INTO watchdog_events (watchdog, at, kind, line) VALUES (?1, ?2, 'disarmed', ?3)")?.execute(params![old, w.armed_at, why])?;
        }
        tx.prepare_cached(
            "INSERT INTO watchdogs (app, deployment, release, spec, armed_by, armed_at, until, \
             confirm_by, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'armed')",
        )?
        .execute(params![
            w.app,
            w.deployment,
            w.release,
            serde_json::to_string(w.spec)?,
            w.armed_by,
            w.armed_at,
            w.until,
            w.confirm_by
        ])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Moves watchdog `id` to `state`; `reason` replaces the stored one when
    /// given; a final state stamps `ended_at`.
    pub fn watchdog_state(
        &self,
        id: i64,
        state: WatchdogState,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE watchdogs SET state = ?2, reason = COALESCE(?3, reason), \
             ended_at = CASE WHEN ?4 THEN ?5 ELSE ended_at END, \
             committed_at = CASE WHEN ?2 = 'committed' THEN ?5 ELSE committed_at END WHERE id = ?1",
            )?
            .execute(params![id, state.as_str(), reason, state.is_final(), now])?;
        Ok(())
    }

    /// Journals the fire: its reason and the release it returns to, before
    /// the rollback is submitted (write the intent, act, write the outcome).
    pub fn watchdog_fired(
        &self,
        id: i64,
        reason: &str,
        rollback_to: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        self.conn().prepare_cached("UPDATE watchdogs SET state = 'fired', reason = ?2, rollback_to = ?3, fired_at = ?4 \
             WHERE id = ?1")?.execute(params![id, reason, rollback_to, now])?;
        Ok(())
    }

    /// Records the rollback (`commit = false`) or commit job submitted for
    /// watchdog `id`, and that it was the `attempts`-th submission.
    pub fn watchdog_job(&self, id: i64, commit: bool, job: u64, attempts: u32) -> Result<()> {
        let column = if commit { "commit_job" } else { "rollback_job" };
        self.conn()
            .prepare_cached(&format!(
                "UPDATE watchdogs SET {column} = ?2, attempts = ?3 WHERE id = ?1"
            ))?
            .execute(params![id, job as i64, attempts])?;
        Ok(())
    }

    /// A re-armed watchdog's new end of window (issue 13: restart).
    pub fn watchdog_until(&self, id: i64, until: UnixMillis) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE watchdogs SET until = ?2 WHERE id = ?1")?
            .execute(params![id, until])?;
        Ok(())
    }

    pub fn watchdog_event(&self, id: i64, at: UnixMillis, kind: &str, line: &str) -> Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO watchdog_events (watchdog, at, kind, line) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, at, kind, line])?;
        Ok(())
    }

    /// The newest `limit` events of watchdog `id`, oldest first.
    pub fn watchdog_events(&self, id: i64, limit: u32) -> Result<Vec<WatchdogEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, kind, line FROM (SELECT seq, at, kind, line FROM watchdog_events \
             WHERE watchdog = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id, limit], |r| {
            Ok(WatchdogEvent {
                at: r.get(0)?,
                kind: r.get(1)?,
                line: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn watchdog(&self, id: i64) -> Result<Option<WatchdogRow>> {
        let conn = self.conn();
        conn.prepare_cached(&format!("{WATCHDOG_SELECT} WHERE id = ?1"))?
            .query_row(params![id], row_to_watchdog)
            .optional()?
            .map(into_watchdog)
            .transpose()
    }

    /// The app's newest watchdog, or the newest of `deployment`.
    pub fn watchdog_of(&self, app: &str, deployment: Option<&str>) -> Result<Option<WatchdogRow>> {
        let conn = self.conn();
        conn.prepare_cached(&format!(
            "{WATCHDOG_SELECT} WHERE app = ?1 AND (?2 IS NULL OR deployment = ?2) \
                 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row(params![app, deployment], row_to_watchdog)
        .optional()?
        .map(into_watchdog)
        .transpose()
    }

    /// Watchdogs with work left (armed, fired, committing), oldest first:
    /// what a start re-arms or finishes.
    pub fn watchdogs_unfinished(&self) -> Result<Vec<WatchdogRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{WATCHDOG_SELECT} WHERE state IN ('armed', 'fired', 'committing') ORDER BY id"
        ))?;
        let rows = stmt.query_map([], row_to_watchdog)?;
        rows.map(|r| into_watchdog(r?)).collect()
    }
}

#[cfg(test)]
mod maintenance_tests {
    use super::*;

    #[test]
    fn maintenance_state_keeps_first_on_and_logs_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        assert_eq!(j.maintenance("shop").unwrap(), None);
        let (s, changed) = j.maintenance_on("shop", "deploy", "alice", 1_000).unwrap();
        assert!(changed);
        assert_eq!(s.on_since, 1_000);
        let (s, changed) = j.maintenance_on("shop", "again", "bob", 2_000).unwrap();
        assert!(!changed);
        assert_eq!((s.on_since, s.reason.as_str()), (1_000, "deploy"));
        let w = j.maintenance_off("shop", "carol", 4_500).unwrap().unwrap();
        assert_eq!(w.downtime_ms, 3_500);
        assert_eq!(j.maintenance("shop").unwrap(), None);
        assert_eq!(j.maintenance_off("shop", "carol", 5_000).unwrap(), None);
        let log = j.maintenance_log("shop", 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].on_by.as_str(), log[0].off_by.as_str()),
            ("alice", "carol")
        );
    }
}

// ----- rollback points and host rollback steps (issue 13) -------------------

/// One step row of a host rollback job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub step: String,
    /// `started`, `done`, `skipped` or `failed`.
    pub state: String,
    pub detail: String,
    /// JSON the step left for the steps after it (a backup id, figures).
    pub data: Option<String>,
    pub attempts: u32,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
}

const POINT_SELECT: &str = "SELECT app, deployment, release, previous, recorded_at, backup,
    database, schema_before, migrations, migration_command, flags, restore, state, state_at,
    rollback_job, error, maintenance FROM rollback_points";

fn row_to_point(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(
    golive_shared::protocol::RollbackPoint,
    String,
    Option<String>,
)> {
    use golive_shared::protocol::{PointState, RestorePolicy, RollbackPoint};
    let restore: String = r.get(11)?;
    let state: String = r.get(12)?;
    Ok((
        RollbackPoint {
            app: r.get(0)?,
            deployment: r.get(1)?,
            release: r.get(2)?,
            previous: r.get(3)?,
            recorded_at: r.get(4)?,
            backup: r.get(5)?,
            database: r.get(6)?,
            schema_before: r.get::<_, Option<i64>>(7)?.map(|v| v as u32),
            migrations: Vec::new(),
            migration_command: r.get(9)?,
            flags: None,
            restore: RestorePolicy::parse(&restore).unwrap_or(RestorePolicy::Forbid),
            maintenance: r.get(16)?,
            state: PointState::parse(&state).unwrap_or(PointState::RollbackFailed),
            state_at: r.get(13)?,
            rollback_job: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
            error: r.get(15)?,
        },
        r.get(8)?,
        r.get(10)?,
    ))
}

fn into_point(
    (mut p, migrations, flags): (
        golive_shared::protocol::RollbackPoint,
        String,
        Option<String>,
    ),
) -> Result<golive_shared::protocol::RollbackPoint> {
    p.migrations = serde_json::from_str(&migrations)?;
    p.flags = flags.map(|f| serde_json::from_str(&f)).transpose()?;
    Ok(p)
}

impl Journal {
    /// Records a deployment's rollback point. A point already recorded for
    /// the same deployment is kept as it is (a resubmitted activation), and
    /// `false` is returned.
    pub fn insert_rollback_point(
        &self,
        p: &golive_shared::protocol::RollbackPoint,
    ) -> Result<bool> {
        let n = self.conn().prepare_cached("INSERT OR IGNORE INTO rollback_points (app, deployment, release, previous, recorded_at,
                backup, database, schema_before, migrations, migration_command, flags, restore,
                state, state_at, rollback_job, error, maintenance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)")?.execute(params![
                p.app,
                p.deployment,
                p.release,
                p.previous,
                p.recorded_at,
                p.backup,
                p.database,
                p.schema_before.map(i64::from),
                serde_json::to_string(&p.migrations)?,
                p.migration_command,
                p.flags.as_ref().map(serde_json::to_string).transpose()?,
                p.restore.as_str(),
                p.state.as_str(),
                p.state_at,
                p.rollback_job.map(|j| j as i64),
                p.error,
                p.maintenance,
            ])?;
        Ok(n == 1)
    }

    /// Sets a point's state; `job` and `error` are kept when `None` is
    /// passed, except that the error is cleared when the state is not
    /// `rollback_failed`.
    /// A pending rollback point marked live after its switch, as a deferred
    /// commit (issue 14, speed): on disk with the activation's outcome
    /// ([`Journal::finish_job`], fsync'd). A crash before leaves it
    /// `pending`, as a failure to write it did before (a warning): the
    /// point itself was fsync'd before the switch.
    pub fn point_live_deferred(&self, app: &str, deployment: &str, now: UnixMillis) -> Result<()> {
        self.deferred(|conn| {
            conn.prepare_cached(
                "UPDATE rollback_points SET state = ?3, state_at = ?4, error = NULL
                 WHERE app = ?1 AND deployment = ?2 AND state = ?5",
            )?
            .execute(params![
                app,
                deployment,
                golive_shared::protocol::PointState::Live.as_str(),
                now,
                golive_shared::protocol::PointState::Pending.as_str()
            ])?;
            Ok(())
        })
    }

    pub fn set_rollback_point_state(
        &self,
        app: &str,
        deployment: &str,
        state: golive_shared::protocol::PointState,
        job: Option<u64>,
        error: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE rollback_points SET state = ?3, state_at = ?4,
                rollback_job = COALESCE(?5, rollback_job),
                error = CASE WHEN ?3 = 'rollback_failed' THEN COALESCE(?6, error) ELSE NULL END
             WHERE app = ?1 AND deployment = ?2",
            )?
            .execute(params![
                app,
                deployment,
                state.as_str(),
                now,
                job.map(|j| j as i64),
                error
            ])?;
        Ok(())
    }

    pub fn rollback_point(
        &self,
        app: &str,
        deployment: &str,
    ) -> Result<Option<golive_shared::protocol::RollbackPoint>> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!(
                "{POINT_SELECT} WHERE app = ?1 AND deployment = ?2"
            ))?
            .query_row(params![app, deployment], row_to_point)
            .optional()?;
        row.map(into_point).transpose()
    }

    /// The app's rollback points, newest first.
    /// The journal's figures for the metrics page (issue 16): jobs by kind
    /// and state with the finished ones' total duration, host rollbacks by
    /// app and state, complete backups by app (count, bytes, newest), and
    /// each app's latest watchdog state.
    pub fn metrics(&self) -> Result<MetricRows> {
        let conn = self.conn();
        let mut rows = MetricRows::default();
        let mut st = conn.prepare_cached(
            "SELECT kind, state, COUNT(*), COALESCE(SUM(CASE WHEN finished_at IS NOT NULL
                 THEN finished_at - submitted_at END), 0),
                 COUNT(finished_at)
             FROM jobs GROUP BY kind, state ORDER BY kind, state",
        )?;
        rows.jobs = st
            .query_map([], |r| {
                Ok(JobCount {
                    kind: r.get(0)?,
                    state: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    finished: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut st = conn.prepare_cached(
            "SELECT app, state, COUNT(*) FROM jobs WHERE kind IN ('host.rollback', 'rollback')
             GROUP BY app, state ORDER BY app, state",
        )?;
        rows.rollbacks = st
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut st = conn.prepare_cached(
            "SELECT app, COUNT(*), COALESCE(SUM(total_bytes), 0), MAX(created_at)
             FROM backups WHERE state = 'complete' GROUP BY app ORDER BY app",
        )?;
        rows.backups = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut st = conn.prepare_cached(
            "SELECT w.app, w.state FROM watchdogs w
             WHERE w.id = (SELECT MAX(id) FROM watchdogs v WHERE v.app = w.app) ORDER BY w.app",
        )?;
        rows.watchdogs = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn rollback_points(
        &self,
        app: &str,
        limit: u32,
    ) -> Result<Vec<golive_shared::protocol::RollbackPoint>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{POINT_SELECT} WHERE app = ?1 ORDER BY recorded_at DESC, rowid DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![app, limit], row_to_point)?;
        rows.map(|r| into_point(r?)).collect()
    }

    /// `(seq, release, at)` of the app's newest activation by a deployment
    /// or an operator (cause `activate`, not a rollback).
    pub fn last_activate(&self, app: &str) -> Result<Option<(u64, String, UnixMillis)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seq, release, at FROM activations WHERE app = ?1 AND cause = 'activate'
                 ORDER BY seq DESC LIMIT 1",
                params![app],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// The steps of a host rollback job, in the order they were started.
    pub fn rollback_steps(&self, job: u64) -> Result<Vec<StepRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT step, state, detail, data, attempts, started_at, finished_at
             FROM rollback_steps WHERE job_id = ?1 ORDER BY started_at, rowid",
        )?;
        let rows = stmt.query_map(params![job as i64], |r| {
            Ok(StepRow {
                step: r.get(0)?,
                state: r.get(1)?,
                detail: r.get(2)?,
                data: r.get(3)?,
                attempts: r.get::<_, i64>(4)? as u32,
                started_at: r.get(5)?,
                finished_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Writes the intent of a step: `started` (again, counting the attempt,
    /// when it was started or failed before). Returns the attempts so far.
    pub fn step_started(&self, job: u64, step: &str, now: UnixMillis) -> Result<u32> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        tx.prepare_cached(
            "INSERT INTO rollback_steps (job_id, step, state, attempts, started_at)
             VALUES (?1, ?2, 'started', 1, ?3)
             ON CONFLICT (job_id, step) DO UPDATE SET state = 'started', attempts = attempts + 1,
                finished_at = NULL",
        )?
        .execute(params![job as i64, step, now])?;
        let attempts: i64 = tx
            .prepare_cached("SELECT attempts FROM rollback_steps WHERE job_id = ?1 AND step = ?2")?
            .query_row(params![job as i64, step], |r| r.get(0))?;
        tx.commit()?;
        Ok(attempts as u32)
    }

    /// Writes the outcome of a step: `done`, `skipped` or `failed`, with
    /// what it left for the next steps. A skipped step that was never
    /// started gets its row here.
    pub fn step_finished(
        &self,
        job: u64,
        step: &str,
        state: &str,
        detail: &str,
        data: Option<&str>,
        now: UnixMillis,
    ) -> Result<()> {
        self.conn().prepare_cached("INSERT INTO rollback_steps (job_id, step, state, detail, data, attempts, started_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)
             ON CONFLICT (job_id, step) DO UPDATE SET state = ?3, detail = ?4,
                data = COALESCE(?5, data), finished_at = ?6")?.execute(params![job as i64, step, state, detail, data, now])?;
        Ok(())
    }

    /// A failed job asked for again (a host rollback resumes from the step
    /// that failed): queued once more, its error cleared.
    pub fn requeue_job(&self, id: u64) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE jobs SET state = 'queued', error = NULL, result = NULL, finished_at = NULL
             WHERE id = ?1",
            )?
            .execute(params![id as i64])?;
        Ok(())
    }

    /// Unfinished (queued or running) jobs of the resumed kinds, oldest
    /// first: after [`Journal::recover`], the ones to run again.
    pub fn unfinished_rollbacks(&self) -> Result<Vec<JobInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{JOB_SELECT} WHERE state IN ('queued', 'running') AND kind IN ('host.rollback', 'rollback')
             ORDER BY id"
        ))?;
        let rows = stmt.query_map([], row_to_job)?;
        rows.map(|r| r?.into_job()).collect()
    }

    /// Backups of `app` with `label` taken for `deployment` at or after
    /// `since` (complete ones), newest first.
    pub fn backups_since(
        &self,
        app: &str,
        label: &str,
        deployment: &str,
        since: UnixMillis,
    ) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM backups WHERE app = ?1 AND label = ?2 AND deployment = ?3
             AND created_at >= ?4 AND state = 'complete' ORDER BY created_at DESC",
        )?;
        let rows = stmt.query_map(params![app, label, deployment, since], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Jobs of `kind` for `app` run under `deployment`'s lease, with their
    /// states (e.g. whether the migration command ran for it).
    pub fn deployment_jobs(&self, app: &str, deployment: &str, kind: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT state FROM jobs WHERE app = ?1 AND deployment = ?2 AND kind = ?3",
        )?;
        let rows = stmt.query_map(params![app, deployment, kind], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod rollback_tests {
    use super::*;
    use golive_shared::protocol::{
        HostRollback, PointMigration, PointState, RestorePolicy, RollbackPoint, RollbackRequester,
    };

    fn point(deployment: &str, at: i64) -> RollbackPoint {
        RollbackPoint {
            app: "shop".into(),
            deployment: deployment.into(),
            release: "v2".into(),
            previous: Some("v1".into()),
            recorded_at: at,
            backup: Some("shop-x-pre-deploy".into()),
            database: Some("main".into()),
            schema_before: Some(3),
            migrations: vec![PointMigration {
                version: 4,
                name: "orders".into(),
                tag: Some("expand".into()),
                has_down: false,
            }],
            migration_command: false,
            flags: Some(vec![]),
            restore: RestorePolicy::Forbid,
            maintenance: true,
            state: PointState::Pending,
            state_at: at,
            rollback_job: None,
            error: None,
        }
    }

    #[test]
    fn issue13_points_are_recorded_once_and_change_state() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        assert!(j.insert_rollback_point(&point("d1", 10)).unwrap());
        assert!(!j.insert_rollback_point(&point("d1", 11)).unwrap());
        assert!(j.insert_rollback_point(&point("d2", 20)).unwrap());
        let newest = j.rollback_points("shop", 1).unwrap();
        assert_eq!(newest[0].deployment, "d2");
        let p = j.rollback_point("shop", "d1").unwrap().unwrap();
        assert_eq!(p, point("d1", 10));
        j.set_rollback_point_state(
            "shop",
            "d1",
            PointState::RollbackFailed,
            Some(7),
            Some("x"),
            30,
        )
        .unwrap();
        let p = j.rollback_point("shop", "d1").unwrap().unwrap();
        assert_eq!(
            (p.state, p.rollback_job, p.error.as_deref()),
            (PointState::RollbackFailed, Some(7), Some("x"))
        );
        j.set_rollback_point_state("shop", "d1", PointState::RolledBack, None, None, 40)
            .unwrap();
        let p = j.rollback_point("shop", "d1").unwrap().unwrap();
        assert_eq!(
            (p.state, p.rollback_job, p.error),
            (PointState::RolledBack, Some(7), None)
        );
    }

    /// An unfinished host rollback is resumed at start, not marked
    /// interrupted; its steps count their attempts.
    #[test]
    fn issue13_unfinished_rollbacks_are_resumed_not_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let spec = JobSpec::HostRollback(HostRollback {
            app: "shop".into(),
            deployment: Some("d1".into()),
            to: None,
            reason: "test".into(),
            requested_by: RollbackRequester::Watchdog,
            force: false,
            restore: None,
        });
        let (rb, _) = j
            .insert_job("rollback:d1:web1", &spec, "watchdog", 1)
            .unwrap();
        j.set_job_running(rb.id).unwrap();
        let other = JobSpec::Activate(golive_shared::protocol::ActivateRelease {
            app: "shop".into(),
            release: "v1".into(),
            rollback: Default::default(),
        });
        let (act, _) = j.insert_job("k2", &other, "alice", 1).unwrap();
        j.set_job_running(act.id).unwrap();
        assert_eq!(j.step_started(rb.id, "reactivate", 2).unwrap(), 1);
        let rec = j.recover(3).unwrap();
        assert_eq!(rec.resumed_jobs, vec![rb.id]);
        assert_eq!(rec.interrupted_jobs, vec![act.id]);
        assert_eq!(j.job(rb.id).unwrap().unwrap().state, JobState::Running);
        assert_eq!(j.unfinished_rollbacks().unwrap().len(), 1);
        assert_eq!(j.step_started(rb.id, "reactivate", 4).unwrap(), 2);
        j.step_finished(rb.id, "reactivate", "done", "v2 -> v1", Some("{}"), 5)
            .unwrap();
        j.step_finished(rb.id, "snapshot", "skipped", "code-only", None, 6)
            .unwrap();
        let steps = j.rollback_steps(rb.id).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].state.as_str(), steps[0].attempts), ("done", 2));
        assert_eq!((steps[1].state.as_str(), steps[1].attempts), ("skipped", 0));
    }
}
