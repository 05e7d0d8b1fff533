//! The agent's log (issue 16, part 6): `tracing` events with fields (`app`,
//! `job`, `kind`, `step`, `peer`, `role`, ...), one subscriber set up by
//! `main` with [`init`].
//!
//! - `human` (the default): `TIME LEVEL message key=value ...`, one line per
//!   event. Under journald (stderr is the `JOURNAL_STREAM` systemd names)
//!   the time is left out: the journal stamps every line itself.
//! - `json`: one object per line, `{"timestamp", "level", "message", and
//!   the event's fields}`, for a log shipper.
//!
//! Lines go to the size-rotated log file when one is installed
//! ([`crate::logfile`], cron mode), else to stderr. The level is a single
//! maximum (`--log-level`, `[log] level`): no per-module filter, whose
//! regex engine would cost the agent's binary more than it gives.
//!
//! Secrets never reach these lines: the agent logs names, paths, ids and
//! outcomes, not config values; database passwords, git credentials and
//! webhook URLs are kept out or scrubbed where they are used (tested by
//! `issue16_` tests).

use std::io::Write;

use golive_shared::config::{LogFormat, LogLevel};
use golive_shared::protocol::now_millis;
use golive_shared::timefmt::utc;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// UTC RFC 3339 with milliseconds, as the agent's records are.
#[derive(Debug, Clone, Copy)]
struct Utc;

impl FormatTime for Utc {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&utc(now_millis()))
    }
}

/// Where a formatted event goes: the log file, else stderr. The formatter
/// writes an event whole into one writer, which hands it on when dropped,
/// so a line is never split between two rotated files.
#[derive(Debug, Clone, Copy)]
struct Sink;

struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        if !crate::logfile::write(text.trim_end_matches('\n')) {
            let _ = std::io::stderr().lock().write_all(&self.0);
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM`
/// to its `DEVICE:INODE` (a child whose stderr was redirected keeps the
/// variable but not the stream, hence the comparison).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => dev == st.st_dev.to_string() && ino == st.st_ino.to_string(),
        Err(_) => false,
    }
}

fn max_level(level: LogLevel) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Sets the process's subscriber; the first call wins (a second, as in the
/// tests' in-process agents, changes nothing).
pub fn init(format: LogFormat, level: LogLevel) {
    let stamped = !crate::logfile::installed() && stderr_is_journal();
    let (human, human_journal, json) = match format {
        LogFormat::Human if stamped => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Sink)
                    .with_target(false)
                    .without_time(),
            ),
            None,
        ),
        LogFormat::Human => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Sink)
                    .with_target(false)
                    .with_timer(Utc),
            ),
            None,
            None,
        ),
        LogFormat::Json => (
            None,
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_target(false)
                    .with_writer(Sink)
                    .with_timer(Utc),
            ),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(max_level(level))
        .with(human)
        .with(human_journal)
        .with(json)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue16_the_level_maps_to_a_maximum() {
        use tracing_subscriber::filter::LevelFilter;
        assert_eq!(max_level(LogLevel::Warn), LevelFilter::WARN);
        assert!(max_level(LogLevel::Debug) > max_level(LogLevel::Info));
    }
}
