//! The agent's metrics in the Prometheus text format (issue 16, part 5),
//! served at `GET /metrics` on the mutual-TLS port to any admitted
//! certificate (the viewer role is enough). Read at scrape time from the
//! journal and the agent's counters, so nothing is kept twice and a restart
//! loses nothing: jobs by kind and state with their durations, rollbacks,
//! backups, each app's watchdog, refused connections. Probe results are
//! not journaled: [`ProbeBoard`] keeps each declared probe's latest result
//! (from a controller's probe round, a gate or preflight, or a watchdog
//! sample) and its runs since the start.
//!
//! [`serve_plain`] serves the same page on the optional loopback-only plain
//! HTTP port (`[metrics] listen`), `GET /metrics` and nothing else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use golive_shared::protocol::{ProbeReport, ProbeResult, ProbeStatus, UnixMillis, WatchdogState};

use crate::server::noise::Refusal;
use crate::state::Agent;

/// The content type Prometheus scrapes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value, escaped as the text format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

const PROBE_STATUSES: [ProbeStatus; 4] = [
    ProbeStatus::Pass,
    ProbeStatus::Fail,
    ProbeStatus::Error,
    ProbeStatus::NotApplicable,
];

/// One probe as last seen.
#[derive(Debug, Clone)]
struct Seen {
    kind: String,
    severity: &'static str,
    status: ProbeStatus,
    duration_ms: u64,
    at: UnixMillis,
    /// Runs since the agent started, by [`PROBE_STATUSES`] index.
    runs: [u64; 4],
}

/// Each probe's latest result, keyed by (app, probe name). Bounded by what
/// the config declares: a probe no longer declared is left off the page
/// (and dropped from here when seen so).
#[derive(Debug, Default)]
pub struct ProbeBoard(Mutex<BTreeMap<(String, String), Seen>>);

impl ProbeBoard {
    pub fn record(&self, app: &str, r: &ProbeResult) {
        let idx = PROBE_STATUSES
            .iter()
            .position(|s| *s == r.status)
            .unwrap_or(2);
        let mut board = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let seen = board
            .entry((app.to_string(), r.name.clone()))
            .or_insert_with(|| Seen {
                kind: String::new(),
                severity: "",
                status: r.status,
                duration_ms: 0,
                at: 0,
                runs: [0; 4],
            });
        seen.kind.clone_from(&r.kind);
        seen.severity = r.severity.as_str();
        seen.status = r.status;
        seen.duration_ms = r.duration_ms;
        seen.at = golive_shared::protocol::now_millis();
        seen.runs[idx] += 1;
    }

    pub fn record_all(&self, report: &ProbeReport) {
        for r in &report.results {
            self.record(&report.app, r);
        }
    }

    /// What is declared, in order; forgets the rest.
    fn declared(&self, agent: &Agent) -> Vec<((String, String), Seen)> {
        let config = agent.config();
        let mut board = self.0.lock().unwrap_or_else(|p| p.into_inner());
        board.retain(|(app, probe), _| {
            config
                .app(app)
                .is_some_and(|a| a.probes.iter().any(|p| p.name() == probe))
        });
        board.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn probe_families(out: &mut String, seen: &[((String, String), Seen)]) {
    family(
        out,
        "golive_probe_status",
        "gauge",
        "Each probe's latest result (pass, fail, error, n/a): 1 for it, 0 for the others.",
    );
    for ((app, probe), s) in seen {
        for st in PROBE_STATUSES {
            let _ = writeln!(
                out,
                "golive_probe_status{{app=\"{}\",probe=\"{}\",kind=\"{}\",severity=\"{}\",status=\"{}\"}} {}",
                label(app),
                label(probe),
                label(&s.kind),
                s.severity,
                st.as_str(),
                u8::from(st == s.status)
            );
        }
    }
    family(
        out,
        "golive_probe_success",
        "gauge",
        "1 when a probe's latest result is a pass, else 0 (blackbox_exporter's probe_success).",
    );
    for ((app, probe), s) in seen {
        let _ = writeln!(
            out,
            "golive_probe_success{{app=\"{}\",probe=\"{}\"}} {}",
            label(app),
            label(probe),
            u8::from(s.status == ProbeStatus::Pass)
        );
    }
    family(
        out,
        "golive_probe_duration_seconds",
        "gauge",
        "How long each probe's latest run took (its latency).",
    );
    for ((app, probe), s) in seen {
        let _ = writeln!(
            out,
            "golive_probe_duration_seconds{{app=\"{}\",probe=\"{}\"}} {}",
            label(app),
            label(probe),
            s.duration_ms as f64 / 1000.0
        );
    }
    family(
        out,
        "golive_probe_last_run_time_seconds",
        "gauge",
        "When each probe last ran (unix seconds).",
    );
    for ((app, probe), s) in seen {
        let _ = writeln!(
            out,
            "golive_probe_last_run_time_seconds{{app=\"{}\",probe=\"{}\"}} {}",
            label(app),
            label(probe),
            s.at as f64 / 1000.0
        );
    }
    family(
        out,
        "golive_probe_runs_total",
        "counter",
        "Probe runs since the agent started (controller rounds, gates, preflight, watchdog \
         samples), by result.",
    );
    for ((app, probe), s) in seen {
        for (i, st) in PROBE_STATUSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "golive_probe_runs_total{{app=\"{}\",probe=\"{}\",status=\"{}\"}} {}",
                label(app),
                label(probe),
                st.as_str(),
                s.runs[i]
            );
        }
    }
}

/// The whole page.
pub fn render(agent: &Agent) -> Result<String, String> {
    let rows = agent.journal.metrics().map_err(|e| e.to_string())?;
    let mut out = String::new();
    family(
        &mut out,
        "golive_agent_info",
        "gauge",
        "The agent's name and version.",
    );
    let _ = writeln!(
        out,
        "golive_agent_info{{name=\"{}\",version=\"{}\"}} 1",
        label(&agent.config().agent.name),
        label(golive_shared::GOLIVE_VERSION)
    );
    family(
        &mut out,
        "golive_agent_start_time_seconds",
        "gauge",
        "When the agent started (unix seconds).",
    );
    let _ = writeln!(
        out,
        "golive_agent_start_time_seconds {}",
        agent.started_at as f64 / 1000.0
    );
    family(
        &mut out,
        "golive_jobs",
        "gauge",
        "Jobs in the journal by kind and state.",
    );
    for j in &rows.jobs {
        let _ = writeln!(
            out,
            "golive_jobs{{kind=\"{}\",state=\"{}\"}} {}",
            label(&j.kind),
            label(&j.state),
            j.count
        );
    }
    family(
        &mut out,
        "golive_job_duration_seconds",
        "summary",
        "Time from submission to end of the finished jobs, by kind and state.",
    );
    for j in rows.jobs.iter().filter(|j| j.finished > 0) {
        let labels = format!("kind=\"{}\",state=\"{}\"", label(&j.kind), label(&j.state));
        let _ = writeln!(
            out,
            "golive_job_duration_seconds_sum{{{labels}}} {}",
            j.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "golive_job_duration_seconds_count{{{labels}}} {}",
            j.finished
        );
    }
    family(
        &mut out,
        "golive_rollbacks",
        "gauge",
        "Rollback jobs of each app by state (whoever asked: controller, CLI, watchdog).",
    );
    for (app, state, n) in &rows.rollbacks {
        let _ = writeln!(
            out,
            "golive_rollbacks{{app=\"{}\",state=\"{}\"}} {n}",
            label(app),
            label(state)
        );
    }
    family(
        &mut out,
        "golive_backups",
        "gauge",
        "Complete backups of each app.",
    );
    for (app, n, _, _) in &rows.backups {
        let _ = writeln!(out, "golive_backups{{app=\"{}\"}} {n}", label(app));
    }
    family(
        &mut out,
        "golive_backup_bytes",
        "gauge",
        "Bytes of each app's complete backups.",
    );
    for (app, _, bytes, _) in &rows.backups {
        let _ = writeln!(out, "golive_backup_bytes{{app=\"{}\"}} {bytes}", label(app));
    }
    family(
        &mut out,
        "golive_backup_newest_time_seconds",
        "gauge",
        "When each app's newest complete backup was taken (unix seconds).",
    );
    for (app, _, _, at) in &rows.backups {
        let _ = writeln!(
            out,
            "golive_backup_newest_time_seconds{{app=\"{}\"}} {}",
            label(app),
            *at as f64 / 1000.0
        );
    }
    family(
        &mut out,
        "golive_watchdog_state",
        "gauge",
        "Each app's latest watchdog: 1 for its state, 0 for the others.",
    );
    let states = [
        WatchdogState::Armed,
        WatchdogState::Fired,
        WatchdogState::RolledBack,
        WatchdogState::RollbackFailed,
        WatchdogState::Committing,
        WatchdogState::Committed,
        WatchdogState::CommitFailed,
        WatchdogState::Disarmed,
    ];
    for (app, state) in &rows.watchdogs {
        for s in states {
            let _ = writeln!(
                out,
                "golive_watchdog_state{{app=\"{}\",state=\"{}\"}} {}",
                label(app),
                s.as_str(),
                u8::from(s.as_str() == state)
            );
        }
    }
    family(
        &mut out,
        "golive_refused_connections_total",
        "counter",
        "Connections refused before a request since the agent started, by reason: limit (shed \
         past [limits]), handshake (a failed TLS handshake: no, an untrusted or a revoked client \
         certificate), handshake_timeout, certificate (never admitted: no role, an agent's).",
    );
    for kind in Refusal::ALL {
        let _ = writeln!(
            out,
            "golive_refused_connections_total{{reason=\"{}\"}} {}",
            kind.as_str(),
            agent.refusals.of(kind)
        );
    }
    family(
        &mut out,
        "golive_accepted_connections_total",
        "counter",
        "TCP connections accepted since the agent started (refused ones included).",
    );
    let _ = writeln!(
        out,
        "golive_accepted_connections_total {}",
        agent.traffic.accepted_total()
    );
    family(
        &mut out,
        "golive_reads_total",
        "counter",
        "Read-only requests answered since the agent started, by operation (not in the audit \
         table at once: a read changes nothing, so its audit row waits for the next write or \
         at most 10 s; a refused or failed read is audited at once).",
    );
    for (op, n) in agent.traffic.reads() {
        let _ = writeln!(
            out,
            "golive_reads_total{{operation=\"{}\"}} {n}",
            label(&op)
        );
    }
    probe_families(&mut out, &agent.probes_seen.declared(agent));
    Ok(out)
}

/// Connections the plain port serves at once; more are closed unread.
const PLAIN_CONNECTIONS: usize = 4;
/// A request's headers must arrive within this, and an idle kept-alive
/// connection is closed after it.
const PLAIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type PlainResponse = hyper::Response<http_body_util::Full<bytes::Bytes>>;

fn plain(status: hyper::StatusCode, text: String) -> PlainResponse {
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(http_body_util::Full::new(bytes::Bytes::from(text)))
        .expect("static response parts")
}

/// The answer of the plain port: the page for `GET /metrics`, 405 for
/// another method there, 404 for any other path. Nothing else is read or
/// changed: no body is read, no journal row is written.
fn answer_plain(agent: &Agent, method: &hyper::Method, path: &str) -> PlainResponse {
    use hyper::{Method, StatusCode};
    if path != crate::server::METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path}; this port serves only GET /metrics\n"),
        );
    }
    if method != Method::GET {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not served; this port serves only GET /metrics\n"),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
        return r;
    }
    match render(agent) {
        Ok(text) => hyper::Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(http_body_util::Full::new(bytes::Bytes::from(text)))
            .expect("static response parts"),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the metrics from the journal: {e}\n"),
        ),
    }
}

/// Serves `[metrics] listen` (a loopback address, refused otherwise at
/// config load) until `shutdown`: plain HTTP/1.1, read-only, for a
/// scraper on this host.
pub async fn serve_plain(
    agent: std::sync::Arc<Agent>,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(metrics_addr = %addr, "serving GET /metrics in plain HTTP on {addr} (loopback only)");
    }
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(PLAIN_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics port: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(place) = std::sync::Arc::clone(&places).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let agent = std::sync::Arc::clone(&agent);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let response = answer_plain(&agent, req.method(), req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(PLAIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {}
            }
            drop(place);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue16_label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
