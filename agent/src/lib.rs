//! golive-agent: the daemon that executes go-live steps on one host.
//!
//! # Layout
//!
//! - [`server`]: TLS 1.3 accept loop, HTTP routing, audit (the transport).
//! - [`handlers`]: one module per message family, behind one authorising dispatch.
//! - [`jobs`]: idempotent job submission, the executor, long-poll of events.
//! - [`rollback`]: the host rollback, the one way a host changes back: a
//!   resumable state machine over code, database, flags and hooks, and the
//!   rollback point each deployment records at activation.
//! - [`local`]: the owner-only local socket through which
//!   `golive-agent rollback` asks the running agent for a host rollback.
//! - [`bridge`]: `golive-agent bridge`: stdin/stdout relayed to this agent's
//!   own listen address, for a controller that reaches the host through ssh.
//! - [`lock`]: app locks as renewable leases.
//! - [`release`]: safe unpacking and the `releases/` + `current` layout.
//! - [`exec`]: runs declared programs (process group, timeout, user, output).
//! - [`hooks`]: lifecycle hooks, named commands, permission rules, required files.
//! - [`maintenance`]: maintenance mode (flag file, commands, check, downtime).
//! - [`flags`]: feature flags declared in the config, written atomically.
//! - [`migrate`]: SQL migrations (scan, status, up, down) on SQLite, PostgreSQL, MariaDB.
//! - [`sqldrops`]: what a down migration drops (tables, columns), read from its SQL.
//! - [`probe`]: health probes declared in the config (http(s), tcp, tls, dns,
//!   sql, command, disk, memory, load, cpu, process, file).
//! - [`accesslog`]: access-log tailing: 5xx rate and p95 over a sliding window.
//! - [`preflight`]: read-only checks before a deployment (lock, databases, backup room, files, migrations).
//! - [`backup`]: database and file backups, verify, restore, retention.
//! - [`scan`]: the forbidden-text scan of a release (shared with the controller).
//! - [`journal`]: the SQLite journal, source of truth for all of the above.
//! - [`revocation`]: the certificate deny list, fail-closed, reloaded on change.
//! - [`reload`]: the config check, and its reload on SIGHUP or a change of
//!   the file (a bad file refused, the config in force kept).
//! - [`logfile`]: the size-rotated log file of an agent with no journald.
//! - [`cron`]: cron mode: `ensure-running` starts a detached agent unless
//!   the state directory's lock says one runs.
//! - [`sdnotify`]: systemd's `Type=notify` (READY, RELOADING, STOPPING) and
//!   the watchdog's pings, earned by the runtime and the journal answering.
//! - [`tls`]: rustls server configuration (client certificates required,
//!   the deny list checked in the handshake).
//! - [`watch`]: following a file through its directory (notify), for the
//!   deny list and access logs.
//! - [`watchdog`]: after activation, watches the app and rolls the host back
//!   by itself when a trigger holds; commits when the window ends (one loop
//!   over a closed enum of events).
//!
//! The binary is a thin `main` over [`run`]. The controller can only *name*
//! what this host's config declares: no request carries a command line.
//!
//! # Current limitations
//!
//! See the README's "Not built yet".

pub mod accesslog;
pub mod availability;
pub mod backup;
pub mod bridge;
pub mod cron;
pub mod exec;
pub mod flags;
#[doc(hidden)]
pub mod fuzzing;
pub mod handlers;
pub mod hooks;
pub mod jobs;
pub mod journal;
pub mod local;
pub mod lock;
pub mod log;
pub mod logfile;
pub mod maintenance;
pub mod metrics;
pub mod migrate;
pub mod preflight;
pub mod probe;
pub mod release;
pub mod reload;
pub mod revocation;
pub mod rollback;
/// The release scan is golive-shared's (the controller runs it too).
pub use golive_shared::scan;
pub mod sdnotify;
pub mod server;
pub mod sqldrops;
pub mod state;
pub mod store;
pub mod tls;
pub mod watch;
pub mod watchdog;

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use golive_shared::config::AgentConfig;
use golive_shared::protocol::now_millis;
use nix::fcntl::{Flock, FlockArg};

use crate::journal::Journal;
use crate::release::layout::AppLayout;
use crate::state::Agent;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state directory {path} is in use by another golive-agent{holder}; \
         one agent per state directory: stop the other one or use another agent.state_dir"
    )]
    InUse { path: PathBuf, holder: String },
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Tls(#[from] tls::TlsFileError),
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Revocation(#[from] revocation::ListError),
    #[error("cannot watch the revocation list {path}: {source}")]
    Watch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot create the local socket {path}: {source}; the agent's user must own the state \
         directory"
    )]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Exclusive ownership of a state directory, held for the process lifetime
/// (flock on `STATE/agent.lock`; the kernel drops it if the process dies).
pub struct StateLock {
    _flock: Flock<File>,
}

/// Takes the state-directory lock and writes our pid into it.
/// A new state directory is created owner-only (issue 11; see [`state::tighten`]).
pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, StartError> {
    state::create_private_dir(state_dir).map_err(|source| StartError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join("agent.lock");
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(state::PRIVATE_FILE)
            .open(&path)
            .map_err(|source| StartError::StateDir {
                path: path.clone(),
                source,
            })?
    };
    let mut flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err(_) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(StartError::InUse {
                path: state_dir.to_path_buf(),
                holder,
            });
        }
    };
    let _ = flock.set_len(0);
    let _ = writeln!(&mut *flock, "{}", std::process::id());
    Ok(StateLock { _flock: flock })
}

/// Opens the journal and recovers from a crash: interrupted jobs and uploads
/// are marked, partial files and staging leftovers removed.
pub fn open_state(config: &AgentConfig) -> Result<(StateLock, Journal), StartError> {
    let lock = lock_state_dir(&config.agent.state_dir)?;
    // What an older agent or another umask left readable to others (issue 11).
    let tightened = state::tighten(config).summary();
    if !tightened.is_empty() {
        tracing::warn!("{}", tightened);
    }
    let artifacts = state::artifacts_dir(config);
    state::create_private_dir(&artifacts).map_err(|source| StartError::StateDir {
        path: artifacts.clone(),
        source,
    })?;
    let journal = Journal::open(&config.agent.state_dir.join("journal.db"))?;
    let recovery = journal.recover(now_millis())?;
    if !recovery.resumed_jobs.is_empty() {
        tracing::warn!(
            "host rollbacks unfinished at the last stop, to be resumed: {:?}",
            recovery.resumed_jobs
        );
    }
    if !recovery.interrupted_jobs.is_empty() {
        tracing::warn!(
            "jobs interrupted by the last stop, marked interrupted: {:?}",
            recovery.interrupted_jobs
        );
    }
    for partial in &recovery.partial_uploads {
        if std::fs::remove_file(partial).is_ok() {
            tracing::warn!("removed partial upload {partial}");
        }
    }
    // Partial files whose journal row never got written (crash between
    // create and insert cannot happen: the row is written first) or that a
    // failed removal left behind.
    if let Ok(entries) = std::fs::read_dir(&artifacts) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".partial-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for partial in backup::run::clean_partials(config, &recovery.partial_backups) {
        tracing::warn!(
            "removed the partial backup {} (interrupted; never complete)",
            partial.display()
        );
    }
    for (name, app) in &config.apps {
        if let Ok(removed) = AppLayout::new(&app.root).clean_staging()
            && !removed.is_empty()
        {
            tracing::warn!(
                "app {name}: removed {} unfinished staging leftovers",
                removed.len()
            );
        }
    }
    Ok((lock, journal))
}

/// An agent that holds its state directory and its socket, ready to serve.
pub struct Prepared {
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    /// `[metrics] listen`: plain HTTP on loopback, `GET /metrics` only.
    metrics: Option<tokio::net::TcpListener>,
    /// `STATE_DIR/agent.sock` for `golive-agent rollback` (issue 13).
    local: tokio::net::UnixListener,
    tls: Arc<rustls::ServerConfig>,
    _lock: StateLock,
    _watcher: Option<revocation::Watching>,
}

impl Prepared {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let addr = self.local_addr();
        tracing::info!(
            "golive-agent {} ({}) listening on {addr}",
            golive_shared::GOLIVE_VERSION,
            self.agent.config().agent.name
        );
        // Host rollbacks a stop left unfinished are finished first (issue 13),
        // then the watchdog re-arms what was armed.
        jobs::resume(&self.agent, None);
        watchdog::start(&self.agent);
        let agent = Arc::clone(&self.agent);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut stopping = stopped.clone();
        let plain_metrics = self.metrics.map(|listener| {
            tokio::spawn(metrics::serve_plain(
                Arc::clone(&self.agent),
                listener,
                stopped.clone(),
            ))
        });
        let local = tokio::spawn(local::serve(Arc::clone(&self.agent), self.local, stopped));
        let server = server::serve(self.agent, self.listener, self.tls, async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        // The jobs drain while the connections do: a controller
        // long-polling a job sees it end (or be marked interrupted) instead
        // of holding the connection drain up.
        let jobs = async {
            let _ = stopping.wait_for(|s| *s).await;
            // The watchdog first, so it starts no job while the jobs drain;
            // what is armed stays in the journal, re-armed at the next start.
            watchdog::stop(&agent).await;
            drain_jobs(&agent).await;
        };
        tokio::join!(server, jobs);
        let _ = local.await;
        if let Some(m) = plain_metrics {
            let _ = m.await;
        }
        tracing::info!("golive-agent stopped");
    }

    /// The agent this serves (reload, tests).
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }
}

/// At a stop (issue 16): running jobs get `limits.stop_drain_secs` to
/// finish; past it, every unfinished job is marked interrupted in the
/// journal (a host rollback is left to be resumed) and the programs they
/// run are ended, so no job is left looking alive.
async fn drain_jobs(agent: &Arc<Agent>) {
    use std::time::Duration;
    let bound = Duration::from_secs(agent.config().limits.stop_drain_secs);
    let mut changes = agent.subscribe();
    let deadline = tokio::time::Instant::now() + bound;
    if agent.running_jobs() > 0 {
        tracing::info!(
            "stopping: waiting up to {}s for {} running job(s) to finish",
            bound.as_secs(),
            agent.running_jobs()
        );
    }
    while agent.running_jobs() > 0 {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    if agent.running_jobs() == 0 {
        return;
    }
    let why = format!(
        "the agent was stopped and this job did not finish within limits.stop_drain_secs          ({}s); its programs were ended: check the app and resubmit",
        bound.as_secs()
    );
    match agent.journal.interrupt_at_stop(now_millis(), &why) {
        Ok((interrupted, resumed)) => {
            tracing::warn!(
                "stopping: jobs {interrupted:?} marked interrupted (still running after {}s){}",
                bound.as_secs(),
                if resumed.is_empty() {
                    String::new()
                } else {
                    format!("; host rollbacks {resumed:?} are resumed at the next start")
                }
            );
        }
        Err(e) => tracing::error!(
            "stopping: could not mark the unfinished jobs interrupted: {e}; the next start does"
        ),
    }
    agent.notify();
    let ended = exec::end_all(Duration::from_secs(3));
    if ended > 0 {
        tracing::warn!("stopping: ended {ended} running program(s)");
    }
    // Their tasks see the end of their programs and stop, leaving the
    // journal as marked.
    let settle = tokio::time::Instant::now() + Duration::from_secs(5);
    while agent.running_jobs() > 0 {
        if tokio::time::timeout_at(settle, changes.changed())
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Everything up to a bound socket: deny list, TLS, state lock, journal
/// recovery, revocation watch. The files are read first, so a bad one
/// refuses to start before anything on disk changes.
pub async fn prepare(config: AgentConfig) -> Result<Prepared, StartError> {
    let deny = Arc::new(match &config.tls.revoked {
        Some(p) => revocation::DenyList::load(p)?,
        None => revocation::DenyList::none(),
    });
    let tls = tls::server_config(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
        Arc::clone(&deny),
    )?;
    let (lock, journal) = open_state(&config)?;
    let local = local::bind(&config.agent.state_dir).map_err(|source| StartError::Socket {
        path: local::socket_path(&config.agent.state_dir),
        source,
    })?;
    let listener = listen(config.listen_addr()).map_err(|source| StartError::Bind {
        addr: config.agent.listen.clone(),
        source,
    })?;
    // The plain metrics port (issue 16): loopback only, checked at load.
    let metrics = match config.metrics.listen_addr() {
        Some(addr) => Some(listen(addr).map_err(|source| StartError::Bind {
            addr: format!("{addr} (metrics.listen)"),
            source,
        })?),
        None => None,
    };
    let watcher = revocation::watch(Arc::clone(&deny)).map_err(|source| StartError::Watch {
        path: deny.path().map(Path::to_path_buf).unwrap_or_default(),
        source,
    })?;
    let agent = Arc::new(Agent::new(config, journal, deny));
    let addr = listener.local_addr().ok();
    if let Some(addr) = addr {
        // Tests and the demo listen on port 0 and read the real port here.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(state::PRIVATE_FILE)
            .open(agent.config().agent.state_dir.join("agent.addr"))
            .and_then(|mut f| f.write_all(addr.to_string().as_bytes()));
    }
    Ok(Prepared {
        agent,
        listener,
        metrics,
        local,
        tls,
        _lock: lock,
        _watcher: watcher,
    })
}

/// Length of the listen queue (the kernel caps it at `net.core.somaxconn`,
/// 4096 on current kernels). The accept loop closes what it cannot take at
/// once, so the queue only has to hold a burst: sized so that one peer's
/// 2,000 simultaneous connects do not crowd out an operator's (issue 11).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's own bind does: a restarted agent can bind at once while
    // its old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    prepare(config).await?.serve(shutdown).await;
    Ok(())
}
