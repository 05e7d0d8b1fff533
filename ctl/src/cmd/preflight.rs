//! `golivectl preflight PLAN`: the checks before a deploy (issue 5 part 3,
//! seed 000's `01_preflight_checks.sh`). Nothing changes anywhere: every
//! agent call is a read (hello, status, preflight, probe run), no job is
//! submitted, no lock taken, and the controller's journal is not opened.
//!
//! 1. every agent reachable, speaking our protocol, declaring the app, and
//!    not already holding the plan's release id;
//! 2. the agent's own checks ([`golive_shared::protocol::PreflightReport`]):
//!    lock, maintenance, databases, backup tools and room, release files,
//!    migrations;
//! 3. every probe of the app on the current release (tls probes are shown
//!    as the TLS expiry check);
//! 4. the deployment window: open or closed, and when it next opens;
//! 5. the release artifact scan for the plan's forbidden patterns
//!    ([`crate::scan`]); a git release is scanned by each host at staging
//!    instead (it never passes through the controller), which this says.
//!
//! The verdict follows the plan's `[gate]` ([`crate::probes::gate_with`]): a
//! check or probe whose severity maps to rollback or pause (by default
//! critical and high) that does not pass, an unreachable host, or a
//! forbidden pattern in the artifact makes it NOT READY (exit 1). A closed
//! window is a warning: preflight is meant to run before the window opens,
//! and `golivectl deploy` enforces it. Exit 0 READY, 2 bad plan.

use std::path::Path;

use golive_shared::GOLIVE_VERSION;
use golive_shared::protocol::{
    PreflightCheck, PreflightReport, ProbeResult, ProbeStatus, StatusResponse,
};
use serde_json::{Value, json};

use crate::client::ClientError;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, PreDeployBackup};
use crate::preflight::{Scan, agent_checks, artifact_to_scan, judge_check, scan_blocking};
use crate::probes::{self, GREEN, HostProbes, RED, Verdict, YELLOW, colored, use_color};
use crate::scan::{self};
use crate::transport::Link;
use crate::window::{self, State};

/// What one host answered.
struct HostPreflight {
    host: String,
    address: String,
    outcome: Result<Answer, String>,
}

struct Answer {
    status: StatusResponse,
    report: PreflightReport,
    probes: Result<golive_shared::protocol::ProbeReport, ClientError>,
}

async fn ask(
    client: &Link,
    plan_app: &str,
    release: Option<&str>,
    backup: bool,
) -> Result<Answer, String> {
    let status = crate::jobs::agent_status(client)
        .await
        .map_err(|e| e.to_string())?;
    let Some(app) = status.apps.iter().find(|a| a.name == plan_app) else {
        return Err(format!(
            "agent {} at {} declares no app {plan_app:?}; its apps: {}; declare it in that agent's config",
            client.host,
            client.addr,
            status
                .apps
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if let Some(id) = release {
        // The rule deploy applies (issue 12): only a release that went live keeps its id.
        crate::jobs::reused_id(&client.host, plan_app, app, id)?;
    }
    let report = agent_checks(client, plan_app, backup).await?;
    let probes = probes::run(client, plan_app, &[]).await;
    Ok(Answer {
        status,
        report,
        probes,
    })
}

fn tls_label(r: &ProbeResult) -> String {
    if r.kind == "tls" {
        format!("TLS expiry: {}", probes::plain_label(r))
    } else {
        probes::plain_label(r)
    }
}

fn check_json(c: &PreflightCheck) -> Value {
    json!({
        "name": c.name,
        "status": c.status.as_str(),
        "severity": c.severity.as_str(),
        "message": c.message,
    })
}

pub async fn preflight(out: Out, plan_path: &Path) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    let now = jiff::Timestamp::now();
    let color = use_color(out);
    let release = plan.release.as_ref().map(|r| r.id.clone());

    // The scan reads a local file: on the blocking pool, beside the agents.
    let scan_task = match artifact_to_scan(&plan) {
        Err(not_here) => None.ok_or(not_here),
        Ok(artifact) => {
            let cfg = plan.scan.clone();
            Ok(tokio::task::spawn_blocking(move || {
                let r = scan::scan(&artifact, &cfg);
                (artifact, r)
            }))
        }
    };
    let backup = plan.backup != PreDeployBackup::None;
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in plan.hosts.iter().enumerate() {
        let client = host.client.clone();
        let app = plan.app.clone();
        let release = release.clone();
        set.spawn(async move { (i, ask(&client, &app, release.as_deref(), backup).await) });
    }
    let mut answers = set.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    let hosts: Vec<HostPreflight> = answers
        .into_iter()
        .map(|(i, outcome)| HostPreflight {
            host: plan.hosts[i].name.clone(),
            address: plan.hosts[i].client.addr.clone(),
            outcome,
        })
        .collect();
    let scan = match scan_task {
        Err(not_here) => not_here,
        Ok(task) => match task.await {
            Ok((artifact, Ok(report))) => Scan::Done { artifact, report },
            Ok((_, Err(e))) => Scan::Failed(e),
            Err(e) => Scan::Failed(format!("the scan stopped: {e}")),
        },
    };

    let mut verdict = Verdict {
        policy: plan.gate,
        ..Verdict::default()
    };
    out.line(format!(
        "preflight of {}{} on {} host(s)",
        plan.app,
        release
            .as_deref()
            .map(|r| format!(" release {r}"))
            .unwrap_or_default(),
        hosts.len()
    ));

    // 1. Agents.
    out.line("\nagents");
    for h in &hosts {
        match &h.outcome {
            Err(e) => {
                out.line(format!(
                    "  {}: {}",
                    h.host,
                    colored(&format!("NOT READY: {e}"), RED, color)
                ));
                verdict
                    .blocking
                    .push(format!("host {} ({}): {e}", h.host, h.address));
            }
            Ok(a) => {
                out.line(format!(
                    "  {} ({}): golive-agent {} as {:?}, protocol {}",
                    h.host,
                    h.address,
                    a.status.agent_version,
                    a.status.agent_name,
                    a.status.protocol
                ));
                if a.status.agent_version != GOLIVE_VERSION {
                    verdict.info.push(format!(
                        "host {} runs golive-agent {}, this golivectl is {GOLIVE_VERSION} (same protocol {})",
                        h.host, a.status.agent_version, a.status.protocol
                    ));
                }
            }
        }
    }

    // 2. The agents' checks.
    out.line("\nchecks");
    for h in &hosts {
        let Ok(a) = &h.outcome else { continue };
        for c in &a.report.checks {
            let (word, paint) = match c.status {
                ProbeStatus::Pass => ("pass ", GREEN),
                ProbeStatus::Fail => ("FAIL ", gate_paint(c)),
                ProbeStatus::Error => ("ERROR", gate_paint(c)),
                ProbeStatus::NotApplicable => ("n/a  ", ""),
            };
            out.line(format!(
                "  {}  {}  {} [{}]: {}",
                h.host,
                colored(word, paint, color),
                c.name,
                c.severity.as_str(),
                c.message
            ));
            judge_check(&mut verdict, &h.host, c);
        }
    }

    // 3. Probes on the current release.
    out.line("\nprobes");
    let rows: Vec<HostProbes> = hosts
        .iter()
        .filter_map(|h| {
            let a = h.outcome.as_ref().ok()?;
            Some(HostProbes {
                host: h.host.clone(),
                address: h.address.clone(),
                outcome: match &a.probes {
                    Ok(r) => Ok((a.report.probes.clone(), r.clone())),
                    Err(e) => Err(e.to_string()),
                },
            })
        })
        .collect();
    if rows.is_empty() {
        out.line("  (no host answered)");
    } else {
        probes::print_matrix(out, &rows, color, &tls_label);
    }
    for r in &rows {
        r.judge(&mut verdict, &|p| {
            if p.kind == "tls" {
                format!("TLS expiry {}", p.name)
            } else {
                p.name.clone()
            }
        });
    }

    // 4. The window.
    out.line("\nwindow");
    let window_json = match &plan.window {
        None => {
            out.line("  none: the plan has no [window]; deployments may start any time");
            Value::Null
        }
        Some(w) => match w.state(now) {
            State::Open { closes } => {
                out.line(format!(
                    "  {}: {} (closes {}, in {})",
                    colored("open", GREEN, color),
                    w.describe(),
                    window::show(&closes),
                    window::until(now, &closes)
                ));
                json!({"window": w.describe(), "open": true, "closes": closes.to_string()})
            }
            State::Closed { opens } => {
                let msg = format!(
                    "{} (opens {}, in {}); `golivectl deploy` refuses until then unless --hotfix --reason TEXT",
                    w.describe(),
                    window::show(&opens),
                    window::until(now, &opens)
                );
                out.line(format!("  {}: {msg}", colored("closed", YELLOW, color)));
                verdict
                    .warnings
                    .push(format!("outside the deployment window: {msg}"));
                json!({"window": w.describe(), "open": false, "opens": opens.to_string()})
            }
        },
    };

    // 5. The artifact scan.
    out.line("\nartifact scan");
    let scan_json = match &scan {
        Scan::Skipped(why) => {
            out.line(format!("  skipped: {why}"));
            verdict.info.push(format!("artifact scan skipped: {why}"));
            json!({"skipped": why})
        }
        Scan::OnHosts(what) => {
            out.line(format!("  on each host at staging: {what}"));
            verdict
                .info
                .push(format!("artifact scan on each host at staging: {what}"));
            json!({"on_hosts": what, "forbidden": plan.scan.forbidden})
        }
        Scan::Failed(e) => {
            out.line(format!(
                "  {}",
                colored(&format!("FAILED: {e}"), RED, color)
            ));
            verdict.blocking.push(e.clone());
            json!({"error": e})
        }
        Scan::Done { artifact, report } => {
            let total = report.hits.len() as u64 + report.more;
            out.line(format!(
                "  {}: {} file(s), {} bytes searched for {}: {}",
                artifact.display(),
                report.files,
                report.bytes,
                plan.scan
                    .forbidden
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if total == 0 {
                    colored("clean", GREEN, color)
                } else {
                    colored(&format!("{total} hit(s)"), RED, color)
                }
            ));
            for h in &report.hits {
                out.line(format!("    {}:{}: {}", h.path, h.line, h.pattern));
            }
            if report.more > 0 {
                out.line(format!("    ... and {} more", report.more));
            }
            if let Some(reason) = scan_blocking(report) {
                verdict.blocking.push(reason);
            }
            json!({
                "artifact": artifact.display().to_string(),
                "forbidden": plan.scan.forbidden,
                "files": report.files,
                "bytes": report.bytes,
                "binary_skipped": report.binary,
                "hits": report.hits,
                "more": report.more,
            })
        }
    };

    out.line("");
    probes::print_verdict(out, &verdict, color, "READY", "NOT READY");
    let exit = if verdict.go() {
        Exit::Done
    } else {
        Exit::Failed
    };
    out.event(&json!({
        "app": plan.app,
        "release": release,
        "hosts": hosts.iter().map(|h| host_json(h, &rows)).collect::<Vec<_>>(),
        "window": window_json,
        "scan": scan_json,
        "ready": verdict.go(),
        "verdict": if verdict.go() { "ready" } else { "not-ready" },
        "reasons": verdict.json(),
        "exit": exit.code(),
    }));
    Ok(exit)
}

fn gate_paint(c: &PreflightCheck) -> &'static str {
    match probes::gate(c.severity) {
        probes::Gate::Blocking => RED,
        probes::Gate::Warning => YELLOW,
        probes::Gate::Info => "",
    }
}

fn host_json(h: &HostPreflight, rows: &[HostProbes]) -> Value {
    match &h.outcome {
        Err(e) => json!({"host": h.host, "address": h.address, "ok": false, "error": e}),
        Ok(a) => {
            let probes = rows
                .iter()
                .find(|r| r.host == h.host)
                .map(HostProbes::json)
                .unwrap_or(Value::Null);
            json!({
                "host": h.host,
                "address": h.address,
                "ok": true,
                "agent_version": a.status.agent_version,
                "protocol": a.status.protocol,
                "checks": a.report.checks.iter().map(check_json).collect::<Vec<_>>(),
                "probes": probes,
            })
        }
    }
}
