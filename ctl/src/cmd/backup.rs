//! `golivectl backup create|list|verify|restore PLAN`: drive the agents'
//! backup jobs on every host of a plan. Backup ids are per host (each agent
//! keeps its own catalog); verify and restore act on every host that has the
//! id, or on `--host`. A restore prints what it throws away (rows per table
//! now and in the backup) and, with `--deployment D`, is recorded as a later
//! action on deployment D in the controller journal.

use std::path::Path;

use golive_shared::protocol::{
    CreateBackup, JobResult, JobSpec, JobState, ListBackupsRequest, Request, Response,
    RestoreBackup, TableRows, VerifyBackup,
};
use golive_shared::timefmt::utc;
use serde_json::json;

use crate::cli::BackupCommand;
use crate::deployment::job_exit;
use crate::jobs::run_job;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Host, Plan};

pub async fn run(out: Out, state: &Path, cmd: BackupCommand) -> anyhow::Result<Exit> {
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
                exit = worst(exit, job(out, host, spec, "backup", None).await);
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
                exit = worst(exit, job(out, h, spec, "verify", None).await);
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
            // The restore is recorded on the deployment it names, when this
            // controller's journal has it (a restore is never held up by it).
            let journal = match &deployment {
                Some(d) => {
                    let j = crate::journal::Journal::open(state)?;
                    if j.deployment(d)?.is_some() {
                        Some(j)
                    } else {
                        out.line(format!(
                            "deployment {d} is not in {}: the restore is not recorded on it",
                            state.display()
                        ));
                        None
                    }
                }
                None => None,
            };
            let record = journal
                .as_ref()
                .zip(deployment.as_deref())
                .map(|(j, d)| (j, d, plan.operator.as_str()));
            let mut exit = Exit::Done;
            for h in hosts {
                let spec = JobSpec::Restore(RestoreBackup {
                    app: plan.app.clone(),
                    id: id.clone(),
                    deployment: deployment.clone(),
                });
                exit = worst(exit, job(out, h, spec, "restore", record).await);
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
/// `record`: (journal, deployment, operator) to append a restore to.
async fn job(
    out: Out,
    host: &Host,
    spec: JobSpec,
    what: &str,
    record: Option<(&crate::journal::Journal, &str, &str)>,
) -> Exit {
    let key = format!(
        "{what}:{}:{}:{}",
        host.name,
        golive_shared::protocol::now_millis(),
        std::process::id()
    );
    match run_job(out, &host.client, key, None, spec).await {
        Ok(job) if job.state == JobState::Succeeded => {
            if let Some(JobResult::Restored {
                id,
                failed_state_backup,
                duration_ms,
                tables,
            }) = &job.result
            {
                let summary = restore_summary(id, failed_state_backup, *duration_ms, tables);
                out.line(format!("[{}] {what}: ok — {summary}", host.name));
                for t in tables {
                    out.line(format!(
                        "[{}]   {}: {}",
                        host.name,
                        t.database,
                        t.describe(failed_state_backup)
                    ));
                }
                out.event(&json!({
                    "event": "result", "host": host.name, "step": what, "ok": true,
                    "id": id, "failed_state_backup": failed_state_backup,
                    "duration_ms": duration_ms,
                    "rows_discarded": tables.iter().map(TableRows::lost).sum::<u64>(),
                    "tables": tables.iter().map(|t| json!({
                        "database": t.database, "table": t.table, "now": t.now,
                        "backup": t.backup,
                        "difference": t.now.unwrap_or(0) as i64 - t.backup.unwrap_or(0) as i64,
                    })).collect::<Vec<_>>(),
                }));
                if let Some((journal, deployment, by)) = record {
                    let detail = format!(
                        "on {}: {summary}{}",
                        host.name,
                        tables
                            .iter()
                            .filter(|t| t.now != t.backup)
                            .map(|t| format!(
                                "; {}: {}",
                                t.database,
                                t.describe(failed_state_backup)
                            ))
                            .collect::<String>()
                    );
                    if let Err(e) = journal.add_action(deployment, by, "backup-restored", &detail) {
                        out.line(format!(
                            "[{}] could not record the restore on deployment {deployment}: {e}",
                            host.name
                        ));
                    }
                }
                return Exit::Done;
            }
            let detail = match &job.result {
                Some(r) => format!("{r:?}"),
                None => String::new(),
            };
            out.line(format!("[{}] {what}: ok", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": what, "ok": true, "result": detail}));
            Exit::Done
        }
        Ok(job) => {
            // A refusal that changed nothing (corrupt backup, no space,
            // unknown name) is the operator's to fix: exit 2 by the
            // agent's code.
            let exit = job_exit(&job);
            let e = job.error.unwrap_or_default();
            out.line(format!("[{}] {what}: FAILED — {e}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": what, "ok": false, "error": e}));
            exit
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

/// `restored X in 812 ms; 71 row(s) written since the backup are only in
/// failed-state backup Y`.
fn restore_summary(id: &str, failed_state: &str, duration_ms: u64, tables: &[TableRows]) -> String {
    let lost: u64 = tables.iter().map(TableRows::lost).sum();
    let gone: Vec<&str> = tables
        .iter()
        .filter(|t| t.now.is_some() && t.backup.is_none())
        .map(|t| t.table.as_str())
        .collect();
    let mut s = format!("restored {id} in {duration_ms} ms; ");
    if tables.is_empty() {
        s.push_str(&format!("what was there is saved as {failed_state}"));
    } else if lost == 0 && gone.is_empty() {
        s.push_str(&format!(
            "no row was discarded (what was there is saved as {failed_state})"
        ));
    } else {
        s.push_str(&format!(
            "{lost} row(s) not in the backup were discarded{}: they are kept in failed-state backup \
             {failed_state}",
            if gone.is_empty() {
                String::new()
            } else {
                format!(" (tables not in the backup: {})", gone.join(", "))
            }
        ));
    }
    s
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
