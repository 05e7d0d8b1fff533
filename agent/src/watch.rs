//! Watching one file through its directory (notify, inotify on Linux): the
//! one way the agent follows a file it does not own (the deny list, access
//! logs, the config file: [`follow`]).
//!
//! Three traps, each seen on this agent before this module (issue 11):
//! - **Our own reads are events.** notify asks inotify for `IN_OPEN`, so a
//!   watcher that reloads on any event reloads forever: the deny-list watcher
//!   spun on a core after the first `mv` into its directory. Only events that
//!   can change what the file holds, or which file the name points at, wake
//!   the owner ([`relevant`]).
//! - **The name is replaced by rename** (atomic updates, logrotate): a watch
//!   on the file itself would follow the old inode and go deaf, so the
//!   directory is watched and events are filtered by name.
//! - **The directory itself goes** (removed, or replaced by a rename): its
//!   watch is then dead. [`DirWatch::check`] notices (the directory's own
//!   events wake the owner, and its device and inode are compared) and
//!   re-arms once a directory is back. Only while it is missing does the
//!   owner need to poll; an armed watch needs no timer.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

/// While the file's directory is missing, how often to look for it again.
const REARM_POLL: Duration = Duration::from_secs(2);

/// A followed file ([`follow`]); dropping it stops the thread.
pub struct Watching {
    stop: Arc<AtomicBool>,
    wake: SyncSender<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
    }
}

/// Follows `path` on a thread named `name`: `changed` runs once a burst of
/// relevant writes has been quiet for `settle`. The thread blocks on a
/// channel, so an idle agent spends no CPU on it; it polls only while the
/// file's directory is missing. The deny list and the config file are
/// followed this way.
pub fn follow(
    path: &Path,
    name: &str,
    settle: Duration,
    mut changed: impl FnMut() + Send + 'static,
) -> std::io::Result<Watching> {
    let (tx, rx) = sync_channel::<()>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let wake = tx.clone();
    let mut dir_watch = DirWatch::new(path, move || {
        let _ = wake.try_send(());
    });
    let stopping = Arc::clone(&stop);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                let woke = if dir_watch.armed() {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(REARM_POLL)
                };
                if stopping.load(Ordering::SeqCst) || woke == Err(RecvTimeoutError::Disconnected) {
                    return;
                }
                // Let a burst of writes finish before reading.
                while rx.recv_timeout(settle).is_ok() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                }
                dir_watch.check();
                changed();
            }
        })?;
    Ok(Watching { stop, wake: tx })
}

/// A file's directory under watch; `wake` runs (on notify's thread) for
/// every relevant event. Keep `wake` cheap: signal a channel, nothing more.
pub struct DirWatch {
    dir: PathBuf,
    name: OsString,
    /// (device, inode) of the directory the live watch is on.
    watched: Option<(u64, u64)>,
    watcher: Option<notify::RecommendedWatcher>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl DirWatch {
    /// Watches `file`'s directory when it exists; otherwise the watch is
    /// unarmed until a [`DirWatch::check`] finds the directory.
    pub fn new(file: &Path, wake: impl Fn() + Send + Sync + 'static) -> DirWatch {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut w = DirWatch {
            dir,
            name: file
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default(),
            watched: None,
            watcher: None,
            wake: Arc::new(wake),
        };
        w.check();
        w
    }

    /// True while a live watch is on the file's directory.
    pub fn armed(&self) -> bool {
        self.watcher.is_some()
    }

    /// Re-arms when the directory was removed or replaced since the watch
    /// was made; returns true when it (re)armed just now, so the owner
    /// re-reads the file (it may have changed while nobody watched).
    pub fn check(&mut self) -> bool {
        let now = std::fs::metadata(&self.dir)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| (m.dev(), m.ino()));
        if self.watcher.is_some() && now.is_some() && now == self.watched {
            return false;
        }
        self.watcher = None;
        self.watched = None;
        let Some(id) = now else { return false };
        let name = self.name.clone();
        let dir = self.dir.clone();
        let wake = Arc::clone(&self.wake);
        let handler = move |event: notify::Result<notify::Event>| {
            // An error (a queue overflow, a watch gone) may hide a change.
            if event.as_ref().map_or(true, |e| relevant(e, &dir, &name)) {
                wake();
            }
        };
        let Ok(mut watcher) = notify::recommended_watcher(handler) else {
            return false;
        };
        if watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .is_err()
        {
            return false;
        }
        self.watcher = Some(watcher);
        self.watched = Some(id);
        true
    }
}

/// Whether an event can change the file named `name` in `dir` (or the
/// directory itself). Opens, reads and closes without writing are not
/// changes: reacting to them makes a reader wake itself forever.
pub fn relevant(event: &notify::Event, dir: &Path, name: &OsString) -> bool {
    let changes = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    };
    changes
        && (event.need_rescan()
            || event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()) || p == dir))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// Waits (bounded) until `count` passes `at_least`.
    fn wait_for(count: &AtomicU64, at_least: u64) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if count.load(Ordering::SeqCst) >= at_least {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn counting(file: &Path) -> (DirWatch, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let w = DirWatch::new(file, move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        (w, count)
    }

    #[test]
    fn issue11_reading_the_file_does_not_wake_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("list.txt");
        std::fs::write(&file, "a\n").unwrap();
        let (w, count) = counting(&file);
        assert!(w.armed());
        for _ in 0..20 {
            let _ = std::fs::read_to_string(&file).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(count.load(Ordering::SeqCst), 0, "reads woke the watch");
        // A rename onto the name does.
        let tmp = dir.path().join(".list.new");
        std::fs::write(&tmp, "b\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert!(wait_for(&count, 1), "a rename onto the file was not seen");
        // Another file in the directory does not.
        let before = count.load(Ordering::SeqCst);
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(count.load(Ordering::SeqCst), before);
    }

    #[test]
    fn issue11_a_removed_and_recreated_directory_is_watched_again() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("etc");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("list.txt");
        std::fs::write(&file, "a\n").unwrap();
        let (mut w, count) = counting(&file);
        assert!(w.armed());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(wait_for(&count, 1), "the directory's removal was not seen");
        assert!(!w.check(), "no directory to watch");
        assert!(!w.armed());
        std::fs::create_dir(&dir).unwrap();
        assert!(w.check(), "the re-created directory is armed");
        assert!(!w.check(), "armed once");
        let before = count.load(Ordering::SeqCst);
        std::fs::write(&file, "b\n").unwrap();
        assert!(wait_for(&count, before + 1), "deaf after the re-creation");
        // Replaced by a rename: another inode under the same name.
        let other = base.path().join("etc.new");
        std::fs::create_dir(&other).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::rename(&other, &dir).unwrap();
        assert!(w.check(), "a directory renamed into place is armed");
        let before = count.load(Ordering::SeqCst);
        std::fs::write(&file, "c\n").unwrap();
        assert!(wait_for(&count, before + 1), "deaf after the rename");
    }
}
