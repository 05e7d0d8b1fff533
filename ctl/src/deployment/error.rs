//! What went wrong in a deployment step, as a type (issue 14, part 8): each
//! variant says what failed, and [`DeployError::exit`] derives the SPEC §7
//! exit code from the variant (and, for an agent's answer, from its
//! protocol `ErrorCode`), never from the message's text.

use golive_shared::protocol::{JobInfo, JobState};

use crate::client::ClientError;
use crate::deployment::StepError;
use crate::output::Exit;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The agent refused the request (its `ErrorCode` says why), could not
    /// be reached within its deadline, or answered what the controller
    /// cannot read.
    #[error(transparent)]
    Agent(#[from] ClientError),
    /// A job ran on the agent and ended without success (failed, cancelled,
    /// interrupted): the step it stands for did not happen.
    #[error("job {id} {state}: {message}")]
    Job {
        id: u64,
        state: &'static str,
        message: String,
    },
    /// A maintenance job ended without success: the host may be left in
    /// maintenance (the agent fails safe), so it is a failure, not a
    /// refusal.
    #[error("job {id} {state}: {message}")]
    Maintenance {
        id: u64,
        state: &'static str,
        message: String,
    },
    /// A job succeeded with a result of another kind than its step's.
    #[error("job {id} ended with an unexpected result: {result}")]
    UnexpectedResult { id: u64, result: String },
    /// The controller journal could not be written (or an earlier write
    /// failed): nothing more is sent, the deployment stops.
    #[error(transparent)]
    Journal(Box<StepError>),
}

impl From<StepError> for DeployError {
    fn from(e: StepError) -> DeployError {
        DeployError::Journal(Box::new(e))
    }
}

impl DeployError {
    /// A job that ended without success, as [`DeployError::Job`].
    pub fn job(job: JobInfo) -> DeployError {
        DeployError::Job {
            id: job.id,
            state: job.state.as_str(),
            message: job.error.unwrap_or_else(|| "no message".into()),
        }
    }

    /// The SPEC §7 exit code this failure leads to: 2 when nothing changed
    /// and the fix is the operator's (a refusal, an unreachable agent, a
    /// job that refused its work), 1 when something may have changed.
    pub fn exit(&self) -> Exit {
        match self {
            DeployError::Agent(e) => client_exit(e),
            DeployError::Job { .. } => Exit::Usage,
            DeployError::Maintenance { .. }
            | DeployError::UnexpectedResult { .. }
            | DeployError::Journal(_) => Exit::Failed,
        }
    }
}

/// A job that ended without success as an exit code, from the class the
/// agent gave its failure (`JobInfo::error_code`), never from its message:
/// 2 for a refusal that changed nothing, 1 for a failure, for an
/// interrupted job, and for a job an older agent failed without a code.
pub fn job_exit(job: &JobInfo) -> Exit {
    match job.error_code {
        Some(code) if job.state == JobState::Failed && code.exit_code() == 2 => Exit::Usage,
        _ => Exit::Failed,
    }
}

/// An agent's answer or the transport's failure as an exit code, from the
/// error's kind and the agent's `ErrorCode` ([`ClientError::exit_code`]).
pub fn client_exit(e: &ClientError) -> Exit {
    if e.exit_code() == 2 {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

#[cfg(test)]
mod tests {
    use golive_shared::protocol::{ErrorBody, ErrorCode, JobSpec, SetMaintenance};

    use super::*;

    fn agent(code: ErrorCode) -> DeployError {
        DeployError::Agent(ClientError::Agent {
            host: "web1".into(),
            body: ErrorBody::new(code, "anything at all"),
        })
    }

    #[test]
    fn issue14_exit_codes_come_from_the_error_kind_and_code_not_its_text() {
        assert_eq!(agent(ErrorCode::Locked).exit(), Exit::Usage);
        assert_eq!(agent(ErrorCode::NotDeclared).exit(), Exit::Usage);
        assert_eq!(agent(ErrorCode::Internal).exit(), Exit::Failed);
        let transport = DeployError::Agent(ClientError::Transport {
            host: "web1".into(),
            addr: "127.0.0.1:1".into(),
            detail: "refused".into(),
        });
        assert_eq!(transport.exit(), Exit::Failed);
        let job = JobInfo {
            id: 7,
            idempotency_key: "D:web1:stage".into(),
            spec: JobSpec::Maintenance(SetMaintenance {
                app: "shop".into(),
                on: true,
                reason: "test".into(),
            }),
            state: JobState::Failed,
            submitted_by: "ops".into(),
            submitted_at: 0,
            finished_at: Some(1),
            result: None,
            error: Some("refused: nothing was written".into()),
            deduplicated: false,
            error_code: None,
        };
        let e = DeployError::job(job);
        assert_eq!(e.exit(), Exit::Usage);
        assert_eq!(e.to_string(), "job 7 failed: refused: nothing was written");
        let m = DeployError::Maintenance {
            id: 8,
            state: "failed",
            message: "flag file not writable".into(),
        };
        assert_eq!(m.exit(), Exit::Failed);
        assert_eq!(m.to_string(), "job 8 failed: flag file not writable");
    }

    fn failed(state: JobState, code: Option<ErrorCode>, message: &str) -> JobInfo {
        JobInfo {
            id: 9,
            idempotency_key: "migrate:web1".into(),
            spec: JobSpec::Maintenance(SetMaintenance {
                app: "shop".into(),
                on: true,
                reason: "test".into(),
            }),
            state,
            submitted_by: "ops".into(),
            submitted_at: 0,
            finished_at: Some(1),
            result: None,
            error: Some(message.into()),
            deduplicated: false,
            error_code: code,
        }
    }

    #[test]
    fn issue14_a_failed_jobs_exit_code_comes_from_its_error_code_not_its_text() {
        use ErrorCode::*;
        // The text says "refused" but the agent classed it a failure, and
        // the other way round: the code decides.
        let f = |c| {
            job_exit(&failed(
                JobState::Failed,
                c,
                "restore refused, nothing was written",
            ))
        };
        assert_eq!(f(Some(Internal)), Exit::Failed);
        assert_eq!(f(None), Exit::Failed, "an older agent's failure");
        for c in [BadRequest, NotDeclared, Conflict, NotFound] {
            assert_eq!(
                job_exit(&failed(JobState::Failed, Some(c), "the SQL failed")),
                Exit::Usage,
                "{c:?}"
            );
        }
        assert_eq!(
            job_exit(&failed(JobState::Interrupted, Some(BadRequest), "x")),
            Exit::Failed,
            "an interrupted job may have changed something"
        );
    }
}
