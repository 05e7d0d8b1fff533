//! `golivectl status [PLAN]` and `golivectl jobs PLAN`.

use std::path::Path;

use golive_shared::protocol::{
    AppStatus, ListJobsRequest, ReleaseSummary, Request, Response, RollbackPoint,
};
use golive_shared::timefmt::utc;
use serde_json::json;

use crate::jobs::agent_status;
use crate::output::{Exit, Out, usage};
use crate::plan;
use crate::watchdog::watchdog_line;

pub async fn status(out: Out, state: &Path, plan_path: &Path) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    // Deployments of the app whose controller is gone (issue 14).
    for (id, resume) in crate::jobs::interrupted(state, &plan.app) {
        out.line(format!(
            "deployment {id} of {} is INTERRUPTED (its controller is gone); carry it on with `{resume}`",
            plan.app
        ));
        out.event(&json!({"event": "interrupted", "deployment": id, "resume": resume}));
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in plan.hosts.iter().enumerate() {
        let client = host.client.clone();
        set.spawn(async move { (i, agent_status(&client).await) });
    }
    let mut results = set.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    let mut exit = Exit::Done;
    let mut hosts_json = Vec::new();
    for (i, result) in results {
        let host = &plan.hosts[i];
        match result {
            Ok(s) => {
                out.line(format!(
                    "{} ({}): golive-agent {} as {:?}, protocol {}, up since {}",
                    host.name,
                    host.client.addr,
                    s.agent_version,
                    s.agent_name,
                    s.protocol,
                    utc(s.started_at)
                ));
                if let Some(note) = version_note(&s.agent_version, golive_shared::GOLIVE_VERSION) {
                    out.line(format!("  WARNING: {note}"));
                }
                if let Some(r) = &s.revocation
                    && let Some(e) = &r.error
                {
                    out.line(format!(
                        "  WARNING: {e}; the agent keeps its last good deny list ({} serials, read at {})",
                        r.serials,
                        utc(r.loaded_at)
                    ));
                }
                if s.refused_connections > 0 {
                    out.line(format!(
                        "  refused {} connection(s) before a request since it started (its log says from where and why)",
                        s.refused_connections
                    ));
                }
                for app in &s.apps {
                    let lock = app
                        .lock
                        .as_ref()
                        .map(|l| {
                            format!(
                                ", LOCKED by {} ({}) since {}",
                                l.deployment,
                                l.holder,
                                utc(l.since)
                            )
                        })
                        .unwrap_or_default();
                    let maintenance = app
                        .maintenance
                        .as_ref()
                        .map(|m| {
                            format!(
                                ", IN MAINTENANCE since {} ({}, by {})",
                                utc(m.on_since),
                                m.reason,
                                m.by
                            )
                        })
                        .unwrap_or_default();
                    let commit = app
                        .releases
                        .iter()
                        .find(|r| Some(&r.id) == app.current.as_ref())
                        .and_then(|r| r.commit.as_deref())
                        .map(|c| format!(" (git commit {})", &c[..c.len().min(12)]))
                        .unwrap_or_default();
                    out.line(format!(
                        "  {}: current {}{commit}, rollback to {}, {} release(s) on disk{lock}{maintenance}",
                        app.name,
                        app.current.as_deref().unwrap_or("(none)"),
                        app.previous.as_deref().unwrap_or("(none)"),
                        app.releases.len()
                    ));
                    for r in &app.releases {
                        out.line(format!("    {} {}", r.id, release_state(app, r).1));
                    }
                    if let Some(w) = &app.watchdog {
                        out.line(format!("    {}", watchdog_line(w)));
                    }
                    if let Some(p) = &app.rollback_point {
                        out.line(format!("    {}", point_line(p)));
                    }
                }
                hosts_json.push(json!({
                    "host": host.name,
                    "address": host.client.addr,
                    "ok": true,
                    "agent_name": s.agent_name,
                    "agent_version": s.agent_version,
                    "protocol": s.protocol,
                    "started_at": s.started_at,
                    "revocation": s.revocation.as_ref().map(|r| json!({
                        "path": r.path,
                        "serials": r.serials,
                        "loaded_at": r.loaded_at,
                        "error": r.error,
                    })),
                    "refused_connections": s.refused_connections,
                    "version_note": version_note(&s.agent_version, golive_shared::GOLIVE_VERSION),
                    "apps": s.apps.iter().map(|a| json!({
                        "name": a.name,
                        "root": a.root,
                        "current": a.current,
                        "previous": a.previous,
                        "releases": a.releases.iter().map(|r| json!({
                            "id": r.id,
                            "state": release_state(a, r).0,
                            "artifact_sha256": r.artifact_sha256,
                            "staged_at": r.staged_at,
                            "activated_at": r.activated_at,
                            "commit": r.commit,
                        })).collect::<Vec<_>>(),
                        "maintenance": a.maintenance.as_ref().map(|m| json!({
                            "on_since": m.on_since,
                            "reason": m.reason,
                            "by": m.by,
                        })),
                        "watchdog": a.watchdog,
                        "rollback_point": a.rollback_point,
                        "lock": a.lock.as_ref().map(|l| json!({
                            "deployment": l.deployment,
                            "holder": l.holder,
                            "since": l.since,
                            "expires_at": l.expires_at,
                        })),
                    })).collect::<Vec<_>>(),
                }));
            }
            Err(e) => {
                out.line(format!("{}: UNREACHABLE: {e}", host.name));
                hosts_json.push(json!({
                    "host": host.name,
                    "address": host.client.addr,
                    "ok": false,
                    "error": e.to_string(),
                }));
                // Any failure (1) wins; refusals alone (2), however many, stay 2.
                exit = if e.exit_code() == 2 && exit != Exit::Failed {
                    Exit::Usage
                } else {
                    Exit::Failed
                };
            }
        }
    }
    out.event(&json!({ "hosts": hosts_json }));
    Ok(exit)
}

/// When agent and controller are different releases (issue 16): they
/// speak the same protocol (a different one is refused before this, with
/// the upgrade advice), but behaviour documented for one may not be the
/// other's. `None` when they are the same.
pub fn version_note(agent: &str, controller: &str) -> Option<String> {
    (agent != controller).then(|| {
        format!(
            "golive-agent {agent} and golivectl {controller} differ; they speak the same protocol \
             ({}), so they work together, but upgrade the older one so both behave as the \
             newer's documentation says",
            golive_shared::protocol::PROTOCOL_VERSION
        )
    })
}

/// The newest rollback point the host keeps, in one line.
fn point_line(p: &RollbackPoint) -> String {
    format!(
        "rollback point of deployment {}: {} -> back to {}, {}{}{}",
        p.deployment,
        p.release,
        p.previous
            .as_deref()
            .unwrap_or("(nothing: a first install)"),
        p.state.as_str().replace('_', " "),
        if p.migrations.is_empty() {
            String::new()
        } else {
            format!(
                ", migrations {}",
                p.migrations
                    .iter()
                    .map(|m| format!("{} ({})", m.version, m.tag.as_deref().unwrap_or("untagged")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        p.error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )
}

/// What a release on disk is to its app (issue 12): `current`,
/// `rollback_target`, `live_before` (went live once, neither of those),
/// `never_live` (staged, never activated: a failed or refused deployment
/// left it, and its id can be deployed again) or `unknown` (a directory
/// golive did not stage). With the words `status` prints.
fn release_state(app: &AppStatus, r: &ReleaseSummary) -> (&'static str, String) {
    let staged = r
        .staged_at
        .map(|at| format!(", staged {}", utc(at)))
        .unwrap_or_default();
    let live = r
        .activated_at
        .map(|at| format!(", last live {}", utc(at)))
        .unwrap_or_default();
    if app.current.as_deref() == Some(r.id.as_str()) {
        ("current", format!("current{staged}{live}"))
    } else if app.previous.as_deref() == Some(r.id.as_str()) {
        ("rollback_target", format!("rollback target{staged}{live}"))
    } else if r.activated_at.is_some() {
        ("live_before", format!("live before{staged}{live}"))
    } else if r.staged_at.is_some() {
        (
            "never_live",
            format!("staged, never live{staged} (its id can be deployed again)"),
        )
    } else {
        (
            "unknown",
            "not staged by golive (not in the agent's journal; golive never removes it)".into(),
        )
    }
}

pub async fn jobs(out: Out, plan_path: &Path, limit: u32) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    let mut all = Vec::new();
    for host in &plan.hosts {
        let jobs = match host
            .client
            .call(&Request::ListJobs(ListJobsRequest { limit }))
            .await
        {
            Ok(Response::Jobs(j)) => j,
            Ok(other) => return Err(host.client.unexpected(&other).into()),
            Err(e) => return Err(usage(e.to_string())),
        };
        for j in jobs {
            out.line(format!(
                "{} job {}: {} {} {} by {} at {}{}",
                host.name,
                j.id,
                j.spec.kind(),
                j.spec.app(),
                j.state.as_str(),
                j.submitted_by,
                utc(j.submitted_at),
                j.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
            all.push(json!({
                "host": host.name,
                "id": j.id,
                "kind": j.spec.kind(),
                "app": j.spec.app(),
                "state": j.state.as_str(),
                "idempotency_key": j.idempotency_key,
                "submitted_by": j.submitted_by,
                "submitted_at": j.submitted_at,
                "finished_at": j.finished_at,
                "error": j.error,
            }));
        }
    }
    out.event(&json!({ "jobs": all }));
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue16_different_versions_are_a_warning_the_same_are_not() {
        assert_eq!(version_note("0.1.0", "0.1.0"), None);
        let note = version_note("0.1.0", "0.2.0").unwrap();
        assert!(
            note.contains("golive-agent 0.1.0 and golivectl 0.2.0 differ"),
            "{note}"
        );
        assert!(note.contains("upgrade the older"), "{note}");
    }
}
