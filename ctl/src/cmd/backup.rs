//! `golivectl backup create|list|verify|restore PLAN`: drive the agents'
//! backup jobs on every host of a plan. Backup ids are per host (each agent
//! keeps its own catalog); verify and restore act on every host that has the
//! id, or on `--host`.

use std::path::Path;

use golive_shared::protocol::{
    CreateBackup, JobSpec, JobState, ListBackupsRequest, Request, Response, RestoreBackup,
    VerifyBackup,
};
use golive_shared::timefmt::utc;
use serde_json::json;

use crate::cli::BackupCommand;
use crate::cmd::deploy::run_job;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Host, Plan};

pub async fn run(out: Out, cmd: BackupCommand) -> anyhow::Result<Exit> {
    match cmd {
        BackupCommand::Create {
            plan,
            label,
            only,
            verify,
        } => {
            let plan = load(&plan)?;
            let mut exit = Exit::Done;
            for host in &plan.hosts {
                let spec = JobSpec::Backup(CreateBackup {
                    app: plan.app.clone(),
                    label: label.clone(),
                    only: only.clone(),
                    deployment: None,
                    verify,
                });
                exit = worst(exit, job(out, host, spec, "backup").await);
            }
            Ok(exit)
        }
        BackupCommand::List { plan } => list(out, &load(&plan)?).await,
        BackupCommand::Verify { plan, id, host } => {
            let plan = load(&plan)?;
            let hosts = hosts_with(&plan, &id, host.as_deref()).await?;
            let mut exit = Exit::Done;
            for h in hosts {
                let spec = JobSpec::VerifyBackup(VerifyBackup {
                    app: plan.app.clone(),
                    id: id.clone(),
                });
                exit = worst(exit, job(out, h, spec, "verify").await);
            }
            Ok(exit)
        }
        BackupCommand::Restore {
            plan,
            id,
            host,
            deployment,
        } => {
            let plan = load(&plan)?;
            let hosts = hosts_with(&plan, &id, host.as_deref()).await?;
            let mut exit = Exit::Done;
            for h in hosts {
                let spec = JobSpec::Restore(RestoreBackup {
                    app: plan.app.clone(),
                    id: id.clone(),
                    deployment: deployment.clone(),
                });
                exit = worst(exit, job(out, h, spec, "restore").await);
            }
            Ok(exit)
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Plan> {
    plan::load(path).map_err(|e| usage(e.to_string()))
}

fn worst(a: Exit, b: Exit) -> Exit {
    if a.code() >= b.code() && a != Exit::Done {
        a
    } else {
        b
    }
}

/// Runs one job on one host and reports it; the exit code it deserves.
async fn job(out: Out, host: &Host, spec: JobSpec, what: &str) -> Exit {
    let key = format!(
        "{what}:{}:{}:{}",
        host.name,
        golive_shared::protocol::now_millis(),
        std::process::id()
    );
    match run_job(out, &host.client, key, None, spec).await {
        Ok(job) if job.state == JobState::Succeeded => {
            let detail = match &job.result {
                Some(r) => format!("{r:?}"),
                None => String::new(),
            };
            out.line(format!("[{}] {what}: ok", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": what, "ok": true, "result": detail}));
            Exit::Done
        }
        Ok(job) => {
            let e = job.error.unwrap_or_default();
            out.line(format!("[{}] {what}: FAILED — {e}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": what, "ok": false, "error": e}));
            // A refusal that changed nothing (corrupt backup, no space,
            // unknown name) is the operator's to fix.
            if e.contains("refused")
                || e.contains("nothing was written")
                || e.contains("declares no")
            {
                Exit::Usage
            } else {
                Exit::Failed
            }
        }
        Err(e) => {
            out.line(format!("[{}] {what}: {e}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": what, "ok": false, "error": e.to_string()}));
            if e.exit_code() == 2 {
                Exit::Usage
            } else {
                Exit::Failed
            }
        }
    }
}

async fn catalog(
    host: &Host,
    app: &str,
) -> anyhow::Result<Vec<golive_shared::protocol::BackupInfo>> {
    match host
        .client
        .call(&Request::ListBackups(ListBackupsRequest {
            app: app.into(),
        }))
        .await
    {
        Ok(Response::Backups(b)) => Ok(b),
        Ok(other) => Err(host.client.unexpected(&other).into()),
        Err(e) => Err(usage(e.to_string())),
    }
}

async fn hosts_with<'a>(
    plan: &'a Plan,
    id: &str,
    only: Option<&str>,
) -> anyhow::Result<Vec<&'a Host>> {
    if let Some(name) = only
        && !plan.hosts.iter().any(|h| h.name == name)
    {
        return Err(usage(format!(
            "no host {name:?} in the plan; hosts: {}",
            plan.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut found = Vec::new();
    for host in plan
        .hosts
        .iter()
        .filter(|h| only.is_none_or(|n| n == h.name))
    {
        if catalog(host, &plan.app).await?.iter().any(|b| b.id == id) {
            found.push(host);
        }
    }
    if found.is_empty() {
        return Err(usage(format!(
            "no host has backup {id:?} of {}; see `golivectl backup list PLAN`",
            plan.app
        )));
    }
    Ok(found)
}

async fn list(out: Out, plan: &Plan) -> anyhow::Result<Exit> {
    let mut all = Vec::new();
    for host in &plan.hosts {
        let backups = catalog(host, &plan.app).await?;
        if backups.is_empty() {
            out.line(format!("{}: no backups of {}", host.name, plan.app));
        }
        for b in &backups {
            let verified = match b.verified {
                Some(true) => "verified",
                Some(false) => "VERIFY FAILED",
                None => "not verified",
            };
            out.line(format!(
                "{}  {}  {}  {}  {} bytes  {}  {}{}",
                host.name,
                b.id,
                utc(b.created_at),
                b.state,
                b.total_bytes,
                verified,
                b.parts
                    .iter()
                    .map(|p| format!("{}:{}", p.kind, p.name))
                    .collect::<Vec<_>>()
                    .join(","),
                b.deployment
                    .as_ref()
                    .map(|d| format!("  (deployment {d})"))
                    .unwrap_or_default()
            ));
            all.push(json!({
                "host": host.name,
                "id": b.id,
                "label": b.label,
                "created_at": b.created_at,
                "state": b.state,
                "release": b.release,
                "deployment": b.deployment,
                "verified": b.verified,
                "verify_detail": b.verify_detail,
                "total_bytes": b.total_bytes,
                "offsite": b.offsite,
                "error": b.error,
                "parts": b.parts.iter().map(|p| json!({"name": p.name, "kind": p.kind, "file": p.file, "bytes": p.bytes, "sha256": p.sha256})).collect::<Vec<_>>(),
            }));
        }
    }
    out.event(&json!({ "backups": all }));
    Ok(Exit::Done)
}
