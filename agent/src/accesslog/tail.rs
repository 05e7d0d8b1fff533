//! The tailer: one std thread per (log, format) that follows the file and
//! feeds its lines into a [`Window`]. It is woken by notify (inotify on the
//! log's directory, through [`crate::watch`]: never by its own reads, and
//! re-armed when the directory is re-created) and, as a safety net, every
//! [`POLL`]; it needs no async
//! runtime, so it keeps running whatever the caller's runtime does.
//!
//! - Start: the last [`BACKREAD`] bytes of an existing file are read at once
//!   (lines are placed by their own time, so a restarted agent has a correct
//!   window). A format without a time starts at the end instead: old lines
//!   would otherwise all count as arriving now.
//! - A log that does not exist yet is waited for; it is read from its start
//!   when it appears.
//! - Rename rotation (logrotate `create`): when the path names another file,
//!   the old descriptor is read to its end and kept, read on every wake, for
//!   [`DRAIN_GRACE`] after it last grew (the server writes to it until it
//!   reopens its logs); the new file is read from its start.
//! - Truncate rotation (`copytruncate`): a file shorter than the position
//!   read is read again from its start. Lines written between the copy and
//!   the truncation are lost to the log itself; if the truncated file grows
//!   past the old position before the tailer looks, the truncation goes
//!   unseen (as with `tail -F`).
//! - A partial last line waits for its newline; a line longer than
//!   [`MAX_LINE`] is skipped and counted as unparsed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memchr::{memchr, memchr_iter};

use super::format::LogFormat;
use super::window::Window;
use crate::watch::DirWatch;

/// How much of an existing file is read back at start.
pub const BACKREAD: u64 = 16 * 1024 * 1024;
/// Longer lines are skipped (and counted as unparsed).
pub const MAX_LINE: usize = 64 * 1024;
/// The safety-net poll, for changes notify does not report (network and
/// some overlay file systems) and for the renamed file being drained.
pub const POLL: Duration = Duration::from_secs(1);
/// How long a renamed-away log keeps being read after it last grew.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// A tailer nobody asked for stats this long stops; the next ask starts a
/// new one, which reads the file back again.
pub const IDLE_STOP: Duration = Duration::from_secs(15 * 60);
/// Bytes read per system call; the window is locked once per chunk.
const CHUNK: usize = 256 * 1024;

/// What the caller and the tailer thread share.
pub(crate) struct Shared {
    pub path: PathBuf,
    pub format: LogFormat,
    pub window: Mutex<Window>,
    pub started: Instant,
    /// When stats were last asked for: the idle stop looks at it.
    pub last_asked: Mutex<Instant>,
    /// Set once the start-up read is done (or the file is found missing).
    ready: Mutex<bool>,
    ready_cv: Condvar,
    /// Why the log cannot be read right now (cleared when it can).
    pub error: Mutex<Option<String>>,
    /// False once the thread has ended (idle stop or panic).
    pub alive: Mutex<bool>,
    /// The tailer thread's id, once it runs (its CPU time is in
    /// `/proc/self/task/TID/stat`; the idle-CPU test reads it).
    pub tid: Mutex<Option<i32>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent line by line, so a
    // panic elsewhere does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(path: PathBuf, format: LogFormat, window_secs: u64) -> Shared {
        Shared {
            path,
            format,
            window: Mutex::new(Window::new(window_secs)),
            started: Instant::now(),
            last_asked: Mutex::new(Instant::now()),
            ready: Mutex::new(false),
            ready_cv: Condvar::new(),
            error: Mutex::new(None),
            alive: Mutex::new(true),
            tid: Mutex::new(None),
        }
    }

    /// Waits (at most `max`) for the start-up read.
    pub fn wait_ready(&self, max: Duration) {
        let guard = lock(&self.ready);
        let _ = self
            .ready_cv
            .wait_timeout_while(guard, max, |ready| !*ready)
            .unwrap_or_else(PoisonError::into_inner);
    }

    fn set_ready(&self) {
        *lock(&self.ready) = true;
        self.ready_cv.notify_all();
    }

    fn set_error(&self, e: Option<String>) {
        *lock(&self.error) = e;
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Feeds the complete lines of `data` into `window`; returns how many bytes
/// were consumed (up to and including the last newline). Empty lines are
/// ignored. This is the hot path the benchmark measures.
pub fn feed_lines(format: &LogFormat, window: &mut Window, data: &[u8], now: i64) -> usize {
    let mut start = 0;
    for nl in memchr_iter(b'\n', data) {
        feed_line(format, window, &data[start..nl], now);
        start = nl + 1;
    }
    start
}

#[inline]
fn feed_line(format: &LogFormat, window: &mut Window, line: &[u8], now: i64) {
    if line.is_empty() {
        return;
    }
    if line.len() > MAX_LINE {
        window.add_unparsed(now);
        return;
    }
    match format.parse_line(line) {
        Some(e) if e.maintenance => window.add_maintenance(e.time.unwrap_or(now), e.status, now),
        Some(e) => window.add(e.time.unwrap_or(now), e.status, e.latency_us, now),
        None => window.add_unparsed(now),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Skipping {
    No,
    /// The rest of a line cut by the back-read's start: not counted.
    Silent,
    /// The rest of an over-long line: counted once as unparsed.
    Counted,
}

/// One open log file and where we are in it.
struct Reader {
    file: File,
    /// (device, inode), to tell when the path names another file.
    id: (u64, u64),
    pos: u64,
    /// The incomplete last line.
    carry: Vec<u8>,
    skipping: Skipping,
    /// When it last grew (for draining a renamed-away file).
    grew: Instant,
}

impl Reader {
    /// Reads to the end of the file; returns whether anything was read.
    fn read_to_end(&mut self, shared: &Shared, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut any = false;
        loop {
            let n = match self.file.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            any = true;
            self.pos += n as u64;
            let now = unix_now();
            let mut window = lock(&shared.window);
            self.feed(&shared.format, &mut window, &buf[..n], now);
        }
        if any {
            self.grew = Instant::now();
        }
        Ok(any)
    }

    fn feed(&mut self, format: &LogFormat, window: &mut Window, chunk: &[u8], now: i64) {
        let mut chunk = chunk;
        if self.skipping != Skipping::No || !self.carry.is_empty() {
            let Some(nl) = memchr(b'\n', chunk) else {
                self.hold(chunk);
                return;
            };
            match self.skipping {
                Skipping::No => {
                    self.carry.extend_from_slice(&chunk[..nl]);
                    feed_line(format, window, &self.carry, now);
                    self.carry.clear();
                }
                Skipping::Counted => window.add_unparsed(now),
                Skipping::Silent => {}
            }
            self.skipping = Skipping::No;
            chunk = &chunk[nl + 1..];
        }
        let used = feed_lines(format, window, chunk, now);
        self.hold(&chunk[used..]);
    }

    /// Keeps an incomplete line, or starts skipping it when too long.
    fn hold(&mut self, part: &[u8]) {
        if self.skipping != Skipping::No {
            return;
        }
        if self.carry.len() + part.len() > MAX_LINE {
            self.carry = Vec::new();
            self.skipping = Skipping::Counted;
            return;
        }
        self.carry.extend_from_slice(part);
    }

    /// Back to the start (the file was truncated).
    fn rewind(&mut self) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.pos = 0;
        self.carry.clear();
        self.skipping = Skipping::No;
        Ok(())
    }
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Opens the log; `backread` starts near the end (see the module doc),
/// otherwise at `start_at_end` ? end : 0.
fn open(path: &Path, backread: bool, start_at_end: bool) -> std::io::Result<Reader> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::other("it is a directory, not a log file"));
    }
    let size = meta.len();
    let (pos, skipping) = if start_at_end {
        (size, Skipping::No)
    } else if backread && size > BACKREAD {
        (size - BACKREAD, Skipping::Silent)
    } else {
        (0, Skipping::No)
    };
    file.seek(SeekFrom::Start(pos))?;
    Ok(Reader {
        file,
        id: file_id(&meta),
        pos,
        carry: Vec::new(),
        skipping,
        grew: Instant::now(),
    })
}

fn read_error(path: &Path, e: &std::io::Error) -> String {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
        "; give the agent's user read access (e.g. the group that owns the log, `adm` on Debian)"
    } else {
        ""
    };
    format!("cannot read access log {}: {e}{hint}", path.display())
}

/// The tailer thread's loop. `retire` is asked after each idle wake whether
/// the tailer should stop (it removes it from the registry when so).
pub(crate) fn run(shared: Arc<Shared>, retire: impl Fn(&Arc<Shared>) -> bool) {
    struct Alive<'a>(&'a Shared);
    impl Drop for Alive<'_> {
        fn drop(&mut self) {
            *lock(&self.0.alive) = false;
            // Nobody waits for a start-up that will not happen.
            self.0.set_ready();
        }
    }
    let _alive = Alive(&shared);
    *lock(&shared.tid) = Some(nix::unistd::gettid().as_raw());
    let (wake_tx, wake_rx): (SyncSender<()>, Receiver<()>) = sync_channel(1);
    // Every relevant event naming the log wakes the tailer; the channel
    // holds one wake-up, so bursts of writes coalesce.
    let mut watch = DirWatch::new(&shared.path, move || {
        let _ = wake_tx.try_send(());
    });
    let mut buf = vec![0u8; CHUNK];
    let mut tail = Tail {
        shared: &shared,
        current: None,
        draining: Vec::new(),
        first: true,
    };
    loop {
        // Unarmed while the directory does not exist, and re-armed once it
        // is back or was replaced; the poll covers the time between.
        watch.check();
        tail.step(&mut buf);
        if tail.first {
            tail.first = false;
            shared.set_ready();
        }
        let _ = wake_rx.recv_timeout(POLL);
        if lock(&shared.last_asked).elapsed() >= IDLE_STOP && retire(&shared) {
            return;
        }
    }
}

struct Tail<'a> {
    shared: &'a Shared,
    /// The file the path named when last looked at.
    current: Option<Reader>,
    /// Renamed-away files still being read (see [`DRAIN_GRACE`]).
    draining: Vec<Reader>,
    /// The first step reads the existing file back.
    first: bool,
}

impl Tail<'_> {
    fn step(&mut self, buf: &mut [u8]) {
        let shared = self.shared;
        let path = &shared.path;
        self.draining.retain_mut(|r| {
            let _ = r.read_to_end(shared, buf);
            r.grew.elapsed() < DRAIN_GRACE
        });
        let format_has_time = shared.format.has_time();
        let result = if self.current.is_some() {
            self.follow(buf)
        } else {
            match open(
                path,
                self.first && format_has_time,
                self.first && !format_has_time,
            ) {
                Ok(mut r) => {
                    let read = r.read_to_end(shared, buf).map(|_| ());
                    self.current = Some(r);
                    read
                }
                // Not there yet: wait for it (no error, no requests).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        };
        shared.set_error(result.err().map(|e| read_error(path, &e)));
    }

    /// Reads what is new in the current file and handles rotation.
    fn follow(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let shared = self.shared;
        let Some(r) = self.current.as_mut() else {
            return Ok(());
        };
        if r.file.metadata()?.len() < r.pos {
            r.rewind()?;
        }
        r.read_to_end(shared, buf)?;
        match std::fs::metadata(&shared.path) {
            Ok(m) if file_id(&m) != r.id => {
                // Renamed away and a new file is at the path: keep reading
                // the old one for a while, read the new one from its start.
                let mut new = open(&shared.path, false, false)?;
                new.read_to_end(shared, buf)?;
                let mut old = std::mem::replace(r, new);
                old.grew = Instant::now();
                self.draining.push(old);
                Ok(())
            }
            Ok(_) => Ok(()),
            // Renamed away, nothing at the path yet: the old file is still
            // ours until the new one appears.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
