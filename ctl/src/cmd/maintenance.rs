//! `golivectl maintenance on|off PLAN [--reason TEXT]`: the plan's app goes
//! into (or out of) maintenance mode on every host, as each agent's config
//! declares it (flag file, commands, check URL). The agents journal the
//! state, so it survives their restarts; `off` reports the downtime, measured
//! from the first `on`.
//!
//! [`set_on_host`] is also the deployment's maintenance step.

use std::path::Path;

use golive_shared::protocol::{JobSpec, SetMaintenance};
use serde_json::json;

use crate::cli::OnOff;
use crate::deployment::events::Event;
use crate::jobs::{Switched, run_job, switched};
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Host};

/// Runs one maintenance job on `host` under `key` and follows it; on failure
/// the exit code it deserves and the message.
pub async fn set_on_host(
    out: Out,
    host: &Host,
    key: String,
    lease: Option<String>,
    app: &str,
    on: bool,
    reason: &str,
) -> Result<Switched, crate::deployment::DeployError> {
    let spec = JobSpec::Maintenance(SetMaintenance {
        app: app.to_string(),
        on,
        reason: reason.to_string(),
    });
    switched(run_job(out, &host.client, key, lease, spec).await)
}

pub async fn maintenance(
    out: Out,
    state: OnOff,
    plan_path: &Path,
    reason: Option<String>,
) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    let on = state == OnOff::On;
    let word = if on { "on" } else { "off" };
    let reason = reason.unwrap_or_else(|| format!("golivectl maintenance {word}"));
    // The agent records who asked (the certificate's name) beside the
    // reason: naming the operator here too printed "by alice, by alice".
    let mut exit = Exit::Done;
    let mut failed = 0;
    let mut downtime: Option<u64> = None;
    let mut hosts = Vec::new();
    for host in &plan.hosts {
        let key = format!(
            "maintenance-{word}:{}:{}:{}",
            host.name,
            golive_shared::protocol::now_millis(),
            std::process::id()
        );
        match set_on_host(out, host, key, None, &plan.app, on, &reason).await {
            Ok(s) => {
                let detail = s.describe(on);
                out.line(format!("[{}] maintenance {word}: ok — {detail}", host.name));
                out.emit(Event::Maintenance {
                    host: host.name.clone(),
                    on,
                    ok: true,
                    changed: Some(s.changed),
                    already: Some(!s.changed),
                    downtime_ms: s.downtime_ms,
                    error: None,
                });
                if let Some(ms) = s.downtime_ms {
                    downtime = Some(downtime.unwrap_or(0).max(ms));
                }
                hosts.push(json!({"host": host.name, "ok": true, "changed": s.changed, "downtime_ms": s.downtime_ms}));
            }
            Err(e) => {
                let (e_exit, e) = (e.exit(), e.to_string());
                failed += 1;
                out.line(format!("[{}] maintenance {word}: FAILED — {e}", host.name));
                out.emit(Event::Maintenance {
                    host: host.name.clone(),
                    on,
                    ok: false,
                    changed: None,
                    already: None,
                    downtime_ms: None,
                    error: Some(e.clone()),
                });
                hosts.push(json!({"host": host.name, "ok": false, "error": e}));
                // The worst outcome wins: a failure beats a refusal.
                exit = match (exit, e_exit) {
                    (Exit::Failed, _) | (_, Exit::Failed) => Exit::Failed,
                    (_, other) => other,
                };
            }
        }
    }
    let n = plan.hosts.len();
    let message = if failed == 0 {
        format!(
            "maintenance of {} is {} on {n} host(s){}",
            plan.app,
            word.to_uppercase(),
            downtime
                .map(|ms| format!("; downtime {ms} ms"))
                .unwrap_or_default()
        )
    } else if on {
        format!(
            "maintenance {word} failed on {failed} of {n} host(s); a host whose agent journaled it stays ON \
             (failing safe): fix the cause and run `golivectl maintenance on` again, or `golivectl maintenance off`"
        )
    } else {
        format!(
            "maintenance {word} failed on {failed} of {n} host(s); those stay ON in their journals: \
             fix the cause and run `golivectl maintenance off` again"
        )
    };
    out.line(&message);
    out.emit(Event::MaintenanceResult {
        app: plan.app.clone(),
        on,
        ok: failed == 0,
        hosts: json!(hosts),
        downtime_ms: downtime,
        message,
        exit: exit.code(),
    });
    Ok(exit)
}
