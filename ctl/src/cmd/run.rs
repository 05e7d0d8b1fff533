//! `golivectl run PLAN COMMAND`: runs a command the app declares on each
//! host (`[apps.APP.commands.NAME]` in the agent's config), host by host in
//! plan order, streaming its output. The controller only names the command;
//! an agent refuses a name it does not declare and lists the ones it does.
//!
//! Exit: 0 when it succeeded everywhere; 2 when refused (unknown name,
//! invalid name, app locked by a deployment, no current release, a command
//! the config gets wrong: nothing ran); 1 when the command ran and exited
//! non-zero, was killed or timed out (the agent classes that `Internal`:
//! it ran, so the host may have changed), the agent failed at its part,
//! the job was interrupted or cancelled, or an agent could not be
//! reached. The exit comes from the job's `ErrorCode` through the one
//! mapping (`job_state_exit`), never from its text. The first failure or
//! refusal stops the run: the hosts after it are named as not run.

use std::path::Path;

use golive_shared::names;
use golive_shared::protocol::{ErrorCode, JobResult, JobSpec, JobState, RunCommand, now_millis};
use serde_json::json;

use crate::client::ClientError;
use crate::deployment::error::{client_exit, job_state_exit};
use crate::jobs::run_job;
use crate::journal::{RandomError, random_hex};
use crate::output::{Exit, Out, usage};
use crate::plan;

/// What stopped a run on a host; [`RunStop::exit`] is its exit code, from
/// the variant and the agent's `ErrorCode`, never from the text.
#[derive(Debug, thiserror::Error)]
enum RunStop {
    /// The command's job ran and did not succeed (the command failed, was
    /// cancelled or interrupted); `code` is the class the agent gave it.
    #[error("{command} {} on {host} (job {id}): {why}", state.as_str())]
    Job {
        command: String,
        state: JobState,
        code: Option<ErrorCode>,
        host: String,
        id: u64,
        why: String,
    },
    /// The agent refused the job (an undeclared name, the app locked) or
    /// could not be reached.
    #[error(transparent)]
    Agent(ClientError),
}

impl RunStop {
    fn exit(&self) -> Exit {
        match self {
            RunStop::Job { state, code, .. } => job_state_exit(*state, *code),
            RunStop::Agent(e) => client_exit(e),
        }
    }
}

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
    // What stopped the run, and the message that says so.
    let mut outcome: Option<(RunStop, String)> = None;
    let mut done = 0;
    for ((i, host), key) in plan.hosts.iter().enumerate().zip(keys) {
        let spec = JobSpec::RunCommand(RunCommand {
            app: plan.app.clone(),
            name: command.to_string(),
        });
        let stop = match run_job(out, &host.client, key, None, spec).await {
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
                None
            }
            Ok(job) => {
                let why = job.error.unwrap_or_else(|| "no message".into());
                report(out, &host.name, command, job.state.as_str(), &why);
                Some(RunStop::Job {
                    command: command.to_string(),
                    state: job.state,
                    code: job.error_code,
                    host: host.name.clone(),
                    id: job.id,
                    why,
                })
            }
            Err(e) => {
                let stop = RunStop::Agent(e);
                let state = if stop.exit() == Exit::Usage {
                    "refused"
                } else {
                    "failed"
                };
                report(out, &host.name, command, state, &stop.to_string());
                Some(stop)
            }
        };
        if let Some(stop) = stop {
            let skipped: Vec<&str> = plan.hosts[i + 1..]
                .iter()
                .map(|h| h.name.as_str())
                .collect();
            let mut message = stop.to_string();
            if !skipped.is_empty() {
                message.push_str(&format!("; not run on: {}", skipped.join(", ")));
            }
            outcome = Some((stop, message));
            break;
        }
    }
    let (exit, message) = match outcome {
        Some((stop, message)) => (stop.exit(), message),
        None => (Exit::Done, format!("{command} succeeded on {done} host(s)")),
    };
    out.line(crate::jobs::headline(&message));
    out.event(&json!({"event": "result", "command": command, "app": plan.app, "hosts_done": done, "message": message, "exit": exit.code()}));
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use golive_shared::protocol::{ErrorBody, ErrorCode};

    use super::*;

    /// A run's stop keeps the words and exit code it had as an
    /// `(Exit, String)` pair; the code comes from the variant and the
    /// agent's `ErrorCode`.
    #[test]
    fn issue14_a_runs_stop_is_typed_with_its_words_and_exit_code() {
        let job = |state, code| RunStop::Job {
            command: "clear-cache".into(),
            state,
            code,
            host: "web1".into(),
            id: 4,
            why: "exit 3".into(),
        };
        assert_eq!(
            job(JobState::Failed, None).to_string(),
            "clear-cache failed on web1 (job 4): exit 3"
        );
        // An older agent's failure without a code, an interrupted job and
        // the agent's own failure: 1.
        assert_eq!(job(JobState::Failed, None).exit(), Exit::Failed);
        assert_eq!(
            job(JobState::Interrupted, Some(ErrorCode::BadRequest)).exit(),
            Exit::Failed
        );
        assert_eq!(
            job(JobState::Failed, Some(ErrorCode::Internal)).exit(),
            Exit::Failed
        );
        // The command could not start for the config's reasons
        // (`BadRequest`), or there was no current release to run it in
        // (`Conflict`): 2.
        assert_eq!(
            job(JobState::Failed, Some(ErrorCode::BadRequest)).exit(),
            Exit::Usage
        );
        assert_eq!(
            job(JobState::Failed, Some(ErrorCode::Conflict)).exit(),
            Exit::Usage
        );
        let agent = |code| {
            RunStop::Agent(ClientError::Agent {
                host: "web1".into(),
                body: ErrorBody::new(code, "no command named nope"),
            })
        };
        assert_eq!(
            agent(ErrorCode::NotDeclared).to_string(),
            "agent web1: no command named nope"
        );
        assert_eq!(agent(ErrorCode::NotDeclared).exit(), Exit::Usage);
        assert_eq!(agent(ErrorCode::Internal).exit(), Exit::Failed);
        let unreachable = RunStop::Agent(ClientError::Transport {
            host: "web2".into(),
            addr: "127.0.0.1:1".into(),
            detail: "refused".into(),
        });
        assert_eq!(unreachable.exit(), Exit::Failed);
    }
}
