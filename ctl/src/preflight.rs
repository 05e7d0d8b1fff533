//! The checks before a deploy that `golivectl preflight` shows and
//! `golivectl deploy` enforces (issue 12: preflight is not advisory): the
//! agents' own read-only checks under the plan's `[gate]`, and the release
//! artifact scan for the plan's forbidden patterns.

use std::path::PathBuf;

use golive_shared::protocol::{
    PreflightCheck, PreflightReport, PreflightRequest, Request, Response,
};

use crate::plan::{Plan, PreDeployBackup};
use crate::probes::Verdict;
use crate::scan::{self, ScanReport};
use crate::transport::Link;

/// The agent's own read-only checks of the app (lock, maintenance,
/// databases, backup tools and room, release files, migrations).
pub(crate) async fn agent_checks(
    client: &Link,
    app: &str,
    backup: bool,
) -> Result<PreflightReport, String> {
    let req = Request::Preflight(PreflightRequest {
        app: app.into(),
        backup,
        probes_only: false,
    });
    match client.call(&req).await.map_err(|e| e.to_string())? {
        Response::Preflight(r) => Ok(r),
        other => Err(client.unexpected(&other).to_string()),
    }
}

/// Files a check that did not pass under the plan's gate.
pub(crate) fn judge_check(verdict: &mut Verdict, host: &str, c: &PreflightCheck) {
    if c.status.failed() {
        verdict.add(
            c.severity,
            format!(
                "{host} {} ({}, {}): {}",
                c.name,
                c.severity.as_str(),
                c.status.as_str(),
                c.message
            ),
        );
    }
}

/// What `golivectl deploy` enforces before anything changes (issue 12:
/// preflight is not advisory): every host's agent checks under the plan's
/// `[gate]`, and the artifact scan. Not in it: the probes of the live
/// release (the gate judges the new release after the switch) and the
/// window (`--hotfix`). Returns the blocking reasons (empty: go) and the
/// warnings.
pub async fn deploy_checks(plan: &Plan) -> (Vec<String>, Vec<String>) {
    let scan_task = artifact_to_scan(plan).ok().map(|artifact| {
        let cfg = plan.scan.clone();
        tokio::task::spawn_blocking(move || scan::scan(&artifact, &cfg))
    });
    let backup = plan.backup != PreDeployBackup::None;
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in plan.hosts.iter().enumerate() {
        let client = host.client.clone();
        let app = plan.app.clone();
        set.spawn(async move { (i, agent_checks(&client, &app, backup).await) });
    }
    let mut answers = set.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    let mut verdict = Verdict {
        policy: plan.gate,
        ..Verdict::default()
    };
    for (i, answer) in answers {
        let host = &plan.hosts[i];
        match answer {
            Ok(report) => {
                for c in &report.checks {
                    judge_check(&mut verdict, &host.name, c);
                }
            }
            Err(e) => verdict
                .blocking
                .push(format!("host {} ({}): {e}", host.name, host.client.addr)),
        }
    }
    if let Some(task) = scan_task {
        match task.await {
            Ok(Ok(report)) => {
                if let Some(reason) = scan_blocking(&report) {
                    verdict.blocking.push(reason);
                }
            }
            Ok(Err(e)) => verdict.blocking.push(e),
            Err(e) => verdict
                .blocking
                .push(format!("the artifact scan stopped: {e}")),
        }
    }
    (verdict.blocking, verdict.warnings)
}

/// The blocking reason of a scan with hits.
pub(crate) fn scan_blocking(report: &ScanReport) -> Option<String> {
    let total = report.total();
    let first = report.hits.first()?;
    Some(format!(
        "the release artifact contains forbidden text: {total} hit(s), first {}:{}: {}; \
         remove it from the source and rebuild the artifact",
        first.path, first.line, first.pattern
    ))
}

/// The scan's outcome: done, skipped (why), left to the hosts (a git
/// release: what they do), or failed (why).
pub(crate) enum Scan {
    Done {
        artifact: PathBuf,
        report: ScanReport,
    },
    Skipped(String),
    OnHosts(String),
    Failed(String),
}

/// The artifact a controller can scan, or why there is none.
pub(crate) fn artifact_to_scan(plan: &Plan) -> Result<PathBuf, Scan> {
    if plan.scan.forbidden.is_empty() {
        return Err(Scan::Skipped(
            "the plan lists no forbidden patterns ([preflight] forbidden = [...])".into(),
        ));
    }
    match plan.release.as_ref().map(|r| &r.source) {
        None => Err(Scan::Skipped(
            "the plan names no release (no [release] section)".into(),
        )),
        Some(crate::plan::Source::Git(r)) => Err(Scan::OnHosts(format!(
            "the release is git ref {r:?}, fetched by each host: each agent searches the tree it \
             exports for {} at staging and refuses the stage on a hit (nothing goes live)",
            plan.scan
                .forbidden
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Some(crate::plan::Source::Artifact(path)) => Ok(path.clone()),
    }
}
