//! `golivectl flag list|set PLAN ...`: the feature flags the plan's app
//! declares in each agent's config (`[apps.APP.flags]`). `list` asks every
//! host (read-only); `set` runs a flag job per host, which changes the
//! flag's own fields in the app's flag file and journals who changed it and
//! when. Without `--percent`, `set` keeps the percentage each host has.

use std::path::Path;

use golive_shared::protocol::{
    ErrorCode, FlagState, JobResult, JobSpec, JobState, ListFlagsRequest, Request, Response,
    SetFlag,
};
use golive_shared::timefmt::utc;
use serde_json::json;

use crate::cli::{FlagCommand, OnOff};
use crate::client::ClientError;
use crate::deployment::error::{client_exit, job_state_exit};
use crate::jobs::run_job;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Plan};

/// Why a flag was not set on a host; [`FlagError::exit`] is its exit
/// code, from the variant and the agent's `ErrorCode`, never from the text.
#[derive(Debug, thiserror::Error)]
enum FlagError {
    /// The flags could not be read, or the agent refused the job or could
    /// not be reached.
    #[error(transparent)]
    Agent(#[from] ClientError),
    /// The flag job ran and did not succeed; `code` is the class the agent
    /// gave it (a refusal left the file as it was).
    #[error("job {id} {}: {message}", state.as_str())]
    Job {
        id: u64,
        state: JobState,
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("job {id} ended with an unexpected result: {result}")]
    UnexpectedResult { id: u64, result: String },
}

impl FlagError {
    fn exit(&self) -> Exit {
        match self {
            FlagError::Agent(e) => client_exit(e),
            FlagError::Job { state, code, .. } => job_state_exit(*state, *code),
            FlagError::UnexpectedResult { .. } => Exit::Failed,
        }
    }
}

pub async fn run(out: Out, cmd: FlagCommand) -> anyhow::Result<Exit> {
    match cmd {
        FlagCommand::List { plan } => list(out, &load(&plan)?).await,
        FlagCommand::Set {
            plan,
            name,
            switch,
            percent,
        } => {
            if let Some(p) = percent
                && p > 100
            {
                return Err(usage(format!(
                    "--percent must be between 0 and 100, not {p}"
                )));
            }
            set(out, &load(&plan)?, &name, switch == OnOff::On, percent).await
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Plan> {
    plan::load(path).map_err(|e| usage(e.to_string()))
}

fn show(on: bool, percent: Option<u8>) -> String {
    format!(
        "{}{}",
        if on { "on" } else { "off" },
        percent.map(|p| format!(" ({p}%)")).unwrap_or_default()
    )
}

async fn list(out: Out, plan: &Plan) -> anyhow::Result<Exit> {
    let mut hosts = Vec::new();
    for host in &plan.hosts {
        let req = Request::ListFlags(ListFlagsRequest {
            app: plan.app.clone(),
        });
        let flags: Vec<FlagState> = match host.client.call(&req).await {
            Ok(Response::Flags(f)) => f,
            Ok(other) => return Err(host.client.unexpected(&other).into()),
            Err(e) if e.exit_code() == 2 => return Err(usage(format!("{}: {e}", host.name))),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", host.name)),
        };
        out.line(format!("[{}] {} flags:", host.name, plan.app));
        out.line(format!("  {:<32} {:<10} CHANGED", "NAME", "STATE"));
        for f in &flags {
            let changed = match (&f.changed_by, f.changed_at) {
                (Some(by), Some(at)) => format!("{} by {by}", utc(at)),
                _ => "-".into(),
            };
            out.line(format!(
                "  {:<32} {:<10} {changed}",
                f.name,
                show(f.on, f.percent)
            ));
        }
        let list: Vec<_> = flags
            .iter()
            .map(|f| {
                json!({"name": f.name, "on": f.on, "percent": f.percent,
                       "changed_by": f.changed_by, "changed_at": f.changed_at})
            })
            .collect();
        hosts.push(json!({"host": host.name, "flags": list}));
    }
    out.event(&json!({ "app": plan.app, "hosts": hosts }));
    Ok(Exit::Done)
}

async fn set(
    out: Out,
    plan: &Plan,
    name: &str,
    on: bool,
    percent: Option<u8>,
) -> anyhow::Result<Exit> {
    let mut exit = Exit::Done;
    let mut failed = 0;
    let mut hosts = Vec::new();
    for host in &plan.hosts {
        let key = format!(
            "flag:{}:{name}:{}:{}",
            host.name,
            golive_shared::protocol::now_millis(),
            std::process::id()
        );
        let previous = match previous_of(host, &plan.app, name).await {
            Ok(p) => p,
            Err(e) => {
                let e = FlagError::Agent(e);
                failed += 1;
                out.line(format!("[{}] flag {name}: FAILED — {e}", host.name));
                hosts.push(json!({"host": host.name, "ok": false, "error": e.to_string()}));
                exit = worst(exit, e.exit());
                continue;
            }
        };
        // Without --percent the rollout percentage stays what the file has
        // (issue 12): `off` changes the on/off field only.
        let percent = percent.or(previous.1);
        let spec = JobSpec::SetFlag(SetFlag {
            app: plan.app.clone(),
            name: name.to_string(),
            on,
            percent,
        });
        let outcome = match run_job(out, &host.client, key, None, spec).await {
            Ok(job) if job.state == JobState::Succeeded => match job.result {
                Some(JobResult::FlagSet { .. }) => Ok(previous),
                other => Err(FlagError::UnexpectedResult {
                    id: job.id,
                    result: format!("{other:?}"),
                }),
            },
            Ok(job) => Err(FlagError::Job {
                id: job.id,
                state: job.state,
                code: job.error_code,
                message: job.error.unwrap_or_else(|| "no message".into()),
            }),
            Err(e) => Err(FlagError::Agent(e)),
        };
        match outcome {
            Ok((prev_on, prev_percent)) => {
                out.line(format!(
                    "[{}] flag {name}: {} -> {}",
                    host.name,
                    show(prev_on, prev_percent),
                    show(on, percent)
                ));
                hosts.push(json!({"host": host.name, "ok": true, "previous_on": prev_on, "previous_percent": prev_percent}));
            }
            Err(e) => {
                failed += 1;
                out.line(format!("[{}] flag {name}: FAILED — {e}", host.name));
                hosts.push(json!({"host": host.name, "ok": false, "error": e.to_string()}));
                exit = worst(exit, e.exit());
            }
        }
    }
    let n = plan.hosts.len();
    let message = if failed == 0 {
        format!(
            "flag {name} of {} is {} on {n} host(s)",
            plan.app,
            show(on, percent)
        )
    } else {
        format!("flag {name} failed on {failed} of {n} host(s)")
    };
    out.line(&message);
    out.event(
        &json!({"event": "result", "app": plan.app, "flag": name, "on": on, "percent": percent,
                      "ok": failed == 0, "hosts": hosts, "message": message, "exit": exit.code()}),
    );
    Ok(exit)
}

/// The worst outcome wins: a failure beats a refusal.
fn worst(a: Exit, b: Exit) -> Exit {
    match (a, b) {
        (Exit::Failed, _) | (_, Exit::Failed) => Exit::Failed,
        (_, other) => other,
    }
}

/// The flag's value on `host` before the change (an undeclared name reads
/// as off; the job refuses it with the declared names).
async fn previous_of(
    host: &crate::plan::Host,
    app: &str,
    name: &str,
) -> Result<(bool, Option<u8>), ClientError> {
    let req = Request::ListFlags(ListFlagsRequest {
        app: app.to_string(),
    });
    match host.client.call(&req).await {
        Ok(Response::Flags(flags)) => Ok(flags
            .iter()
            .find(|f| f.name == name)
            .map(|f| (f.on, f.percent))
            .unwrap_or((false, None))),
        // A transport-class error: exit 1, as any answer the controller
        // cannot read.
        Ok(other) => Err(host.client.unexpected(&other)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use golive_shared::protocol::ErrorBody;

    use super::*;

    /// A host's flag outcome keeps the words and exit code it had as an
    /// `(Exit, String)` pair; the code comes from the variant and the
    /// agent's `ErrorCode`.
    #[test]
    fn issue14_a_flags_host_outcome_is_typed_with_its_words_and_exit_code() {
        let agent = |code| {
            FlagError::Agent(ClientError::Agent {
                host: "web1".into(),
                body: ErrorBody::new(code, "flag nope is not declared"),
            })
        };
        assert_eq!(
            agent(ErrorCode::NotDeclared).to_string(),
            "agent web1: flag nope is not declared"
        );
        assert_eq!(agent(ErrorCode::NotDeclared).exit(), Exit::Usage);
        assert_eq!(agent(ErrorCode::Internal).exit(), Exit::Failed);
        let job = |code| FlagError::Job {
            id: 5,
            state: JobState::Failed,
            code,
            message: "flag file not writable".into(),
        };
        assert_eq!(
            job(None).to_string(),
            "job 5 failed: flag file not writable"
        );
        assert_eq!(job(None).exit(), Exit::Failed);
        assert_eq!(job(Some(ErrorCode::Internal)).exit(), Exit::Failed);
        // The file's content cannot hold the flag, or the flag is not
        // declared: a refusal that left the file as it was.
        assert_eq!(job(Some(ErrorCode::BadRequest)).exit(), Exit::Usage);
        assert_eq!(job(Some(ErrorCode::NotFound)).exit(), Exit::Usage);
        let odd = FlagError::UnexpectedResult {
            id: 6,
            result: "None".into(),
        };
        assert_eq!(
            odd.to_string(),
            "job 6 ended with an unexpected result: None"
        );
        assert_eq!(odd.exit(), Exit::Failed);
        assert_eq!(worst(odd.exit(), Exit::Usage), Exit::Failed);
    }
}
