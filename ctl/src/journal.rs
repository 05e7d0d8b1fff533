//! The controller's journal (SQLite): deployments, their hosts and steps, so
//! `golivectl rollback ID` and `golivectl show ID` work after the fact.

use std::path::{Path, PathBuf};

use golive_shared::protocol::{ProbeResult, UnixMillis, now_millis};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::gate::Evaluation;

const SCHEMA_VERSION: i64 = 9;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    plan_path TEXT NOT NULL,
    app TEXT NOT NULL,
    release TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    operator TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    state TEXT NOT NULL,
    message TEXT
);
CREATE TABLE deployment_hosts (
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    address TEXT NOT NULL,
    previous_release TEXT,
    state TEXT NOT NULL,
    PRIMARY KEY (deployment, host)
);
CREATE TABLE steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    step TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    state TEXT NOT NULL,
    detail TEXT
);
"#,
    r#"
CREATE TABLE flag_snapshots (
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    percent INTEGER,
    PRIMARY KEY (deployment, host, name)
);
"#,
    // Git-sourced releases: the ref asked for and the commit every host staged.
    r#"
ALTER TABLE deployments ADD COLUMN git_ref TEXT;
ALTER TABLE deployments ADD COLUMN git_commit TEXT;
"#,
    r#"
CREATE TABLE probe_results (
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    phase TEXT NOT NULL,
    at INTEGER NOT NULL,
    probe TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    threshold TEXT,
    duration_ms INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX probe_results_deployment ON probe_results (deployment, host, phase);
CREATE TABLE gate_evaluations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    summary TEXT NOT NULL,
    reasons TEXT NOT NULL
);
CREATE TABLE decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL REFERENCES deployments(id),
    at INTEGER NOT NULL,
    decided_by TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT,
    next_action TEXT NOT NULL
);
ALTER TABLE deployments ADD COLUMN waiting_until INTEGER;
"#,
    // v5: why a deployment started outside its window (`--hotfix --reason`).
    r#"
ALTER TABLE deployments ADD COLUMN hotfix_reason TEXT;
"#,
    // v6 (issue 12): `deploy --force --reason` and the blocking preflight
    // reasons it overrode; what was done to a deployment after it ended.
    r#"
ALTER TABLE deployments ADD COLUMN forced_reason TEXT;
ALTER TABLE deployments ADD COLUMN forced_over TEXT;
CREATE TABLE actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL REFERENCES deployments(id),
    at INTEGER NOT NULL,
    by TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"#,
    // v7 (issue 14): the deployment as data (the compiled deployment and the
    // plan's hash), the controller that runs it (pid, machine, heartbeat),
    // each host-changing step's intent (idempotency key, request) and
    // outcome, and the decisions taken while it ran (facts), for `--resume`.
    r#"
ALTER TABLE deployments ADD COLUMN plan_sha256 TEXT;
ALTER TABLE deployments ADD COLUMN compiled TEXT;
ALTER TABLE deployments ADD COLUMN controller_pid INTEGER;
ALTER TABLE deployments ADD COLUMN controller_host TEXT;
ALTER TABLE deployments ADD COLUMN heartbeat_at INTEGER;
ALTER TABLE steps ADD COLUMN idem_key TEXT;
ALTER TABLE steps ADD COLUMN request TEXT;
ALTER TABLE steps ADD COLUMN outcome TEXT;
CREATE INDEX steps_key ON steps (deployment, idem_key);
CREATE TABLE deployment_facts (
    deployment TEXT NOT NULL REFERENCES deployments(id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (deployment, name)
);
"#,
    // v8 (issue 14, stages): a staged deployment's stages in order, each
    // the plan of one app run as its own (sub-)deployment, linked here to
    // its parent; `deployment` is NULL until the stage is given its id.
    r#"
CREATE TABLE deployment_stages (
    parent TEXT NOT NULL REFERENCES deployments(id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    plan_path TEXT NOT NULL,
    deployment TEXT UNIQUE,
    PRIMARY KEY (parent, position)
);
"#,
    // v9 (issue 14, progress): the deployment's typed event stream as
    // `--output json` printed it (`body`: the NDJSON line), in order.
    r#"
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL REFERENCES deployments(id),
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_deployment ON events (deployment, seq);
"#,
];

/// How often a running controller writes its heartbeat.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// A heartbeat older than this means its controller is gone (or hung).
pub const HEARTBEAT_STALE_MS: i64 = 20_000;

pub struct Journal {
    conn: Connection,
    /// Group commit, switched on by [`Journal::group_commit`].
    group: std::cell::Cell<bool>,
    durability: std::sync::Arc<Durability>,
}

/// Group commit of the controller journal (issue 14, speed): in this mode
/// a commit is written to the WAL without its own fsync, and a caller that
/// needs its rows on disk (the executor, before it sends a host-changing
/// request) awaits [`Journal::durable`]: one fdatasync of the WAL, started
/// after the call, covers every commit before it, so the hosts of a wave
/// writing their intents at the same moment share one fsync instead of
/// queueing for one each on the sequencer task. The fsync runs on a
/// blocking thread; the other hosts' futures go on meanwhile.
struct Durability {
    wal: PathBuf,
    dir: PathBuf,
    state: std::sync::Mutex<SyncState>,
    /// (tickets made durable, a failed fsync's error: sticky, the journal
    /// can no longer promise anything).
    done: tokio::sync::watch::Sender<(u64, Option<String>)>,
    /// fsync rounds run (tests: the intents of concurrent hosts share them).
    rounds: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct SyncState {
    asked: u64,
    running: bool,
    dir_synced: bool,
}

impl Durability {
    /// fdatasync of the WAL (and once, of the state directory, so a new
    /// WAL's name is on disk too). No WAL yet means nothing to sync.
    fn sync_now(&self) -> std::io::Result<()> {
        match std::fs::File::open(&self.wal) {
            Ok(f) => f.sync_data()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let first = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            !std::mem::replace(&mut s.dir_synced, true)
        };
        if first {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The fsync loop: each round covers every ticket asked before it
    /// started; it ends when no ticket waits.
    fn run(&self) {
        loop {
            let target = self.state.lock().unwrap_or_else(|p| p.into_inner()).asked;
            let r = self.sync_now();
            self.rounds
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.done.send_modify(|(done, err)| {
                *done = (*done).max(target);
                if let Err(e) = r {
                    err.get_or_insert_with(|| e.to_string());
                }
            });
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.asked == target {
                s.running = false;
                return;
            }
        }
    }
}

impl Drop for Journal {
    /// In group-commit mode, the rows written since the last
    /// [`Journal::durable`] go to disk before the process goes on (or exits).
    fn drop(&mut self) {
        if self.group.get()
            && let Err(e) = self.durability.sync_now()
        {
            eprintln!(
                "golivectl: cannot fsync the controller journal {}: {e}; its last rows may be \
                 lost if the machine stops now",
                self.durability.wal.display()
            );
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub id: String,
    pub plan_path: String,
    pub app: String,
    pub release: String,
    /// Empty for a git-sourced release.
    pub artifact_sha256: String,
    /// The git ref of a git-sourced release.
    pub git_ref: Option<String>,
    /// The commit every host staged that ref at.
    pub git_commit: Option<String>,
    pub operator: String,
    pub started_at: UnixMillis,
    /// The end of the deployment itself (a later rollback does not move it).
    pub finished_at: Option<UnixMillis>,
    /// `finished_at - started_at`, once it ended.
    pub duration_ms: Option<i64>,
    pub state: String,
    pub message: Option<String>,
    /// `--hotfix --reason TEXT`: why it was deployed (outside the window).
    pub hotfix_reason: Option<String>,
    /// `--force --reason TEXT`: why it was deployed over blocking
    /// preflight checks, and which ones (`forced_over`).
    pub forced_reason: Option<String>,
    pub forced_over: Vec<String>,
    pub hosts: Vec<DeploymentHost>,
    pub steps: Vec<Step>,
    /// Probe results before (`phase = "before"`) and after the switch.
    pub probes: Vec<ProbeRecord>,
    pub gate: Vec<GateRecord>,
    pub decisions: Vec<Decision>,
    /// What was done to the deployment after it ended (rollback, flag or
    /// backup restore, migrate down), oldest first.
    pub actions: Vec<Action>,
    /// While a deploy process waits on a pause: until when it promises to
    /// look for a decision (a heartbeat; `None` when nobody waits).
    pub waiting_until: Option<UnixMillis>,
    /// The controller process running it (issue 14): recorded by the
    /// golivectl that started (or resumed) it.
    pub controller: Option<Controller>,
    /// For an `interrupted` deployment: the command that resumes it.
    pub resume: Option<String>,
    /// A staged deployment's stages, in order (empty for one app's).
    pub stages: Vec<Stage>,
    /// The staged deployment this one is a stage of.
    pub stage_of: Option<StageOf>,
    /// Its event stream as journaled (issue 14), oldest first: read by
    /// `show` and the record page ([`Journal::events`]), empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventRecord>,
}

/// One journaled event of a deployment: the NDJSON line `--output json`
/// printed, with its order and time.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub seq: i64,
    pub at: UnixMillis,
    /// The event's `"event"` name.
    pub kind: String,
    /// The event itself (the printed line, parsed).
    pub event: serde_json::Value,
}

/// One stage of a staged deployment: one app's plan, run as its own
/// deployment (`deployment`, once it was given its id).
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// 1-based position: stages run in this order.
    pub position: u32,
    pub name: String,
    pub app: String,
    pub plan_path: String,
    pub deployment: Option<String>,
    /// The stage deployment's state, `pending` before it started.
    pub state: String,
}

/// Where a stage's deployment sits in its staged deployment.
#[derive(Debug, Clone, Serialize)]
pub struct StageOf {
    pub parent: String,
    pub position: u32,
    pub of: u32,
    pub name: String,
}

/// The golivectl process that runs a deployment, and its last heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct Controller {
    pub pid: u32,
    /// The machine's hostname (a pid means something only there).
    pub host: String,
    pub heartbeat_at: UnixMillis,
}

impl Controller {
    /// Whether this controller is gone at `now`: its heartbeat is stale, or
    /// it ran on this machine (`this_host`) and its pid is not alive.
    pub fn gone(&self, now: UnixMillis, this_host: &str, alive: impl Fn(u32) -> bool) -> bool {
        now - self.heartbeat_at > HEARTBEAT_STALE_MS || (self.host == this_host && !alive(self.pid))
    }
}

/// This machine's hostname, as recorded with a controller's pid.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether process `pid` exists on this machine.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A host-changing step as the journal has it, by idempotency key.
#[derive(Debug, Clone)]
pub struct KeyedStep {
    pub seq: i64,
    pub state: String,
    /// The request sent, as JSON.
    pub request: Option<String>,
    /// What it returned, as JSON (journaled with a successful outcome).
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeRecord {
    pub host: String,
    pub phase: String,
    pub at: UnixMillis,
    pub probe: String,
    pub kind: String,
    pub severity: String,
    pub status: String,
    pub value: Option<String>,
    pub threshold: Option<String>,
    pub duration_ms: u64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateRecord {
    pub host: String,
    pub at: UnixMillis,
    pub action: String,
    pub summary: String,
    /// The gate's reasons (probe, severity, value, threshold, action) as JSON.
    pub reasons: serde_json::Value,
}

/// Something done to a deployment after it ended, by whom (issue 12).
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub at: UnixMillis,
    pub by: String,
    /// "rollback", "flags-restored", "backup-restored", "migrate-down", ...
    pub action: String,
    pub detail: String,
}

/// A go/no-go decision on a deployment (seed 000 §5.3): a human's (`go`,
/// `no-go`, `approve` before it starts) or the gate policy's (`rollback`).
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub seq: i64,
    pub at: UnixMillis,
    pub by: String,
    /// "go" or "no-go".
    pub decision: String,
    pub reason: Option<String>,
    pub next_action: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentHost {
    pub host: String,
    pub address: String,
    pub previous_release: Option<String>,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub host: String,
    pub step: String,
    pub started_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub state: String,
    pub detail: Option<String>,
}

/// The system's random source refused: an id made without it would not be
/// unique, so nothing is made.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot make a new {what}: the system's random source (the getrandom system call) failed; \
     nothing was started. golivectl needs it for unique ids: check what restricts this process \
     (a seccomp filter, a very old kernel) and run it again"
)]
pub struct RandomError {
    pub what: &'static str,
}

/// `bytes` random bytes from the system's random source, as hex; an error,
/// never a weaker fallback, when the source fails (issue 11).
pub fn random_hex(bytes: usize, what: &'static str) -> Result<String, RandomError> {
    random_hex_from(
        rustls::crypto::ring::default_provider().secure_random,
        bytes,
        what,
    )
}

fn random_hex_from(
    source: &dyn rustls::crypto::SecureRandom,
    bytes: usize,
    what: &'static str,
) -> Result<String, RandomError> {
    let mut buf = vec![0u8; bytes];
    source.fill(&mut buf).map_err(|_| RandomError { what })?;
    Ok(hex::encode(buf))
}

/// A new deployment id, `dYYYYMMDDTHHMMSS-xxxxxx`: its start second and
/// 24 random bits (two deployments in one second differ).
pub fn new_deployment_id(now: UnixMillis) -> Result<String, RandomError> {
    let stamp = golive_shared::timefmt::utc(now)
        .replace(['-', ':'], "")
        .replace('Z', "");
    Ok(format!("d{stamp}-{}", random_hex(3, "deployment id")?))
}

/// Takes group and other access away from the state directory itself.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the controller state directory {}: {e}",
                dir.display()
            )
        })?;
    if mode & 0o7077 != 0 {
        std::fs::set_permissions(dir, PermissionsExt::from_mode(mode & 0o700)).map_err(|e| {
            anyhow::anyhow!(
                "cannot make the controller state directory {} owner-only (0700, it is {mode:04o}): \
                 {e}; golivectl's user must own it",
                dir.display()
            )
        })?;
        // Once: the next run finds it tightened.
        eprintln!(
            "golivectl: the state directory {} was {mode:04o}; it is owner-only now (0700)",
            dir.display()
        );
    }
    Ok(())
}

/// The controller's state directory: `--state DIR`, else `$GOLIVE_STATE_DIR`,
/// else `$XDG_STATE_HOME/golive`, else `~/.local/state/golive`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GOLIVE_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("golive");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".local/state/golive")
}

impl Journal {
    /// Opens (creating) `DIR/golivectl.db`. The directory and the journal
    /// are owner-only whatever the umask (issue 11): a new directory is
    /// 0700, an existing one loses group and other access, the journal and
    /// its `-wal`/`-shm` are 0600.
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        golive_shared::private::create_private_dir(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the controller state directory {}: {e}",
                dir.display()
            )
        })?;
        private_dir(dir)?;
        let path = dir.join("golivectl.db");
        golive_shared::private::make_private_db(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot make the controller journal {} owner-only (0600): {e}; \
                 golivectl's user must own it",
                path.display()
            )
        })?;
        let conn = Connection::open(&path).map_err(|e| {
            anyhow::anyhow!("cannot open the controller journal {}: {e}", path.display())
        })?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )?;
        // No checkpoint when golivectl exits (issue 14, speed): it wrote
        // the pages back into the database, fsynced it twice and removed
        // the WAL, 40-80 ms at the end of every command. The WAL is on disk
        // (each commit fsynced, or the group commit's fdatasync on drop);
        // the next open reads it, and SQLite still checkpoints while
        // running once the WAL passes 1000 pages.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        anyhow::ensure!(
            found <= SCHEMA_VERSION,
            "controller journal {} has schema {found}, newer than this golivectl ({SCHEMA_VERSION}); use the newer golivectl",
            path.display()
        );
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(Journal {
            conn,
            group: std::cell::Cell::new(false),
            durability: std::sync::Arc::new(Durability {
                wal: dir.join("golivectl.db-wal"),
                dir: dir.to_path_buf(),
                state: Default::default(),
                done: tokio::sync::watch::Sender::new((0, None)),
                rounds: Default::default(),
            }),
        })
    }

    /// Switches this connection to group commit (see `Durability`): from
    /// here, a commit is on disk once a later [`Journal::durable`] returns,
    /// or when the journal is dropped. The deployment's executor does this
    /// once the deployment itself is stored (each commit fsync'd until then).
    pub fn group_commit(&self) -> rusqlite::Result<()> {
        if !self.group.get() {
            self.conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
            self.group.set(true);
        }
        Ok(())
    }

    /// How many group-commit fsync rounds ran.
    pub fn sync_rounds(&self) -> u64 {
        self.durability
            .rounds
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every row committed before this call is on disk when it returns
    /// (immediately outside group-commit mode: each commit was fsync'd).
    /// Callers at the same moment share one fsync.
    pub async fn durable(&self) -> std::io::Result<()> {
        if !self.group.get() {
            return Ok(());
        }
        let d = std::sync::Arc::clone(&self.durability);
        let mut done = d.done.subscribe();
        let ticket = {
            let mut s = d.state.lock().unwrap_or_else(|p| p.into_inner());
            s.asked += 1;
            if !s.running {
                s.running = true;
                let d = std::sync::Arc::clone(&d);
                tokio::task::spawn_blocking(move || d.run());
            }
            s.asked
        };
        loop {
            {
                let (n, err) = &*done.borrow_and_update();
                if let Some(e) = err {
                    return Err(std::io::Error::other(e.clone()));
                }
                if *n >= ticket {
                    return Ok(());
                }
            }
            if done.changed().await.is_err() {
                return Err(std::io::Error::other("the journal's fsync thread is gone"));
            }
        }
    }

    pub fn create_deployment(
        &self,
        id: &str,
        plan_path: &str,
        app: &str,
        release: &str,
        sha: &str,
        operator: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO deployments (id, plan_path, app, release, artifact_sha256, operator, started_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running')",
            params![id, plan_path, app, release, sha, operator, now_millis()],
        )?;
        Ok(())
    }

    /// Records a git-sourced release's ref and, once every host staged it,
    /// the commit.
    pub fn set_git(&self, id: &str, git_ref: &str, commit: Option<&str>) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET git_ref = ?2, git_commit = COALESCE(?3, git_commit) WHERE id = ?1",
            params![id, git_ref, commit],
        )?;
        Ok(())
    }

    /// Records a deployment as a hotfix, with its reason.
    pub fn set_hotfix(&self, id: &str, reason: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET hotfix_reason = ?2 WHERE id = ?1",
            params![id, reason],
        )?;
        Ok(())
    }

    /// Records a deployment forced over blocking preflight checks.
    pub fn set_forced(&self, id: &str, reason: &str, over: &[String]) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET forced_reason = ?2, forced_over = ?3 WHERE id = ?1",
            params![
                id,
                reason,
                serde_json::to_string(over).unwrap_or_else(|_| "[]".into())
            ],
        )?;
        Ok(())
    }

    /// Appends something done to a deployment after it ended.
    pub fn add_action(
        &self,
        deployment: &str,
        by: &str,
        action: &str,
        detail: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO actions (deployment, at, by, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![deployment, now_millis(), by, action, detail],
        )?;
        Ok(())
    }

    /// A later change of a finished deployment's state (a rollback): its
    /// end time and final message stay what they were (issue 12).
    pub fn set_state(&self, id: &str, state: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET state = ?2 WHERE id = ?1",
            params![id, state],
        )?;
        Ok(())
    }

    pub fn finish_deployment(
        &self,
        id: &str,
        state: &str,
        message: Option<&str>,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET state = ?2, message = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, state, message, now_millis()],
        )?;
        Ok(())
    }

    pub fn set_host(
        &self,
        deployment: &str,
        host: &str,
        address: &str,
        previous: Option<&str>,
        state: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO deployment_hosts (deployment, host, address, previous_release, state)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (deployment, host) DO UPDATE SET
                previous_release = COALESCE(excluded.previous_release, previous_release),
                state = excluded.state",
            params![deployment, host, address, previous, state],
        )?;
        Ok(())
    }

    /// Moves host `host` of deployment `deployment` from state `from` to
    /// `to` if it is still in `from`; true when this call moved it. What
    /// `show`, `go` and `no-go` learn from a host is recorded by the one
    /// that moves it (two of them at once record it once).
    pub fn change_host_state(
        &self,
        deployment: &str,
        host: &str,
        from: &str,
        to: &str,
    ) -> rusqlite::Result<bool> {
        let n = self.conn.execute(
            "UPDATE deployment_hosts SET state = ?4 WHERE deployment = ?1 AND host = ?2 AND state = ?3",
            params![deployment, host, from, to],
        )?;
        Ok(n == 1)
    }

    /// [`Journal::set_state`] if the deployment is still in state `from`;
    /// true when this call changed it.
    pub fn change_state(&self, id: &str, from: &str, to: &str) -> rusqlite::Result<bool> {
        let n = self.conn.execute(
            "UPDATE deployments SET state = ?3 WHERE id = ?1 AND state = ?2",
            params![id, from, to],
        )?;
        Ok(n == 1)
    }

    /// Appends one event of a deployment (`body`: its NDJSON line).
    pub fn add_event(&self, deployment: &str, kind: &str, body: &str) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT INTO events (deployment, at, kind, body) VALUES (?1, ?2, ?3, ?4)",
            params![deployment, now_millis(), kind, body],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A deployment's journaled events, oldest first.
    pub fn events(&self, deployment: &str) -> rusqlite::Result<Vec<EventRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, kind, body FROM events WHERE deployment = ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![deployment], |r| {
            let body: String = r.get(3)?;
            Ok(EventRecord {
                seq: r.get(0)?,
                at: r.get(1)?,
                kind: r.get(2)?,
                event: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            })
        })?;
        rows.collect()
    }

    pub fn start_step(&self, deployment: &str, host: &str, step: &str) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT INTO steps (deployment, host, step, started_at, state) VALUES (?1, ?2, ?3, ?4, 'running')",
            params![deployment, host, step, now_millis()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_step(&self, seq: i64, state: &str, detail: Option<&str>) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE steps SET state = ?2, detail = ?3, finished_at = ?4 WHERE seq = ?1",
            params![seq, state, detail, now_millis()],
        )?;
        Ok(())
    }

    pub fn deployment(&self, id: &str) -> rusqlite::Result<Option<Deployment>> {
        let Some(mut d) = self
            .conn
            .query_row(
                "SELECT id, plan_path, app, release, artifact_sha256, operator, started_at, finished_at, state, message,
                        git_ref, git_commit,
                        waiting_until,
                        hotfix_reason, forced_reason, forced_over,
                        controller_pid, controller_host, heartbeat_at
                 FROM deployments WHERE id = ?1",
                params![id],
                |r| {
                    Ok(Deployment {
                        id: r.get(0)?,
                        plan_path: r.get(1)?,
                        app: r.get(2)?,
                        release: r.get(3)?,
                        artifact_sha256: r.get(4)?,
                        git_ref: r.get(10)?,
                        git_commit: r.get(11)?,
                        operator: r.get(5)?,
                        started_at: r.get(6)?,
                        finished_at: r.get(7)?,
                        duration_ms: None,
                        state: r.get(8)?,
                        message: r.get(9)?,
                        hotfix_reason: r.get(13)?,
                        forced_reason: r.get(14)?,
                        forced_over: r
                            .get::<_, Option<String>>(15)?
                            .and_then(|j| serde_json::from_str(&j).ok())
                            .unwrap_or_default(),
                        hosts: Vec::new(),
                        steps: Vec::new(),
                        probes: Vec::new(),
                        gate: Vec::new(),
                        decisions: Vec::new(),
                        actions: Vec::new(),
                        waiting_until: r.get(12)?,
                        controller: match (r.get::<_, Option<i64>>(16)?, r.get(17)?, r.get(18)?) {
                            (Some(pid), Some(host), Some(heartbeat_at)) => Some(Controller {
                                pid: pid as u32,
                                host,
                                heartbeat_at,
                            }),
                            _ => None,
                        },
                        resume: None,
                        stages: Vec::new(),
                        stage_of: None,
                        events: Vec::new(),
                    })
                },
            )
            .optional()?
        else {
            return Ok(None);
        };
        d.duration_ms = d.finished_at.map(|f| f - d.started_at);
        // A running deployment whose controller is gone is not running: it
        // waits for `deploy --resume` (issue 14).
        if d.state == "running"
            && d.controller
                .as_ref()
                .is_some_and(|c| c.gone(now_millis(), &this_host(), pid_alive))
        {
            d.state = "interrupted".into();
            d.resume = Some(format!(
                "golivectl deploy {} --resume {}",
                d.plan_path, d.id
            ));
        }
        let mut stmt = self.conn.prepare(
            "SELECT host, address, previous_release, state FROM deployment_hosts WHERE deployment = ?1 ORDER BY rowid",
        )?;
        d.hosts = stmt
            .query_map(params![id], |r| {
                Ok(DeploymentHost {
                    host: r.get(0)?,
                    address: r.get(1)?,
                    previous_release: r.get(2)?,
                    state: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT host, step, started_at, finished_at, state, detail FROM steps WHERE deployment = ?1 ORDER BY seq",
        )?;
        d.steps = stmt
            .query_map(params![id], |r| {
                Ok(Step {
                    host: r.get(0)?,
                    step: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    state: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT host, phase, at, probe, kind, severity, status, value, threshold, duration_ms, message
             FROM probe_results WHERE deployment = ?1 ORDER BY rowid",
        )?;
        d.probes = stmt
            .query_map(params![id], |r| {
                Ok(ProbeRecord {
                    host: r.get(0)?,
                    phase: r.get(1)?,
                    at: r.get(2)?,
                    probe: r.get(3)?,
                    kind: r.get(4)?,
                    severity: r.get(5)?,
                    status: r.get(6)?,
                    value: r.get(7)?,
                    threshold: r.get(8)?,
                    duration_ms: r.get::<_, i64>(9)? as u64,
                    message: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT host, at, action, summary, reasons FROM gate_evaluations WHERE deployment = ?1 ORDER BY seq",
        )?;
        d.gate = stmt
            .query_map(params![id], |r| {
                let reasons: String = r.get(4)?;
                Ok(GateRecord {
                    host: r.get(0)?,
                    at: r.get(1)?,
                    action: r.get(2)?,
                    summary: r.get(3)?,
                    reasons: serde_json::from_str(&reasons).unwrap_or(serde_json::Value::Null),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        d.decisions = self.decisions(id, 0)?;
        d.stages = self.stages(id)?;
        d.stage_of = self.stage_of(id)?;
        if let (Some(_), Some(of)) = (&d.resume, &d.stage_of) {
            // A stage is carried on by resuming the staged deployment: it
            // resumes this stage, then runs the ones after it.
            let parent_plan: Option<String> = self
                .conn
                .query_row(
                    "SELECT plan_path FROM deployments WHERE id = ?1",
                    params![of.parent],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(plan) = parent_plan {
                d.resume = Some(format!("golivectl deploy {plan} --resume {}", of.parent));
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT at, by, action, detail FROM actions WHERE deployment = ?1 ORDER BY seq",
        )?;
        d.actions = stmt
            .query_map(params![id], |r| {
                Ok(Action {
                    at: r.get(0)?,
                    by: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(d))
    }

    /// Records one host's probe results of a phase ("before" or "after").
    pub fn save_probes(
        &self,
        deployment: &str,
        host: &str,
        phase: &str,
        results: &[ProbeResult],
    ) -> rusqlite::Result<()> {
        let at = now_millis();
        for r in results {
            self.conn.execute(
                "INSERT INTO probe_results (deployment, host, phase, at, probe, kind, severity, status, value, threshold, duration_ms, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    deployment,
                    host,
                    phase,
                    at,
                    r.name,
                    r.kind,
                    r.severity.as_str(),
                    r.status.as_str(),
                    r.value,
                    r.threshold,
                    r.duration_ms as i64,
                    r.message
                ],
            )?;
        }
        Ok(())
    }

    /// Records a gate evaluation with its reasons.
    pub fn save_gate(&self, deployment: &str, e: &Evaluation) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO gate_evaluations (deployment, host, at, action, summary, reasons)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                deployment,
                e.host,
                now_millis(),
                e.action.as_str(),
                e.summary(),
                serde_json::to_string(&e.reasons).unwrap_or_default()
            ],
        )?;
        Ok(())
    }

    /// Marks a deployment paused with a waiting deploy process behind it
    /// until `waiting_until`, or (None) paused with nobody waiting.
    pub fn set_paused(&self, id: &str, waiting_until: Option<UnixMillis>) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET state = 'paused', waiting_until = ?2 WHERE id = ?1",
            params![id, waiting_until],
        )?;
        Ok(())
    }

    /// Back to running after a decision was taken up.
    pub fn set_running(&self, id: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET state = 'running', waiting_until = NULL WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Records a go/no-go decision; its sequence number.
    pub fn add_decision(
        &self,
        deployment: &str,
        by: &str,
        decision: &str,
        reason: Option<&str>,
        next_action: &str,
    ) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT INTO decisions (deployment, at, decided_by, decision, reason, next_action)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![deployment, now_millis(), by, decision, reason, next_action],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Decisions on a deployment with a sequence number above `after`.
    pub fn decisions(&self, deployment: &str, after: i64) -> rusqlite::Result<Vec<Decision>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at, decided_by, decision, reason, next_action FROM decisions
             WHERE deployment = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        stmt.query_map(params![deployment, after], |r| {
            Ok(Decision {
                seq: r.get(0)?,
                at: r.get(1)?,
                by: r.get(2)?,
                decision: r.get(3)?,
                reason: r.get(4)?,
                next_action: r.get(5)?,
            })
        })?
        .collect()
    }

    /// The feature-flag values of a host when the deployment started: part
    /// of its rollback point.
    pub fn save_flags(
        &self,
        deployment: &str,
        host: &str,
        flags: &[(String, bool, Option<u8>)],
    ) -> rusqlite::Result<()> {
        for (name, on, percent) in flags {
            self.conn.execute(
                "INSERT OR REPLACE INTO flag_snapshots (deployment, host, name, enabled, percent)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![deployment, host, name, on, percent.map(i64::from)],
            )?;
        }
        Ok(())
    }

    pub fn flags(
        &self,
        deployment: &str,
        host: &str,
    ) -> rusqlite::Result<Vec<(String, bool, Option<u8>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, enabled, percent FROM flag_snapshots WHERE deployment = ?1 AND host = ?2 ORDER BY name",
        )?;
        stmt.query_map(params![deployment, host], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, Option<i64>>(2)?.map(|p| p as u8),
            ))
        })?
        .collect()
    }

    /// Stores the compiled deployment (JSON) and the plan's hash, before
    /// anything changes on any host (issue 14).
    pub fn store_compiled(
        &self,
        id: &str,
        plan_sha256: &str,
        compiled: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET plan_sha256 = ?2, compiled = ?3 WHERE id = ?1",
            params![id, plan_sha256, compiled],
        )?;
        Ok(())
    }

    /// The stored compiled deployment and plan hash, when it was recorded
    /// (a golivectl before schema 7 recorded none).
    pub fn compiled(&self, id: &str) -> rusqlite::Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT plan_sha256, compiled FROM deployments WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                    ))
                },
            )
            .optional()?
            .and_then(|(h, c)| Some((h?, c?))))
    }

    /// Records this process as the deployment's controller. `Some(previous)`
    /// (a resume) takes it over only from that controller, so two resumes
    /// cannot both run it; `false` when another one took it first.
    pub fn claim_controller(
        &self,
        id: &str,
        pid: u32,
        host: &str,
        previous: Option<&Controller>,
    ) -> rusqlite::Result<bool> {
        let now = now_millis();
        let n = match previous {
            None => self.conn.execute(
                "UPDATE deployments SET controller_pid = ?2, controller_host = ?3, heartbeat_at = ?4 \
                 WHERE id = ?1",
                params![id, pid, host, now],
            )?,
            Some(p) => self.conn.execute(
                "UPDATE deployments SET controller_pid = ?2, controller_host = ?3, heartbeat_at = ?4 \
                 WHERE id = ?1 AND controller_pid = ?5 AND controller_host = ?6 AND heartbeat_at = ?7",
                params![id, pid, host, now, p.pid, p.host, p.heartbeat_at],
            )?,
        };
        Ok(n == 1)
    }

    /// The controller's heartbeat: it still runs the deployment.
    pub fn heartbeat(&self, id: &str, pid: u32) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deployments SET heartbeat_at = ?3 WHERE id = ?1 AND controller_pid = ?2",
            params![id, pid, now_millis()],
        )?;
        Ok(())
    }

    /// Journals a host-changing step's intent (issue 14): its idempotency
    /// key and the request, before it is sent. Returns the step's seq.
    pub fn intent(
        &self,
        deployment: &str,
        host: &str,
        step: &str,
        key: &str,
        request: &str,
    ) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT INTO steps (deployment, host, step, started_at, state, idem_key, request) \
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
            params![deployment, host, step, now_millis(), key, request],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Journals the start of a record step (issue 14: a read or a verdict,
    /// which changes nothing on the host): its key, no request. Returns
    /// the step's seq.
    pub fn record_step(
        &self,
        deployment: &str,
        host: &str,
        step: &str,
        key: &str,
    ) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT INTO steps (deployment, host, step, started_at, state, idem_key) \
             VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            params![deployment, host, step, now_millis(), key],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Journals a step's outcome, with what it returned (JSON) when it
    /// succeeded.
    pub fn outcome(
        &self,
        seq: i64,
        state: &str,
        detail: &str,
        outcome: Option<&str>,
    ) -> rusqlite::Result<()> {
        let n = self.conn.execute(
            "UPDATE steps SET state = ?2, detail = ?3, outcome = ?4, finished_at = ?5 WHERE seq = ?1",
            params![seq, state, detail, outcome, now_millis()],
        )?;
        if n != 1 {
            return Err(rusqlite::Error::QueryReturnedNoRows);
        }
        Ok(())
    }

    /// The newest journaled step of a deployment under idempotency key `key`.
    pub fn step_by_key(&self, deployment: &str, key: &str) -> rusqlite::Result<Option<KeyedStep>> {
        self.conn
            .query_row(
                "SELECT seq, state, request, outcome FROM steps \
                 WHERE deployment = ?1 AND idem_key = ?2 ORDER BY seq DESC LIMIT 1",
                params![deployment, key],
                |r| {
                    Ok(KeyedStep {
                        seq: r.get(0)?,
                        state: r.get(1)?,
                        request: r.get(2)?,
                        outcome: r.get(3)?,
                    })
                },
            )
            .optional()
    }

    /// Marks the steps a dead controller left `running` as `interrupted`
    /// (their jobs are reattached to by key on resume).
    pub fn interrupt_steps(&self, deployment: &str) -> rusqlite::Result<usize> {
        self.conn.execute(
            "UPDATE steps SET state = 'interrupted', finished_at = ?2, \
             detail = COALESCE(detail, 'the controller stopped before its outcome') \
             WHERE deployment = ?1 AND state = 'running'",
            params![deployment, now_millis()],
        )
    }

    /// A decision taken while the deployment ran (issue 14), so that a
    /// resume takes the same one.
    pub fn fact(&self, deployment: &str, name: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM deployment_facts WHERE deployment = ?1 AND name = ?2",
                params![deployment, name],
                |r| r.get(0),
            )
            .optional()
    }

    pub fn set_fact(&self, deployment: &str, name: &str, value: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO deployment_facts (deployment, name, value) VALUES (?1, ?2, ?3)",
            params![deployment, name, value],
        )?;
        Ok(())
    }

    /// Records a staged deployment's stage (issue 14), before any stage
    /// starts.
    pub fn add_stage(
        &self,
        parent: &str,
        position: u32,
        name: &str,
        app: &str,
        plan_path: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO deployment_stages (parent, position, name, app, plan_path) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![parent, position, name, app, plan_path],
        )?;
        Ok(())
    }

    /// Gives a stage its deployment id, before that deployment starts (a
    /// resume finds it there even when the controller died in between).
    pub fn set_stage_deployment(
        &self,
        parent: &str,
        position: u32,
        deployment: &str,
    ) -> rusqlite::Result<()> {
        let n = self.conn.execute(
            "UPDATE deployment_stages SET deployment = ?3 WHERE parent = ?1 AND position = ?2",
            params![parent, position, deployment],
        )?;
        if n != 1 {
            return Err(rusqlite::Error::QueryReturnedNoRows);
        }
        Ok(())
    }

    /// A staged deployment's stages in order, each with its deployment's
    /// state (`pending` before it started, and while its id has no
    /// deployment recorded yet).
    pub fn stages(&self, parent: &str) -> rusqlite::Result<Vec<Stage>> {
        let mut stmt = self.conn.prepare(
            "SELECT s.position, s.name, s.app, s.plan_path, s.deployment, d.state, \
                    d.controller_pid, d.controller_host, d.heartbeat_at \
             FROM deployment_stages s LEFT JOIN deployments d ON d.id = s.deployment \
             WHERE s.parent = ?1 ORDER BY s.position",
        )?;
        let now = now_millis();
        let here = this_host();
        stmt.query_map(params![parent], |r| {
            let mut state: String = r
                .get::<_, Option<String>>(5)?
                .unwrap_or_else(|| "pending".into());
            let controller = match (r.get::<_, Option<i64>>(6)?, r.get(7)?, r.get(8)?) {
                (Some(pid), Some(host), Some(heartbeat_at)) => Some(Controller {
                    pid: pid as u32,
                    host,
                    heartbeat_at,
                }),
                _ => None,
            };
            // As [`Journal::deployment`] says it: a running stage whose
            // controller is gone is interrupted.
            if state == "running" && controller.is_some_and(|c| c.gone(now, &here, pid_alive)) {
                state = "interrupted".into();
            }
            Ok(Stage {
                position: r.get(0)?,
                name: r.get(1)?,
                app: r.get(2)?,
                plan_path: r.get(3)?,
                deployment: r.get(4)?,
                state,
            })
        })?
        .collect()
    }

    /// The staged deployment `deployment` is a stage of, if any.
    pub fn stage_of(&self, deployment: &str) -> rusqlite::Result<Option<StageOf>> {
        self.conn
            .query_row(
                "SELECT parent, position, name, \
                        (SELECT COUNT(*) FROM deployment_stages t WHERE t.parent = s.parent) \
                 FROM deployment_stages s WHERE deployment = ?1",
                params![deployment],
                |r| {
                    Ok(StageOf {
                        parent: r.get(0)?,
                        position: r.get(1)?,
                        name: r.get(2)?,
                        of: r.get(3)?,
                    })
                },
            )
            .optional()
    }

    /// Deployment ids, newest first.
    pub fn deployment_ids(&self, limit: u32) -> rusqlite::Result<Vec<String>> {
        self.deployment_ids_of(None, limit)
    }

    /// The newest `limit` deployment ids, of one app or of all.
    pub fn deployment_ids_of(
        &self,
        app: Option<&str>,
        limit: u32,
    ) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT id FROM deployments WHERE ?1 IS NULL OR app = ?1 \
             ORDER BY started_at DESC, rowid DESC LIMIT ?2",
        )?;
        stmt.query_map(params![app, limit as i64], |r| r.get(0))?
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random source that always fails, as getrandom does under a seccomp
    /// filter that refuses it.
    #[derive(Debug)]
    struct Broken;

    impl rustls::crypto::SecureRandom for Broken {
        fn fill(&self, _: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
            Err(rustls::crypto::GetRandomFailed)
        }
    }

    #[test]
    fn issue11_a_failing_random_source_is_an_error_not_a_weaker_id() {
        let err = random_hex_from(&Broken, 3, "deployment id").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cannot make a new deployment id"), "{text}");
        assert!(
            text.contains("random source") && text.contains("nothing was started"),
            "{text}"
        );
    }

    #[test]
    fn deployment_ids_carry_the_second_and_24_random_bits() {
        // 2026-11-23T05:28:02Z
        let id = new_deployment_id(1_795_411_682_000).unwrap();
        let (stamp, rnd) = id.split_once('-').unwrap();
        assert_eq!(stamp, "d20261123T052802");
        assert_eq!(rnd.len(), 6);
        assert!(rnd.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        // Two ids in one second differ (a collision of 24 random bits, 16
        // times in a row, would be a broken source).
        let ids: std::collections::HashSet<String> = (0..16)
            .map(|_| new_deployment_id(1_795_411_682_000).unwrap())
            .collect();
        assert!(ids.len() > 1, "{ids:?}");
        assert_eq!(random_hex(4, "key").unwrap().len(), 8);
    }

    /// A controller is gone when its heartbeat is stale, or (on this
    /// machine) its pid is dead; a running deployment whose controller is
    /// gone reads as interrupted with its resume command, and only one
    /// resume can take it over.
    #[test]
    fn issue14_a_deployment_without_its_controller_is_interrupted() {
        let c = Controller {
            pid: 42,
            host: "ctl1".into(),
            heartbeat_at: 1_000_000,
        };
        let alive = |_| true;
        let dead = |_| false;
        assert!(!c.gone(1_000_000 + HEARTBEAT_STALE_MS, "ctl1", alive));
        assert!(c.gone(1_000_001 + HEARTBEAT_STALE_MS, "ctl1", alive));
        assert!(c.gone(1_000_500, "ctl1", dead), "dead pid on this machine");
        assert!(
            !c.gone(1_000_500, "elsewhere", dead),
            "a pid on another machine means nothing here"
        );

        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path()).unwrap();
        j.create_deployment("d1", "/srv/golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        // Before a controller is recorded: running (a golivectl before v7).
        assert_eq!(j.deployment("d1").unwrap().unwrap().state, "running");
        // This process: alive, fresh heartbeat.
        j.claim_controller("d1", std::process::id(), &this_host(), None)
            .unwrap();
        let d = j.deployment("d1").unwrap().unwrap();
        assert_eq!((d.state.as_str(), d.resume.as_ref()), ("running", None));
        // A pid that is not alive on this machine.
        j.conn
            .execute(
                "UPDATE deployments SET controller_pid = 2147483646 WHERE id = 'd1'",
                [],
            )
            .unwrap();
        let d = j.deployment("d1").unwrap().unwrap();
        assert_eq!(d.state, "interrupted");
        assert_eq!(
            d.resume.as_deref(),
            Some("golivectl deploy /srv/golive.toml --resume d1")
        );
        // Taken over from that controller once; a second claim on the same
        // old record fails.
        let old = d.controller.unwrap();
        assert!(j.claim_controller("d1", 7, "ctl2", Some(&old)).unwrap());
        assert!(!j.claim_controller("d1", 8, "ctl3", Some(&old)).unwrap());
        // Finished: never interrupted.
        j.finish_deployment("d1", "succeeded", None).unwrap();
        assert_eq!(j.deployment("d1").unwrap().unwrap().state, "succeeded");
    }

    #[test]
    fn issue11_the_state_dir_and_journal_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // New: created owner-only whatever the umask.
        let fresh = tmp.path().join("new/state");
        Journal::open(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("golivectl.db")), 0o600);
        // Existing and wider (an older golivectl): tightened.
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(old.join("golivectl.db"), b"").unwrap();
        std::fs::set_permissions(old.join("golivectl.db"), PermissionsExt::from_mode(0o644))
            .unwrap();
        Journal::open(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&old.join("golivectl.db")), 0o600);
    }

    /// Group commit (issue 14, speed): hosts that journal at the same
    /// moment share the fsync their rows wait for, and every row is on
    /// disk (here: visible to a new connection) once `durable` returns.
    /// Outside group commit `durable` has nothing to do.
    #[tokio::test]
    async fn issue14_concurrent_writers_share_the_fsync_they_wait_for() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        journal
            .create_deployment("d1", "golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        journal.durable().await.unwrap();
        assert_eq!(journal.sync_rounds(), 0, "each commit was fsync'd already");

        journal.group_commit().unwrap();
        let hosts: Vec<String> = (0..20).map(|i| format!("web{i}")).collect();
        let done = crate::fanout::all(20, &hosts, |h| {
            let journal = &journal;
            async move {
                journal
                    .set_host("d1", h, "127.0.0.1:7443", None, "pending")
                    .unwrap();
                journal.durable().await
            }
        })
        .await;
        assert!(done.iter().all(Result::is_ok), "{done:?}");
        let rounds = journal.sync_rounds();
        assert!(
            (1..20).contains(&rounds),
            "20 writers waited for {rounds} fsync round(s)"
        );
        let other = Journal::open(tmp.path()).unwrap();
        let n: i64 = other
            .conn
            .query_row(
                "SELECT count(*) FROM deployment_hosts WHERE deployment = 'd1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 20);
    }

    /// golivectl exits without checkpointing its journal (issue 14, speed:
    /// 40-80 ms at the end of every command): the WAL stays beside the
    /// database, and what it holds is read by the next open.
    #[test]
    fn issue14_the_journal_is_not_checkpointed_when_golivectl_exits() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        journal
            .create_deployment("d1", "golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        drop(journal);
        let wal = tmp.path().join("golivectl.db-wal");
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "the WAL was checkpointed and removed on close");
        let again = Journal::open(tmp.path()).unwrap();
        let n: i64 = again
            .conn
            .query_row(
                "SELECT count(*) FROM deployments WHERE id = 'd1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}
