//! What went wrong in a deployment step, as a type (issue 14, part 8): each
//! variant says what failed, and [`DeployError::exit`] derives the SPEC §7
//! exit code from the variant (and, for an agent's answer, from its
//! protocol `ErrorCode`), never from the message's text. The sequencer's
//! stops (a refused lock, a failed stage, the gate, a wave over its share,
//! a pause without a decision, ...) are variants too, and [`Outcome`] is how
//! a deployment ended: `run_deployment` returns it, `deployment/start.rs`
//! records and prints its message, and the command exits with
//! [`Outcome::exit`].

use golive_shared::protocol::{ErrorCode, JobInfo, JobState, error_headline};

use crate::client::ClientError;
use crate::deployment::StepError;
use crate::deployment::leases::LeaseError;
use crate::output::Exit;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The agent refused the request (its `ErrorCode` says why), could not
    /// be reached within its deadline, or answered what the controller
    /// cannot read.
    #[error(transparent)]
    Agent(#[from] ClientError),
    /// A job ran on the agent and ended without success (failed, cancelled,
    /// interrupted): the step it stands for did not happen. `code` is the
    /// class the agent gave its failure (`JobInfo::error_code`), from which
    /// its exit code comes ([`job_state_exit`]).
    #[error("job {id} {}: {message}", state.as_str())]
    Job {
        id: u64,
        state: JobState,
        code: Option<ErrorCode>,
        message: String,
    },
    /// A maintenance job ended without success. `code` is the class the
    /// agent gave it: a refusal (`BadRequest`: the operator's `on`/`off`
    /// command or `check_url` failed and the host was left as it was) is
    /// exit 2; anything else, such as an `on` that left the host in
    /// maintenance (the agent fails safe), is a failure.
    #[error("job {id} {}: {message}", state.as_str())]
    Maintenance {
        id: u64,
        state: JobState,
        code: Option<ErrorCode>,
        message: String,
    },
    /// A job succeeded with a result of another kind than its step's.
    #[error("job {id} ended with an unexpected result: {result}")]
    UnexpectedResult { id: u64, result: String },
    /// The controller journal could not be written (or an earlier write
    /// failed): nothing more is sent, the deployment stops.
    #[error(transparent)]
    Journal(Box<StepError>),
    /// No app lock (refused: nothing changed), or one lost on the way.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The feature flags (the rollback point's values) could not be read.
    #[error("cannot read the feature flags on {host}: {source}")]
    Flags {
        host: String,
        source: Box<ClientError>,
    },
    #[error("upload to {host} failed: {source}")]
    Upload {
        host: String,
        source: Box<ClientError>,
    },
    /// Staging failed; nothing live changed (staging works beside the
    /// live release and removes what it unpacked). The exit code is the
    /// source's: the agent classes its staging failures (a bad archive, a
    /// required file, a hook that fails: a refusal, exit 2; a disk fault:
    /// exit 1), an unreachable host or an interrupted job is 1.
    #[error("staging on {host} failed, nothing live changed: {}", error_headline(&source.to_string()))]
    Stage {
        host: String,
        source: Box<DeployError>,
    },
    #[error("{host} staged git ref {git_ref} but reported no commit; nothing live changed")]
    NoCommit { host: String, git_ref: String },
    #[error(
        "hosts resolved git ref {git_ref} to different commits ({differ}), nothing live changed; \
         the ref moved while the hosts fetched, or their agent configs name different \
         repositories. Deploy a tag or a commit id so every host runs the same code"
    )]
    Commits { git_ref: String, differ: String },
    /// The first failure of a phase run on several hosts at once, and how
    /// many other hosts failed it.
    #[error("{first}{}", if *others == 0 { String::new() } else { format!(" (and on {others} other host(s), above)") })]
    OnHosts {
        first: Box<DeployError>,
        others: usize,
    },
    #[error("cannot read the migrations of {release} on {host}, nothing live changed: {source}")]
    Migrations {
        release: String,
        host: String,
        source: Box<ClientError>,
    },
    #[error(
        "cannot journal the pending migrations of deployment {id}, nothing live changed: {source}"
    )]
    JournalFact { id: String, source: rusqlite::Error },
    /// Maintenance could not be turned on; `tail` says where it is still on.
    #[error("maintenance on {host} failed, nothing live changed: {source}; {tail}")]
    MaintenanceOn {
        host: String,
        source: Box<DeployError>,
        tail: String,
    },
    /// `still`: where maintenance stayed on (`still_on`'s words).
    #[error("the pre-deploy backup on {host} failed, nothing live changed: {headline}{still}")]
    Backup {
        host: String,
        headline: String,
        still: String,
    },
    #[error(
        "migrations on {host} failed; the old release still serves. A failed migration is \
         rolled back where the engine allows (SQLite, PostgreSQL); the pre-deploy backup of \
         deployment {id} is the way back otherwise: {headline}{still}"
    )]
    Migrate {
        host: String,
        id: String,
        headline: String,
        still: String,
    },
    #[error("activation on {host} failed: {headline}")]
    Activation { host: String, headline: String },
    /// `failures`: `HOST: why` each.
    #[error("maintenance off failed: {}", failures.join("; "))]
    MaintenanceOff { failures: Vec<String> },
    #[error("probes on {host} could not run: {source}")]
    Probes {
        host: String,
        source: Box<ClientError>,
    },
    /// The gate's policy said rollback.
    #[error("the gate rolled back on {host}: {summary}")]
    Gate { host: String, summary: String },
    #[error("no-go on {host}: {who}")]
    NoGo { host: String, who: String },
    /// A pause that got no decision in time: the hosts stay as they are.
    #[error(
        "paused on {host} with no decision within {timeout_secs} s ({summary}); the hosts keep \
         what they run now: `golivectl no-go {id} --by NAME --reason TEXT` rolls the activated \
         hosts back, `golivectl go {id} --by NAME` accepts them as they are"
    )]
    NoDecision {
        host: String,
        id: String,
        timeout_secs: u64,
        summary: String,
    },
    #[error(
        "the watchdog could not be armed on {host}: {why}; the plan asks for the release to be \
         watched, so it does not stay live unwatched"
    )]
    Arm { host: String, why: String },
    #[error("the watchdog on {host} fired while the deployment went on: {reason}")]
    WatchdogFired { host: String, reason: String },
    /// A wave with more failures than its `max_fail` allows; the first
    /// failure (in plan order) gives the exit code.
    #[error("{label} failed: {detail}")]
    Wave {
        label: String,
        detail: String,
        first: Box<DeployError>,
    },
    /// A failure within a wave's share whose host could not be rolled back.
    #[error("{label} failed: {detail}")]
    WaveNotBack { label: String, detail: String },
    #[error("{label} failed: {source}")]
    Soak {
        label: String,
        source: Box<DeployError>,
    },
    #[error("during the soak: {source}")]
    SoakProbes { source: Box<DeployError> },
    #[error("critical probe {probe} failed on {host} during the soak: {message}")]
    SoakProbe {
        probe: String,
        host: String,
        message: String,
    },
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
            state: job.state,
            code: job.error_code,
            message: job.error.unwrap_or_else(|| "no message".into()),
        }
    }

    /// The SPEC §7 exit code this failure leads to: 2 when nothing changed
    /// and the fix is the operator's (a refusal, a job the agent says
    /// refused its work), 1 when something may have changed or the agent
    /// failed at its work. A job's code comes from its `ErrorCode`
    /// ([`job_state_exit`]).
    pub fn exit(&self) -> Exit {
        use DeployError as E;
        match self {
            E::Agent(e) => client_exit(e),
            E::Flags { source: e, .. }
            | E::Upload { source: e, .. }
            | E::Migrations { source: e, .. } => client_exit(e),
            E::Job { state, code, .. } | E::Maintenance { state, code, .. } => {
                job_state_exit(*state, *code)
            }
            E::Lease(LeaseError::Refused { .. }) => Exit::Usage,
            E::Stage { source, .. } | E::OnHosts { first: source, .. } => source.exit(),
            E::Wave { first, .. } => first.exit(),
            // A refusal ran nothing; any other failure may have left the
            // host in maintenance.
            E::MaintenanceOn { source, .. } => match source.exit() {
                Exit::Usage => Exit::Usage,
                _ => Exit::Failed,
            },
            E::Gate { .. } | E::NoGo { .. } => Exit::RolledBack,
            E::NoDecision { .. } => Exit::Paused,
            E::UnexpectedResult { .. }
            | E::Journal(_)
            | E::Lease(LeaseError::Lost { .. })
            | E::NoCommit { .. }
            | E::Commits { .. }
            | E::JournalFact { .. }
            | E::Backup { .. }
            | E::Migrate { .. }
            | E::Activation { .. }
            | E::MaintenanceOff { .. }
            | E::Probes { .. }
            | E::Arm { .. }
            | E::WatchdogFired { .. }
            | E::WaveNotBack { .. }
            | E::Soak { .. }
            | E::SoakProbes { .. }
            | E::SoakProbe { .. } => Exit::Failed,
        }
    }
}

/// Why `golivectl rollback` (or a no-go) did not bring a host back, and
/// the whole rollback's end when some host did not go back
/// ([`RollbackError::Incomplete`]). [`RollbackError::exit`] is the one
/// mapping to the SPEC §7 exit code, from the variant and the agent's
/// `ErrorCode`, never from the message's text.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// The host's app lock was refused (or the agent not reached): its
    /// rollback job was not sent.
    #[error(transparent)]
    Lock(ClientError),
    /// The host rollback job was refused or failed, or its intent or
    /// outcome could not be journaled (`DeployError::Journal`: not sent, or
    /// its outcome not recorded).
    #[error(transparent)]
    Job(DeployError),
    /// Some hosts did not go back: each one's reason, in plan order.
    #[error("rollback of {id} incomplete: {}", failures.iter().map(RollbackError::summary).collect::<Vec<_>>().join("; "))]
    Incomplete {
        id: String,
        failures: Vec<RollbackError>,
    },
}

impl RollbackError {
    /// 2 when nothing changed and the fix is the operator's (a refused
    /// lock or job; an incomplete rollback all of whose hosts refused), 1
    /// otherwise.
    pub fn exit(&self) -> Exit {
        match self {
            RollbackError::Lock(e) => client_exit(e),
            RollbackError::Job(e) => e.exit(),
            RollbackError::Incomplete { failures, .. } => {
                if failures.iter().all(|f| f.exit() == Exit::Usage) {
                    Exit::Usage
                } else {
                    Exit::Failed
                }
            }
        }
    }

    /// What the incomplete rollback's message says of this host: a job's
    /// headline (its output tail is in the host's own line), the rest whole.
    fn summary(&self) -> String {
        match self {
            RollbackError::Job(e) => error_headline(&e.to_string()).to_string(),
            other => other.to_string(),
        }
    }
}

/// How a deployment ended: what `run_deployment` returns. Its message is
/// what the operator reads (and the record keeps); [`Outcome::exit`] the
/// SPEC §7 exit code, the one mapping from how it ended.
#[derive(Debug)]
pub enum Outcome {
    /// The release is live (on every host, or on all but those a wave
    /// tolerated failing); `message` with its notes.
    Live { message: String },
    /// Stopped by `stop` before anything needed switching back (or with
    /// nothing switched); `notes` follow its message.
    Stopped { stop: DeployError, notes: String },
    /// Stopped by `stop`, and every host it switched went back.
    SwitchedBack { stop: DeployError, notes: String },
    /// Something is left to fix by hand (a switch-back that did not finish,
    /// maintenance still on, the commit's migrations failed on a live
    /// release); `message` says what.
    Failed { message: String },
}

impl Outcome {
    pub fn exit(&self) -> Exit {
        match self {
            Outcome::Live { .. } => Exit::Done,
            Outcome::Stopped { stop, .. } => stop.exit(),
            Outcome::SwitchedBack { .. } => Exit::RolledBack,
            Outcome::Failed { .. } => Exit::Failed,
        }
    }

    /// The message the operator reads.
    pub fn message(&self) -> String {
        match self {
            Outcome::Live { message } | Outcome::Failed { message } => message.clone(),
            Outcome::Stopped { stop, notes } => format!("{stop}{notes}"),
            Outcome::SwitchedBack { stop, notes } => {
                format!("{stop}; switched back to the previous release{notes}")
            }
        }
    }

    /// A stop with nothing more to say.
    pub fn stopped(stop: impl Into<DeployError>) -> Outcome {
        Outcome::Stopped {
            stop: stop.into(),
            notes: String::new(),
        }
    }

    /// `note` ("; ...") appended to the message.
    pub fn note(&mut self, note: &str) {
        match self {
            Outcome::Live { message } | Outcome::Failed { message } => message.push_str(note),
            Outcome::Stopped { notes, .. } | Outcome::SwitchedBack { notes, .. } => {
                notes.push_str(note)
            }
        }
    }

    /// Now a failure (exit 1), with `note` appended to the message.
    pub fn fail(&mut self, note: &str) {
        let message = format!("{}{note}", self.message());
        *self = Outcome::Failed { message };
    }
}

/// A job that ended without success as an exit code, from the class the
/// agent gave its failure (`JobInfo::error_code`), never from its message:
/// 2 for a refusal that changed nothing, 1 for a failure, for an
/// interrupted job, and for a job an older agent failed without a code.
pub fn job_exit(job: &JobInfo) -> Exit {
    job_state_exit(job.state, job.error_code)
}

/// [`job_exit`] from a job's end state and code: only a job that failed
/// with a refusal's code is 2.
pub fn job_state_exit(state: JobState, code: Option<ErrorCode>) -> Exit {
    match code {
        Some(code) if state == JobState::Failed => code_exit(code),
        _ => Exit::Failed,
    }
}

/// The one mapping from an agent's `ErrorCode` to an exit code: 2 for a
/// refusal (nothing changed, the fix is the operator's), 1 for `Internal`
/// ([`ErrorCode::exit_code`]).
pub fn code_exit(code: ErrorCode) -> Exit {
    exit_of(code.exit_code())
}

/// An agent's answer or the transport's failure as an exit code, from the
/// error's kind and the agent's `ErrorCode` ([`ClientError::exit_code`]).
pub fn client_exit(e: &ClientError) -> Exit {
    exit_of(e.exit_code())
}

fn exit_of(code: u8) -> Exit {
    if code == 2 { Exit::Usage } else { Exit::Failed }
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
        // No code (an older agent): a failure, whatever the text says.
        assert_eq!(e.exit(), Exit::Failed);
        assert_eq!(e.to_string(), "job 7 failed: refused: nothing was written");
        let m = |code| DeployError::Maintenance {
            id: 8,
            state: JobState::Failed,
            code,
            message: "flag file not writable".into(),
        };
        assert_eq!(m(None).exit(), Exit::Failed);
        assert_eq!(m(Some(ErrorCode::Internal)).exit(), Exit::Failed);
        assert_eq!(m(Some(ErrorCode::BadRequest)).exit(), Exit::Usage);
        assert_eq!(m(None).to_string(), "job 8 failed: flag file not writable");
    }

    /// The sequencer's stops keep the words and exit codes they had as
    /// `(Exit, String)` pairs (the integration tests match on them).
    #[test]
    fn issue14_the_sequencers_stops_are_typed_with_their_words_and_exit_codes() {
        let refused = || ClientError::Agent {
            host: "web2".into(),
            body: ErrorBody::new(ErrorCode::Locked, "locked by D0"),
        };
        let lock = DeployError::from(LeaseError::Refused {
            app: "shop".into(),
            host: "web2".into(),
            source: Box::new(refused()),
        });
        assert_eq!(
            lock.to_string(),
            "could not lock shop on web2: agent web2: locked by D0"
        );
        assert_eq!(lock.exit(), Exit::Usage);
        let lost = DeployError::from(LeaseError::Lost {
            app: "shop".into(),
            host: "web2".into(),
        });
        assert_eq!(
            lost.to_string(),
            "the lock on shop at web2 was broken or taken by someone else; stopping"
        );
        assert_eq!(lost.exit(), Exit::Failed);
        let stage = DeployError::OnHosts {
            first: Box::new(DeployError::Stage {
                host: "web1".into(),
                source: Box::new(agent(ErrorCode::BadRequest)),
            }),
            others: 2,
        };
        assert_eq!(
            stage.to_string(),
            "staging on web1 failed, nothing live changed: agent web1: anything at all \
             (and on 2 other host(s), above)"
        );
        assert_eq!(stage.exit(), Exit::Usage, "a refused archive is bad input");
        let gate = DeployError::Gate {
            host: "web1".into(),
            summary: "0/1 probes passed".into(),
        };
        assert_eq!(gate.exit(), Exit::RolledBack);
        let wave = DeployError::Wave {
            label: "wave 2/3".into(),
            detail: format!("1 of 1 host(s) failed (web1), 0 allowed by max_fail = 0: {gate}"),
            first: Box::new(gate),
        };
        assert_eq!(
            wave.to_string(),
            "wave 2/3 failed: 1 of 1 host(s) failed (web1), 0 allowed by max_fail = 0: the gate \
             rolled back on web1: 0/1 probes passed"
        );
        assert_eq!(wave.exit(), Exit::RolledBack, "the first failure's code");
        let paused = DeployError::NoDecision {
            host: "web1".into(),
            id: "D1".into(),
            timeout_secs: 30,
            summary: "p95 high".into(),
        };
        assert_eq!(paused.exit(), Exit::Paused);
        assert!(paused.to_string().starts_with(
            "paused on web1 with no decision within 30 s (p95 high); the hosts keep what they run \
             now: `golivectl no-go D1 --by NAME --reason TEXT`"
        ));
        let maintenance = |source| DeployError::MaintenanceOn {
            host: "web1".into(),
            source: Box::new(source),
            tail: "maintenance is off again everywhere".into(),
        };
        assert_eq!(
            maintenance(agent(ErrorCode::NotDeclared)).exit(),
            Exit::Usage
        );
        assert_eq!(maintenance(agent(ErrorCode::Internal)).exit(), Exit::Failed);
    }

    #[test]
    fn issue14_an_outcome_maps_to_one_exit_code_and_keeps_its_notes() {
        let mut live = Outcome::Live {
            message: "release v2 is live on 2 host(s)".into(),
        };
        live.note("; gate warnings: web1: slow");
        assert_eq!(live.exit(), Exit::Done);
        assert_eq!(
            live.message(),
            "release v2 is live on 2 host(s); gate warnings: web1: slow"
        );
        live.fail("; MAINTENANCE STILL ON: web1");
        assert_eq!(live.exit(), Exit::Failed);
        assert_eq!(
            live.message(),
            "release v2 is live on 2 host(s); gate warnings: web1: slow; MAINTENANCE STILL ON: web1"
        );
        let gate = || DeployError::Gate {
            host: "web1".into(),
            summary: "0/1 probes passed".into(),
        };
        let mut back = Outcome::SwitchedBack {
            stop: gate(),
            notes: String::new(),
        };
        back.note("; downtime: none");
        assert_eq!(back.exit(), Exit::RolledBack);
        assert_eq!(
            back.message(),
            "the gate rolled back on web1: 0/1 probes passed; switched back to the previous \
             release; downtime: none"
        );
        // Nothing was switched: the stop's own code (a gate's is 3).
        assert_eq!(Outcome::stopped(gate()).exit(), Exit::RolledBack);
        let refused = Outcome::stopped(LeaseError::Lost {
            app: "shop".into(),
            host: "web1".into(),
        });
        assert_eq!(refused.exit(), Exit::Failed);
    }

    /// A host rollback's outcomes keep the words and exit codes they had
    /// as `(Exit, String)` pairs; the exit code comes from the variant and
    /// the agent's `ErrorCode`, the incomplete rollback's is 2 only if every
    /// host refused.
    #[test]
    fn issue14_a_rollbacks_host_outcomes_are_typed_with_their_words_and_exit_codes() {
        let lock = |code| {
            RollbackError::Lock(ClientError::Agent {
                host: "web1".into(),
                body: ErrorBody::new(code, "shop is locked by D0"),
            })
        };
        assert_eq!(
            lock(ErrorCode::Locked).to_string(),
            "agent web1: shop is locked by D0"
        );
        assert_eq!(lock(ErrorCode::Locked).exit(), Exit::Usage);
        assert_eq!(lock(ErrorCode::Internal).exit(), Exit::Failed);
        let unreachable = RollbackError::Lock(ClientError::Transport {
            host: "web2".into(),
            addr: "127.0.0.1:1".into(),
            detail: "refused".into(),
        });
        assert_eq!(unreachable.exit(), Exit::Failed);
        // Its intent not journaled (the executor's error): not sent.
        let journal = RollbackError::Job(DeployError::from(StepError::Journal {
            id: "D1".into(),
            host: "web1".into(),
            step: "rollback".into(),
            what: "intent",
            source: rusqlite::Error::InvalidQuery,
            then: "golivectl rollback D1".into(),
        }));
        assert!(
            journal
                .to_string()
                .starts_with("cannot journal the intent of step rollback on web1 of deployment D1"),
            "{journal}"
        );
        assert!(
            journal
                .to_string()
                .ends_with("then `golivectl rollback D1`")
        );
        assert_eq!(journal.exit(), Exit::Failed);
        // A refused job (the agent's code says so, whatever its text).
        let refused = RollbackError::Job(DeployError::job(failed(
            JobState::Failed,
            Some(ErrorCode::Conflict),
            "the rollback point is gone",
        )));
        assert_eq!(refused.exit(), Exit::Usage);
        let tail = format!(
            "restore failed{}sqlite3: disk I/O error",
            golive_shared::protocol::OUTPUT_TAIL_MARKER
        );
        let job = || DeployError::job(failed(JobState::Failed, Some(ErrorCode::Internal), &tail));
        let broken = RollbackError::Job(job());
        // A job's exit code is the sequencer's (`DeployError::exit`).
        assert_eq!(broken.exit(), job().exit());
        assert_eq!(
            broken.to_string(),
            format!("job 9 failed: {tail}"),
            "the host's line is whole"
        );
        let incomplete = |failures| RollbackError::Incomplete {
            id: "D1".into(),
            failures,
        };
        let all_refused = incomplete(vec![lock(ErrorCode::Locked), refused]);
        assert_eq!(
            all_refused.to_string(),
            "rollback of D1 incomplete: agent web1: shop is locked by D0; job 9 failed: the \
             rollback point is gone"
        );
        assert_eq!(
            all_refused.exit(),
            Exit::Usage,
            "every host refused: nothing changed"
        );
        let mixed = incomplete(vec![lock(ErrorCode::Locked), broken, journal]);
        assert_eq!(mixed.exit(), Exit::Failed, "one failure makes it a failure");
        let unreachable_too = incomplete(vec![lock(ErrorCode::Locked), unreachable]);
        assert_eq!(unreachable_too.exit(), Exit::Failed);
        assert!(
            mixed.to_string().starts_with(
                "rollback of D1 incomplete: agent web1: shop is locked by D0; job 9 failed: \
                 restore failed; cannot journal the intent of step rollback on web1"
            ),
            "a job's headline only, without its output tail: {mixed}"
        );
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

    /// A failed agent job (`DeployError::Job`) takes its exit code from
    /// its `ErrorCode` through the one mapping, wherever it stops: a
    /// rollback job failing with `Internal` is 1, a refused one 2; a
    /// staging job too (a refused archive 2, a disk fault 1), an
    /// interrupted one 1.
    #[test]
    fn issue14_a_failed_deploy_jobs_exit_code_comes_from_its_error_code() {
        use ErrorCode::*;
        let job = |state, code| DeployError::job(failed(state, code, "whatever it says"));
        assert_eq!(job(JobState::Failed, Some(Internal)).exit(), Exit::Failed);
        assert_eq!(job(JobState::Failed, None).exit(), Exit::Failed);
        assert_eq!(
            job(JobState::Interrupted, Some(BadRequest)).exit(),
            Exit::Failed
        );
        for c in [
            BadRequest,
            NotDeclared,
            Conflict,
            NotFound,
            Locked,
            Forbidden,
        ] {
            assert_eq!(job(JobState::Failed, Some(c)).exit(), Exit::Usage, "{c:?}");
            assert_eq!(code_exit(c), Exit::Usage, "{c:?}");
        }
        assert_eq!(code_exit(Internal), Exit::Failed);
        // The same mapping as the agent's answers to a request.
        for c in [BadRequest, Internal, Locked, Timeout] {
            let answer = ClientError::Agent {
                host: "web1".into(),
                body: ErrorBody::new(c, "x"),
            };
            assert_eq!(client_exit(&answer), code_exit(c), "{c:?}");
            assert_eq!(job(JobState::Failed, Some(c)).exit(), code_exit(c), "{c:?}");
        }
        // A rollback job failing with Internal is a failure, not bad input.
        let rollback = RollbackError::Job(job(JobState::Failed, Some(Internal)));
        assert_eq!(rollback.exit(), Exit::Failed);
        let refused = RollbackError::Job(job(JobState::Failed, Some(Conflict)));
        assert_eq!(refused.exit(), Exit::Usage);
        // Staging: the job's code, as anywhere (issue 14: the agent types
        // its staging failures, no special case here): a refused archive
        // or hook is 2, a disk fault 1, an older agent's codeless failure
        // 1; an interrupted job or a lost host 1.
        let stage = |source| DeployError::Stage {
            host: "web1".into(),
            source: Box::new(source),
        };
        for c in [BadRequest, NotFound, TooLarge] {
            assert_eq!(stage(job(JobState::Failed, Some(c))).exit(), Exit::Usage);
        }
        assert_eq!(
            stage(job(JobState::Failed, Some(Internal))).exit(),
            Exit::Failed,
            "a disk fault while staging is a failure"
        );
        assert_eq!(stage(job(JobState::Failed, None)).exit(), Exit::Failed);
        assert_eq!(
            stage(job(JobState::Interrupted, Some(BadRequest))).exit(),
            Exit::Failed
        );
        let lost = DeployError::Agent(ClientError::Transport {
            host: "web1".into(),
            addr: "127.0.0.1:1".into(),
            detail: "gone".into(),
        });
        assert_eq!(stage(lost).exit(), Exit::Failed);
        let on_hosts = |code| DeployError::OnHosts {
            first: Box::new(stage(job(JobState::Failed, Some(code)))),
            others: 1,
        };
        assert_eq!(on_hosts(BadRequest).exit(), Exit::Usage);
        assert_eq!(on_hosts(Internal).exit(), Exit::Failed);
        // Maintenance could not go on: a refused job changed nothing.
        let maintenance = |source| DeployError::MaintenanceOn {
            host: "web1".into(),
            source: Box::new(source),
            tail: String::new(),
        };
        assert_eq!(
            maintenance(job(JobState::Failed, Some(NotDeclared))).exit(),
            Exit::Usage
        );
        assert_eq!(
            maintenance(job(JobState::Failed, Some(Internal))).exit(),
            Exit::Failed
        );
        assert_eq!(
            job(JobState::Failed, Some(Internal)).to_string(),
            "job 9 failed: whatever it says"
        );
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
