//! `golivectl migrate status|up|down PLAN`: the SQL migrations of the plan's
//! app on every host. `status` asks each agent (read-only); `up` and `down`
//! run a migrate job per host, like the other plan-wide jobs. Migrations a
//! later release applied (after a code-only rollback) are shown as *ahead*
//! of the release, a normal state. `down --dry-run` says what a down would
//! revert and drop from the status; `down --deployment D` records the down
//! as a later action on deployment D in the controller journal.

use std::path::Path;

use golive_shared::protocol::{
    DroppedObject, JobResult, JobSpec, JobState, MigrationStatus, MigrationStatusRequest, Request,
    Response, RunMigrations,
};
use golive_shared::timefmt::utc;
use serde_json::json;

use crate::cli::MigrateCommand;
use crate::deployment::job_exit;
use crate::jobs::run_job;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Host, Plan};

pub async fn run(out: Out, state: &Path, cmd: MigrateCommand) -> anyhow::Result<Exit> {
    match cmd {
        MigrateCommand::Status { plan, release } => status(out, &load(&plan)?, release).await,
        MigrateCommand::Up { plan, release } => jobs(out, &load(&plan)?, release, None, None).await,
        MigrateCommand::Down {
            plan,
            to,
            release,
            dry_run: true,
            ..
        } => dry_run(out, &load(&plan)?, release, to).await,
        MigrateCommand::Down {
            plan,
            to,
            release,
            deployment,
            ..
        } => {
            let plan = load(&plan)?;
            let record = match deployment {
                Some(d) => Some((crate::journal::Journal::open(state)?, d)),
                None => None,
            };
            if let Some((journal, d)) = &record
                && journal.deployment(d)?.is_none()
            {
                return Err(usage(format!(
                    "no deployment {d:?} in {}; see `golivectl history`",
                    state.display()
                )));
            }
            let record = record
                .as_ref()
                .map(|(j, d)| (j, d.as_str(), plan.operator.as_str()));
            jobs(out, &plan, release, Some(to), record).await
        }
    }
}

/// What `down --to N` would revert on each host, and what it would drop.
async fn dry_run(out: Out, plan: &Plan, release: Option<String>, to: u32) -> anyhow::Result<Exit> {
    let mut hosts = Vec::new();
    let mut exit = Exit::Done;
    for host in &plan.hosts {
        let st = ask_status(host, &plan.app, release.clone()).await?;
        let revert: Vec<_> = st.applied.iter().rev().filter(|a| a.version > to).collect();
        if revert.is_empty() {
            out.line(format!(
                "[{}] migrate down to {to} would revert nothing",
                host.name
            ));
        }
        for a in &revert {
            out.line(format!(
                "[{}] would revert {:04}_{}{}: {}",
                host.name,
                a.version,
                a.name,
                if a.ahead {
                    " (ahead of the release: stored down text)"
                } else {
                    ""
                },
                if !a.has_down {
                    exit = Exit::Usage;
                    "NO DOWN MIGRATION: the down would be refused".to_string()
                } else {
                    drops_text(&a.down_drops, false)
                }
            ));
        }
        if !revert.is_empty() {
            out.line(format!(
                "[{}] a verified backup of database {} is taken before the down runs",
                host.name, st.database
            ));
        }
        hosts.push(json!({
            "host": host.name,
            "database": st.database,
            "revert": revert.iter().map(|a| json!({
                "version": a.version,
                "name": a.name,
                "ahead": a.ahead,
                "has_down": a.has_down,
                "drops": drops_json(&a.down_drops),
            })).collect::<Vec<_>>(),
        }));
    }
    out.event(&json!({ "dry_run": true, "to": to, "hosts": hosts }));
    Ok(exit)
}

/// `drops table x (3 rows), column t.c` (`dropped ...` when `past`).
fn drops_text(drops: &[DroppedObject], past: bool) -> String {
    let verb = if past { "dropped" } else { "drops" };
    if drops.is_empty() {
        format!("{verb} no table or column")
    } else {
        format!(
            "{verb} {}",
            drops
                .iter()
                .map(DroppedObject::describe)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn drops_json(drops: &[DroppedObject]) -> Vec<serde_json::Value> {
    drops
        .iter()
        .map(
            |d| json!({"version": d.version, "table": d.table, "column": d.column, "rows": d.rows}),
        )
        .collect()
}

async fn ask_status(
    host: &Host,
    app: &str,
    release: Option<String>,
) -> anyhow::Result<MigrationStatus> {
    let req = Request::MigrationStatus(MigrationStatusRequest {
        app: app.to_string(),
        release,
    });
    match host.client.call(&req).await {
        Ok(Response::MigrationStatus(s)) => Ok(s),
        Ok(other) => Err(host.client.unexpected(&other).into()),
        // The agent refuses what is the operator's to fix: no migrations
        // declared, an unknown release, a changed or misnumbered file.
        Err(e) if e.exit_code() == 2 => Err(usage(format!("{}: {e}", host.name))),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", host.name)),
    }
}

fn load(path: &Path) -> anyhow::Result<Plan> {
    plan::load(path).map_err(|e| usage(e.to_string()))
}

async fn status(out: Out, plan: &Plan, release: Option<String>) -> anyhow::Result<Exit> {
    let mut hosts = Vec::new();
    for host in &plan.hosts {
        let st = ask_status(host, &plan.app, release.clone()).await?;
        print_status(out, host, &st);
        hosts.push(status_json(host, &st));
    }
    out.event(&json!({ "hosts": hosts }));
    Ok(Exit::Done)
}

fn print_status(out: Out, host: &Host, st: &MigrationStatus) {
    let ahead: Vec<_> = st.applied.iter().filter(|a| a.ahead).collect();
    out.line(format!(
        "{}: app {} release {} database {}: {} applied, {} pending{}",
        host.name,
        st.app,
        st.release,
        st.database,
        st.applied.len(),
        st.pending.len(),
        if ahead.is_empty() {
            String::new()
        } else {
            format!(", {} ahead of the release", ahead.len())
        }
    ));
    for a in &st.applied {
        out.line(format!(
            "  {}  {:04}  {:<30}  {}  {}{}{}",
            if a.ahead { "ahead  " } else { "applied" },
            a.version,
            a.name,
            utc(a.applied_at),
            a.deployment
                .as_deref()
                .map(|d| format!("deployment {d}"))
                .unwrap_or_else(|| "manual".into()),
            a.release
                .as_deref()
                .map(|r| format!(", release {r}"))
                .unwrap_or_default(),
            a.tag
                .as_deref()
                .map(|t| format!(", {t}"))
                .unwrap_or_default()
        ));
        if a.has_down && !a.down_drops.is_empty() {
            out.line(format!(
                "           its down {}",
                drops_text(&a.down_drops, false)
            ));
        }
    }
    if let Some(newest) = ahead.last() {
        let file_newest = st
            .applied
            .iter()
            .filter(|a| !a.ahead)
            .map(|a| a.version)
            .max()
            .unwrap_or(0);
        out.line(format!(
            "  the schema is ahead of release {}: {} applied by release {} (a code-only rollback \
             leaves it so; {}). `golivectl migrate down PLAN --to {file_newest}` reverts {}",
            st.release,
            ahead
                .iter()
                .map(|a| format!("{:04}_{}", a.version, a.name))
                .collect::<Vec<_>>()
                .join(", "),
            newest.release.as_deref().unwrap_or("?"),
            if ahead.iter().all(|a| a.tag.as_deref() == Some("expand")) {
                "expand migrations: the release runs on them"
            } else {
                "not every one is tagged expand: check that the release runs on them"
            },
            if ahead.len() == 1 { "it" } else { "them" }
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
            "tag": a.tag,
            "release": a.release,
            "ahead": a.ahead,
            "has_down": a.has_down,
            "down_drops": drops_json(&a.down_drops),
        })).collect::<Vec<_>>(),
        "ahead": st.applied.iter().filter(|a| a.ahead).map(|a| a.version).collect::<Vec<_>>(),
        "pending": st.pending.iter().map(|p| json!({
            "version": p.version,
            "name": p.name,
            "tag": p.tag,
            "has_down": p.has_down,
        })).collect::<Vec<_>>(),
    })
}

/// A deployment to record the run on: (journal, deployment id, operator).
type Record<'a> = Option<(&'a crate::journal::Journal, &'a str, &'a str)>;

async fn jobs(
    out: Out,
    plan: &Plan,
    release: Option<String>,
    down_to: Option<u32>,
    record: Record<'_>,
) -> anyhow::Result<Exit> {
    let mut exit = Exit::Done;
    for host in &plan.hosts {
        let spec = JobSpec::Migrate(RunMigrations {
            app: plan.app.clone(),
            release: release.clone(),
            down_to,
            // `golivectl migrate up` is the operator committing by hand:
            // everything pending runs, contract migrations included.
            stop_before_contract: false,
            backup_first: false,
        });
        exit = worst(exit, job(out, host, spec, down_to, record).await);
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

async fn job(
    out: Out,
    host: &Host,
    spec: JobSpec,
    down_to: Option<u32>,
    record: Record<'_>,
) -> Exit {
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
            let (applied, reverted, backup, drops) = match &job.result {
                Some(JobResult::Migrated {
                    applied,
                    reverted,
                    backup,
                    drops,
                }) => (
                    applied.clone(),
                    reverted.clone(),
                    backup.clone(),
                    drops.clone(),
                ),
                _ => (Vec::new(), Vec::new(), None, Vec::new()),
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
                Some(_) => format!(
                    "reverted {}; it {}; backup {} holds the database as it was",
                    list(&reverted),
                    drops_text(&drops, true),
                    backup.as_deref().unwrap_or("?")
                ),
            };
            out.line(format!("[{}] {what}: ok — {detail}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": "migrate", "ok": true, "applied": applied, "reverted": reverted, "backup": backup, "drops": drops_json(&drops)}));
            if let Some((journal, deployment, by)) = record
                && !reverted.is_empty()
            {
                let note = format!("on {}: {what}, {detail}", host.name);
                if let Err(e) = journal.add_action(deployment, by, "migrate-down", &note) {
                    out.line(format!(
                        "[{}] could not record the down on deployment {deployment}: {e}",
                        host.name
                    ));
                }
            }
            Exit::Done
        }
        Ok(job) => {
            // A refusal (changed, missing or misnumbered migrations, no
            // down, nothing declared) is exit 2 by the agent's code.
            let exit = job_exit(&job);
            let e = job.error.unwrap_or_default();
            out.line(format!("[{}] {what}: FAILED — {e}", host.name));
            out.event(&json!({"event": "result", "host": host.name, "step": "migrate", "ok": false, "error": e}));
            exit
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
