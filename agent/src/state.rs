//! The agent's shared state: config, journal, revocation list and the change
//! signal that wakes long-polls. One `Arc<Agent>` is handed to every request.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use golive_shared::config::AgentConfig;
use golive_shared::protocol::{ErrorBody, ErrorCode, EventKind, JobEvent, UnixMillis, now_millis};
use tokio::sync::watch;

use crate::journal::Journal;
use crate::revocation::DenyList;
use crate::server::noise::Refusals;

pub struct Agent {
    /// The config in force: replaced whole by a reload (issue 16, `reload`);
    /// a job, a probe round or a request takes one snapshot and keeps it.
    config: std::sync::RwLock<Arc<AgentConfig>>,
    pub journal: Journal,
    pub started_at: UnixMillis,
    /// The certificate deny list: consulted in the handshake and again on
    /// every request (a connection opened before a revocation).
    pub deny: Arc<DenyList>,
    /// Connections refused before a request was read (logged in summary).
    pub refusals: Refusals,
    /// Connections accepted, reads answered, and the reads' audit rows not
    /// written yet (issue 14).
    pub traffic: crate::server::traffic::Traffic,
    /// Each probe's latest result and its runs since the start, for the
    /// metrics (issue 16).
    pub probes_seen: crate::metrics::ProbeBoard,
    /// Bumped on every job event; long-polls wait on it instead of sleeping,
    /// so an idle agent has no timers running.
    changes: watch::Sender<u64>,
    /// One job at a time per app, whatever the lock says: two staging jobs on
    /// the same tree must never interleave.
    /// Made on first use, so an app a reload adds gets its own.
    app_queues: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Jobs whose task is between start and end (the stop's drain waits
    /// for them, issue 16).
    running_jobs: std::sync::atomic::AtomicUsize,
    /// Held while the artifact store decides what stays: eviction, the
    /// discard after a failed stage, and the paths that find an artifact
    /// present and rely on it staying (`store` module docs). Never held
    /// across an await.
    pub store_lock: std::sync::Mutex<()>,
    /// The way into the watchdog's loop (issue 13), started by
    /// [`crate::watchdog::start`].
    pub watchdog: crate::watchdog::Handle,
}

impl Agent {
    pub fn new(config: AgentConfig, journal: Journal, deny: Arc<DenyList>) -> Agent {
        let refusals = Refusals::new(std::time::Duration::from_secs(
            config.limits.refusal_log_secs,
        ));
        Agent {
            config: std::sync::RwLock::new(Arc::new(config)),
            journal,
            started_at: now_millis(),
            refusals,
            traffic: crate::server::traffic::Traffic::default(),
            probes_seen: crate::metrics::ProbeBoard::default(),
            deny,
            changes: watch::channel(0).0,
            app_queues: std::sync::Mutex::new(HashMap::new()),
            running_jobs: std::sync::atomic::AtomicUsize::new(0),
            store_lock: std::sync::Mutex::new(()),
            watchdog: crate::watchdog::Handle::default(),
        }
    }

    /// The config in force now (a snapshot: a reload does not change it
    /// under the caller).
    pub fn config(&self) -> Arc<AgentConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `config` in force (a reload; `reload` decides what may change).
    pub fn replace_config(&self, config: AgentConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Counts a job's task as running until the guard drops.
    pub fn job_running(self: &Arc<Self>) -> RunningJob {
        self.running_jobs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RunningJob(Arc::clone(self))
    }

    /// Job tasks between start and end.
    pub fn running_jobs(&self) -> usize {
        self.running_jobs.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        artifacts_dir(&self.config())
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
        self.config().app(app)?;
        let mut queues = self.app_queues.lock().unwrap_or_else(|p| p.into_inner());
        Some(Arc::clone(queues.entry(app.to_string()).or_default()))
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
    pub fn known_app(&self, app: &str) -> Result<golive_shared::config::AppConfig, ErrorBody> {
        let config = self.config();
        config.app(app).cloned().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!(
                    "agent {} declares no app {app:?}; declared apps: {}",
                    config.agent.name,
                    config.app_names()
                ),
            )
        })
    }
}

/// Held by a job's task while it runs ([`Agent::job_running`]).
pub struct RunningJob(Arc<Agent>);

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.0
            .running_jobs
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.notify();
    }
}

pub fn artifacts_dir(config: &AgentConfig) -> PathBuf {
    config.agent.state_dir.join("artifacts")
}

// ----- owner-only state (issue 11) -------------------------------------------
//
// The state directory (journal, artifacts, git mirrors, lock, address), the
// backups and the controller's journal hold what nobody else on the host
// should read: database dumps, upload archives, the audit trail. So they are
// the owner's alone, whatever the umask: directories 0700, files 0600.
// Only our own files are created so; the process umask is not changed,
// because releases in an app's root must stay readable by its web server.

pub use golive_shared::private::{PRIVATE_DIR, PRIVATE_FILE};

pub use golive_shared::private::create_private_dir;

pub use golive_shared::private::make_private_file;

/// What [`tighten`] changed, and what it could not.
#[derive(Debug, Default)]
pub struct Tightened {
    /// Paths that gave group or others access, with their old mode.
    pub changed: Vec<(PathBuf, u32)>,
    /// Paths whose mode could not be changed, and why.
    pub failed: Vec<(PathBuf, String)>,
}

impl Tightened {
    /// One line for the log ("" when nothing changed and nothing failed):
    /// how many, and the first few with their old modes.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.changed.is_empty() {
            let shown: Vec<String> = self
                .changed
                .iter()
                .take(8)
                .map(|(p, m)| format!("{} ({m:04o})", p.display()))
                .collect();
            parts.push(format!(
                "took group and other access away from {} path(s) the agent keeps \
                 (tightened to owner-only: directories 0700, files 0600): {}{}",
                self.changed.len(),
                shown.join(", "),
                if self.changed.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
        if !self.failed.is_empty() {
            let shown: Vec<String> = self
                .failed
                .iter()
                .take(4)
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect();
            parts.push(format!(
                "could not make {} path(s) owner-only; fix their owner or mode by hand: {}",
                self.failed.len(),
                shown.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// At start: takes group and other access away from everything under the
/// state directory, and from each app's backup directory when the config
/// moves it elsewhere (there only the directory itself and what golive
/// wrote into it: `APP-*` backups and `.partial-*`). Directories become
/// 0700, files keep their owner bits only (0644 → 0600, git's 0444 → 0400).
/// Symlinks are never followed.
pub fn tighten(config: &AgentConfig) -> Tightened {
    let mut out = Tightened::default();
    let state = &config.agent.state_dir;
    tighten_tree(state, &mut out, &|_| true);
    for (name, app) in &config.apps {
        let Some(dir) = &app.backup.dir else {
            continue;
        };
        if dir.starts_with(state) {
            continue;
        }
        let prefix = format!("{name}-");
        tighten_tree(dir, &mut out, &|entry: &str| {
            entry.starts_with(&prefix) || entry.starts_with(".partial-")
        });
    }
    out
}

/// [`tighten`] of `root` and, recursively, of its entries whose name
/// `keep` accepts (at the top level; everything below those).
fn tighten_tree(root: &Path, out: &mut Tightened, keep: &dyn Fn(&str) -> bool) {
    let mut stack = vec![(root.to_path_buf(), true)];
    while let Some((path, top)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() {
            PRIVATE_DIR
        } else {
            mode & 0o700
        };
        if mode & 0o7077 != 0 {
            match std::fs::set_permissions(&path, PermissionsExt::from_mode(want)) {
                Ok(()) => out.changed.push((path.clone(), mode)),
                Err(e) => out.failed.push((path.clone(), e.to_string())),
            }
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !top || keep(&name.to_string_lossy()) {
                    stack.push((entry.path(), false));
                }
            }
        }
    }
}

/// Maps a journal failure to the one error class the agent answers with.
pub fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, format!("agent internal error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, PermissionsExt::from_mode(m)).unwrap();
    }

    fn config(state: &Path, backups: &Path) -> AgentConfig {
        toml::from_str(&format!(
            "[agent]\nname = \"a1\"\nlisten = \"127.0.0.1:7443\"\nstate_dir = {state:?}\n\
             [tls]\nca = \"/x\"\ncert = \"/x\"\nkey = \"/x\"\n\
             [apps.shop]\nroot = \"/srv/shop\"\n[apps.shop.backup]\ndir = {backups:?}\n"
        ))
        .unwrap()
    }

    #[test]
    fn issue11_new_private_dirs_are_0700_with_their_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        create_private_dir(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&tmp.path().join(d)), 0o700, "{d}");
        }
        // An existing directory is not touched here (tighten does that).
        chmod(&deep, 0o750);
        create_private_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o750);
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        chmod(&file, 0o664);
        make_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(create_private_dir(&file.join("below")).is_err());
    }

    /// Everything under the state directory loses group and other access;
    /// in a backup directory elsewhere only what golive wrote does; a
    /// symlink is never followed.
    #[test]
    fn issue11_tighten_covers_the_state_and_only_golives_backups() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let backups = tmp.path().join("backups");
        let outside = tmp.path().join("outside.txt");
        for d in [
            state.join("git/shop.git/objects/ab"),
            backups.join("shop-20260101T000000Z-manual"),
            backups.join("someone-elses"),
        ] {
            std::fs::create_dir_all(&d).unwrap();
            chmod(&d, 0o755);
        }
        chmod(&state, 0o755);
        chmod(&state.join("git"), 0o755);
        chmod(&backups, 0o755);
        let files = [
            (state.join("journal.db"), 0o644, 0o600),
            (state.join("git/shop.git/objects/ab/cdef"), 0o444, 0o400),
            (state.join("agent.lock"), 0o600, 0o600),
            (
                backups.join("shop-20260101T000000Z-manual/db.zst"),
                0o644,
                0o600,
            ),
            (backups.join("someone-elses/file"), 0o644, 0o644),
            (outside.clone(), 0o644, 0o644),
        ];
        for (f, before, _) in &files {
            std::fs::write(f, b"x").unwrap();
            chmod(f, *before);
        }
        symlink(&outside, state.join("link")).unwrap();
        let t = tighten(&config(&state, &backups));
        assert!(t.failed.is_empty(), "{:?}", t.failed);
        for (f, _, after) in &files {
            assert_eq!(mode(f), *after, "{}", f.display());
        }
        for d in [
            state.clone(),
            state.join("git/shop.git/objects/ab"),
            backups.clone(),
            backups.join("shop-20260101T000000Z-manual"),
        ] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&backups.join("someone-elses")), 0o755);
        let summary = t.summary();
        assert!(
            summary.contains("took group and other access away from"),
            "{summary}"
        );
        assert!(
            summary.contains(&format!("{} (0755)", state.display())),
            "{summary}"
        );
        // A second start finds nothing to do, and says nothing.
        assert_eq!(tighten(&config(&state, &backups)).summary(), "");
    }
}
