//! `golivectl migrate status|up|down PLAN`: the SQL migrations of the plan's
//! app on every host. `status` asks each agent (read-only); `up` and `down`
//! run a migrate job per host, like the other plan-wide jobs.

use std::path::Path;

use golive_shared::protocol::{
    JobResult, JobSpec, JobState, MigrationStatus, MigrationStatusRequest, Request, Response,
    RunMigrations,
};
use golive_shared::timefmt::utc;
use serde_json::json;

use crate::cli::MigrateCommand;
use crate::cmd::deploy::run_job;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Host, Plan};

pub async fn run(out: Out, cmd: MigrateCommand) -> anyhow::Result<Exit> {
    match cmd {
        MigrateCommand::Status { plan, release } => status(out, &load(&plan)?, release).await,
        MigrateCommand::Up { plan, release } => jobs(out, &load(&plan)?, release, None).await,
        MigrateCommand::Down { plan, to, release } => {
            jobs(out, &load(&plan)?, release, Some(to)).await
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Plan> {
    plan::load(path).map_err(|e| usage(e.to_string()))
}

async fn status(out: Out, plan: &Plan, release: Option<String>) -> anyhow::Result<Exit> {
    let mut hosts = Vec::new();
    for host in &plan.hosts {
        let req = Request::MigrationStatus(MigrationStatusRequest {
            app: plan.app.clone(),
            release: release.clone(),
        });
        let st = match host.client.call(&req).await {
            Ok(Response::MigrationStatus(s)) => s,
            Ok(other) => return Err(host.client.unexpected(&other).into()),
            // The agent refuses what is the operator's to fix: no migrations
            // declared, an unknown release, a changed or misnumbered file.
            Err(e) if e.exit_code() == 2 => {
                return Err(usage(format!("{}: {e}", host.name)));
            }
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", host.name)),
        };
        print_status(out, host, &st);
        hosts.push(status_json(host, &st));
    }
    out.event(&json!({ "hosts": hosts }));
    Ok(Exit::Done)
}

fn print_status(out: Out, host: &Host, st: &MigrationStatus) {
    out.line(format!(
        "{}: app {} release {} database {}: {} applied, {} pending",
        host.name,
        st.app,
        st.release,
        st.database,
        st.applied.len(),
        st.pending.len()
    ));
    for a in &st.applied {
        out.line(format!(
            "  applied  {:04}  {:<30}  {}  {}",
            a.version,
            a.name,
            utc(a.applied_at),
            a.deployment
                .as_deref()
                .map(|d| format!("deployment {d}"))
                .unwrap_or_else(|| "manual".into())
        ));
    }
    for p in &st.pending {
        out.line(format!(
            "  pending  {:04}  {:<30}  {}  {}",
            p.version,
            p.name,
            p.tag.as_deref().unwrap_or("-"),
            if p.has_down { "has down" } else { "no down" }
        ));
    }
}

fn status_json(host: &Host, st: &MigrationStatus) -> serde_json::Value {
    json!({
        "host": host.name,
        "app": st.app,
        "release": st.release,
        "database": st.database,
        "applied": st.applied.iter().map(|a| json!({
            "version": a.version,
            "name": a.name,
            "applied_at": a.applied_at,
            "duration_ms": a.duration_ms,
            "deployment": a.deployment,
        })).collect::<Vec<_>>(),
        "pending": st.pending.iter().map(|p| json!({
            "version": p.version,
            "name": p.name,
            "tag": p.tag,
            "has_down": p.has_down,
        })).collect::<Vec<_>>(),
    })
}

async fn jobs(
    out: Out,
    plan: &Plan,
    release: Option<String>,
    down_to: Option<u32>,
) -> anyhow::Result<Exit> {
    let mut exit = Exit::Done;
    for host in &plan.hosts {
        let spec = JobSpec::Migrate(RunMigrations {
            app: plan.app.clone(),
            release: release.clone(),
            down_to,
        });
        exit = worst(exit, job(out, host, spec, down_to).await);
    }
    Ok(exit)
}

fn worst(a: Exit, b: Exit) -> Exit {
    if a.code() >= b.code() && a != Exit::Done {
        a
    } else {
        b
    }
}

/// Whether a failed migrate job's error is a refusal that changed nothing and
/// is the operator's to fix (exit 2) rather than a failure (exit 1). The
/// agent checks the migrations directory before touching the database: an
/// applied file that was changed or removed, a gap or a misordered version, a
/// malformed or duplicate name, a missing down file, no migrations declared.
/// A migration whose SQL failed, a lock held too long, or a file that changed
/// *while* migrating ("run again") are failures.
fn refused(error: &str) -> bool {
    const REFUSALS: &[&str] = &[
        "was changed after it was applied",
        "has no file in the migrations directory",
        "gap in the migration numbering",
        "is pending but the later version",
        "has no down file",
        "malformed name",
        "duplicate migration version",
        "has no up migration",
        "does not match up migration",
        "unknown migration tag",
        "declares no migrations",
        "is not declared",
        "has no release",
        "has no current release",
        "nothing was changed",
    ];
    REFUSALS.iter().any(|r| error.contains(r))
}

async fn job(out: Out, host: &Host, spec: JobSpec, down_to: Option<u32>) -> Exit {
    let what = match down_to {
        None => "migrate up".to_string(),
        Some(to) => format!("migrate down to {to}"),
    };
    let key = format!(
        "migrate:{}:{}:{}",
        host.name,
        golive_shared::protocol::now_millis(),
        std::process::id()
    );
    match run_job(out, &host.client, key, None, spec).await {
        Ok(job) if job.state == JobState::Succeeded => {
            let (applied, reverted) = match &job.result {
                Some(JobResult::Migrated { applied, reverted }) => {
                    (applied.clone(), reverted.clone())
                }
                _ => (Vec::new(), Vec::new()),
            };
            let list = |v: &[u32]| {
                v.iter()
                    .map(|n| format!("{n:04}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let detail = match down_to {
                None if applied.is_empty() => "nothing pending".to_string(),
                None => format!("applied {}", list(&applied)),
                Some(_) if reverted.is_empty() => "nothing to revert".to_string(),
                Some(_) => format!("reverted {}", list(&reverted)),
            };
            out.line(format!("[{}] {what}: ok — {detail}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": "migrate", "ok": true, "applied": applied, "reverted": reverted}));
            Exit::Done
        }
        Ok(job) => {
            let e = job.error.unwrap_or_default();
            out.line(format!("[{}] {what}: FAILED — {e}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": "migrate", "ok": false, "error": e}));
            if refused(&e) {
                Exit::Usage
            } else {
                Exit::Failed
            }
        }
        Err(e) => {
            out.line(format!("[{}] {what}: {e}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": "migrate", "ok": false, "error": e.to_string()}));
            if e.exit_code() == 2 {
                Exit::Usage
            } else {
                Exit::Failed
            }
        }
    }
}
