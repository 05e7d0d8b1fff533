//! Maintenance mode: a flag file the web server checks (packaging/ ships
//! nginx and Apache snippets that answer 503 while it exists), `on`/`off`
//! commands, or both, as `[apps.APP.maintenance]` declares.
//!
//! The state lives in the journal (`maintenance` table), so it survives
//! restarts, and each finished window goes to `maintenance_log` with its
//! downtime. The order follows *write the intent, act, write the outcome*:
//!
//! - **on**: journal the state (the first `on_since` is kept when it already
//!   is on), write the flag file atomically, run the `on` command, then, when
//!   a `check_url` is set, require a 503 from it. Any failure leaves the
//!   state ON (failing safe: nothing serves half-migrated data by accident);
//!   `off` undoes it.
//! - **off**: run the `off` command, remove the flag file, require a 2xx from
//!   the `check_url`, and only then clear the journal state and log the
//!   window (`now - on_since` is the downtime). A failure keeps the state ON,
//!   so a retry still measures the downtime from the original `on`; a failed
//!   check puts the flag file back, so the page and the journal agree.
//!
//! Both directions always apply the whole method (flag, command, check),
//! even when the journal says the app already is in the requested state:
//! a retry repairs a half-done switch. `on`/`off` commands must therefore be
//! idempotent, as `drush state:set system.maintenance_mode 1` is.
//!
//! golive's maintenance is not an outage (issue 12, part 12): the
//! requests an access log shows during a journaled window (and
//! [`AFTER_OFF_MARGIN`] after it) are left out of the error rate and p95
//! and counted apart, by [`access_log_stats`], the one function the
//! access-log probe and the watchdog read a log through.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use golive_shared::config::{AgentConfig, AppConfig, CommandSpec, MaintenanceConfig};
use golive_shared::protocol::{EventKind, JobResult, LogLevel, SetMaintenance, now_millis};
use golive_shared::timefmt::utc;

use crate::accesslog::{self, Excluded, LogFormat, WindowStats};
use crate::availability;
use crate::exec;
use crate::jobs::JobError;
use crate::journal::Journal;

/// How long a check keeps retrying before it gives up (each attempt is
/// bounded by `check_timeout_ms`).
const CHECK_WINDOW: Duration = Duration::from_secs(2);
const CHECK_PAUSE: Duration = Duration::from_millis(150);
/// Output tail quoted in a failed command's error.
const ERROR_TAIL: usize = 2048;

/// How long after maintenance went off its requests are still left out of
/// access-log figures: the last maintenance answers of in-flight requests,
/// logged just after the journal says off.
pub const AFTER_OFF_MARGIN_MS: i64 = 1000;
/// [`AFTER_OFF_MARGIN_MS`] as a duration, for the docs.
pub const AFTER_OFF_MARGIN: Duration = Duration::from_millis(AFTER_OFF_MARGIN_MS as u64);
/// The most maintenance windows looked at for one window of a log.
const MAX_EXCLUDED_WINDOWS: u32 = 1000;

/// The spans golive's maintenance of `app` covered in the `window` ending
/// at `now` (unix ms): every journaled window that ended inside it, and the
/// one still on, each widened by [`AFTER_OFF_MARGIN_MS`]. The journal is
/// written before the flag file and cleared after it is removed and the
/// site answers again, so a window covers every maintenance answer.
pub fn excluded_spans(
    journal: &Journal,
    app: &str,
    now: i64,
    window: Duration,
) -> Result<Vec<Excluded>, String> {
    let since = now - window.as_millis() as i64 - AFTER_OFF_MARGIN_MS;
    let mut spans: Vec<Excluded> = journal
        .maintenance_windows_since(app, since, MAX_EXCLUDED_WINDOWS)
        .map_err(|e| format!("cannot read the maintenance windows of {app}: {e}"))?
        .into_iter()
        .map(|(on, off)| Excluded {
            from_ms: on,
            to_ms: off + AFTER_OFF_MARGIN_MS,
        })
        .collect();
    if let Some(state) = journal
        .maintenance(app)
        .map_err(|e| format!("cannot read the maintenance state of {app}: {e}"))?
    {
        spans.push(Excluded {
            from_ms: state.on_since,
            to_ms: i64::MAX,
        });
    }
    Ok(spans)
}

/// Access-log figures of `app` with golive's maintenance left out
/// ([`excluded_spans`]): what the access-log probe judges and what the
/// watchdog's triggers will read.
pub fn access_log_stats(
    journal: &Journal,
    app: &str,
    path: &Path,
    format: &LogFormat,
    window: Duration,
) -> Result<WindowStats, String> {
    let spans = excluded_spans(journal, app, now_millis(), window)?;
    accesslog::stats_excluding(path, format, window, &spans)
}

/// Turns an app's maintenance mode on or off.
///
/// Classes (issue 14): what the operator declared failing (an `on`/`off`
/// command that exits non-zero, times out or cannot be started for the
/// config's reasons, a `check_url` that does not answer 503 while on: the
/// web server lacks the snippet, no maintenance declared) is a refusal
/// (`BadRequest`, exit 2) when golive left the host as it was; once `on`
/// turned maintenance ON in the journal (the agent fails safe and keeps
/// it), any failure is `Internal` (exit 1: the host changed), as is an app
/// that does not answer 2xx after `off` (a live failure) and any fault of
/// the host (the flag file, the journal).
pub fn set(
    config: &AgentConfig,
    journal: &Journal,
    req: &SetMaintenance,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let by = journal
        .running_job_submitter(&req.app, "maintenance")
        .ok()
        .flatten()
        .unwrap_or_else(|| "agent".to_string());
    set_by(config, journal, req, &by, emit)
}

/// [`set`] on behalf of `by` (a host rollback names itself, issue 13).
pub fn set_by(
    config: &AgentConfig,
    journal: &Journal,
    req: &SetMaintenance,
    by: &str,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let app = config
        .app(&req.app)
        .ok_or_else(|| JobError::refused(format!("no app {:?} in the agent config", req.app)))?;
    let m = app.maintenance.as_ref().ok_or_else(|| {
        JobError::refused(format!(
            "app {} declares no maintenance mode; add [apps.{}.maintenance] (flag_file and/or on/off commands)",
            req.app, req.app
        ))
    })?;
    let by = by.to_string();
    let log = |level: LogLevel, line: String| emit(EventKind::Log { level, line });
    if req.on {
        on(journal, &req.app, app, m, &req.reason, &by, &log)
    } else {
        off(journal, &req.app, app, m, &by, emit)
    }
}

fn on(
    journal: &Journal,
    name: &str,
    app: &AppConfig,
    m: &MaintenanceConfig,
    reason: &str,
    by: &str,
    log: &dyn Fn(LogLevel, String),
) -> Result<JobResult, JobError> {
    let (state, changed) = journal
        .maintenance_on(name, reason, by, now_millis())
        .map_err(|e| e.to_string())?;
    // Maintenance is ON in the journal now: a failure from here left the
    // host changed (`Internal`) unless it was on already.
    let class = |e: JobError| {
        if changed {
            JobError::failed(e.message)
        } else {
            e
        }
    };
    if changed {
        log(
            LogLevel::Info,
            format!("maintenance of {name} is ON (journaled)"),
        );
    } else {
        log(
            LogLevel::Info,
            format!(
                "maintenance of {name} was already on since {} ({}, by {}); applying it again",
                utc(state.on_since),
                state.reason,
                state.by
            ),
        );
    }
    let stays_on =
        "maintenance stays ON (journaled): fix the cause and turn it on again, or turn it off";
    if let Some(flag) = &m.flag_file {
        let path = flag_path(&app.root, flag);
        let body = format!(
            "maintenance since {} by {}: {}\n",
            utc(state.on_since),
            state.by,
            state.reason
        );
        write_atomic(&path, body.as_bytes()).map_err(|e| {
            JobError::failed(format!(
                "cannot write the flag file {}: {e}; {stays_on}",
                path.display()
            ))
        })?;
        log(
            LogLevel::Info,
            format!("flag file {} written", path.display()),
        );
    }
    if let Some(cmd) = &m.on {
        run_command("on", cmd, app, log)
            .map_err(|e| {
                e.map(|e| golive_shared::protocol::error_with(&e, &format!("; {stays_on}")))
            })
            .map_err(class)?;
    }
    if let Some(url) = &m.check_url {
        let status = check(url, m.check_timeout_ms, |s| s == 503)
            .map_err(|seen| {
                class(JobError::refused(format!(
                    "check_url {url} did not answer 503 while maintenance is on: {seen}; \
                     check that the web server includes the maintenance snippet for this flag file; {stays_on}"
                )))
            })?;
        log(LogLevel::Info, format!("check_url {url} answered {status}"));
    }
    Ok(JobResult::Maintenance {
        on: true,
        changed,
        downtime_ms: None,
        availability: None,
    })
}

fn off(
    journal: &Journal,
    name: &str,
    app: &AppConfig,
    m: &MaintenanceConfig,
    by: &str,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let log = &|level: LogLevel, line: String| emit(EventKind::Log { level, line });
    let before = journal.maintenance(name).map_err(|e| e.to_string())?;
    match &before {
        Some(s) => log(
            LogLevel::Info,
            format!(
                "maintenance of {name} is on since {} ({}, by {}); turning it off",
                utc(s.on_since),
                s.reason,
                s.by
            ),
        ),
        None => log(
            LogLevel::Info,
            format!("maintenance of {name} was already off; applying it again"),
        ),
    }
    let stays_on = if before.is_some() {
        "the journal keeps maintenance ON (downtime still counts) until `off` succeeds"
    } else {
        "it was off already"
    };
    if let Some(cmd) = &m.off {
        run_command("off", cmd, app, log).map_err(|e| {
            e.map(|e| golive_shared::protocol::error_with(&e, &format!("; {stays_on}")))
        })?;
    }
    // Downtime as users see it (issue 12, part 15): from here until the app
    // answers its http probe, as through a switch; the page's own answers
    // count as maintenance. Stopped at once if the `off` fails.
    let sampler = availability::start_at_maintenance_off(app);
    let result = off_flag_and_check(journal, name, app, m, by, stays_on, log);
    let settled = result.is_ok();
    let measured = sampler.and_then(|s| s.finish(settled, emit));
    let mut result = result?;
    if let JobResult::Maintenance { availability, .. } = &mut result {
        *availability = measured;
    }
    Ok(result)
}

/// The rest of [`off`] after its command: the flag file removed, the check,
/// and the journal's window closed.
fn off_flag_and_check(
    journal: &Journal,
    name: &str,
    app: &AppConfig,
    m: &MaintenanceConfig,
    by: &str,
    stays_on: &str,
    log: &dyn Fn(LogLevel, String),
) -> Result<JobResult, JobError> {
    // The flag's body, to put back if the check fails while the journal
    // keeps maintenance ON: the page and the journal then agree.
    let mut removed: Option<(std::path::PathBuf, Vec<u8>)> = None;
    if let Some(flag) = &m.flag_file {
        let path = flag_path(&app.root, flag);
        let body = std::fs::read(&path).ok();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                log(
                    LogLevel::Info,
                    format!("flag file {} removed", path.display()),
                );
                removed = body.map(|b| (path.clone(), b));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(JobError::failed(format!(
                    "cannot remove the flag file {}: {e}; {stays_on}",
                    path.display()
                )));
            }
        }
    }
    if let Some(url) = &m.check_url {
        let status = match check(url, m.check_timeout_ms, |s| (200..300).contains(&s)) {
            Ok(status) => status,
            Err(seen) => {
                // Maintenance stays ON in the journal, so the page comes
                // back too (failing safe): users see the page, not an app
                // that does not answer, until `off` succeeds.
                // The app does not answer once the page is gone: a live
                // failure, not a refusal (`Internal`, exit 1), whether or
                // not the flag file could be put back.
                let back = match &removed {
                    Some((path, body)) => match write_atomic(path, body) {
                        Ok(()) => format!("; the flag file {} is back", path.display()),
                        Err(e) => format!(
                            "; the flag file {} could not be put back: {e}",
                            path.display()
                        ),
                    },
                    None => String::new(),
                };
                return Err(JobError::failed(format!(
                    "check_url {url} did not answer 2xx after maintenance off: {seen}; {stays_on}{back}"
                )));
            }
        };
        log(LogLevel::Info, format!("check_url {url} answered {status}"));
    }
    let window = journal
        .maintenance_off(name, by, now_millis())
        .map_err(|e| e.to_string())?;
    let downtime_ms = window.as_ref().map(|w| w.downtime_ms);
    if let Some(w) = &window {
        log(
            LogLevel::Info,
            format!(
                "maintenance of {name} is OFF; it was on for {} ms (downtime)",
                w.downtime_ms
            ),
        );
    }
    Ok(JobResult::Maintenance {
        on: false,
        changed: window.is_some(),
        downtime_ms,
        availability: None,
    })
}

/// The flag file: absolute, or relative to the app's ROOT.
pub fn flag_path(root: &Path, flag: &Path) -> PathBuf {
    if flag.is_absolute() {
        flag.to_path_buf()
    } else {
        root.join(flag)
    }
}

/// Temp file in the same directory, fsync, rename: the web server sees no
/// flag or a whole one. Parent directories are created.
pub(crate) fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flag".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Runs the `on` or `off` command in `ROOT/current` (or ROOT before the
/// first release), its output streamed as job events.
fn run_command(
    which: &str,
    cmd: &CommandSpec,
    app: &AppConfig,
    log: &dyn Fn(LogLevel, String),
) -> Result<(), JobError> {
    let current = app.root.join("current");
    let base = if current.is_dir() {
        current
    } else {
        app.root.clone()
    };
    let prepared = exec::Prepared::new(cmd, &app.run, &base);
    log(
        LogLevel::Info,
        format!("running the `{which}` command: {}", prepared.display()),
    );
    let outcome = exec::run(&prepared, &mut |line| {
        log(LogLevel::Info, format!("  {line}"))
    })
    .map_err(|e| JobError {
        code: crate::hooks::start_code(&e),
        message: format!("maintenance `{which}` command: {e}"),
    })?;
    if outcome.success() {
        log(
            LogLevel::Info,
            format!(
                "the `{which}` command finished in {} ms",
                outcome.duration.as_millis()
            ),
        );
        return Ok(());
    }
    let tail = outcome.tail.trim_end();
    let tail = match tail.char_indices().rev().nth(ERROR_TAIL) {
        Some((i, _)) => &tail[i..],
        None => tail,
    };
    Err(JobError::refused(format!(
        "maintenance `{which}` command `{}` failed: {}{}",
        prepared.display(),
        outcome.describe(prepared.timeout),
        if tail.is_empty() {
            String::new()
        } else {
            format!("; output ends with:\n{tail}")
        }
    )))
}

/// GETs `url` until `ok(status)` holds, for up to [`CHECK_WINDOW`] (each
/// attempt bounded by `timeout_ms`). Returns the status, or a description of
/// what was seen last and how often it was tried.
fn check(url: &str, timeout_ms: u64, ok: impl Fn(u16) -> bool) -> Result<u16, String> {
    let started = Instant::now();
    let per_try = Duration::from_millis(timeout_ms.max(1));
    let mut tries = 0u32;
    // The last status actually received: on a busy host the final try may
    // time out, and "it answered 200" is what the operator needs to see.
    let mut last_answer = None;
    loop {
        tries += 1;
        let seen = http_status(url, per_try);
        match seen {
            Ok(s) if ok(s) => return Ok(s),
            Ok(s) => last_answer = Some(s),
            Err(_) => {}
        }
        if started.elapsed() >= CHECK_WINDOW {
            let seen = match (last_answer, seen) {
                (Some(s), _) => format!("it answered {s}"),
                (None, Err(e)) => e,
                (None, Ok(s)) => format!("it answered {s}"),
            };
            return Err(format!(
                "{seen} (tried {tries} times over {} ms)",
                started.elapsed().as_millis()
            ));
        }
        std::thread::sleep(CHECK_PAUSE);
    }
}

/// A blocking HTTP/1.0 GET of an `http://HOST[:PORT]/PATH` URL: the status
/// code of the answer, within `timeout` (connect, send and read together).
pub fn http_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .collect();
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let mut last = format!("no address for {target}");
    let mut stream = None;
    for addr in addrs {
        let left = remaining();
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("no answer from {target} within {} ms", timeout.as_millis())
        } else {
            format!("{target}: {e}")
        }
    };
    let left = remaining().max(Duration::from_millis(1));
    s.set_write_timeout(Some(left)).map_err(io)?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: golive-agent maintenance check\r\nConnection: close\r\n\r\n"
    );
    // A server may answer (and close) before reading the whole request: a
    // failed write is reported only when no answer can be read either.
    let sent = s.write_all(request.as_bytes()).map_err(io);
    // Only the status line is needed.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 8192 {
        let left = remaining();
        if left.is_zero() {
            return Err(format!(
                "no answer from {target} within {} ms",
                timeout.as_millis()
            ));
        }
        s.set_read_timeout(Some(left)).map_err(io)?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(sent.err().unwrap_or_else(|| io(e))),
        };
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(sent
            .err()
            .unwrap_or_else(|| format!("{target} did not answer HTTP (got {:?})", line))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golive_shared::protocol::ErrorCode;
    use std::net::TcpListener;

    /// A one-shot server answering every connection with `status`.
    fn serve(status: u16, count: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for _ in 0..count {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        format!("http://{addr}/health")
    }

    /// Issue 14: the maintenance job's failures carry their class. A
    /// command of the operator's that fails while golive leaves the host as
    /// it was is a refusal (`BadRequest`); once `on` turned maintenance ON
    /// (kept: the agent fails safe) it is a failure (`Internal`).
    #[test]
    fn issue14_maintenance_failures_are_classed_by_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut config: AgentConfig = toml::from_str(
            "[agent]\nname = \"a1\"\nlisten = \"127.0.0.1:7443\"\nstate_dir = \"/tmp/x\"\n\
             [tls]\nca = \"/x\"\ncert = \"/x\"\nkey = \"/x\"\n",
        )
        .unwrap();
        let app = serde_json::from_value(serde_json::json!({
            "root": dir.path().join("shop"),
            "maintenance": {"on": {"cmd": ["false"]}, "off": {"cmd": ["false"]}},
        }))
        .unwrap();
        config.apps.insert("shop".into(), app);
        std::fs::create_dir_all(dir.path().join("shop")).unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let req = |on| SetMaintenance {
            app: "shop".into(),
            on,
            reason: "test".into(),
        };
        // Off while off: the command failed, nothing changed.
        let e = set(&config, &journal, &req(false), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
        assert!(
            e.message
                .starts_with("maintenance `off` command `false` failed: exit 1"),
            "{e}"
        );
        assert!(journal.maintenance("shop").unwrap().is_none());
        // On while off: the journal turned ON, the command failed after.
        let e = set(&config, &journal, &req(true), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal, "{e}");
        assert!(e.message.contains("maintenance stays ON"), "{e}");
        assert!(journal.maintenance("shop").unwrap().is_some());
        // On while on: left as it was.
        let e = set(&config, &journal, &req(true), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
        // No maintenance declared (the config changed since the submit).
        config.apps.get_mut("shop").unwrap().maintenance = None;
        let e = set(&config, &journal, &req(true), &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
    }

    #[test]
    fn http_status_reads_the_status_line() {
        let url = serve(503, 1);
        assert_eq!(http_status(&url, Duration::from_secs(2)), Ok(503));
    }

    #[test]
    fn check_names_what_it_saw() {
        let url = serve(200, 10_000);
        let err = check(&url, 500, |s| s == 503).unwrap_err();
        assert!(err.contains("it answered 200"), "{err}");
        assert!(err.contains("tried"), "{err}");
    }

    #[test]
    fn connection_refused_is_reported() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = http_status(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }

    #[test]
    fn flag_file_is_relative_to_root() {
        assert_eq!(
            flag_path(Path::new("/srv/shop"), Path::new("shared/maintenance.flag")),
            PathBuf::from("/srv/shop/shared/maintenance.flag")
        );
        assert_eq!(
            flag_path(Path::new("/srv/shop"), Path::new("/run/m.flag")),
            PathBuf::from("/run/m.flag")
        );
    }

    /// Issue 12, part 12: the spans left out of access-log figures are the
    /// journaled windows that reach into the log's window, widened by the
    /// margin after off, and the one still on.
    #[test]
    fn issue12_excluded_spans_come_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let now = 10_000_000;
        // Long before the window, inside it, and on now.
        j.maintenance_on("shop", "old", "a", now - 900_000).unwrap();
        j.maintenance_off("shop", "a", now - 800_000).unwrap();
        j.maintenance_on("shop", "deploy", "a", now - 60_000)
            .unwrap();
        j.maintenance_off("shop", "a", now - 50_000).unwrap();
        j.maintenance_on("other", "x", "a", now - 40_000).unwrap();
        j.maintenance_on("shop", "now", "a", now - 1_000).unwrap();
        let spans = excluded_spans(&j, "shop", now, Duration::from_secs(300)).unwrap();
        assert_eq!(
            spans,
            [
                Excluded {
                    from_ms: now - 60_000,
                    to_ms: now - 50_000 + AFTER_OFF_MARGIN_MS
                },
                Excluded {
                    from_ms: now - 1_000,
                    to_ms: i64::MAX
                },
            ]
        );
    }

    #[test]
    fn atomic_write_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/flag");
        write_atomic(&p, b"x").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
