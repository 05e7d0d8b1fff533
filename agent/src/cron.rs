//! Cron mode (issue 16): `golive-agent ensure-running --config FILE`, run
//! by the user's crontab every minute and at reboot, keeps one agent
//! running without root, systemd or a supervisor.
//!
//! Whether an agent runs is what the state directory's lock says
//! (`STATE_DIR/agent.lock`, held by a running agent for its lifetime and
//! dropped by the kernel when it dies, even by kill -9): no pid file is
//! trusted. Two `ensure-running` at once are serialised by a second lock,
//! `STATE_DIR/ensure.lock`, held from the check until the started agent
//! listens, so the second finds the first's agent running and starts
//! nothing. The agent is started as `serve --detached`: it calls setsid
//! (a new session, no controlling terminal), its stdin is /dev/null, and
//! it logs to a size-rotated file ([`crate::logfile`]).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use golive_shared::config::{AgentConfig, LogFormat, LogLevel};
use nix::fcntl::{Flock, FlockArg};

use crate::state;

/// How long `ensure-running` waits for another one's start to finish.
const ENSURE_LOCK_WAIT: Duration = Duration::from_secs(60);
/// How long it waits for the started agent to listen.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Where and how big the detached agent's log is.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
    /// `--log-format` and `--log-level` given to `ensure-running`, passed
    /// on to the agent (else its config's `[log]` decides).
    pub format: Option<LogFormat>,
    pub level: Option<LogLevel>,
}

impl LogOptions {
    /// `STATE_DIR/agent.log`, 10 MiB, 3 old files, unless given.
    pub fn for_config(
        config: &AgentConfig,
        path: Option<PathBuf>,
        max_bytes: Option<u64>,
        keep: Option<u32>,
    ) -> LogOptions {
        LogOptions {
            path: path.unwrap_or_else(|| config.agent.state_dir.join("agent.log")),
            max_bytes: max_bytes.unwrap_or(crate::logfile::DEFAULT_MAX_BYTES),
            keep: keep.unwrap_or(crate::logfile::DEFAULT_KEEP),
            format: None,
            level: None,
        }
    }
}

/// What `ensure-running` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    AlreadyRunning { pid: Option<u32> },
    Started { pid: u32, addr: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("cannot prepare the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another `golive-agent ensure-running` has held {path} for more than {secs}s; \
         is one stuck? (see `ps`, or remove nothing: the lock goes with its process)"
    )]
    Busy { path: PathBuf, secs: u64 },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the agent started (pid {pid}) but exited with {status} before it listened; \
         its last log lines ({log}):\n{tail}"
    )]
    Exited {
        pid: u32,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the agent started (pid {pid}) but did not listen within {secs}s; it may still be \
         starting: see {log}"
    )]
    NotReady { pid: u32, secs: u64, log: PathBuf },
}

fn lock_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(state::PRIVATE_FILE)
        .open(path)
}

/// Whether an agent holds `state_dir`'s lock, and its pid as it wrote it.
/// `None` when no agent runs.
pub fn running(state_dir: &Path) -> std::io::Result<Option<Option<u32>>> {
    let path = state_dir.join("agent.lock");
    if !path.exists() {
        return Ok(None);
    }
    let file = lock_file(&path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Free: no agent. Dropping the Flock unlocks it at once.
        Ok(_free) => Ok(None),
        Err(_) => Ok(Some(
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        )),
    }
}

/// Starts the agent detached unless one runs; see the module docs.
/// `config_path` is what the agent is started with (made absolute).
pub fn ensure_running(
    config: &AgentConfig,
    config_path: &Path,
    log: &LogOptions,
) -> Result<Ensured, EnsureError> {
    let state_dir = &config.agent.state_dir;
    let dir_err = |source| EnsureError::StateDir {
        path: state_dir.clone(),
        source,
    };
    state::create_private_dir(state_dir).map_err(dir_err)?;
    let ensure_path = state_dir.join("ensure.lock");
    let mut file = lock_file(&ensure_path).map_err(dir_err)?;
    let started = Instant::now();
    let _ensure = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => break held,
            Err((f, _)) => {
                if started.elapsed() > ENSURE_LOCK_WAIT {
                    return Err(EnsureError::Busy {
                        path: ensure_path,
                        secs: ENSURE_LOCK_WAIT.as_secs(),
                    });
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    if let Some(pid) = running(state_dir).map_err(dir_err)? {
        return Ok(Ensured::AlreadyRunning { pid });
    }
    // Stale from the last run: its reappearance says the new agent listens.
    let addr_path = state_dir.join("agent.addr");
    let _ = std::fs::remove_file(&addr_path);
    let out = open_log(&log.path).map_err(dir_err)?;
    let err = out.try_clone().map_err(dir_err)?;
    let program = std::env::current_exe().map_err(|source| EnsureError::Spawn {
        program: PathBuf::from("golive-agent"),
        source,
    })?;
    let config_path = std::path::absolute(config_path).map_err(dir_err)?;
    let mut command = Command::new(&program);
    if let Some(format) = log.format {
        command.arg("--log-format").arg(match format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        });
    }
    if let Some(level) = log.level {
        command.arg("--log-level").arg(level.to_string());
    }
    let mut child = command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .arg("--detached")
        .arg("--log-file")
        .arg(&log.path)
        .arg("--log-max-bytes")
        .arg(log.max_bytes.to_string())
        .arg("--log-keep")
        .arg(log.keep.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| EnsureError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id();
    let waited = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(EnsureError::Exited {
                pid,
                status: status.to_string(),
                log: log.path.clone(),
                tail: tail(&log.path, 10),
            });
        }
        if let Ok(addr) = std::fs::read_to_string(&addr_path)
            && !addr.is_empty()
            && running(state_dir).ok().flatten().is_some()
        {
            return Ok(Ensured::Started { pid, addr });
        }
        if waited.elapsed() > READY_WAIT {
            return Err(EnsureError::NotReady {
                pid,
                secs: READY_WAIT.as_secs(),
                log: log.path.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        state::create_private_dir(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(state::PRIVATE_FILE)
        .open(path)
}

/// The last `n` lines of a file, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
