//! Noise from strangers (issue 11): connections refused before a request is
//! read (failed or stalled handshakes, connections shed past the limits,
//! certificates that may never be admitted) are counted, not logged one
//! line each. A flood of 2,000 sockets wrote 2,000 lines before this.
//!
//! Within a window of `limits.refusal_log_secs`, the first refusal of each
//! (source, reason) is logged at once, up to [`IMMEDIATE`] lines, so an
//! operator with a wrong certificate still sees why at once; everything else
//! is summed and logged as one line when the window ends, with counts per
//! source. The window's timer exists only while there is something to
//! report: an idle agent runs none.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Lines logged at once per window; the rest wait for the summary.
pub const IMMEDIATE: u32 = 10;
/// Sources named in a summary line; the others are counted together.
const SUMMARY_SOURCES: usize = 8;

/// What kind of refusal a connection met, counted apart in the metrics
/// (issue 16: refused connections and refused handshakes are different
/// alarms: a flood against the limits, or a client whose TLS is wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Shed past `[limits]` (handshakes in flight, connections per
    /// certificate) before or after the handshake.
    Limit,
    /// The TLS handshake failed (no or an untrusted or revoked client
    /// certificate, a protocol error).
    Handshake,
    /// The TLS handshake did not finish within
    /// `limits.handshake_timeout_secs`.
    HandshakeTimeout,
    /// A certificate that passed the handshake but is never admitted (no
    /// role, an agent's certificate, revoked since the connection opened).
    Certificate,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Limit,
        Refusal::Handshake,
        Refusal::HandshakeTimeout,
        Refusal::Certificate,
    ];

    /// The `reason` label of `golive_refused_connections_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Handshake => "handshake",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::Certificate => "certificate",
        }
    }
}

/// Refusal counters and the open window.
pub struct Refusals {
    interval: Duration,
    /// Per [`Refusal`], in [`Refusal::ALL`]'s order.
    counts: [AtomicU64; 4],
    window: Arc<Mutex<Window>>,
}

#[derive(Default)]
struct Window {
    /// (source, reason) → (refusals, of which logged at once).
    counts: HashMap<(IpAddr, String), (u64, u64)>,
    immediate: u32,
    summary_scheduled: bool,
}

impl Refusals {
    pub fn new(interval: Duration) -> Refusals {
        Refusals {
            interval,
            counts: Default::default(),
            window: Arc::new(Mutex::new(Window::default())),
        }
    }

    /// Refusals since start (status).
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Refusals of one kind since start (metrics).
    pub fn of(&self, kind: Refusal) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts one refusal of a connection from `source` (already reduced to
    /// its per-source key), of `kind`, for `reason` (the log's words).
    /// Needs a tokio runtime for the summary timer.
    pub fn record(&self, source: IpAddr, kind: Refusal, reason: &str) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let immediate_left = w.immediate < IMMEDIATE;
        let entry = w
            .counts
            .entry((source, reason.to_string()))
            .or_insert((0, 0));
        entry.0 += 1;
        if entry.0 == 1 && immediate_left {
            entry.1 = 1;
            w.immediate += 1;
            tracing::warn!(peer_addr = %source, "connection from {source} refused: {reason}");
        }
        if !w.summary_scheduled {
            w.summary_scheduled = true;
            let window = Arc::clone(&self.window);
            let interval = self.interval;
            tokio::spawn(async move {
                tokio::time::sleep(interval).await;
                let taken =
                    std::mem::take(&mut *window.lock().unwrap_or_else(PoisonError::into_inner));
                if let Some(line) = summary(&taken, interval) {
                    tracing::warn!("{line}");
                }
            });
        }
    }
}

/// One source's unlogged refusals: their sum, and the count per reason.
type BySource<'a> = (u64, Vec<(&'a str, u64)>);

/// The window's one line, or None when every refusal was logged already.
fn summary(w: &Window, interval: Duration) -> Option<String> {
    let mut by_source: HashMap<IpAddr, BySource<'_>> = HashMap::new();
    let mut unlogged = 0;
    for ((source, reason), (count, logged)) in &w.counts {
        let rest = count - logged;
        if rest == 0 {
            continue;
        }
        unlogged += rest;
        let e = by_source.entry(*source).or_default();
        e.0 += rest;
        e.1.push((reason.as_str(), rest));
    }
    if unlogged == 0 {
        return None;
    }
    let mut sources: Vec<_> = by_source.into_iter().collect();
    sources.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let mut parts = Vec::new();
    for (source, (count, mut reasons)) in sources.iter().take(SUMMARY_SOURCES).cloned() {
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        let why: Vec<String> = reasons
            .iter()
            .take(3)
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.push(format!("{source} x{count} ({})", why.join("; ")));
    }
    let others = sources.len().saturating_sub(SUMMARY_SOURCES);
    let tail = if others > 0 {
        format!(", and {others} other sources")
    } else {
        String::new()
    };
    Some(format!(
        "refused {unlogged} more connections in the last {}s: {}{tail}",
        interval.as_secs(),
        parts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issue11_a_flood_is_one_summary_line_per_window() {
        let r = Refusals::new(Duration::from_millis(100));
        let a: IpAddr = "127.0.0.66".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..2000 {
            r.record(
                a,
                Refusal::Limit,
                "busy: too many handshakes in flight from this address",
            );
        }
        r.record(
            b,
            Refusal::Handshake,
            "TLS handshake refused: peer sent no certificates",
        );
        assert_eq!(r.total(), 2001);
        assert_eq!(r.of(Refusal::Limit), 2000);
        assert_eq!(r.of(Refusal::Handshake), 1);
        assert_eq!(r.of(Refusal::Certificate), 0);
        let line = {
            let w = r.window.lock().unwrap();
            assert_eq!(w.immediate, 2, "one line per (source, reason) at once");
            summary(&w, Duration::from_secs(60)).unwrap()
        };
        assert!(
            line.starts_with(
                "refused 1999 more connections in the last 60s: 127.0.0.66 x1999 (1999 busy"
            ),
            "{line}"
        );
        assert!(!line.contains("127.0.0.1 "), "logged already: {line}");
        // The window ends (bounded wait), and the next refusal opens a new one.
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let w = r.window.lock().unwrap();
            if w.counts.is_empty() && !w.summary_scheduled {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "window never reset"
            );
        }
    }
}
