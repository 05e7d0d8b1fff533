//! Access-log figures for the `access-log` probe and the watchdog (SPEC §6,
//! issue 5): error rate (5xx share) and p95 latency over a sliding window,
//! from an nginx or Apache access log that is tailed as it grows.
//!
//! # API
//!
//! ```no_run
//! use std::{path::Path, time::Duration};
//! use golive_agent::accesslog::{self, LogFormat};
//!
//! let format = LogFormat::parse("combined")?; // once, when the config is loaded
//! let s = accesslog::stats(Path::new("/var/log/nginx/access.log"), &format, Duration::from_secs(300))?;
//! println!("{} requests, {:.1}% 5xx, p95 {:?} ms", s.requests, s.error_rate * 100.0, s.p95_ms);
//! # Ok::<(), String>(())
//! ```
//!
//! [`stats`] starts a tailer for the (path, format) on first use and keeps it
//! running, so each later call only sums the window. It blocks (briefly; the
//! first call up to 5 s while the file is read back): call it from
//! `spawn_blocking` in async code. A log that does not
//! exist yet gives 0 requests, not an error; one that cannot be read gives
//! an error naming the path and the fix.
//!
//! # Layout
//!
//! - [`mod@format`]: `combined`, `common`, nginx `log_format` and Apache
//!   `LogFormat` strings → [`LogFormat`].
//! - [`parse`]: one line → time, status, latency, without allocating.
//! - [`window`]: per-second buckets in a ring of at most 1 h, with a
//!   log-linear latency histogram (p95 within 3.2 %).
//! - [`tail`]: the std thread that follows the file (notify + poll),
//!   through rename and truncate rotation.
//!
//! # Bounds
//!
//! Per tailed log: the ring (at most 3600 slots of 48 bytes, plus 4 bytes
//! per non-empty latency bucket per second; see [`window`] and the measured
//! figure in `docs/bench-accesslog.md`), a 256 KiB read buffer, at most
//! [`tail::MAX_LINE`] of partial line, and two threads (`accesslog-tail` and
//! notify's). A tailer not asked for [`tail::IDLE_STOP`] stops.
//!
//! # Current limitations
//!
//! - Lines are placed by the second they carry; a window boundary is a
//!   whole second.
//! - Only `%t` / `$time_local` / `$time_iso8601` are read as times (not
//!   Apache's `%{format}t`).
//! - Truncate rotation is seen only if the tailer looks before the file has
//!   grown back past the position it had read (see [`tail`]).

pub mod format;
pub mod parse;
pub mod tail;
pub mod window;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use format::LogFormat;
pub use parse::Entry;
pub use window::{Excluded, MAX_WINDOW_SECS, Window, WindowStats};

use tail::{Shared, lock};

/// How long the first ask waits for the start-up read of the file.
const READY_WAIT: Duration = Duration::from_secs(5);
/// The smallest ring a tailer starts with, so a later, larger window has
/// some history.
const MIN_RING_SECS: u64 = 300;

/// Every running tailer; few enough that a list will do.
static TAILERS: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

/// Error rate, p95 and counts for the last `window` (whole seconds, at
/// most 1 h) of the access log at `path`, read with `format`. The first
/// call for a (path, format) starts its tailer and waits (up to 5 s) for it
/// to read back the existing file.
pub fn stats(path: &Path, format: &LogFormat, window: Duration) -> Result<WindowStats, String> {
    stats_excluding(path, format, window, &[])
}

/// [`stats`], with the requests of the seconds that overlap `exclude`
/// counted apart (`excluded_requests`, `excluded_5xx`) instead of in the
/// error rate and p95. golive's maintenance windows are passed here by
/// `crate::maintenance::access_log_stats`, the one function the probe and
/// the watchdog use (issue 12, part 12).
pub fn stats_excluding(
    path: &Path,
    format: &LogFormat,
    window: Duration,
    exclude: &[Excluded],
) -> Result<WindowStats, String> {
    if !path.is_absolute() {
        return Err(format!(
            "access log path {} is relative; give an absolute path",
            path.display()
        ));
    }
    let secs = window.as_secs().clamp(1, MAX_WINDOW_SECS);
    let shared = tailer(path, format, secs)?;
    shared.wait_ready(READY_WAIT);
    if let Some(e) = lock(&shared.error).clone() {
        return Err(e);
    }
    let since = shared.started.elapsed().as_secs();
    Ok(lock(&shared.window).stats_excluding(tail::unix_now(), secs, since, exclude))
}

/// The running tailer for (path, format), started if there is none (or
/// the last one ended).
fn tailer(path: &Path, format: &LogFormat, secs: u64) -> Result<Arc<Shared>, String> {
    let mut tailers = lock(&TAILERS);
    tailers.retain(|t| *lock(&t.alive));
    if let Some(t) = tailers
        .iter()
        .find(|t| t.path == path && t.format == *format)
    {
        *lock(&t.last_asked) = Instant::now();
        lock(&t.window).ensure_capacity(secs);
        return Ok(t.clone());
    }
    let shared = Arc::new(Shared::new(
        path.to_path_buf(),
        format.clone(),
        secs.max(MIN_RING_SECS),
    ));
    let for_thread = shared.clone();
    std::thread::Builder::new()
        .name("accesslog-tail".into())
        .spawn(move || tail::run(for_thread, retire))
        .map_err(|e| {
            format!(
                "cannot start the tailer for access log {}: {e}",
                path.display()
            )
        })?;
    tailers.push(shared.clone());
    Ok(shared)
}

/// Removes an idle tailer from the registry (under its lock, so a caller
/// that just found it has already refreshed `last_asked`).
fn retire(shared: &Arc<Shared>) -> bool {
    let mut tailers = lock(&TAILERS);
    if lock(&shared.last_asked).elapsed() < tail::IDLE_STOP {
        return false;
    }
    tailers.retain(|t| !Arc::ptr_eq(t, shared));
    true
}

#[cfg(test)]
mod tests;
