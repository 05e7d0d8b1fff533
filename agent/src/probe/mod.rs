//! Health probes declared in the agent config (SPEC §6), run concurrently,
//! each under its own timeout. One file per family:
//!
//! - `http.rs`: http and https (status, body, JSON pointer, headers, latency,
//!   redirects, TLS verification with system roots or a private CA).
//! - `net.rs`: tcp connect, tls certificate days left, dns resolution.
//! - `sql.rs`: a query's scalar on SQLite, PostgreSQL or MariaDB, in a
//!   read-only session, on a database the app declares.
//! - `command.rs`: a declared program, run like a hook (process group, timeout).
//! - `system.rs`: disk free, memory available, load average, cpu busy,
//!   process running — read from `statvfs` and `/proc` directly.
//! - `files.rs`: a file exists and is recent (a cron heartbeat).
//! - `logs.rs`: an access log's 5xx share and p95, golive's own
//!   maintenance left out.
//!
//! A probe's outcome is `pass`, `fail` (it ran and the answer is wrong),
//! `error` (it could not run: a timeout, a refused connection to an http
//! server, a failed TLS handshake, a missing file for a query) or `n/a`: the
//! app has nothing live yet (no `ROOT/current`, before its first deployment)
//! and the probe looks at the app itself, so it is not run (issue 12; per
//! probe `before_first_release`, default by kind). The value
//! carries units ("status 200, 12 ms", "23 days", "41.2 % free"); the
//! threshold says what was expected. Secrets (database passwords) never
//! reach a result.

mod command;
mod files;
mod http;
mod logs;
mod net;
mod sql;
mod system;

use std::sync::Arc;
use std::time::{Duration, Instant};

use golive_shared::config::{AgentConfig, AppConfig, BeforeFirstRelease, ProbeConfig};
use golive_shared::protocol::{ProbeReport, ProbeResult, ProbeStatus};

use crate::accesslog::Excluded;
use crate::release::layout::AppLayout;

/// Probes that stop their own work at the timeout (a killed command, an
/// interrupted query) are waited for this much longer, so the report comes
/// after the cleanup and says what happened.
const CLEANUP_SLACK: Duration = Duration::from_secs(8);

/// Runs the app's probes carrying one of `tags` (all when empty), all at
/// once; results in config order. `maintenance`: golive's maintenance
/// windows of the app (`maintenance::excluded_spans`), left out of the
/// access-log figures.
pub async fn run_app(
    app_name: &str,
    app: &AppConfig,
    tags: &[String],
    maintenance: Vec<Excluded>,
) -> ProbeReport {
    let nothing_live = nothing_live(app);
    let app = Arc::new(app.clone());
    let maintenance: Arc<[Excluded]> = maintenance.into();
    let mut set = tokio::task::JoinSet::new();
    let mut results: Vec<(usize, ProbeResult)> = Vec::new();
    for (i, probe) in app.probes.iter().enumerate() {
        if !tags.is_empty() && !probe.tags().iter().any(|t| tags.contains(t)) {
            continue;
        }
        if nothing_live && probe.before_first_release() == BeforeFirstRelease::Skip {
            results.push((i, not_applicable(app_name, &app, probe)));
            continue;
        }
        let app = app.clone();
        let maintenance = maintenance.clone();
        set.spawn(async move { (i, run_one(&app, &app.probes[i], &maintenance).await) });
    }
    results.extend(set.join_all().await);
    results.sort_by_key(|(i, _)| *i);
    ProbeReport {
        app: app_name.to_string(),
        results: results.into_iter().map(|(_, r)| r).collect(),
    }
}

/// The app has no live release: `ROOT/current` does not exist (before the
/// first deployment). A `current` that cannot be read is not "nothing":
/// the probes run and say what they find.
fn nothing_live(app: &AppConfig) -> bool {
    matches!(AppLayout::new(&app.root).current(), Ok(None))
}

/// The result of a probe skipped because the app has nothing live yet.
fn not_applicable(app_name: &str, app: &AppConfig, probe: &ProbeConfig) -> ProbeResult {
    ProbeResult {
        name: probe.name().to_string(),
        kind: probe.kind().to_string(),
        severity: probe.severity(),
        status: ProbeStatus::NotApplicable,
        value: None,
        threshold: threshold(probe),
        duration_ms: 0,
        message: format!(
            "nothing live yet: app {app_name} has no release at {} (before its first \
             deployment); this {} probe runs once a release is live (set \
             before_first_release = \"run\" to run it now)",
            app.root.join("current").display(),
            probe.kind()
        ),
    }
}

/// Runs one probe of `app` under its timeout.
pub async fn run_one(
    app: &AppConfig,
    probe: &ProbeConfig,
    maintenance: &[Excluded],
) -> ProbeResult {
    let started = Instant::now();
    let limit = Duration::from_millis(probe.timeout_ms());
    let wait = match probe {
        ProbeConfig::Command(_) | ProbeConfig::Sql(_) => limit + CLEANUP_SLACK,
        _ => limit,
    };
    let check = match tokio::time::timeout(wait, check(app, probe, limit, maintenance)).await {
        Ok(c) => c,
        Err(_) => Check::error(format!("no answer within {} ms", limit.as_millis())),
    };
    ProbeResult {
        name: probe.name().to_string(),
        kind: probe.kind().to_string(),
        severity: probe.severity(),
        status: check.status,
        value: check.value,
        threshold: threshold(probe),
        duration_ms: started.elapsed().as_millis() as u64,
        message: check.message,
    }
}

/// One availability sample of an http probe (issue 12, parts 12 and 15):
/// whether the app answered as the probe expects, or golive's maintenance
/// page answered (then it is maintenance, not an outage), within `limit`.
pub(crate) async fn sample(probe: &ProbeConfig, limit: Duration) -> Sample {
    let ProbeConfig::Http(p) = probe else {
        return Sample::NotAnswered;
    };
    match tokio::time::timeout(limit, http::check(p)).await {
        Ok(c) if c.status == ProbeStatus::Pass => Sample::Answered,
        Ok(c) if c.maintenance => Sample::Maintenance,
        _ => Sample::NotAnswered,
    }
}

/// What one availability sample saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sample {
    Answered,
    /// golive's maintenance page (`X-Golive-Maintenance`).
    Maintenance,
    NotAnswered,
}

async fn check(
    app: &AppConfig,
    probe: &ProbeConfig,
    limit: Duration,
    maintenance: &[Excluded],
) -> Check {
    match probe {
        ProbeConfig::Http(p) => http::check(p).await,
        ProbeConfig::Tcp(p) => net::tcp(p).await,
        ProbeConfig::Tls(p) => net::tls(p).await,
        ProbeConfig::Dns(p) => net::dns(p).await,
        ProbeConfig::Sql(p) => sql::check(app, p, limit).await,
        ProbeConfig::Command(p) => command::check(app, p, limit).await,
        ProbeConfig::Disk(p) => system::disk(p).await,
        ProbeConfig::Memory(p) => system::memory(p),
        ProbeConfig::Load(p) => system::load(p),
        ProbeConfig::Cpu(p) => system::cpu(p).await,
        ProbeConfig::Process(p) => system::process(p).await,
        ProbeConfig::File(p) => files::check(p).await,
        ProbeConfig::AccessLog(p) => logs::check(p, maintenance.to_vec()).await,
    }
}

/// What the probe expects, in the words of its config.
fn threshold(probe: &ProbeConfig) -> Option<String> {
    let text = match probe {
        ProbeConfig::Http(p) => http::threshold(p),
        ProbeConfig::Tcp(_) => "connects".into(),
        ProbeConfig::Tls(p) => format!("≥ {} days left", p.min_days),
        ProbeConfig::Dns(p) if p.expect.is_empty() => "resolves".into(),
        ProbeConfig::Dns(p) => format!("resolves within [{}]", p.expect.join(", ")),
        ProbeConfig::Sql(p) => match &p.expect {
            Some(e) => format!("= {e:?}"),
            None => "the query runs".into(),
        },
        ProbeConfig::Command(p) => command::threshold(p),
        ProbeConfig::Disk(p) => system::minimums(p.min_free_percent, p.min_free_bytes, "free"),
        ProbeConfig::Memory(p) => {
            system::minimums(p.min_available_percent, p.min_available_bytes, "available")
        }
        ProbeConfig::Load(p) => system::load_threshold(p),
        ProbeConfig::Cpu(p) => format!("≤ {} % busy", p.max_percent),
        ProbeConfig::Process(p) => format!("≥ {} running", p.min_count),
        ProbeConfig::File(p) => match p.max_age_secs {
            Some(s) => format!("exists, age ≤ {}", age(Duration::from_secs(s))),
            None => "exists".into(),
        },
        ProbeConfig::AccessLog(p) => logs::threshold(p),
    };
    Some(text)
}

/// Compiles every access-log probe's `format` as the probe will, and checks
/// that a p95 limit has a latency field to read (`check-config`).
pub fn check_log_formats(config: &AgentConfig) -> Result<(), String> {
    for (app_name, app) in &config.apps {
        for (i, probe) in app.probes.iter().enumerate() {
            if let ProbeConfig::AccessLog(p) = probe {
                logs::compile(p)
                    .map_err(|e| format!("key `apps.{app_name}.probes.{i}.format`: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Parses every https probe's `ca_file` as the probe will (`check-config`).
pub fn check_ca_files(config: &AgentConfig) -> Result<(), String> {
    for (app_name, app) in &config.apps {
        for (i, probe) in app.probes.iter().enumerate() {
            if let ProbeConfig::Http(p) = probe
                && let Some(ca) = &p.ca_file
            {
                crate::tls::read_roots(ca)
                    .map_err(|e| format!("key `apps.{app_name}.probes.{i}.ca_file`: {e}"))?;
            }
        }
    }
    Ok(())
}

/// One probe's finding, before the name, kind and timing are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub status: ProbeStatus,
    pub value: Option<String>,
    pub message: String,
    /// The answer was golive's maintenance page (its `X-Golive-Maintenance`
    /// header; http probes only): maintenance, not an outage (issue 12).
    pub maintenance: bool,
}

impl Check {
    fn pass(value: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            status: ProbeStatus::Pass,
            value: Some(value.into()),
            message: message.into(),
            maintenance: false,
        }
    }

    fn fail(value: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            status: ProbeStatus::Fail,
            value: Some(value.into()),
            message: message.into(),
            maintenance: false,
        }
    }

    /// Pass when `ok`, else fail; same value and message either way.
    fn judge(ok: bool, value: impl Into<String>, message: impl Into<String>) -> Check {
        if ok {
            Check::pass(value, message)
        } else {
            Check::fail(value, message)
        }
    }

    /// The probe could not run.
    fn error(message: impl Into<String>) -> Check {
        Check {
            status: ProbeStatus::Error,
            value: None,
            message: message.into(),
            maintenance: false,
        }
    }
}

/// Runs blocking work (file system, processes, database clients) off the
/// async thread.
async fn blocking(work: impl FnOnce() -> Check + Send + 'static) -> Check {
    // Boxed: one blocking-task type for every probe kind, not one each.
    let work: Box<dyn FnOnce() -> Check + Send> = Box::new(work);
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Check::error(format!("the probe stopped unexpectedly: {e}")))
}

/// "512 B", "12.3 MiB", "1.5 GiB".
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// "45 s", "12 min", "3 h 5 min", "2 d 4 h".
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ if (s % 86_400) / 3600 == 0 => format!("{} d", s / 86_400),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Milliseconds, rounded, for values ("12 ms").
fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// At most `max` characters of an answer quoted in a message.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(age(Duration::from_secs(45)), "45 s");
        assert_eq!(age(Duration::from_secs(720)), "12 min");
        assert_eq!(age(Duration::from_secs(3 * 3600)), "3 h");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 300)), "3 h 5 min");
        assert_eq!(age(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2 d 4 h");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
