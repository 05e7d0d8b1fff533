//! The job executor: submission with idempotency keys, one task per job,
//! events into the journal, and the release operations jobs perform.
//!
//! A job runs in its own task and keeps running when the controller
//! disconnects; the controller reattaches by long-polling its events. The
//! release work itself is synchronous filesystem code run on the blocking
//! pool, in functions that the local `golive-agent rollback` reuses.

use std::sync::Arc;

use golive_shared::config::{AgentConfig, AppConfig};
use golive_shared::names;
use golive_shared::protocol::{
    ErrorBody, ErrorCode, EventKind, HostRollback, JobEventsRequest, JobEventsResponse, JobInfo,
    JobResult, JobSpec, JobState, LogLevel, RollbackRequester, StageRelease, SubmitJob, UnixMillis,
    error_headline, error_with, now_millis,
};

use golive_shared::identity::{PeerIdentity, Role};
use golive_shared::protocol::RestoreBackup;

use crate::journal::Journal;
use crate::lock;
use crate::release::layout::AppLayout;
use crate::release::unpack::UnpackLimits;
use crate::state::{Agent, artifacts_dir, internal};
use crate::store::Discard;

/// Why a job failed: the operator-facing message and its class (issue
/// 14), journaled with the job and sent in `JobInfo::error_code`, from
/// which the controller takes its exit code. A plain `String` error is a
/// failure (`Internal`); a refusal that changed nothing says so with
/// [`JobError::refused`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
}

impl JobError {
    /// A refusal: the request or what it names (a migration, a backup, the
    /// config) is the operator's to fix, and nothing was changed.
    pub fn refused(message: impl Into<String>) -> JobError {
        JobError {
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }

    /// A failure while doing what the agent should be able to do.
    pub fn failed(message: impl Into<String>) -> JobError {
        JobError {
            code: ErrorCode::Internal,
            message: message.into(),
        }
    }

    /// The same class, with the message rewritten (context added).
    pub fn map(self, f: impl FnOnce(String) -> String) -> JobError {
        JobError {
            code: self.code,
            message: f(self.message),
        }
    }
}

/// A staging refusal or failure keeps its class (issue 14): the artifact's
/// or the config's problem is a refusal, a fault of the host a failure.
impl From<crate::release::LayoutError> for JobError {
    fn from(e: crate::release::LayoutError) -> JobError {
        JobError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::release::git::GitError> for JobError {
    fn from(e: crate::release::git::GitError) -> JobError {
        JobError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<String> for JobError {
    fn from(message: String) -> JobError {
        JobError::failed(message)
    }
}

impl From<&str> for JobError {
    fn from(message: &str) -> JobError {
        JobError::failed(message)
    }
}

/// Validates and submits a job; the same key returns the same job.
pub fn submit(
    agent: &Arc<Agent>,
    peer: &PeerIdentity,
    req: SubmitJob,
) -> Result<JobInfo, ErrorBody> {
    let by = peer.name.as_str();
    let bad = |m: String| ErrorBody::new(ErrorCode::BadRequest, m);
    names::check_idempotency_key(&req.idempotency_key).map_err(bad)?;
    let app = req.spec.app().to_string();
    names::check_app_name(&app).map_err(bad)?;
    agent.known_app(&app)?;
    if let JobSpec::HostRollback(r) = &req.spec {
        let r = r.clone();
        if r.requested_by != RollbackRequester::Controller {
            return Err(bad(format!(
                "a host rollback over mutual TLS is requested by the controller; requested_by = {} \
                 is for the agent's own submissions (its watchdog, its local socket)",
                r.requested_by.as_str()
            )));
        }
        return submit_rollback(agent, by, Via::Controller { lease: req.lease }, r);
    }
    match &req.spec {
        JobSpec::Stage(s) => {
            names::check_release_id(&s.release).map_err(bad)?;
            names::check_sha256(&s.artifact_sha256).map_err(bad)?;
        }
        JobSpec::StageGit(s) => {
            names::check_release_id(&s.release).map_err(bad)?;
            names::check_git_ref(&s.git_ref).map_err(bad)?;
            if !s.scan.forbidden.is_empty() {
                crate::scan::check(&s.scan)
                    .map_err(|(list, m)| bad(format!("the release scan's {list} list: {m}")))?;
            }
            if agent.known_app(&app)?.git.is_none() {
                return Err(bad(crate::release::git::not_declared(
                    &app,
                    &agent.config().agent.name,
                )));
            }
        }
        JobSpec::Activate(a) => names::check_release_id(&a.release).map_err(bad)?,
        JobSpec::HostRollback(_) => unreachable!("submitted by submit_rollback above"),
        JobSpec::DiscardRelease(d) => names::check_release_id(&d.release).map_err(bad)?,
        JobSpec::Rollback(r) => {
            if let Some(to) = &r.to {
                names::check_release_id(to).map_err(bad)?;
            }
        }
        JobSpec::Backup(b) => crate::backup::run::check_label(&b.label).map_err(bad)?,
        JobSpec::VerifyBackup(_) => {}
        JobSpec::Restore(r) => restore_allowed(agent, peer, r)?,
        JobSpec::Maintenance(_) => {
            if agent.known_app(&app)?.maintenance.is_none() {
                return Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!(
                        "app {app} on agent {} declares no maintenance mode; add [apps.{app}.maintenance] \
                         (flag_file and/or on/off commands) to its config",
                        agent.config().agent.name
                    ),
                ));
            }
        }
        JobSpec::Migrate(m) => {
            if let Some(r) = &m.release {
                names::check_release_id(r).map_err(bad)?;
            }
            let declared = &agent.known_app(&app)?;
            if declared.migrations.is_none() && declared.migration_command.is_none() {
                return Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!(
                        "app {app} on agent {} declares no migrations; add [apps.{app}.migrations] to its config",
                        agent.config().agent.name
                    ),
                ));
            }
        }
        JobSpec::SetFlag(f) => {
            let declared = agent.known_app(&app)?;
            let flags = crate::flags::config(&app, &declared).map_err(bad)?;
            crate::flags::check_request(&app, flags, f).map_err(|m| {
                // A name the app does not declare is `NotFound`, as a
                // command's (issue 14); both exit 2.
                let code = if flags.declared.contains_key(&f.name) {
                    ErrorCode::BadRequest
                } else {
                    ErrorCode::NotFound
                };
                ErrorBody::new(code, format!("agent {}: {m}", agent.config().agent.name))
            })?;
        }
        JobSpec::RunCommand(c) => {
            let declared = &agent.known_app(&app)?.commands;
            if !declared.contains_key(&c.name) {
                let valid: Vec<&str> = declared.keys().map(String::as_str).collect();
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "app {app} on agent {} declares no command {:?}; declared commands: {}",
                        agent.config().agent.name,
                        c.name,
                        if valid.is_empty() {
                            "(none)".to_string()
                        } else {
                            valid.join(", ")
                        }
                    ),
                ));
            }
        }
    }

    // A resubmission is answered before the lock check: the job it names was
    // accepted under the lock, and the caller may have lost our first answer.
    if let Some(existing) = agent
        .journal
        .job_by_key(&req.idempotency_key)
        .map_err(internal)?
    {
        return dedupe(existing, &req.spec);
    }
    lock::check_lease(agent, &app, req.lease.as_deref())?;
    // A stage job pins its artifact from the moment it is journaled; the
    // store lock keeps an eviction from falling between the check and that.
    let _store = matches!(req.spec, JobSpec::Stage(_)).then(|| agent.lock_store());
    if let JobSpec::Stage(s) = &req.spec
        && !artifacts_dir(&agent.config())
            .join(&s.artifact_sha256)
            .is_file()
    {
        return Err(ErrorBody::new(
            ErrorCode::NotFound,
            format!(
                "artifact {} is not on agent {}; upload it first (golivectl deploy does)",
                s.artifact_sha256,
                agent.config().agent.name
            ),
        ));
    }

    // The deployment whose lease the job runs under: staged releases and
    // backups remember it, so retention can tell a live rollback point.
    let deployment = match &req.lease {
        Some(token) => match agent.journal.lock(&app) {
            Ok(Some((info, held))) if &held == token => Some(info.deployment),
            _ => None,
        },
        None => None,
    };
    // One deferred commit (issue 14, speed): the answer waits for the
    // fsync of the submit's audit row (`server::rpc`), and the job acts
    // only after `Journal::sync` (`run`).
    let (job, inserted) = agent
        .journal
        .insert_job_deferred(
            &req.idempotency_key,
            &req.spec,
            by,
            now_millis(),
            deployment.as_deref(),
        )
        .map_err(internal)?;
    drop(_store);
    if !inserted {
        return dedupe(job, &req.spec);
    }
    let runner = Arc::clone(agent);
    let id = job.id;
    tokio::spawn(async move { run(runner, id).await });
    Ok(job)
}

/// How a host rollback reached the agent.
pub enum Via {
    /// Over mutual TLS: the app lock's lease is checked as for any job.
    Controller { lease: Option<String> },
    /// The agent's own submission (watchdog, local socket, in-process CLI):
    /// no lease is needed, since a host must roll itself back while a dead
    /// controller's lock has not expired. Journaled with who asked.
    Internal,
}

/// Submits a host rollback (issue 13). Its idempotency key is the agent's
/// own, derived from the rollback point (`rollback::resolve`), so every
/// asker of the same rollback gets the same job: a finished one is
/// answered as it is, a failed one is resumed from the step that failed.
pub fn submit_rollback(
    agent: &Arc<Agent>,
    by: &str,
    via: Via,
    req: HostRollback,
) -> Result<JobInfo, ErrorBody> {
    let app = req.app.clone();
    names::check_app_name(&app).map_err(|m| ErrorBody::new(ErrorCode::BadRequest, m))?;
    agent.known_app(&app)?;
    let resolved =
        crate::rollback::resolve(&agent.config(), &agent.journal, &req).map_err(|r| match r {
            crate::rollback::Refusal::Bad(m) => ErrorBody::new(ErrorCode::BadRequest, m),
            crate::rollback::Refusal::NotFound(m) => ErrorBody::new(ErrorCode::NotFound, m),
            crate::rollback::Refusal::Internal(m) => internal(m),
        })?;
    let asked = format!(
        "rollback asked by {} ({by}): {}",
        req.requested_by.as_str(),
        req.reason
    );
    let existing = agent.journal.job_by_key(&resolved.key).map_err(internal)?;
    // Following a rollback needs no lease; running one (again) does, for a
    // controller.
    if let Via::Controller { lease } = &via
        && existing
            .as_ref()
            .is_none_or(|j| matches!(j.state, JobState::Failed | JobState::Interrupted))
    {
        lock::check_lease(agent, &app, lease.as_deref())?;
    }
    if let Some(existing) = existing {
        return rejoin(agent, existing, &asked);
    }
    let spec = JobSpec::HostRollback(req);
    let (job, inserted) = agent
        .journal
        .insert_job(&resolved.key, &spec, by, now_millis())
        .map_err(internal)?;
    if !inserted {
        return rejoin(agent, job, &asked);
    }
    if let Some(d) = &resolved.deployment {
        agent
            .journal
            .set_job_deployment(job.id, d)
            .map_err(internal)?;
    }
    let runner = Arc::clone(agent);
    let id = job.id;
    tokio::spawn(async move { run(runner, id).await });
    Ok(job)
}

/// Another asker of a host rollback that has a job: a failed one runs
/// again (resumed from the failed step), any other is followed as it is.
fn rejoin(agent: &Arc<Agent>, mut job: JobInfo, asked: &str) -> Result<JobInfo, ErrorBody> {
    match job.state {
        JobState::Failed | JobState::Interrupted => {
            agent.journal.requeue_job(job.id).map_err(internal)?;
            agent.event(
                job.id,
                EventKind::Log {
                    level: LogLevel::Info,
                    line: format!(
                        "{asked}; the rollback {} before: it is resumed from the step that did not \
                         finish",
                        job.state.as_str()
                    ),
                },
            );
            let runner = Arc::clone(agent);
            let id = job.id;
            tokio::spawn(async move { run(runner, id).await });
            job = agent.journal.job(id).map_err(internal)?.unwrap_or(job);
        }
        JobState::Queued | JobState::Running => {
            agent.event(
                job.id,
                EventKind::Log {
                    level: LogLevel::Info,
                    line: format!("{asked}; this rollback is already running: it runs once"),
                },
            );
        }
        JobState::Succeeded => {}
    }
    job.deduplicated = true;
    Ok(job)
}

/// At start: runs the host rollbacks a stop left unfinished (their finished
/// steps are not repeated). `only`: just those of one app (the local CLI).
pub fn resume(agent: &Arc<Agent>, only: Option<&str>) -> Vec<u64> {
    let mut resumed = Vec::new();
    for job in agent.journal.unfinished_rollbacks().unwrap_or_default() {
        if only.is_some_and(|a| a != job.spec.app()) {
            continue;
        }
        tracing::warn!(
            job = job.id,
            kind = %job.spec.kind(),
            app = %job.spec.app(),
            "resuming {} job {} of app {} (the agent stopped while it ran)",
            job.spec.kind(),
            job.id,
            job.spec.app()
        );
        resumed.push(job.id);
        let runner = Arc::clone(agent);
        let id = job.id;
        tokio::spawn(async move { run(runner, id).await });
    }
    resumed
}

/// Submits a job on the agent's own behalf (the watchdog's commit, issue
/// 13): no peer and no lease, so a controller that died holding the app's
/// lock cannot keep its host from committing. The caller has checked the
/// spec. A key already used returns that job, whatever its spec. Returns the
/// job and whether this call inserted it. The job still waits for the app's
/// queue: one job at a time per app. Rollbacks go through `submit_rollback`.
pub fn submit_internal(
    agent: &Arc<Agent>,
    key: &str,
    spec: &JobSpec,
    by: &str,
    deployment: Option<&str>,
) -> Result<(JobInfo, bool), String> {
    let (job, inserted) = agent
        .journal
        .insert_job(key, spec, by, now_millis())
        .map_err(|e| e.to_string())?;
    if inserted {
        if let Some(d) = deployment {
            agent
                .journal
                .set_job_deployment(job.id, d)
                .map_err(|e| e.to_string())?;
        }
        let runner = Arc::clone(agent);
        let id = job.id;
        tokio::spawn(async move { run(runner, id).await });
    }
    Ok((job, inserted))
}

/// Admins may restore any backup; operators only the rollback point of the
/// deployment they name (SPEC §3, issue 3).
fn restore_allowed(agent: &Agent, peer: &PeerIdentity, r: &RestoreBackup) -> Result<(), ErrorBody> {
    let row = agent
        .journal
        .backup(&r.id)
        .map_err(internal)?
        .filter(|b| b.info.app == r.app)
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!(
                    "app {} has no backup {:?} on agent {}; list them with `golivectl backup list PLAN`",
                    r.app, r.id, agent.config().agent.name
                ),
            )
        })?;
    if peer.role == Some(Role::Admin) {
        return Ok(());
    }
    match (&r.deployment, &row.info.deployment) {
        (Some(asked), Some(taken_for)) if asked == taken_for => Ok(()),
        _ => Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "{} certificate {:?} may restore only the rollback point of a deployment it names \
                 (--deployment ID); backup {} {}. Restoring an arbitrary backup needs the admin role",
                peer.role_str(),
                peer.name,
                r.id,
                match &row.info.deployment {
                    Some(d) => format!("is the rollback point of deployment {d}"),
                    None => "belongs to no deployment".into(),
                }
            ),
        )),
    }
}

fn dedupe(mut job: JobInfo, spec: &JobSpec) -> Result<JobInfo, ErrorBody> {
    if &job.spec != spec {
        return Err(ErrorBody::new(
            ErrorCode::Conflict,
            format!(
                "idempotency key {:?} was already used for job {} ({}) with a different request; \
                 use a new key for a new request",
                job.idempotency_key,
                job.id,
                job.spec.kind()
            ),
        ));
    }
    job.deduplicated = true;
    Ok(job)
}

/// Ends job `id`, which never started, as failed with `code` and
/// `message`, and tells its followers.
fn fail_unstarted(agent: &Agent, id: u64, code: ErrorCode, message: &str) {
    let _ = agent.journal.finish_job(
        id,
        JobState::Failed,
        None,
        Some((code, message)),
        now_millis(),
    );
    agent.event(
        id,
        EventKind::Finished {
            state: JobState::Failed,
        },
    );
}

async fn run(agent: Arc<Agent>, id: u64) {
    let Ok(Some(job)) = agent.journal.job(id) else {
        return;
    };
    let app = job.spec.app().to_string();
    // Counted from here, so the stop's drain (issue 16) waits for a job
    // queued behind another too.
    let _running = agent.job_running();
    let Some(queue) = agent.app_queue(&app) else {
        // A reload removed the app after the job was accepted.
        let message = format!(
            "agent {}: app {app:?} is no longer declared in the config (reloaded); the job did not run",
            agent.config().agent.name
        );
        fail_unstarted(&agent, id, ErrorCode::NotFound, &message);
        return;
    };
    let _turn = queue.lock().await;
    // A host rollback asked again while it was being resumed may have been
    // spawned twice: the second run finds it finished and leaves it.
    if agent
        .journal
        .job(id)
        .ok()
        .flatten()
        .is_none_or(|j| j.state.is_final())
    {
        return;
    }
    // The job's row is on disk before the job changes anything (its
    // submission was a deferred commit; free when the submit's answer
    // already synced it). `running` itself need not be (`set_job_running`).
    if let Err(e) = agent.journal.sync() {
        let message = format!(
            "agent {}: the job was not started: {e}",
            agent.config().agent.name
        );
        tracing::error!(job = id, "{message}");
        fail_unstarted(&agent, id, ErrorCode::Internal, &message);
        return;
    }
    if agent.journal.set_job_running(id).is_err() {
        return;
    }
    agent.event(
        id,
        EventKind::Log {
            level: LogLevel::Info,
            line: format!(
                "{} started on {}",
                job.spec.kind(),
                agent.config().agent.name
            ),
        },
    );
    let worker = Arc::clone(&agent);
    let spec = job.spec.clone();
    let submitted_by = job.submitted_by.clone();
    let deployment = agent.journal.job_deployment(id).ok().flatten();
    let kind = job.spec.kind();
    tracing::info!(
        job = id,
        kind = %kind,
        app = %app,
        peer = %submitted_by,
        deployment = deployment.as_deref().unwrap_or("-"),
        "job {id} started: {kind} of {app}"
    );
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let emit = |kind: EventKind| {
            worker.event(id, kind);
        };
        // On the blocking pool: an availability sampler is a task on the
        // agent's runtime, not a thread and a runtime of its own (issue 14).
        crate::availability::with_runtime(runtime, || {
            execute(
                &worker.config(),
                &worker.journal,
                &crate::rollback::Job {
                    id,
                    submitted_by: &submitted_by,
                },
                &spec,
                deployment.as_deref(),
                &emit,
            )
        })
    })
    .await
    .unwrap_or_else(|e| Err(JobError::failed(format!("the job panicked: {e}"))));

    // A stop that could not wait for this job marked it interrupted and
    // ended its programs (issue 16): that record stands.
    if agent
        .journal
        .job(id)
        .ok()
        .flatten()
        .is_some_and(|j| j.state == JobState::Interrupted)
    {
        return;
    }
    let now = now_millis();
    let state = match &outcome {
        Ok(result) => {
            let _ = agent
                .journal
                .finish_job(id, JobState::Succeeded, Some(result), None, now);
            JobState::Succeeded
        }
        Err(JobError { code, message }) => {
            agent.event(
                id,
                EventKind::Log {
                    level: LogLevel::Error,
                    // The program output in it was streamed already.
                    line: error_headline(message).to_string(),
                },
            );
            if let JobSpec::Stage(s) = &job.spec {
                discard_artifact(&agent, id, job.submitted_at, s);
            }
            let _ =
                agent
                    .journal
                    .finish_job(id, JobState::Failed, None, Some((*code, message)), now);
            // A host rollback that failed leaves the app in maintenance: loud
            // on the agent's webhook too (the watchdog tells of its own).
            if let JobSpec::HostRollback(r) = &job.spec
                && r.requested_by != golive_shared::protocol::RollbackRequester::Watchdog
            {
                let release = agent
                    .journal
                    .rollback_points(&r.app, 1)
                    .ok()
                    .and_then(|mut p| p.pop())
                    .map(|p| p.release)
                    .unwrap_or_default();
                crate::watchdog::notify::send(
                    &agent,
                    crate::watchdog::notify::Notice {
                        watchdog: None,
                        event: golive_shared::protocol::WatchdogState::RollbackFailed,
                        app: r.app.clone(),
                        deployment: deployment_of(&agent, id),
                        release,
                        rollback_to: None,
                        reason: format!(
                            "rollback asked by {}: {}",
                            r.requested_by.as_str(),
                            error_headline(message)
                        ),
                        detail: Some(format!("host rollback job {id} failed")),
                        at: now,
                    },
                );
            }
            JobState::Failed
        }
    };
    let secs = started.elapsed().as_secs_f64();
    match &outcome {
        Ok(_) => tracing::info!(
            job = id,
            kind = %kind,
            app = %app,
            state = state.as_str(),
            secs,
            "job {id} succeeded: {kind} of {app}"
        ),
        // The headline only: the output tail is the programs' own text.
        Err(JobError { message, .. }) => tracing::warn!(
            job = id,
            kind = %kind,
            app = %app,
            state = state.as_str(),
            secs,
            "job {id} failed: {kind} of {app}: {}",
            error_headline(message)
        ),
    }
    agent.event(id, EventKind::Finished { state });
}

/// The deployment a job belongs to, or "-" (for a notice).
fn deployment_of(agent: &Agent, id: u64) -> String {
    agent
        .journal
        .job_deployment(id)
        .ok()
        .flatten()
        .unwrap_or_else(|| "-".into())
}

/// After a failed stage: the artifact leaves the store unless something
/// still references it (`store` module docs). Runs before the job is marked
/// failed, so a controller that sees the failure sees the store without it.
fn discard_artifact(agent: &Agent, id: u64, submitted: UnixMillis, s: &StageRelease) {
    let sha = &s.artifact_sha256;
    let outcome = {
        let _store = agent.lock_store();
        crate::store::discard_after_failed_stage(
            &agent.config(),
            &agent.journal,
            sha,
            id,
            submitted,
        )
    };
    let (level, line) = match outcome {
        Ok(Discard::Removed { bytes }) => (
            LogLevel::Info,
            format!(
                "removed artifact {sha} ({bytes} bytes) from the store: staging {} from it failed and nothing else uses it",
                s.release
            ),
        ),
        Ok(Discard::Kept(why)) => (
            LogLevel::Info,
            format!("artifact {sha} stays in the store: {why}"),
        ),
        Ok(Discard::Absent) => return,
        Err(e) => (
            LogLevel::Warn,
            format!("could not remove artifact {sha} from the store after the failed stage: {e}"),
        ),
    };
    match level {
        LogLevel::Warn => {
            tracing::warn!(job = id, app = %s.app, "job {id} (app {}): {line}", s.app)
        }
        _ => tracing::info!(job = id, app = %s.app, "job {id} (app {}): {line}", s.app),
    }
    agent.event(id, EventKind::Log { level, line });
}

/// Performs one job's work. Synchronous; errors are operator-facing messages.
/// `job` is the journaled job (a host rollback journals its steps under
/// it); `deployment` is the deployment whose lease the job runs under, or,
/// for a host rollback, whose rollback point it uses; `emit` receives log
/// lines and progress as job events.
pub fn execute(
    config: &AgentConfig,
    journal: &Journal,
    job: &crate::rollback::Job,
    spec: &JobSpec,
    deployment: Option<&str>,
    emit: &dyn Fn(EventKind),
) -> Result<JobResult, JobError> {
    let log = |line: String| {
        emit(EventKind::Log {
            level: LogLevel::Info,
            line,
        })
    };
    let log: &dyn Fn(String) = &log;
    let app_name = spec.app();
    let app = config
        .app(app_name)
        .ok_or_else(|| JobError::refused(format!("no app {app_name:?} in the agent config")))?;
    let layout = AppLayout::new(&app.root);
    layout
        .ensure_dirs()
        .map_err(|e| format!("cannot create {}: {e}", app.root.display()))?;
    match spec {
        JobSpec::StageGit(s) => {
            replace_never_live(journal, app_name, &layout, &s.release, log)?;
            log(format!(
                "staging {} of {app_name} from git ref {}",
                s.release, s.git_ref
            ));
            let staged = crate::release::git::stage(config, app_name, app, &layout, s, emit)?;
            crate::hooks::finish_stage(config, app_name, &layout, &s.release, emit)?;
            journal
                .record_staged_for(
                    app_name,
                    &s.release,
                    None,
                    Some(&staged.commit),
                    now_millis(),
                    deployment,
                )
                .map_err(|e| e.to_string())?;
            log(format!(
                "staged {} at commit {}: {} files, {} bytes, {} shared paths linked",
                s.release,
                staged.commit,
                staged.stats.files,
                staged.stats.bytes,
                app.shared.len()
            ));
            Ok(JobResult::Staged {
                release: s.release.clone(),
                path: layout.release_dir(&s.release).display().to_string(),
                files: staged.stats.files,
                bytes: staged.stats.bytes,
                commit: Some(staged.commit),
            })
        }
        JobSpec::Stage(s) => {
            replace_never_live(journal, app_name, &layout, &s.release, log)?;
            let archive = artifacts_dir(config).join(&s.artifact_sha256);
            log(format!(
                "unpacking artifact {} into {}",
                &s.artifact_sha256[..12],
                layout.release_dir(&s.release).display()
            ));
            let limits = UnpackLimits {
                max_bytes: config.limits.max_unpacked_bytes,
                max_entries: config.limits.max_archive_entries,
            };
            let stats = layout.stage(&s.release, &archive, &app.shared, &limits)?;
            crate::hooks::finish_stage(config, app_name, &layout, &s.release, emit)?;
            journal
                .record_staged_for(
                    app_name,
                    &s.release,
                    Some(&s.artifact_sha256),
                    None,
                    now_millis(),
                    deployment,
                )
                .map_err(|e| e.to_string())?;
            log(format!(
                "staged {}: {} files, {} bytes, {} shared paths linked",
                s.release,
                stats.files,
                stats.bytes,
                app.shared.len()
            ));
            Ok(JobResult::Staged {
                release: s.release.clone(),
                path: layout.release_dir(&s.release).display().to_string(),
                files: stats.files,
                bytes: stats.bytes,
                commit: None,
            })
        }
        JobSpec::Activate(a) => {
            let dir = layout.release_dir(&a.release);
            let current = layout.current().map_err(|e| e.to_string())?;
            // Already live: nothing switches, so no activation hooks run.
            let switching = current.as_deref() != Some(a.release.as_str());
            // What users see through the switch (issue 12): only when
            // something was live to be interrupted.
            let sampler = (switching && current.is_some())
                .then(|| crate::availability::start(journal, app_name, app))
                .flatten();
            let switched = (|| {
                if switching && dir.is_dir() {
                    crate::hooks::preflight(app, &a.release, &dir)?;
                    crate::hooks::run_hooks(config, app_name, "before_activate", &dir, emit)
                        .map_err(|e| e.map(|m| error_with(&m, "; nothing was switched")))?;
                }
                // The deployment's rollback point, written before the switch
                // (issue 13): a host can then roll itself back alone.
                if let Some(d) = deployment
                    && switching
                {
                    crate::rollback::record_point(config, journal, a, d, current.as_deref(), emit)
                        .map_err(|e| {
                            JobError::failed(format!(
                                "cannot record the rollback point of deployment {d}: {e}; nothing \
                                 was switched"
                            ))
                        })?;
                }
                let previous =
                    switch(journal, app_name, app, &layout, &a.release, "activate", log)?;
                if let Some(d) = deployment
                    && let Err(e) = crate::rollback::point_live(journal, app_name, d)
                {
                    log(format!(
                        "warning: the rollback point of {d} could not be marked live: {e}"
                    ));
                }
                if switching {
                    // After the switch: the host changed, so a failure
                    // whatever its cause (`Internal`, exit 1).
                    crate::hooks::run_hooks(config, app_name, "after_activate", &dir, emit)
                        .map_err(|e| {
                            JobError::failed(error_with(
                                &e.message,
                                &format!("; current already points to {}", a.release),
                            ))
                        })?;
                }
                Ok::<_, JobError>(previous)
            })();
            let availability = sampler.and_then(|s| s.finish(switched.is_ok(), emit));
            Ok(JobResult::Activated {
                release: a.release.clone(),
                previous: switched?,
                availability,
            })
        }
        JobSpec::Rollback(r) => {
            // The older protocol's rollback: the code steps of the host
            // rollback, the one way a host changes back (issue 13).
            log(format!("rolling back ({})", r.reason));
            let (from, to, availability) = crate::rollback::run_code_only(
                config,
                journal,
                job,
                app_name,
                r.to.as_deref(),
                &r.reason,
                emit,
            )?;
            Ok(JobResult::RolledBack {
                from,
                to,
                availability,
            })
        }
        JobSpec::HostRollback(r) => Ok(crate::rollback::run(
            config, journal, job, r, deployment, emit,
        )
        .map(JobResult::HostRolledBack)?),
        JobSpec::Backup(b) => crate::backup::run::create_job(config, journal, b, emit),
        JobSpec::VerifyBackup(v) => Ok(crate::backup::run::verify(config, journal, v, emit)?),
        JobSpec::Restore(r) => crate::backup::run::restore_job(config, journal, r, emit),
        JobSpec::Maintenance(m) => Ok(crate::maintenance::set(config, journal, m, emit)?),
        JobSpec::RunCommand(c) => Ok(crate::hooks::run_command(config, c, emit)?),
        JobSpec::Migrate(m) => crate::migrate::run_job(config, journal, m, deployment, emit),
        JobSpec::SetFlag(f) => Ok(crate::flags::set(config, journal, f, emit)?),
        JobSpec::DiscardRelease(d) => Ok(discard_never_live(
            journal, app_name, &layout, d, deployment, log,
        )?),
    }
}

/// Why release `id` of `app_name` must stay on disk, or `Ok` when it never
/// went live and may be removed (issue 12): it is not current, not the
/// rollback target, never activated, and the journal knows it as staged.
/// A reason is a refusal; what could not be read a failure.
fn never_live(
    journal: &Journal,
    app_name: &str,
    layout: &AppLayout,
    id: &str,
) -> Result<golive_shared::protocol::UnixMillis, JobError> {
    let failed = |e: &dyn std::fmt::Display| JobError::failed(e.to_string());
    let current = layout.current().map_err(|e| failed(&e))?;
    if current.as_deref() == Some(id) {
        return Err(JobError::refused(format!(
            "it is the current release of {app_name}"
        )));
    }
    if let Some(at) = journal.first_live(app_name, id).map_err(|e| failed(&e))? {
        return Err(JobError::refused(format!(
            "it went live at {}: the id of a release that went live is never reused, and the \
             release leaves the disk only by keep_releases",
            golive_shared::timefmt::utc(at)
        )));
    }
    let target = journal
        .rollback_target(app_name, current.as_deref(), |r| {
            layout.release_dir(r).is_dir()
        })
        .map_err(|e| failed(&e))?;
    if target.as_deref() == Some(id) {
        return Err(JobError::refused(format!(
            "it is the rollback target of {app_name}"
        )));
    }
    journal
        .staged_at(app_name, id)
        .map_err(|e| failed(&e))?
        .ok_or_else(|| {
            JobError::refused(format!(
                "the agent's journal has no record of staging it (made by hand, or left by an \
                 agent crash), so golive does not remove it; move {} aside by hand",
                layout.release_dir(id).display()
            ))
        })
}

/// Before staging `id`: a release of that id that never went live (left by
/// a refused or failed deployment, or one whose controller crashed) is
/// removed so the id can be used again; any other release of that id
/// refuses the staging.
fn replace_never_live(
    journal: &Journal,
    app_name: &str,
    layout: &AppLayout,
    id: &str,
    log: &dyn Fn(String),
) -> Result<(), JobError> {
    let dir = layout.release_dir(id);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(());
    }
    let staged_at = never_live(journal, app_name, layout, id).map_err(|e| {
        e.map(|why| {
            format!(
                "release {id:?} already exists at {} and stays: {why}; pick a new release id",
                dir.display()
            )
        })
    })?;
    layout.discard(id)?;
    log(format!(
        "replaced release {id}: it was staged at {} but never went live (a refused or failed \
         deployment left it)",
        golive_shared::timefmt::utc(staged_at)
    ));
    Ok(())
}

/// The `DiscardRelease` job: removes a staged release that never went live.
/// Under a deployment's lease, only a release that deployment staged.
fn discard_never_live(
    journal: &Journal,
    app_name: &str,
    layout: &AppLayout,
    d: &golive_shared::protocol::DiscardRelease,
    deployment: Option<&str>,
    log: &dyn Fn(String),
) -> Result<JobResult, String> {
    let id = d.release.as_str();
    let dir = layout.release_dir(id);
    if std::fs::symlink_metadata(&dir).is_err() {
        log(format!("release {id} is not on disk; nothing to remove"));
        return Ok(JobResult::Discarded {
            release: id.to_string(),
        });
    }
    let refused = |why: String| format!("release {id} of {app_name} stays on disk: {why}");
    let staged_at = never_live(journal, app_name, layout, id).map_err(|e| refused(e.message))?;
    if let Some(mine) = deployment {
        let by = journal
            .release_deployment(app_name, id)
            .map_err(|e| e.to_string())?;
        if by.as_deref() != Some(mine) {
            return Err(refused(format!(
                "it was staged by {}, not by deployment {mine}, whose lock this job holds",
                by.map_or("no deployment".into(), |b| format!("deployment {b}"))
            )));
        }
    }
    layout.discard(id).map_err(|e| e.to_string())?;
    log(format!(
        "removed release {id} (staged at {}, never live): {}",
        golive_shared::timefmt::utc(staged_at),
        d.reason
    ));
    Ok(JobResult::Discarded {
        release: id.to_string(),
    })
}

/// Switches `current` to `release`, journals it, and prunes old releases.
/// The activation and every rollback go through it.
pub(crate) fn switch(
    journal: &Journal,
    app_name: &str,
    app: &AppConfig,
    layout: &AppLayout,
    release: &str,
    cause: &str,
    log: &dyn Fn(String),
) -> Result<Option<String>, JobError> {
    let before = layout.current().map_err(|e| e.to_string())?;
    if before.as_deref() == Some(release) {
        log(format!("{release} is already current; nothing to switch"));
        return Ok(before);
    }
    log(format!(
        "switching current: {} -> {release}",
        before.as_deref().unwrap_or("none")
    ));
    // Its class kept (issue 14): a release not on disk is `NotFound`, a
    // `current` golive did not make `BadRequest`, a disk fault `Internal`.
    let previous = layout.activate(release)?;
    journal
        .record_activation(app_name, release, previous.as_deref(), cause, now_millis())
        .map_err(|e| e.to_string())?;
    let newest_first: Vec<String> = journal
        .releases(app_name)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut protect = vec![release.to_string()];
    protect.extend(previous.clone());
    if let Ok(Some(back)) = journal.rollback_target(app_name, Some(release), |id| {
        layout.release_dir(id).is_dir()
    }) {
        protect.push(back);
    }
    match layout.prune(app.keep_releases, &newest_first, &protect) {
        Ok(removed) if !removed.is_empty() => log(format!(
            "removed old releases (keep_releases = {}): {}",
            app.keep_releases,
            removed.join(", ")
        )),
        Ok(_) => {}
        Err(e) => log(format!("warning: could not prune old releases: {e}")),
    }
    Ok(previous)
}

/// Long-poll: events after `after_seq`, waiting up to the capped wait time
/// for new ones or for the job to finish.
pub async fn events(agent: &Agent, req: JobEventsRequest) -> Result<JobEventsResponse, ErrorBody> {
    let cap = std::time::Duration::from_secs(agent.config().limits.max_poll_secs);
    let wait = std::time::Duration::from_millis(req.wait_ms).min(cap);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = agent.subscribe();
    loop {
        changes.borrow_and_update();
        let job = agent
            .journal
            .job(req.job_id)
            .map_err(internal)?
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "agent {} has no job {}",
                        agent.config().agent.name,
                        req.job_id
                    ),
                )
            })?;
        let events = agent
            .journal
            .events_after(req.job_id, req.after_seq, 500)
            .map_err(internal)?;
        if !events.is_empty() || job.state.is_final() {
            return Ok(JobEventsResponse { job, events });
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(JobEventsResponse { job, events });
        }
    }
}
