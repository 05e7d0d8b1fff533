//! `golivectl run PLAN COMMAND`: runs a command the app declares on each
//! host (`[apps.APP.commands.NAME]` in the agent's config), host by host in
//! plan order, streaming its output. The controller only names the command;
//! an agent refuses a name it does not declare and lists the ones it does.
//!
//! Exit: 0 when it succeeded everywhere; 1 when it failed somewhere; 2 when
//! refused (unknown name, invalid name, app locked by a deployment, agent
//! unreachable). The first failure or refusal stops the run: the hosts after
//! it are named as not run.

use std::path::Path;

use golive_shared::names;
use golive_shared::protocol::{JobResult, JobSpec, JobState, RunCommand, now_millis};
use serde_json::json;

use crate::jobs::run_job;
use crate::journal::{RandomError, random_hex};
use crate::output::{Exit, Out, usage};
use crate::plan;

/// A key no earlier run used: running a command again is a new action. An
/// error when the system's random source fails (issue 11): a key that
/// lost its randomness could match an earlier run's, whose job the agent
/// would then report instead of running the command.
fn fresh_key(command: &str, host: &str) -> Result<String, RandomError> {
    Ok(format!(
        "run:{command}:{host}:{}-{}-{}",
        now_millis(),
        std::process::id(),
        random_hex(4, "idempotency key")?
    ))
}

fn report(out: Out, host: &str, command: &str, state: &str, detail: &str) {
    out.line(format!(
        "[{host}] run {command}: {state}{}",
        if detail.is_empty() {
            String::new()
        } else {
            format!(" — {}", crate::jobs::headline(detail))
        }
    ));
    out.event(&json!({"event": "step", "host": host, "step": "run", "command": command, "state": state, "detail": detail}));
}

pub async fn run(out: Out, plan_path: &Path, command: &str) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    names::check_app_name(command).map_err(|_| {
        usage(format!(
            "invalid command name {command:?}: commands are named in the agent config \
             ([apps.{}.commands.NAME]) with lowercase letters, digits, '-' or '_'",
            plan.app
        ))
    })?;
    out.line(format!(
        "running {command} of {} on {} host(s)",
        plan.app,
        plan.hosts.len()
    ));
    // Every key before the first host runs: a failing random source stops
    // the run before anything ran.
    let keys = plan
        .hosts
        .iter()
        .map(|h| fresh_key(command, &h.name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut outcome: Option<(Exit, String)> = None;
    let mut done = 0;
    for ((i, host), key) in plan.hosts.iter().enumerate().zip(keys) {
        let spec = JobSpec::RunCommand(RunCommand {
            app: plan.app.clone(),
            name: command.to_string(),
        });
        match run_job(out, &host.client, key, None, spec).await {
            Ok(job) if job.state == JobState::Succeeded => {
                let detail = match job.result {
                    Some(JobResult::Command {
                        exit_code,
                        duration_ms,
                        ..
                    }) => format!("exit {exit_code} in {duration_ms} ms"),
                    _ => String::new(),
                };
                report(out, &host.name, command, "ok", &detail);
                done += 1;
            }
            Ok(job) => {
                let why = job.error.unwrap_or_else(|| "no message".into());
                report(out, &host.name, command, job.state.as_str(), &why);
                outcome = Some((
                    Exit::Failed,
                    format!(
                        "{command} {} on {} (job {}): {why}",
                        job.state.as_str(),
                        host.name,
                        job.id
                    ),
                ));
            }
            Err(e) => {
                let exit = if e.exit_code() == 2 {
                    Exit::Usage
                } else {
                    Exit::Failed
                };
                let state = if exit == Exit::Usage {
                    "refused"
                } else {
                    "failed"
                };
                report(out, &host.name, command, state, &e.to_string());
                outcome = Some((exit, e.to_string()));
            }
        }
        if let Some((exit, why)) = outcome.take() {
            let skipped: Vec<&str> = plan.hosts[i + 1..]
                .iter()
                .map(|h| h.name.as_str())
                .collect();
            let mut message = why;
            if !skipped.is_empty() {
                message.push_str(&format!("; not run on: {}", skipped.join(", ")));
            }
            outcome = Some((exit, message));
            break;
        }
    }
    let (exit, message) =
        outcome.unwrap_or_else(|| (Exit::Done, format!("{command} succeeded on {done} host(s)")));
    out.line(crate::jobs::headline(&message));
    out.event(&json!({"event": "result", "command": command, "app": plan.app, "hosts_done": done, "message": message, "exit": exit.code()}));
    Ok(exit)
}
