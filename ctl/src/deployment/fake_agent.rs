//! A scripted agent behind the transport seam, for the sequencer's unit
//! tests (issue 14, part 8): it answers the real protocol types the way an
//! agent does (locks, flags, migrations, artifacts, jobs and their
//! long-poll, probes, watchdog status, maintenance, a backup and one
//! pending migration) from a small deterministic state,
//! with the failures a test scripts: an activation that fails, probes that
//! fail after the switch or from the Nth run on, or an agent that stops
//! answering (a hung agent: each call ends only at the real client's
//! request deadline, with its error).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use golive_shared::protocol::{
    ArtifactInfo, DatabaseChoice, ErrorBody, ErrorCode, HelloResponse, HostRolledBack,
    JobEventsResponse, JobInfo, JobResult, JobSpec, JobState, LockInfo, LockRequest, LockResponse,
    MigrationStatus, PendingMigration, ProbeReport, ProbeResult, ProbeStatus, Request, Response,
    Severity, WatchdogInfo, WatchdogState,
};

use crate::client::{ClientError, UploadProgress};
use crate::transport::{Answer, Link, SessionCalls, Transport};

/// What the scripted host does.
#[derive(Clone, Default)]
pub(crate) struct Script {
    /// The activate job fails (its hook exited 1).
    pub(crate) activate_fails: bool,
    /// The critical probe fails on the new release.
    pub(crate) probes_fail_after_switch: bool,
    /// A high probe fails on the new release (the gate's default: pause).
    pub(crate) high_probe_fails_after_switch: bool,
    /// The critical probe fails from this run of the probes on (1-based;
    /// the first run is the deployment's "before").
    pub(crate) probes_fail_from_run: Option<usize>,
    /// From the activate submission on, the agent answers nothing.
    pub(crate) hangs_at_activate: bool,
    /// Each run of the probes takes this long; its call is then recorded
    /// as it is answered, not as it arrives.
    pub(crate) probes_take: Option<Duration>,
    /// The new release has one pending migration (`0002_add_column`),
    /// applied by a migrate job; the host runs backup and maintenance jobs.
    pub(crate) pending_migration: bool,
    /// The migrate job fails (its migration's SQL is refused).
    pub(crate) migrate_fails: bool,
}

/// How long the real client waits for an answer (`client::REQUEST_TIMEOUT`):
/// a hung agent's call ends then, with the client's error.
const CLIENT_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Default)]
struct State {
    current: Option<String>,
    artifacts: Vec<String>,
    jobs: Vec<JobInfo>,
    /// Every request, as `Request::operation` names it.
    calls: Vec<String>,
    probe_runs: usize,
    hung: bool,
    /// The maintenance page is up.
    maintenance: bool,
    migrated: bool,
    /// Per probe run: whether it ran while the maintenance page was up.
    probes_in_maintenance: Vec<bool>,
}

/// Cheap to clone; the clones (a session, say) share the host's state.
#[derive(Clone)]
pub(crate) struct FakeAgent {
    name: String,
    script: Script,
    state: Arc<Mutex<State>>,
}

impl FakeAgent {
    /// A host running `current` of the app.
    pub(crate) fn new(name: &str, current: Option<&str>, script: Script) -> FakeAgent {
        FakeAgent {
            name: name.into(),
            script,
            state: Arc::new(Mutex::new(State {
                current: current.map(str::to_string),
                ..State::default()
            })),
        }
    }

    /// A link to this agent, as a connector would make it.
    pub(crate) fn link(&self, addr: &str) -> Link {
        Link::new(&self.name, addr, addr, Arc::new(self.clone()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The release live now.
    pub(crate) fn current(&self) -> Option<String> {
        self.state().current.clone()
    }

    /// The kinds of the jobs submitted, in order ("stage", "activate",
    /// "host.rollback", ...), a deduplicated resubmission not counted.
    pub(crate) fn jobs(&self) -> Vec<String> {
        self.state()
            .jobs
            .iter()
            .map(|j| j.spec.kind().to_string())
            .collect()
    }

    /// Every request, as `Request::operation` names it.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// The jobs submitted, each with its maintenance state for the
    /// maintenance jobs: "maintenance on", "maintenance off".
    pub(crate) fn job_steps(&self) -> Vec<String> {
        self.state()
            .jobs
            .iter()
            .map(|j| match &j.spec {
                JobSpec::Maintenance(m) => {
                    format!("maintenance {}", if m.on { "on" } else { "off" })
                }
                other => other.kind().to_string(),
            })
            .collect()
    }

    /// How many probe runs happened while the maintenance page was up.
    pub(crate) fn probes_in_maintenance(&self) -> usize {
        let st = self.state();
        st.probes_in_maintenance.iter().filter(|m| **m).count()
    }

    /// Whether the maintenance page is up now.
    pub(crate) fn in_maintenance(&self) -> bool {
        self.state().maintenance
    }

    fn refuse(&self, code: ErrorCode, message: &str) -> ClientError {
        ClientError::Agent {
            host: self.name.clone(),
            body: ErrorBody::new(code, message.to_string()),
        }
    }

    /// A hung agent: the call ends at the client's own deadline.
    async fn hang(&self) -> ClientError {
        tokio::time::sleep(CLIENT_DEADLINE).await;
        ClientError::Transport {
            host: self.name.clone(),
            addr: "fake".into(),
            detail: "its answer did not finish within 90 s".into(),
        }
    }

    async fn answer(&self, req: &Request) -> Result<Response, ClientError> {
        if let (Request::RunProbes(_), Some(took)) = (req, self.script.probes_take) {
            tokio::time::sleep(took).await;
        }
        let hung = {
            let mut st = self.state();
            st.calls.push(req.operation());
            if self.script.hangs_at_activate
                && matches!(req, Request::SubmitJob(s) if matches!(s.spec, JobSpec::Activate(_)))
            {
                st.hung = true;
            }
            st.hung
        };
        if hung {
            return Err(self.hang().await);
        }
        // An agent answers after a round trip, not at once.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut st = self.state();
        match req {
            Request::Hello(_) => Ok(Response::Hello(HelloResponse {
                agent_name: self.name.clone(),
                agent_version: "test".into(),
                protocol: golive_shared::protocol::PROTOCOL_VERSION,
                peer_name: "alice".into(),
                peer_role: "operator".into(),
            })),
            Request::Lock(LockRequest::Acquire {
                app,
                deployment,
                ttl_secs,
            }) => Ok(Response::Lock(LockResponse::Held {
                token: format!("token-{deployment}"),
                info: LockInfo {
                    app: app.clone(),
                    deployment: deployment.clone(),
                    holder: "alice".into(),
                    since: 0,
                    expires_at: i64::from(*ttl_secs) * 1000,
                },
            })),
            Request::Lock(LockRequest::Renew { app, token, .. }) => {
                Ok(Response::Lock(LockResponse::Held {
                    token: token.clone(),
                    info: LockInfo {
                        app: app.clone(),
                        deployment: token.trim_start_matches("token-").into(),
                        holder: "alice".into(),
                        since: 0,
                        expires_at: 0,
                    },
                }))
            }
            Request::Lock(_) => Ok(Response::Lock(LockResponse::Released)),
            Request::ListFlags(_) => Err(self.refuse(ErrorCode::NotDeclared, "no flags")),
            Request::MigrationStatus(m) if self.script.pending_migration => {
                let pending = if st.migrated {
                    vec![]
                } else {
                    vec![PendingMigration {
                        version: 2,
                        name: "add_column".into(),
                        tag: Some("expand".into()),
                        has_down: true,
                    }]
                };
                Ok(Response::MigrationStatus(MigrationStatus {
                    app: m.app.clone(),
                    release: m.release.clone().unwrap_or_else(|| "v1".into()),
                    database: "main".into(),
                    applied: vec![],
                    pending,
                    command: None,
                }))
            }
            Request::MigrationStatus(_) => {
                Err(self.refuse(ErrorCode::NotDeclared, "no migrations"))
            }
            Request::HasArtifact(h) => {
                if st.artifacts.contains(&h.sha256) {
                    Ok(Response::Artifact(ArtifactInfo {
                        sha256: h.sha256.clone(),
                        size: 1,
                        already_present: true,
                    }))
                } else {
                    Err(self.refuse(ErrorCode::NotFound, "no such artifact"))
                }
            }
            Request::RunProbes(p) => {
                st.probe_runs += 1;
                let maintenance = st.maintenance;
                st.probes_in_maintenance.push(maintenance);
                let switched = st.current.as_deref() != Some("v1");
                let fails = (switched && self.script.probes_fail_after_switch)
                    || self
                        .script
                        .probes_fail_from_run
                        .is_some_and(|n| st.probe_runs >= n);
                let mut results = vec![ProbeResult {
                    name: "health".into(),
                    kind: "http".into(),
                    severity: Severity::Critical,
                    status: if fails {
                        ProbeStatus::Fail
                    } else {
                        ProbeStatus::Pass
                    },
                    value: Some(if fails { "status 500" } else { "status 200" }.into()),
                    threshold: Some("status in [200]".into()),
                    duration_ms: 3,
                    message: if fails { "got 500" } else { "ok" }.into(),
                }];
                if switched && self.script.high_probe_fails_after_switch {
                    results.push(ProbeResult {
                        name: "latency".into(),
                        kind: "http".into(),
                        severity: Severity::High,
                        status: ProbeStatus::Fail,
                        value: Some("900 ms".into()),
                        threshold: Some("p95 below 300 ms".into()),
                        duration_ms: 900,
                        message: "slow".into(),
                    });
                }
                Ok(Response::Probes(ProbeReport {
                    app: p.app.clone(),
                    results,
                }))
            }
            Request::WatchdogStatus(_) => Ok(Response::WatchdogStatus(None)),
            // Armed as asked, watching the live release (never fires here).
            Request::ArmWatchdog(a) => Ok(Response::Watchdog(WatchdogInfo {
                app: a.app.clone(),
                deployment: a.deployment.clone(),
                release: st.current.clone().unwrap_or_default(),
                rollback_to: None,
                state: WatchdogState::Armed,
                spec: a.spec.clone(),
                armed_by: "alice".into(),
                armed_at: 0,
                until: a.spec.window_secs as i64 * 1000,
                confirm_by: None,
                triggers: Vec::new(),
                reason: None,
                fired_at: None,
                rollback_job: None,
                commit_job: None,
                committed_at: None,
                ended_at: None,
                events: Vec::new(),
            })),
            Request::SubmitJob(submit) => {
                if let Some(job) = st
                    .jobs
                    .iter()
                    .find(|j| j.idempotency_key == submit.idempotency_key)
                {
                    let mut job = job.clone();
                    job.deduplicated = true;
                    return Ok(Response::Job(job));
                }
                let (result, error) = self.run(&mut st, &submit.spec);
                let job = JobInfo {
                    id: st.jobs.len() as u64 + 1,
                    idempotency_key: submit.idempotency_key.clone(),
                    spec: submit.spec.clone(),
                    state: if error.is_some() {
                        JobState::Failed
                    } else {
                        JobState::Succeeded
                    },
                    submitted_by: "alice".into(),
                    submitted_at: 0,
                    finished_at: Some(1),
                    error_code: error.as_ref().map(|_| ErrorCode::Internal),
                    result,
                    error,
                    deduplicated: false,
                };
                st.jobs.push(job.clone());
                Ok(Response::Job(job))
            }
            Request::JobEvents(e) => match st.jobs.iter().find(|j| j.id == e.job_id) {
                Some(job) => Ok(Response::Events(JobEventsResponse {
                    job: job.clone(),
                    events: vec![],
                })),
                None => Err(self.refuse(ErrorCode::NotFound, "no such job")),
            },
            other => Err(self.refuse(
                ErrorCode::BadRequest,
                &format!("the fake agent does not answer {}", other.operation()),
            )),
        }
    }

    /// A job run to its end: (result, error).
    fn run(&self, st: &mut State, spec: &JobSpec) -> (Option<JobResult>, Option<String>) {
        match spec {
            JobSpec::Stage(s) => (
                Some(JobResult::Staged {
                    release: s.release.clone(),
                    path: format!("releases/{}", s.release),
                    files: 1,
                    bytes: 1,
                    commit: None,
                }),
                None,
            ),
            JobSpec::Activate(_) if self.script.activate_fails => {
                (None, Some("the post-activate hook exited 1".into()))
            }
            JobSpec::Activate(a) => {
                let previous = st.current.replace(a.release.clone());
                (
                    Some(JobResult::Activated {
                        release: a.release.clone(),
                        previous,
                        availability: None,
                    }),
                    None,
                )
            }
            JobSpec::HostRollback(r) => {
                let from = st.current.replace("v1".into());
                (
                    Some(JobResult::HostRolledBack(HostRolledBack {
                        deployment: r.deployment.clone(),
                        from,
                        to: "v1".into(),
                        database: DatabaseChoice::CodeOnly {
                            why: "no migration".into(),
                        },
                        steps: vec![],
                        availability: None,
                        probes: vec![],
                        operator_action: None,
                    })),
                    None,
                )
            }
            JobSpec::Maintenance(m) => {
                let changed = st.maintenance != m.on;
                st.maintenance = m.on;
                (
                    Some(JobResult::Maintenance {
                        on: m.on,
                        changed,
                        downtime_ms: (!m.on && changed).then_some(1_000),
                        availability: None,
                    }),
                    None,
                )
            }
            JobSpec::Backup(b) => (
                Some(JobResult::BackedUp {
                    id: format!("backup-{}", st.jobs.len() + 1),
                    bytes: 1,
                    parts: 1,
                    verified: b.verify.then_some(true),
                }),
                None,
            ),
            JobSpec::Migrate(_) if self.script.migrate_fails => (
                None,
                Some("migration 0002_add_column failed: no such table".into()),
            ),
            JobSpec::Migrate(_) if self.script.pending_migration => {
                st.migrated = true;
                (
                    Some(JobResult::Migrated {
                        applied: vec![2],
                        reverted: vec![],
                        backup: None,
                        drops: vec![],
                    }),
                    None,
                )
            }
            JobSpec::DiscardRelease(d) => (
                Some(JobResult::Discarded {
                    release: d.release.clone(),
                }),
                None,
            ),
            other => (
                None,
                Some(format!("the fake agent runs no {} job", other.kind())),
            ),
        }
    }
}

impl Transport for FakeAgent {
    fn call<'a>(&'a self, req: &'a Request) -> Answer<'a, Response> {
        Box::pin(self.answer(req))
    }

    fn upload<'a>(
        &'a self,
        _path: &'a Path,
        sha256: &'a str,
        size: u64,
        progress: Option<UploadProgress>,
    ) -> Answer<'a, ArtifactInfo> {
        Box::pin(async move {
            if self.state().hung {
                return Err(self.hang().await);
            }
            if let Some(progress) = progress {
                progress(size);
            }
            let mut st = self.state();
            st.calls.push("artifact.upload".into());
            st.artifacts.push(sha256.to_string());
            Ok(ArtifactInfo {
                sha256: sha256.to_string(),
                size,
                already_present: false,
            })
        })
    }

    fn session(&self) -> Box<dyn SessionCalls> {
        Box::new(FakeSession(self.clone()))
    }
}

struct FakeSession(FakeAgent);

impl SessionCalls for FakeSession {
    fn call<'a>(&'a mut self, req: &'a Request) -> Answer<'a, Response> {
        Box::pin(self.0.answer(req))
    }
}
