//! The agent's metrics in the Prometheus text format (issue 16, part 5),
//! served at `GET /metrics` on the mutual-TLS port to any admitted
//! certificate (the viewer role is enough). Read at scrape time from the
//! journal and the agent's counters, so nothing is kept twice and a restart
//! loses nothing: jobs by kind and state with their durations, rollbacks,
//! backups, each app's watchdog, refused connections.

use std::fmt::Write as _;

use golive_shared::protocol::WatchdogState;

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
        "Connections refused before a request since the agent started (failed or stalled TLS \
         handshakes, limits, certificates never admitted).",
    );
    let _ = writeln!(
        out,
        "golive_refused_connections_total {}",
        agent.refusals.total()
    );
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue16_label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
