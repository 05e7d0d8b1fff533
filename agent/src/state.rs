//! The agent's shared state: config, journal, revocation list and the change
//! signal that wakes long-polls. One `Arc<Agent>` is handed to every request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use golive_shared::config::AgentConfig;
use golive_shared::protocol::{ErrorBody, ErrorCode, EventKind, JobEvent, UnixMillis, now_millis};
use tokio::sync::watch;

use crate::journal::Journal;
use crate::revocation::DenyList;
use crate::server::noise::Refusals;

pub struct Agent {
    pub config: AgentConfig,
    pub journal: Journal,
    pub started_at: UnixMillis,
    /// The certificate deny list: consulted in the handshake and again on
    /// every request (a connection opened before a revocation).
    pub deny: Arc<DenyList>,
    /// Connections refused before a request was read (logged in summary).
    pub refusals: Refusals,
    /// Bumped on every job event; long-polls wait on it instead of sleeping,
    /// so an idle agent has no timers running.
    changes: watch::Sender<u64>,
    /// One job at a time per app, whatever the lock says: two staging jobs on
    /// the same tree must never interleave.
    app_queues: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Held while the artifact store decides what stays: eviction, the
    /// discard after a failed stage, and the paths that find an artifact
    /// present and rely on it staying (`store` module docs). Never held
    /// across an await.
    pub store_lock: std::sync::Mutex<()>,
}

impl Agent {
    pub fn new(config: AgentConfig, journal: Journal, deny: Arc<DenyList>) -> Agent {
        let app_queues = config
            .apps
            .keys()
            .map(|k| (k.clone(), Arc::new(tokio::sync::Mutex::new(()))))
            .collect();
        let refusals = Refusals::new(std::time::Duration::from_secs(
            config.limits.refusal_log_secs,
        ));
        Agent {
            config,
            journal,
            started_at: now_millis(),
            refusals,
            deny,
            changes: watch::channel(0).0,
            app_queues,
            store_lock: std::sync::Mutex::new(()),
        }
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        artifacts_dir(&self.config)
    }

    /// Takes [`Agent::store_lock`]; a panic while it was held left no
    /// half-made decision worth refusing the store over.
    pub fn lock_store(&self) -> std::sync::MutexGuard<'_, ()> {
        self.store_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn app_queue(&self, app: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.app_queues.get(app).cloned()
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.deny.contains(serial)
    }

    /// Appends a job event and wakes the long-polls.
    pub fn event(&self, job_id: u64, kind: EventKind) -> Option<JobEvent> {
        let ev = self.journal.append_event(job_id, &kind, now_millis());
        self.changes.send_modify(|n| *n += 1);
        ev.ok()
    }

    /// Wakes long-polls without an event (a job changed state).
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The declared app, or an error listing the valid names.
    pub fn known_app(&self, app: &str) -> Result<&golive_shared::config::AppConfig, ErrorBody> {
        self.config.app(app).ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!(
                    "agent {} declares no app {app:?}; declared apps: {}",
                    self.config.agent.name,
                    self.config.app_names()
                ),
            )
        })
    }
}

pub fn artifacts_dir(config: &AgentConfig) -> PathBuf {
    config.agent.state_dir.join("artifacts")
}

/// Maps a journal failure to the one error class the agent answers with.
pub fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, format!("agent internal error: {e}"))
}
