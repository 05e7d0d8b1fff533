//! systemd's `Type=notify` protocol (issue 16): READY, RELOADING, STOPPING
//! and the watchdog's pings, sent over `NOTIFY_SOCKET`.
//!
//! The protocol is small enough to speak here (the `sd-notify` crate does
//! not reach abstract sockets): one datagram of `KEY=VALUE` lines to the
//! unix socket named by `NOTIFY_SOCKET`, a path or an abstract `@name`;
//! nothing is sent without it. What is decided here is also *when*: READY once the listener is bound and the journal
//! open (after [`crate::prepare`]); RELOADING then READY around every
//! config reload ([`crate::reload`]); STOPPING when a stop begins, before the
//! drain; and WATCHDOG at half of `WATCHDOG_USEC`, each ping earned by the
//! runtime answering and the journal answering a query, so a wedged agent
//! stops pinging and systemd restarts it.
//!
//! A failed send is logged once and otherwise ignored: the agent works the
//! same under a manager that does not listen. Children never see
//! `NOTIFY_SOCKET`: every program the agent runs starts from
//! [`crate::exec::passed_env`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::state::Agent;

static WARNED: AtomicBool = AtomicBool::new(false);

/// Where `NOTIFY_SOCKET` points: a path, or `@name` in the abstract
/// namespace (sent with a leading NUL, as sd_notify(3) does).
fn socket_addr(value: &OsStr) -> std::io::Result<SocketAddr> {
    let bytes = value.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        Some((b'/', _)) => SocketAddr::from_pathname(Path::new(value)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
        )),
    }
}

/// One datagram with `lines` to the service manager, if there is one.
fn send(lines: &[&str]) {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut msg = String::new();
    for l in lines {
        msg.push_str(l);
        msg.push('\n');
    }
    let sent = socket_addr(&value).and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(msg.as_bytes(), &addr)
    });
    if let Err(e) = sent
        && !WARNED.swap(true, Ordering::SeqCst)
    {
        tracing::warn!(
            "cannot notify the service manager through NOTIFY_SOCKET={}: {e}; the agent runs \
             on, but systemd will not see it ready (Type=notify) or alive (WatchdogSec)",
            value.to_string_lossy()
        );
    }
}

/// The listener is bound and the journal open: the agent serves.
pub fn ready(status: &str) {
    send(&["READY=1", &format!("STATUS={status}")]);
}

/// A reload begins; [`reloaded`] ends it. `MONOTONIC_USEC` is what
/// systemd 253's `Type=notify-reload` asks for beside RELOADING=1.
pub fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as i128 * 1_000_000 + t.tv_nsec() as i128 / 1_000);
    match now {
        Ok(us) => send(&["RELOADING=1", &format!("MONOTONIC_USEC={us}")]),
        Err(_) => send(&["RELOADING=1"]),
    }
}

/// A reload ended (applied or refused: either way the agent serves).
pub fn reloaded(status: &str) {
    send(&["READY=1", &format!("STATUS={status}")]);
}

/// A stop begins: connections and jobs drain from here.
pub fn stopping() {
    send(&[
        "STOPPING=1",
        "STATUS=stopping: draining connections and jobs",
    ]);
}

/// The ping interval: half of `WATCHDOG_USEC` when systemd set it for this
/// process (`WATCHDOG_PID` absent or ours) and `NOTIFY_SOCKET` is there.
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

/// How long the journal may take to answer before a ping is skipped.
fn query_bound(interval: Duration) -> Duration {
    interval.max(Duration::from_millis(100))
}

/// Pings the watchdog every `interval` while the agent is healthy, as a task
/// on the agent's own runtime: a ping is sent only when the runtime ran this
/// task and the journal answered `PRAGMA user_version` (on the blocking
/// pool, bounded). A runtime that stops scheduling, or a journal held or
/// broken, ends the pings; systemd then kills and restarts the agent.
pub fn start_watchdog(agent: Arc<Agent>, interval: Duration) -> tokio::task::JoinHandle<()> {
    let check = move || {
        agent
            .journal
            .schema_version()
            .map(|_| ())
            .map_err(|e| format!("the journal failed a query: {e}"))
    };
    spawn_pings(interval, check, || send(&["WATCHDOG=1"]))
}

/// The loop of [`start_watchdog`]: every `interval`, `check` on the
/// blocking pool, and `ping` only when it answered `Ok` within the bound.
pub fn spawn_pings<C, P>(interval: Duration, check: C, ping: P) -> tokio::task::JoinHandle<()>
where
    C: Fn() -> Result<(), String> + Send + Sync + 'static,
    P: Fn() + Send + 'static,
{
    let check = Arc::new(check);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // A check still running past its bound is waited for at the next
        // tick, not started again: a held journal costs one blocked thread.
        let mut pending: Option<tokio::task::JoinHandle<Result<(), String>>> = None;
        loop {
            tick.tick().await;
            let mut query = pending.take().unwrap_or_else(|| {
                let c = Arc::clone(&check);
                tokio::task::spawn_blocking(move || c())
            });
            let why = match tokio::time::timeout(query_bound(interval), &mut query).await {
                Ok(Ok(Ok(()))) => {
                    if failing {
                        tracing::info!("watchdog: the journal answers again; pinging systemd");
                        failing = false;
                    }
                    ping();
                    continue;
                }
                Ok(Ok(Err(e))) => e,
                Ok(Err(e)) => format!("the journal query panicked: {e}"),
                Err(_) => {
                    pending = Some(query);
                    format!(
                        "the journal did not answer within {} ms",
                        query_bound(interval).as_millis()
                    )
                }
            };
            if !failing {
                tracing::error!(
                    "watchdog: {why}; not pinging systemd, which restarts the agent when \
                     WatchdogSec passes without a ping"
                );
                failing = true;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    async fn pings_during(count: &AtomicUsize, d: Duration) -> usize {
        let before = count.load(Ordering::SeqCst);
        tokio::time::sleep(d).await;
        count.load(Ordering::SeqCst) - before
    }

    // Holding the lock across awaits is the wedge this test makes.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "current_thread")]
    async fn issue16_watchdog_pings_stop_while_the_journal_is_held() {
        let journal = Arc::new(Mutex::new(()));
        let pings = Arc::new(AtomicUsize::new(0));
        let (j, p) = (Arc::clone(&journal), Arc::clone(&pings));
        let task = spawn_pings(
            Duration::from_millis(50),
            move || {
                let _held = j.lock().unwrap();
                Ok(())
            },
            move || {
                p.fetch_add(1, Ordering::SeqCst);
            },
        );
        let healthy = pings_during(&pings, Duration::from_millis(600)).await;
        assert!(
            (4..=14).contains(&healthy),
            "healthy: {healthy} pings in 600 ms"
        );
        let held = journal.lock().unwrap();
        // The check in flight may finish first; then nothing.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let wedged = pings_during(&pings, Duration::from_millis(600)).await;
        assert_eq!(wedged, 0, "pings while the journal is held");
        drop(held);
        let again = pings_during(&pings, Duration::from_millis(600)).await;
        assert!(again >= 3, "after release: {again} pings in 600 ms");
        task.abort();
    }

    #[test]
    fn issue16_notify_socket_path_or_abstract() {
        use std::os::linux::net::SocketAddrExt;
        let a = socket_addr(OsStr::new("@golive/notify")).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"golive/notify"[..]));
        let p = socket_addr(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(p.as_pathname(), Some(Path::new("/run/systemd/notify")));
        assert!(socket_addr(OsStr::new("relative")).is_err());
        assert!(socket_addr(OsStr::new("")).is_err());
    }

    /// A journal that errors stops the pings too.
    #[tokio::test(flavor = "current_thread")]
    async fn issue16_watchdog_no_ping_when_the_check_fails() {
        let pings = Arc::new(AtomicUsize::new(0));
        let p = Arc::clone(&pings);
        let task = spawn_pings(
            Duration::from_millis(50),
            || Err("the journal failed a query: disk I/O error".into()),
            move || {
                p.fetch_add(1, Ordering::SeqCst);
            },
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pings.load(Ordering::SeqCst), 0);
        task.abort();
    }
}
