//! `golivectl deploy`, `rollback`, `follow` and `unlock`: the sequencer.
//!
//! A deployment goes in phases so that the live release is touched as late
//! as possible and the way back is always known:
//!
//! 1. reach every agent (hello: protocol and role), check the app is declared;
//! 2. take the app lock on every host (a lease, renewed in the background);
//! 3. upload (content-addressed: skipped when the agent has it) and stage on
//!    every host (a git source: each host fetches the ref, and all must
//!    resolve it to the same commit): nothing live changes yet; then maintenance on, on every
//!    host, when the deployment needs it (`maintenance_reason`); then, when
//!    the plan asks, the pre-deploy backup (verified if asked) on every host,
//!    the rollback point (taken in maintenance, so no write is lost after it);
//! 4. host by host: activate, run the app's probes; a critical or high probe
//!    that does not pass switches every activated host back (exit 3). In
//!    maintenance: activate every host, maintenance off everywhere, then the
//!    probes (they go through the web server, which answers 503 while on);
//!    after a switch-back, maintenance off again where it is still on. The
//!    time in maintenance is the downtime, reported per host and overall,
//!    beside the time the app did not answer outside it (measured by the
//!    agents through each switch: `Unavailable`);
//! 5. release the locks, record the outcome.
//!
//! Every job carries the idempotency key `DEPLOYMENT:HOST:STEP`, so a repeat
//! never runs a step twice. The sequencer knows nothing of TLS.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use golive_shared::protocol::{
    Availability, CreateBackup, EventKind, JobEventsRequest, JobInfo, JobResult, JobSpec, JobState,
    ListFlagsRequest, LockRequest, LockResponse, MigrationStatusRequest, ProbeReport, ProbeResult,
    ProbeStatus, Request, Response, RunMigrations, RunProbesRequest, SubmitJob, error_headline,
    now_millis,
};
use golive_shared::protocol::{
    DatabaseChoice, HostRollback, HostRolledBack, RollbackRequester, StepState, WatchdogInfo,
    WatchdogState, WatchdogStatusRequest,
};
use golive_shared::timefmt::utc;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::client::{AgentClient, ClientError};
use crate::cmd::status::agent_status;
use crate::deployment::{self, Executor, StepError, StepRequest};
use crate::gate::{self, Action};
use crate::journal::Journal;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Plan, PreDeployBackup, Source};

/// How often a long-poll may fail in a row before the controller gives up
/// following a job (the job itself keeps running on the agent).
const MAX_REATTACH: u32 = 30;
/// The pause between two attempts to reattach.
const REATTACH_EVERY: Duration = Duration::from_secs(2);
/// How long a job is followed through an unreachable agent by default: the
/// [`MAX_REATTACH`] attempts' worth.
const LOST_FOR: Duration = Duration::from_secs(2 * MAX_REATTACH as u64);

/// How long a host may stay silent before it counts as unreachable, and
/// the limit's name for the message (issue 14). Every call to a host in a
/// wave is bounded by it, so a host that hangs (a stopped agent accepts
/// connections and never answers) fails within it instead of hanging the
/// wave.
#[derive(Clone, Copy)]
struct Deadline {
    after: Duration,
    name: &'static str,
}

/// Following a job outside a deployment (`golivectl follow`, the other
/// commands' jobs).
const LOST: Deadline = Deadline {
    after: LOST_FOR,
    name: "golivectl's limit for a lost agent",
};

impl Deadline {
    /// `[deploy] host_timeout_secs`.
    fn of(plan: &Plan) -> Deadline {
        Deadline {
            after: plan.host_timeout,
            name: "deadline host_timeout_secs",
        }
    }

    /// "agent HOST at ADDR: HOST unreachable for N s (deadline host_timeout_secs)".
    fn unreachable(self, client: &AgentClient) -> ClientError {
        ClientError::Transport {
            host: client.host.clone(),
            addr: client.addr.clone(),
            detail: format!(
                "{} unreachable for {} s ({})",
                client.host,
                self.after.as_secs(),
                self.name
            ),
        }
    }

    /// Whether the host does not answer at all now (a `hello` within the
    /// deadline): an agent that answers, even with a refusal, is not lost.
    async fn lost(self, client: &AgentClient) -> bool {
        let hello = Request::Hello(golive_shared::protocol::HelloRequest {
            client_version: env!("CARGO_PKG_VERSION").into(),
        });
        let r = self
            .bound(client, Duration::ZERO, client.call(&hello))
            .await;
        matches!(r, Err(e) if !matches!(e, ClientError::Agent { .. }))
    }

    /// `call`, or [`Deadline::unreachable`] once `extra` plus the deadline
    /// passed without its answer (`extra`: how long the agent was asked to
    /// hold the answer, a long-poll's wait).
    async fn bound<T>(
        self,
        client: &AgentClient,
        extra: Duration,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.after + extra, call).await {
            Ok(r) => r,
            Err(_) => Err(self.unreachable(client)),
        }
    }
}

/// sha256 and size of a file, streamed.
pub async fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// An error without the program output the agent appended to it: on a
/// terminal that output was just streamed line by line, so repeating it in
/// every line that mentions the failure printed it four times (issue 12).
/// The step's JSON event and its record keep the whole text; outcome
/// messages are built from [`error_headline`] only.
pub fn headline(error: &str) -> std::borrow::Cow<'_, str> {
    let head = error_headline(error);
    if head.len() < error.len() {
        format!("{head} (its output is above)").into()
    } else {
        error.into()
    }
}

/// Reports one step on both outputs.
fn step(out: Out, host: &str, name: &str, state: &str, detail: &str) {
    out.line(format!(
        "[{host}] {name}: {state}{}",
        if detail.is_empty() {
            String::new()
        } else {
            format!(" — {}", headline(detail))
        }
    ));
    out.event(
        &json!({"event": "step", "host": host, "step": name, "state": state, "detail": detail}),
    );
}

/// Submits a job (idempotently) and follows it to its end.
pub async fn run_job(
    out: Out,
    client: &AgentClient,
    key: String,
    lease: Option<String>,
    spec: JobSpec,
) -> Result<JobInfo, ClientError> {
    run_job_within(out, client, key, lease, spec, LOST).await
}

/// [`run_job`], giving up on a host that stays unreachable for `lost_for`
/// (`[deploy] host_timeout_secs`, issue 14): the submission must be
/// answered within it, and the job's events while it is followed.
async fn run_job_within(
    out: Out,
    client: &AgentClient,
    key: String,
    lease: Option<String>,
    spec: JobSpec,
    lost_for: Deadline,
) -> Result<JobInfo, ClientError> {
    let submit = Request::SubmitJob(SubmitJob {
        idempotency_key: key,
        lease,
        spec,
    });
    let job = match lost_for
        .bound(client, Duration::ZERO, client.call(&submit))
        .await?
    {
        Response::Job(j) => j,
        other => return Err(client.unexpected(&other)),
    };
    if job.deduplicated {
        out.line(format!(
            "[{}] job {} already submitted with this key: following it, not running it again",
            client.host, job.id
        ));
    }
    follow_within(out, client, job.id, lost_for).await
}

/// Follows a job's events by long-poll until it ends; reattaches after
/// connection failures (the job keeps running on the agent meanwhile).
pub async fn follow(out: Out, client: &AgentClient, job_id: u64) -> Result<JobInfo, ClientError> {
    follow_within(out, client, job_id, LOST).await
}

/// [`follow`], giving up once the agent has been unreachable for `lost_for`:
/// refusing connections that long, or silent that long beyond the
/// long-poll's wait (a stopped agent accepts connections and never answers).
async fn follow_within(
    out: Out,
    client: &AgentClient,
    job_id: u64,
    lost_for: Deadline,
) -> Result<JobInfo, ClientError> {
    // The agent holds a long-poll up to `wait`: at most half the deadline,
    // so a silent agent is told from a waiting one within 1.5 × the deadline.
    let wait = (lost_for.after / 2).clamp(Duration::from_millis(500), Duration::from_secs(20));
    let lost_for_secs = lost_for.after;
    let mut after = 0;
    let mut failures = 0;
    // Since when the agent has not answered (reset by an answer).
    let mut lost_since: Option<std::time::Instant> = None;
    let tty = !out.json() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    // (started, on a progress line) for the live progress display.
    let mut progress: Option<(std::time::Instant, bool)> = None;
    loop {
        let req = Request::JobEvents(JobEventsRequest {
            job_id,
            after_seq: after,
            wait_ms: wait.as_millis() as u64,
        });
        let left = lost_for
            .after
            .saturating_sub(lost_since.map_or(Duration::ZERO, |s| s.elapsed()));
        let answer = tokio::time::timeout(wait + left, client.call(&req)).await;
        let Ok(answer) = answer else {
            return Err(lost_for.unreachable(client));
        };
        match answer {
            Ok(Response::Events(ev)) => {
                failures = 0;
                lost_since = None;
                for e in &ev.events {
                    after = after.max(e.seq);
                    match &e.kind {
                        EventKind::Log { line, .. } => {
                            if let Some((_, on_line @ true)) = progress.as_mut() {
                                println!();
                                *on_line = false;
                            }
                            out.line(format!("[{}]   {line}", client.host));
                            out.event(&json!({"event": "log", "host": client.host, "job": job_id, "line": line}));
                        }
                        EventKind::Progress { step, done, total } => {
                            out.event(&json!({"event": "progress", "host": client.host, "job": job_id, "step": step, "done": done, "total": total}));
                            if tty {
                                let (since, on_line) =
                                    progress.get_or_insert((std::time::Instant::now(), false));
                                let secs = since.elapsed().as_secs_f64().max(0.001);
                                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                                print!(
                                    "\r[{}]   {step}: {:.1} MiB of ~{:.1} MiB ({:.1} MiB/s)   ",
                                    client.host,
                                    mib(*done),
                                    mib(*total),
                                    mib(*done) / secs
                                );
                                let _ = std::io::Write::flush(&mut std::io::stdout());
                                *on_line = true;
                            }
                        }
                        EventKind::Finished { .. } => {}
                    }
                }
                if ev.job.state.is_final() && ev.events.is_empty() {
                    return Ok(ev.job);
                }
            }
            Ok(other) => return Err(client.unexpected(&other)),
            Err(e @ ClientError::Agent { .. }) => return Err(e),
            Err(e) => {
                failures += 1;
                let lost = lost_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed();
                if failures > MAX_REATTACH || lost >= lost_for_secs {
                    return Err(e);
                }
                let wait = REATTACH_EVERY.min(lost_for_secs - lost);
                out.line(format!(
                    "[{}] lost the agent while following job {job_id} ({e}); reattaching in {:.1}s ({failures}/{MAX_REATTACH}, gives up after {}s)",
                    client.host,
                    wait.as_secs_f64(),
                    lost_for_secs.as_secs()
                ));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A held app lock on one host, renewed in the background until dropped.
pub(crate) struct Lease {
    client: AgentClient,
    app: String,
    token: String,
    renewer: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Lease {
    async fn acquire(
        client: &AgentClient,
        app: &str,
        deployment: &str,
        ttl: u32,
    ) -> Result<Lease, ClientError> {
        let resp = client
            .call(&Request::Lock(LockRequest::Acquire {
                app: app.into(),
                deployment: deployment.into(),
                ttl_secs: ttl,
            }))
            .await?;
        let LockResponse::Held { token, .. } = (match resp {
            Response::Lock(l) => l,
            other => return Err(client.unexpected(&other)),
        }) else {
            return Err(client.unexpected(&Response::Jobs(vec![])));
        };
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let client = client.clone();
            let app = app.to_string();
            let token = token.clone();
            let lost = Arc::clone(&lost);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs((ttl / 3).max(1) as u64)).await;
                    let renew = Request::Lock(LockRequest::Renew {
                        app: app.clone(),
                        token: token.clone(),
                        ttl_secs: ttl,
                    });
                    match client.call(&renew).await {
                        Ok(_) => {}
                        // Someone broke or took the lock: stop at the next step.
                        Err(ClientError::Agent { .. }) => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // Unreachable for a moment: the lease still has time.
                        Err(_) => {}
                    }
                }
            })
        };
        Ok(Lease {
            client: client.clone(),
            app: app.into(),
            token,
            renewer,
            lost,
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            Err(format!(
                "the lock on {} at {} was broken or taken by someone else; stopping",
                self.app, self.client.host
            ))
        } else {
            Ok(())
        }
    }

    pub(crate) async fn release(self) {
        self.renewer.abort();
        let _ = self
            .client
            .call(&Request::Lock(LockRequest::Release {
                app: self.app,
                token: self.token,
            }))
            .await;
    }
}

/// Releases every lease, [`RELEASE_AT_ONCE`] hosts at a time.
pub(crate) async fn release_all(leases: Vec<Lease>) {
    crate::fanout::all(RELEASE_AT_ONCE, leases, Lease::release).await;
}

/// Locks are released this many hosts at a time: one small request each,
/// on every way out of a deployment (the plan's limit is not at hand
/// there, and releasing changes nothing live).
const RELEASE_AT_ONCE: usize = crate::plan::DEFAULT_PARALLEL as usize;

/// Phase 2: the app lock on every host, `[deploy] parallel` at a time, or
/// on none: after a refusal no more are asked for and those taken are
/// released. `Err` names the first host in plan order that refused.
pub(crate) async fn lock_all(plan: &Plan, id: &str) -> Result<Vec<Lease>, String> {
    let taken = crate::fanout::until(
        plan.parallel,
        &plan.hosts,
        |h| Lease::acquire(&h.client, &plan.app, id, plan.lock_ttl_secs),
        Result::is_err,
    )
    .await;
    let mut leases = Vec::new();
    let mut refused = None;
    for (host, r) in plan.hosts.iter().zip(taken) {
        match r {
            Some(Ok(l)) => leases.push(l),
            Some(Err(e)) => {
                refused.get_or_insert_with(|| {
                    format!("could not lock {} on {}: {e}", plan.app, host.name)
                });
            }
            None => {}
        }
    }
    match refused {
        None => Ok(leases),
        Some(e) => {
            release_all(leases).await;
            Err(e)
        }
    }
}

/// What the command line adds to a plan for one deployment.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--dry-run`: reach every agent, run the checks, change nothing.
    pub dry_run: bool,
    /// `--hotfix --reason`: start outside the plan's window; recorded.
    pub hotfix: Option<String>,
    /// `--force --reason`: go on over blocking preflight checks; recorded
    /// with the checks it overrode.
    pub force: Option<String>,
    /// `--approved-by NAME` (repeatable): the sign-offs, recorded as
    /// decisions before anything starts (`[deploy] approvals` asks for N).
    pub approved_by: Vec<String>,
    /// `--resume ID`: carry on an interrupted deployment (issue 14).
    pub resume: Option<String>,
    /// The id a staged deployment gave this stage (issue 14), recorded and
    /// its app locked under it before the stage starts; `None`: a new one.
    pub id: Option<String>,
}

pub async fn deploy(
    out: Out,
    state: &Path,
    plan_path: &Path,
    options: &Options,
) -> anyhow::Result<Exit> {
    Ok(deploy_with_id(out, state, plan_path, options).await?.0)
}

/// Like [`deploy`], also returning the deployment id when one was recorded.
pub async fn deploy_with_id(
    out: Out,
    state: &Path,
    plan_path: &Path,
    options: &Options,
) -> anyhow::Result<(Exit, Option<String>)> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    // The plan's own hash: a resume refuses a plan that changed since.
    let (plan_sha, _) = hash_file(plan_path)
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", plan_path.display())))?;
    if let Some(id) = &options.resume {
        return resume(out, state, &plan, &plan_sha, id, options).await;
    }
    let dry_run = options.dry_run;
    // SPEC §7: outside the window only as a recorded hotfix.
    let window_note = crate::window::admit(
        plan.window.as_ref(),
        options.hotfix.as_deref(),
        jiff::Timestamp::now(),
    )
    .map_err(usage)?;
    if let Some(note) = &window_note {
        out.line(note);
        out.event(&json!({"event": "window", "hotfix": true, "note": note}));
    }
    let approvers = approvers(&plan, &options.approved_by).map_err(usage)?;
    let Some(release) = plan.release.as_ref() else {
        return Err(usage(format!(
            "{}: no [release] section; name the artifact to deploy:\n[release]\nartifact = \"dist/app.tar.gz\"\n\
             or a git ref each host fetches:\n[release]\ngit = \"v1.4.2\"",
            plan_path.display()
        )));
    };
    // A git source uploads nothing: no sha256, no size.
    let (sha, size) = match &release.source {
        Source::Artifact(artifact) => hash_file(artifact)
            .await
            .map_err(|e| usage(format!("cannot read {}: {e}", artifact.display())))?,
        Source::Git(_) => (String::new(), 0),
    };

    // Phase 1: every agent reachable, same protocol, app declared.
    let mut previous = Vec::new();
    // Asked of every host at once (up to `[deploy] parallel`), judged in plan order.
    let statuses =
        crate::fanout::all(plan.parallel, &plan.hosts, |h| agent_status(&h.client)).await;
    for (host, s) in plan.hosts.iter().zip(statuses) {
        let s = s.map_err(|e| usage(e.to_string()))?;
        let Some(app) = s.apps.iter().find(|a| a.name == plan.app) else {
            return Err(usage(format!(
                "host {} declares no app {:?}; its apps: {}; declare it in that agent's config",
                host.name,
                plan.app,
                s.apps
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if let Some(note) = reused_id(&host.name, &plan.app, app, &release.id).map_err(usage)? {
            out.line(&note);
            out.event(&json!({"event": "reused_id", "host": host.name, "release": release.id, "note": note}));
        }
        // A stage's lock, taken by its staged deployment, is its own.
        if let Some(lock) = app
            .lock
            .as_ref()
            .filter(|l| options.id.as_ref() != Some(&l.deployment))
        {
            return Err(usage(format!(
                "app {} on {} is locked by deployment {}, started by {} at {}; wait for it, or `golivectl unlock PLAN --reason TEXT`",
                plan.app,
                host.name,
                lock.deployment,
                lock.holder,
                utc(lock.since)
            )));
        }
        previous.push(app.current.clone());
    }
    // Issue 12: preflight is not advisory. Its blocking checks (every
    // host's agent checks under the plan's gate, and the artifact scan) run
    // before anything changes; `--force --reason` goes on over them, and the
    // record keeps what it overrode.
    let (blocking, preflight_warnings) = crate::cmd::preflight::deploy_checks(&plan).await;
    for w in &preflight_warnings {
        out.line(format!("preflight warning: {w}"));
    }
    out.event(&json!({"event": "preflight", "ready": blocking.is_empty(), "blocking": blocking, "warnings": preflight_warnings, "forced": !blocking.is_empty() && options.force.is_some()}));
    let forced_over = match (&options.force, blocking.is_empty()) {
        (_, true) => {
            out.line("preflight: READY");
            Vec::new()
        }
        (Some(reason), false) => {
            out.line(format!(
                "preflight: NOT READY, going on with --force (reason: {reason}):\n  - {}",
                blocking.join("\n  - ")
            ));
            blocking
        }
        (None, false) => {
            return Err(usage(format!(
                "preflight: NOT READY, nothing changed:\n  - {}\nfix these (`golivectl preflight {}` shows every check), \
                 or deploy anyway with --force --reason TEXT (recorded with the deployment)",
                blocking.join("\n  - "),
                plan_path.display()
            )));
        }
    };
    if dry_run {
        match &release.source {
            Source::Artifact(artifact) => out.line(format!(
                "dry run: would deploy {} ({} bytes, sha256 {}) as release {} of {} to {} host(s); every agent is reachable and declares the app",
                artifact.display(), size, sha, release.id, plan.app, plan.hosts.len()
            )),
            Source::Git(git_ref) => out.line(format!(
                "dry run: would fetch git ref {git_ref} on each of {} host(s) (from the repository its agent config declares) and stage it as release {} of {}; every agent is reachable and declares the app",
                plan.hosts.len(), release.id, plan.app
            )),
        }
        // Keys carry the deployment id, given when it starts: "ID" here.
        let compiled = deployment::compile(&deployment::Input::from_plan(
            &plan, "ID", &plan_sha, &sha, size, &previous,
        ));
        print_dry_run(
            out,
            &plan,
            &compiled,
            window_note.is_some(),
            !forced_over.is_empty(),
        );
        out.event(&json!({"event": "result", "dry_run": true, "release": release.id, "sha256": sha, "git_ref": git_ref(release), "hosts": plan.hosts.len(), "parallel": plan.parallel, "exit": 0}));
        return Ok((Exit::Done, None));
    }

    // The id before the journal: a failing random source changes nothing.
    let id = match &options.id {
        Some(id) => id.clone(),
        None => crate::journal::new_deployment_id(golive_shared::protocol::now_millis())?,
    };
    let journal = Journal::open(state)?;
    journal.create_deployment(
        &id,
        &plan.path.display().to_string(),
        &plan.app,
        &release.id,
        &sha,
        &plan.operator,
    )?;
    // The deployment as data, in the journal before anything changes on
    // any host (issue 14), and this process as its controller.
    let compiled = deployment::compile(&deployment::Input::from_plan(
        &plan, &id, &plan_sha, &sha, size, &previous,
    ));
    journal.store_compiled(&id, &plan_sha, &serde_json::to_string(&compiled)?)?;
    journal.claim_controller(&id, std::process::id(), &crate::journal::this_host(), None)?;
    if let Some(r) = git_ref(release) {
        journal.set_git(&id, r, None)?;
    }
    if let Some(reason) = &options.hotfix {
        journal.set_hotfix(&id, reason)?;
    }
    if let Some(reason) = &options.force
        && !forced_over.is_empty()
    {
        journal.set_forced(&id, reason, &forced_over)?;
    }
    // The sign-offs come first in the record: nothing started before them.
    for name in &approvers {
        journal.add_decision(
            &id,
            name,
            "approve",
            None,
            "deploy: the approval the plan asks for was given",
        )?;
    }
    out.line(format!(
        "deployment {id}: {} release {}{} to {} host(s)",
        plan.app,
        release.id,
        git_ref(release)
            .map(|r| format!(" (git ref {r})"))
            .unwrap_or_default(),
        plan.hosts.len()
    ));
    out.event(&json!({"event": "start", "deployment": id, "app": plan.app, "release": release.id, "sha256": sha, "git_ref": git_ref(release), "hosts": plan.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>()}));
    for (host, prev) in plan.hosts.iter().zip(&previous) {
        journal.set_host(
            &id,
            &host.name,
            &host.client.addr,
            prev.as_deref(),
            "pending",
        )?;
    }
    crate::notify::tell(
        &plan,
        &journal,
        &id,
        crate::notify::Kind::Started,
        None,
        None,
    );

    drive(out, state, &journal, &plan, &id, &previous, &compiled).await
}

/// `deploy PLAN --resume ID` (issue 14): carries on a deployment whose
/// controller is gone. The plan must be the one it started with (same
/// hash); the stored compiled deployment gives the steps, keys and
/// requests; the app locks are taken again for the same deployment id (the
/// agents hand a lease of the same deployment back); the sequencer then
/// runs again from the start: steps whose success is journaled are not
/// sent again, the rest are resubmitted under their stored keys, and the
/// policy decides as before (continue, or roll back).
async fn resume(
    out: Out,
    state: &Path,
    plan: &Plan,
    plan_sha: &str,
    id: &str,
    options: &Options,
) -> anyhow::Result<(Exit, Option<String>)> {
    if options.dry_run
        || options.hotfix.is_some()
        || options.force.is_some()
        || !options.approved_by.is_empty()
    {
        return Err(usage(
            "--resume carries on a deployment as it started: it takes no --dry-run, --hotfix, \
             --force or --approved-by (they were decided when it started)",
        ));
    }
    let journal = Journal::open(state)?;
    let d = known_deployment(&journal, state, id)?;
    match d.state.as_str() {
        "interrupted" => {}
        "running" => {
            let by = d
                .controller
                .as_ref()
                .map(|c| {
                    format!(
                        " by golivectl pid {} on {} (heartbeat {})",
                        c.pid,
                        c.host,
                        utc(c.heartbeat_at)
                    )
                })
                .unwrap_or_default();
            return Err(usage(format!(
                "deployment {id} is still running{by}; nothing to resume. A controller is \
                 counted gone when its process is dead or its heartbeat is over {} s old",
                crate::journal::HEARTBEAT_STALE_MS / 1000
            )));
        }
        "paused" => {
            return Err(usage(format!(
                "deployment {id} is paused at its gate, not interrupted: decide it with \
                 `golivectl go {id} --by NAME` or `golivectl no-go {id} --by NAME --reason TEXT`"
            )));
        }
        other => {
            return Err(usage(format!(
                "deployment {id} is finished ({other}); nothing to resume. `golivectl show {id}` \
                 shows it; deploy again for a new deployment"
            )));
        }
    }
    let Some((stored_sha, compiled)) = journal.compiled(id)? else {
        return Err(usage(format!(
            "deployment {id} was recorded by a golivectl without resume (no compiled deployment \
             in the journal); check its hosts with `golivectl status`, then deploy again"
        )));
    };
    if stored_sha != plan_sha {
        return Err(usage(format!(
            "{} changed since deployment {id} started (its sha256 was {stored_sha}, now \
             {plan_sha}); resume with the plan as it was ({} then), or roll it back with \
             `golivectl rollback {id}`",
            plan.path.display(),
            d.plan_path
        )));
    }
    let compiled: deployment::Deployment = serde_json::from_str(&compiled).map_err(|e| {
        anyhow::anyhow!("the compiled deployment {id} in the journal cannot be read: {e}")
    })?;
    let release = plan
        .release
        .as_ref()
        .expect("a plan that compiled has a release");
    let (sha, _) = match &release.source {
        Source::Artifact(artifact) => hash_file(artifact)
            .await
            .map_err(|e| usage(format!("cannot read {}: {e}", artifact.display())))?,
        Source::Git(_) => (String::new(), 0),
    };
    if sha != d.artifact_sha256 {
        return Err(usage(format!(
            "the artifact of release {} changed since deployment {id} started (sha256 {} then, \
             {sha} now); put the artifact it started with back to resume",
            release.id, d.artifact_sha256
        )));
    }
    // Every agent reachable, and the app not locked by another deployment.
    let statuses =
        crate::fanout::all(plan.parallel, &plan.hosts, |h| agent_status(&h.client)).await;
    for (host, s) in plan.hosts.iter().zip(statuses) {
        let s = s.map_err(|e| usage(format!("cannot resume deployment {id}: {e}")))?;
        if let Some(lock) = s
            .apps
            .iter()
            .find(|a| a.name == plan.app)
            .and_then(|a| a.lock.as_ref())
            .filter(|l| l.deployment != id)
        {
            return Err(usage(format!(
                "app {} on {} is locked by another deployment, {}; deployment {id} cannot resume \
                 while it holds the lock",
                plan.app, host.name, lock.deployment
            )));
        }
    }
    let pid = std::process::id();
    if !journal.claim_controller(id, pid, &crate::journal::this_host(), d.controller.as_ref())? {
        return Err(usage(format!(
            "another golivectl took deployment {id} over just now; `golivectl show {id}` says which"
        )));
    }
    let interrupted = journal.interrupt_steps(id)?;
    let seq = journal.start_step(id, "-", "resume")?;
    journal.finish_step(
        seq,
        "ok",
        Some(&format!(
            "resumed by golivectl pid {pid}; {interrupted} step(s) left without an outcome are \
             resubmitted under their keys"
        )),
    )?;
    out.line(format!(
        "deployment {id}: resuming {} release {} on {} host(s); steps done before are not sent again",
        plan.app,
        release.id,
        plan.hosts.len()
    ));
    out.event(&json!({"event": "resume", "deployment": id, "app": plan.app, "release": release.id, "interrupted_steps": interrupted}));
    let previous: Vec<Option<String>> = plan
        .hosts
        .iter()
        .map(|h| {
            compiled
                .hosts
                .iter()
                .find(|c| c.host == h.name)
                .and_then(|c| c.previous.clone())
        })
        .collect();
    drive(out, state, &journal, plan, id, &previous, &compiled).await
}

/// The controller's heartbeat in the journal (issue 14), written from its
/// own thread and connection every [`crate::journal::HEARTBEAT_EVERY`]
/// while the deployment runs; stopped when dropped. A deployment whose
/// heartbeat went stale (or whose pid died) shows as interrupted.
pub(crate) struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub(crate) fn start(state: &Path, id: &str) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, state, id) = (Arc::clone(&stop), state.to_path_buf(), id.to_string());
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || {
                    let Ok(journal) = Journal::open(&state) else {
                        return;
                    };
                    let pid = std::process::id();
                    let tick = Duration::from_millis(100);
                    let mut since = std::time::Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(tick);
                        if since.elapsed() >= crate::journal::HEARTBEAT_EVERY {
                            since = std::time::Instant::now();
                            let _ = journal.heartbeat(&id, pid);
                        }
                    }
                })
                .ok()
        };
        Heartbeat { stop, thread }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a recorded deployment (new or resumed) to its end under this
/// process's heartbeat, and records and reports the outcome.
#[allow(clippy::too_many_arguments)]
async fn drive(
    out: Out,
    state: &Path,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    previous: &[Option<String>],
    compiled: &deployment::Deployment,
) -> anyhow::Result<(Exit, Option<String>)> {
    let mut downtime = Downtime::None;
    let mut unavailable = Unavailable::default();
    let mut watched = Vec::new();
    let heartbeat = Heartbeat::start(state, id);
    let exec = Executor::new(journal, compiled);
    let (exit, message) = run_deployment(
        out,
        journal,
        &exec,
        plan,
        id,
        previous,
        &mut downtime,
        &mut unavailable,
        &mut watched,
    )
    .await;
    let state_name = match exit {
        // Live, and its hosts' watchdogs watch it: committed or rolled back
        // by them, or by `golivectl go` / `no-go` (issue 13).
        Exit::Done if !watched.is_empty() => "watching",
        Exit::Done => "succeeded",
        Exit::RolledBack => "rolled_back",
        Exit::Usage => "refused",
        Exit::Paused => "paused",
        _ => "failed",
    };
    if exit == Exit::Paused {
        // Not finished: waiting for `golivectl go` / `no-go`.
        journal.set_paused(id, None)?;
    } else {
        journal.finish_deployment(id, state_name, Some(&message))?;
    }
    out.line(format!("deployment {id}: {state_name}: {message}"));
    out.event(&json!({"event": "result", "deployment": id, "state": state_name, "message": message, "exit": exit.code(), "downtime_ms": downtime.ms(), "maintenance": downtime.json(), "unavailable_ms": unavailable.ms(), "unavailable": unavailable.json()}));
    let kind = match state_name {
        "succeeded" | "watching" => Some(crate::notify::Kind::Completed),
        "rolled_back" => Some(crate::notify::Kind::RolledBack),
        "failed" => Some(crate::notify::Kind::Failed),
        _ => None,
    };
    if let Some(kind) = kind {
        let downtime = format!(
            "{} ms not answering, {} ms in maintenance",
            unavailable.ms().unwrap_or(0),
            downtime.ms().unwrap_or(0)
        );
        crate::notify::tell(plan, journal, id, kind, Some(&message), Some(downtime));
    }
    crate::notify::flush(journal).await;
    drop(heartbeat);
    Ok((exit, Some(id.to_string())))
}

/// What `deploy --dry-run` says the deployment would do (issue 14): the
/// window's and preflight's verdicts, the parallel limit, and the compiled
/// deployment: its waves, each host's steps in the order the sequencer runs
/// them (those that depend on what staging finds say so), what runs after
/// a failure, and (`--output json`) every step's key and request. Nothing
/// is asked of the agents beyond what the dry run already asked.
fn print_dry_run(
    out: Out,
    plan: &Plan,
    compiled: &deployment::Deployment,
    hotfix: bool,
    forced: bool,
) {
    let window = match (&plan.window, hotfix) {
        (_, true) => "outside the window, as a hotfix".to_string(),
        (Some(w), false) => format!("open ({})", w.describe()),
        (None, false) => "none declared: any time".to_string(),
    };
    let preflight = if forced {
        "forced over NOT READY"
    } else {
        "READY"
    };
    out.line(format!("dry run: window: {window}; preflight: {preflight}"));
    out.line(format!(
        "dry run: up to {} host(s) at a time take the lock, read the flags, upload and stage, and probe \
         the live release ([deploy] parallel); then {}: activate, probe, gate{}",
        compiled.parallel,
        if compiled.waves.is_empty() {
            "host by host"
        } else {
            "wave by wave, each wave's hosts at once"
        },
        if plan.watchdog.is_some() { ", watchdog-arm" } else { "" }
    ));
    out.event(&json!({"event": "dry_run", "window": window, "preflight": preflight, "parallel": compiled.parallel}));
    out.event(&json!({"event": "deployment", "deployment": compiled}));
    let of = compiled.waves.len();
    for (w, wave) in compiled.waves.iter().enumerate() {
        out.line(format!(
            "dry run: {}: {} (up to {} may fail: max_fail {} %){}",
            wave.label,
            wave.hosts.join(", "),
            wave.allowed_failures,
            wave.max_fail,
            wave.soak_secs
                .map(|s| format!("; soak {}", human_secs(s)))
                .unwrap_or_default()
        ));
        out.event(&json!({"event": "would_wave", "wave": w + 1, "of": of, "name": wave.name, "hosts": wave.hosts, "max_fail": wave.max_fail, "allowed_failures": wave.allowed_failures, "soak_secs": wave.soak_secs}));
    }
    for host in &compiled.hosts {
        let steps = compiled.labels(host, false);
        let on_failure = compiled.labels(host, true);
        out.line(format!("[{}] would: {}", host.host, steps.join(", ")));
        out.line(format!(
            "[{}] after a failure: {}",
            host.host,
            on_failure.join(", ")
        ));
        let keys: Vec<&str> = host.steps.iter().filter_map(|s| s.key.as_deref()).collect();
        out.event(&json!({"event": "would", "host": host.host, "steps": steps, "on_failure": on_failure, "keys": keys}));
    }
    out.line(
        "dry run: each host-changing step is journaled with its idempotency key \
         DEPLOYMENT:HOST:STEP before it is sent (`golivectl deploy PLAN --resume ID` replays them)",
    );
}

/// The distinct names of `--approved-by`, checked against the plan's
/// `[deploy] approvals` (seed 003 asks four sign-offs before a launch).
pub(crate) fn approvers(plan: &Plan, given: &[String]) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in given {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(format!(
                "--approved-by {name:?}: give the name of who approved (1 to 100 printable characters)"
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    if names.len() < plan.approvals as usize {
        return Err(format!(
            "the plan asks for {} approval(s) before a deployment ([deploy] approvals = {} in {}); \
             got {}{}: add --approved-by NAME for each person who signed off (a name counts once)",
            plan.approvals,
            plan.approvals,
            plan.path.display(),
            names.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            }
        ));
    }
    Ok(names)
}

/// Phase 1's look at a release id a host already has (issue 12): refused
/// when that release went live there (or is current, or golive does not
/// know it); a note when it is only staged and never went live, since
/// staging replaces such a release.
pub(crate) fn reused_id(
    host: &str,
    app_name: &str,
    app: &golive_shared::protocol::AppStatus,
    id: &str,
) -> Result<Option<String>, String> {
    let Some(r) = app.releases.iter().find(|r| r.id == id) else {
        return Ok(None);
    };
    let fix = "give this release a new id ([release] id = ...)";
    if app.current.as_deref() == Some(id) || r.activated_at.is_some() {
        return Err(format!(
            "host {host} already has release {id} of {app_name}, and it went live there{}; {fix}",
            r.activated_at
                .map(|at| format!(" (last at {})", utc(at)))
                .unwrap_or_default()
        ));
    }
    let Some(staged_at) = r.staged_at else {
        return Err(format!(
            "host {host} has a directory releases/{id} of {app_name} that golive did not stage; \
             move it aside on the host, or {fix}"
        ));
    };
    Ok(Some(format!(
        "host {host} has release {id} staged at {} but it never went live (a refused or failed \
         deployment left it): staging replaces it",
        utc(staged_at)
    )))
}

/// Time in maintenance during a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Downtime {
    /// No maintenance: a zero-downtime switch.
    None,
    /// Maintenance on then off: the longest time any host spent in it.
    Measured(u64),
    /// Maintenance is still on somewhere (its `off` failed): not over yet.
    StillOn,
}

impl Downtime {
    /// `downtime_ms` of the result event: 0 without maintenance, null while
    /// it is still on somewhere.
    fn ms(self) -> Option<u64> {
        match self {
            Downtime::None => Some(0),
            Downtime::Measured(ms) => Some(ms),
            Downtime::StillOn => None,
        }
    }

    fn json(self) -> &'static str {
        match self {
            Downtime::None => "none",
            Downtime::Measured(_) => "off",
            Downtime::StillOn => "still_on",
        }
    }
}

/// Why this deployment goes into maintenance, or `None` for a
/// zero-downtime switch: the plan asks for it, or the new release has
/// pending migrations (the old code must not run against a changing schema).
/// A first install (no host has a live release) has no users to keep off a
/// changing schema: its migrations need no maintenance (issue 12).
fn maintenance_reason(plan: &Plan, pending: usize, first_install: bool) -> Option<String> {
    if pending > 0 && !first_install {
        Some(format!("the release has {pending} pending migration(s)"))
    } else if plan.maintenance {
        Some("the plan asks for it ([deploy] maintenance = true)".into())
    } else {
        None
    }
}

/// Runs one job (`name`, `spec`) on every host in plan order under its lease,
/// recording a step each; stops at the first failure: `Err((host, message))`.
async fn on_every_host(
    out: Out,
    exec: &Executor<'_>,
    plan: &Plan,
    leases: &[Lease],
    name: &str,
    spec: &JobSpec,
) -> Result<(), (String, String)> {
    for (host, lease) in plan.hosts.iter().zip(leases) {
        let r = step_ok(job_step(exec, out, host, name, lease, LOST, Some(spec.clone())).await);
        match r {
            Ok(detail) => step(out, &host.name, name, "ok", &detail),
            Err(Failure(_, e)) => {
                step(out, &host.name, name, "failed", &e);
                // The step keeps the program's output; the outcome names the failure.
                return Err((host.name.clone(), error_headline(&e).to_string()));
            }
        }
    }
    Ok(())
}

/// Runs the job step `name` on `host` through the executor (issue 14):
/// its intent journaled, the compiled request (or `request`) submitted
/// under the compiled key and the host's lease, followed, the outcome
/// journaled. `Err` when the journal could not be written: nothing more
/// is sent.
async fn job_step(
    exec: &Executor<'_>,
    out: Out,
    host: &plan::Host,
    name: &str,
    lease: &Lease,
    lost_for: Deadline,
    request: Option<JobSpec>,
) -> Result<Result<JobInfo, ClientError>, StepError> {
    exec.run(
        out,
        &host.name,
        name,
        request.map(StepRequest::Job),
        |key, request| async move {
            let StepRequest::Job(spec) = request else {
                return Err(ClientError::Transport {
                    host: host.name.clone(),
                    addr: host.client.addr.clone(),
                    detail: format!("step {name} is not a job (a golivectl bug); not sent"),
                });
            };
            let lease = Some(lease.token.clone());
            run_job_within(out, &host.client, key, lease, spec, lost_for).await
        },
        job_verdict,
    )
    .await
}

/// A followed job as the journal records it: ok with its summary, or failed.
fn job_verdict(r: &Result<JobInfo, ClientError>) -> Result<String, String> {
    match r {
        Ok(job) => job_ok(Ok(job.clone())).map_err(|f| f.1),
        Err(e) => Err(e.to_string()),
    }
}

/// [`job_step`]'s answer as [`job_ok`] gives it; a journal failure is a
/// failure (the deployment stops: every later step refuses).
fn step_ok(r: Result<Result<JobInfo, ClientError>, StepError>) -> Result<String, Failure> {
    match r {
        Ok(job) => job_ok(job),
        Err(e) => Err(Failure(Exit::Failed, e.to_string())),
    }
}

/// A maintenance step (`maintenance-on`, `maintenance-off`,
/// `maintenance-off-after-switch-back`) through the executor.
async fn maintenance_step(
    exec: &Executor<'_>,
    out: Out,
    host: &plan::Host,
    name: &str,
    lease: &Lease,
) -> Result<crate::cmd::maintenance::Switched, (Exit, String)> {
    match job_step(exec, out, host, name, lease, LOST, None).await {
        Ok(job) => crate::cmd::maintenance::switched(job),
        Err(e) => Err((Exit::Failed, e.to_string())),
    }
}

/// The host's feature-flag values, or none when the app declares no flags.
async fn flag_values(
    client: &AgentClient,
    app: &str,
) -> Result<Vec<(String, bool, Option<u8>)>, ClientError> {
    match client
        .call(&Request::ListFlags(ListFlagsRequest { app: app.into() }))
        .await
    {
        Ok(Response::Flags(list)) => Ok(list
            .into_iter()
            .map(|f| (f.name, f.on, f.percent))
            .collect()),
        Ok(other) => Err(client.unexpected(&other)),
        Err(ClientError::Agent { body, .. })
            if body.message.contains("declares no feature flags") =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// The staged release's pending migrations on one host (none when the app
/// declares no migrations): what runs before the switch, and what waits for
/// the release's commit (`contract` ones and those after them, when the
/// plan keeps them for the commit; issue 13).
#[derive(Debug, Default)]
struct Pending {
    now: Vec<String>,
    at_commit: Vec<String>,
}

async fn pending_migrations(
    client: &AgentClient,
    app: &str,
    release: &str,
    contract_at_commit: bool,
) -> Result<Pending, ClientError> {
    let req = Request::MigrationStatus(MigrationStatusRequest {
        app: app.into(),
        release: Some(release.into()),
    });
    match client.call(&req).await {
        Ok(Response::MigrationStatus(st)) => {
            let mut pending = Pending::default();
            for m in &st.pending {
                let label = format!(
                    "{:04}_{}{}",
                    m.version,
                    m.name,
                    m.tag
                        .as_ref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                );
                let waits = contract_at_commit
                    && (!pending.at_commit.is_empty() || m.tag.as_deref() == Some("contract"));
                if waits {
                    pending.at_commit.push(label);
                } else {
                    pending.now.push(label);
                }
            }
            // A migration command always runs: the agent cannot tell whether
            // it has work, so it counts as pending (maintenance, verified backup).
            if let Some(c) = st.command {
                pending.now.push(format!("command `{c}`"));
            }
            Ok(pending)
        }
        Ok(other) => Err(client.unexpected(&other)),
        Err(ClientError::Agent { body, .. }) if body.message.contains("declares no migrations") => {
            Ok(Pending::default())
        }
        Err(e) => Err(e),
    }
}

/// The release's commit (issue 13, with no watchdog to wait for): a
/// verified backup, then every pending migration, `contract` ones included,
/// on every host.
async fn commit_migrations(
    out: Out,
    exec: &Executor<'_>,
    plan: &Plan,
    leases: &[Lease],
) -> Result<(), (String, String)> {
    let release = plan.release.as_ref().expect("checked by deploy");
    out.line("committing: the migrations kept for the commit run now, behind a verified backup");
    // The agent takes the verified `pre-contract` backup itself, in the same
    // job, when anything is pending (as the watchdog's commit does).
    let migrate = JobSpec::Migrate(RunMigrations {
        app: plan.app.clone(),
        release: Some(release.id.clone()),
        down_to: None,
        stop_before_contract: false,
        backup_first: true,
    });
    on_every_host(out, exec, plan, leases, "commit-migrate", &migrate).await
}

/// Turns maintenance on on every host (in plan order). On a failure, turns
/// it off again where it went on and returns the outcome to report.
/// `on` collects the hosts whose agents journaled maintenance.
#[allow(clippy::too_many_arguments)]
async fn maintenance_on_all(
    out: Out,
    exec: &Executor<'_>,
    plan: &Plan,
    leases: &[Lease],
    why: &str,
    on: &mut Vec<usize>,
) -> Result<(), (Exit, String)> {
    for (i, (host, lease)) in plan.hosts.iter().zip(leases).enumerate() {
        let r = maintenance_step(exec, out, host, "maintenance-on", lease).await;
        match r {
            Ok(s) => {
                on.push(i);
                let detail = format!("{} ({why})", s.describe(true));
                step(out, &host.name, "maintenance-on", "ok", &detail);
            }
            Err((exit, e)) => {
                // A refusal ran nothing; any other failure may have left the
                // host in maintenance (the agent fails safe): undo it too.
                if exit != Exit::Usage {
                    on.push(i);
                }
                step(out, &host.name, "maintenance-on", "failed", &e);
                let (_, still) = maintenance_off_all(out, exec, plan, leases, on, "").await;
                let tail = if still.is_empty() {
                    "maintenance is off again everywhere".to_string()
                } else {
                    format!(
                        "MAINTENANCE STILL ON: {}; run `golivectl maintenance off PLAN`",
                        still.join("; ")
                    )
                };
                return Err((
                    if exit == Exit::Usage {
                        Exit::Usage
                    } else {
                        Exit::Failed
                    },
                    format!(
                        "maintenance on {} failed, nothing live changed: {e}; {tail}",
                        host.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Turns maintenance off on the hosts in `on`, removing each that succeeds;
/// returns the longest downtime among them and the failures (`HOST: why`).
async fn maintenance_off_all(
    out: Out,
    exec: &Executor<'_>,
    plan: &Plan,
    leases: &[Lease],
    on: &mut Vec<usize>,
    attempt: &str,
) -> (Option<u64>, Vec<String>) {
    let mut longest: Option<u64> = None;
    let mut failures = Vec::new();
    let mut still = Vec::new();
    for &i in on.iter() {
        let host = &plan.hosts[i];
        let name = format!("maintenance-off{attempt}");
        let r = maintenance_step(exec, out, host, &name, &leases[i]).await;
        match r {
            Ok(s) => {
                let detail = s.describe(false);
                step(out, &host.name, "maintenance-off", "ok", &detail);
                if let Some(ms) = s.downtime_ms {
                    longest = Some(longest.unwrap_or(0).max(ms));
                }
            }
            Err((_, e)) => {
                step(out, &host.name, "maintenance-off", "failed", &e);
                failures.push(format!("{}: {e}", host.name));
                still.push(i);
            }
        }
    }
    *on = still;
    (longest, failures)
}

#[allow(clippy::too_many_arguments)]
async fn run_deployment(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    previous: &[Option<String>],
    downtime: &mut Downtime,
    unavailable: &mut Unavailable,
    watched: &mut Vec<String>,
) -> (Exit, String) {
    let release = plan.release.as_ref().expect("checked by deploy");
    // Phase 2: locks everywhere, or nowhere (taken up to `[deploy]
    // parallel` at a time; after a refusal no more are asked for, and every
    // one taken is released).
    let leases = match lock_all(plan, id).await {
        Ok(leases) => leases,
        Err(e) => return (Exit::Usage, e),
    };

    // The rollback point includes the feature-flag values as they are now.
    let flags = crate::fanout::until(
        plan.parallel,
        &plan.hosts,
        |h| flag_values(&h.client, &plan.app),
        Result::is_err,
    )
    .await;
    for (host, values) in plan.hosts.iter().zip(flags) {
        match values {
            Some(Ok(values)) => {
                // A resumed deployment keeps the values read at its start.
                let first = journal.flags(id, &host.name).is_ok_and(|v| v.is_empty());
                if first {
                    let _ = journal.save_flags(id, &host.name, &values);
                }
            }
            Some(Err(e)) => {
                release_all(leases).await;
                return (
                    exit_of(&e),
                    format!("cannot read the feature flags on {}: {e}", host.name),
                );
            }
            // Not asked: an earlier host's failure is reported above.
            None => {}
        }
    }

    // Phase 3: upload and stage everywhere (a git source is fetched by each
    // host instead), `[deploy] parallel` hosts at a time; the live release
    // is untouched.
    // Hosts where the release is staged: a failure before it goes live
    // there removes it again, so its id can be reused (issue 12).
    let (staged_on, first_commit) = match stage_all(out, journal, exec, plan, id, &leases).await {
        Ok(staged) => staged,
        Err((staged_on, exit, e)) => {
            give_back_ids(out, exec, plan, &leases, &staged_on).await;
            release_all(leases).await;
            return (exit, e);
        }
    };
    if let (Some(git_ref), Some((_, commit))) = (git_ref(release), &first_commit) {
        let _ = journal.set_git(id, git_ref, Some(commit));
        out.event(&json!({"event": "git", "deployment": id, "git_ref": git_ref, "commit": commit}));
    }

    // The figures before: the live release's probe results on every host.
    let before = probe_before(out, journal, plan, id).await;
    let mut warnings: Vec<String> = Vec::new();

    // Pending migrations decide the rest: maintenance, and a verified
    // backup before anything touches the schema (nothing destroys data
    // before a verified backup exists).
    let mut pending = 0usize;
    let mut at_commit = 0usize;
    // Decided once (issue 14): a resumed deployment takes the decision its
    // start took, whatever the migrations' state is now.
    let decided = journal
        .fact(id, "migrations")
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_str::<(usize, usize)>(&v).ok());
    // Read-only: asked of every host at once, judged in plan order.
    let lists = crate::fanout::all(
        plan.parallel,
        &plan.hosts[..if decided.is_some() {
            0
        } else {
            plan.hosts.len()
        }],
        |host| {
            pending_migrations(
                &host.client,
                &plan.app,
                &release.id,
                plan.contract_at_commit,
            )
        },
    )
    .await;
    for (host, list) in plan.hosts.iter().zip(lists) {
        match list {
            Ok(list) => {
                if !list.now.is_empty() {
                    step(
                        out,
                        &host.name,
                        "migrations",
                        "pending",
                        &list.now.join(", "),
                    );
                }
                if !list.at_commit.is_empty() {
                    step(
                        out,
                        &host.name,
                        "migrations",
                        "at commit",
                        &format!(
                            "{} wait for the release's commit (contract: the previous release \
                             may not run after them)",
                            list.at_commit.join(", ")
                        ),
                    );
                }
                pending = pending.max(list.now.len());
                at_commit = at_commit.max(list.at_commit.len());
            }
            Err(e) => {
                give_back_ids(out, exec, plan, &leases, &staged_on).await;
                release_all(leases).await;
                return (
                    exit_of(&e),
                    format!(
                        "cannot read the migrations of {} on {}, nothing live changed: {e}",
                        release.id, host.name
                    ),
                );
            }
        }
    }
    match decided {
        Some((p, c)) => (pending, at_commit) = (p, c),
        None => {
            if let Err(e) =
                journal.set_fact(id, "migrations", &json!([pending, at_commit]).to_string())
            {
                give_back_ids(out, exec, plan, &leases, &staged_on).await;
                release_all(leases).await;
                return (
                    Exit::Failed,
                    format!(
                        "cannot journal the pending migrations of deployment {id}, nothing live changed: {e}"
                    ),
                );
            }
        }
    }
    let backup_mode = if pending > 0 && plan.backup != PreDeployBackup::Verified {
        out.line(format!(
            "the release has pending migrations: taking a verified backup first (plan said {:?})",
            plan.backup
        ));
        PreDeployBackup::Verified
    } else {
        plan.backup
    };

    // Phase 3a: maintenance on everywhere, when this deployment needs it.
    // From here until maintenance is off again, the site answers 503.
    let first_install = previous.iter().all(Option::is_none);
    let maintenance = maintenance_reason(plan, pending, first_install);
    let mut in_maintenance: Vec<usize> = Vec::new();
    let mut longest_downtime: Option<u64> = None;
    if let Some(why) = &maintenance {
        out.line(format!("maintenance on every host: {why}"));
        if let Err((exit, e)) =
            maintenance_on_all(out, exec, plan, &leases, why, &mut in_maintenance).await
        {
            *downtime = if in_maintenance.is_empty() {
                Downtime::None
            } else {
                Downtime::StillOn
            };
            give_back_ids(out, exec, plan, &leases, &staged_on).await;
            release_all(leases).await;
            return (exit, e);
        }
    }

    // Phase 3b: the rollback point. Nothing live has changed yet; a backup
    // that cannot be taken (or verified, when the plan asks) stops here.
    // Phase 3c: migrations, on every host (a database shared by several
    // hosts is migrated once: the agents' migration lock and tracking table
    // make the others find nothing pending). The old release still runs,
    // behind maintenance.
    let before_switch = [
        (backup_mode != PreDeployBackup::None).then(|| {
            (
                "backup",
                JobSpec::Backup(CreateBackup {
                    app: plan.app.clone(),
                    label: "pre-deploy".into(),
                    only: vec![],
                    deployment: Some(id.to_string()),
                    verify: backup_mode == PreDeployBackup::Verified,
                }),
            )
        }),
        (pending > 0).then(|| {
            (
                "migrate",
                JobSpec::Migrate(RunMigrations {
                    app: plan.app.clone(),
                    release: Some(release.id.clone()),
                    down_to: None,
                    stop_before_contract: plan.contract_at_commit,
                    backup_first: false,
                }),
            )
        }),
    ];
    for (name, spec) in before_switch.into_iter().flatten() {
        if let Err((host, e)) = on_every_host(out, exec, plan, &leases, name, &spec).await {
            let (ms, still) =
                maintenance_off_all(out, exec, plan, &leases, &mut in_maintenance, "").await;
            *downtime = downtime_of(maintenance.is_some(), ms, &still);
            give_back_ids(out, exec, plan, &leases, &staged_on).await;
            release_all(leases).await;
            let why = if name == "backup" {
                format!("the pre-deploy backup on {host} failed, nothing live changed: {e}")
            } else {
                format!(
                    "migrations on {host} failed; the old release still serves. A failed migration is \
                     rolled back where the engine allows (SQLite, PostgreSQL); the pre-deploy backup \
                     of deployment {id} is the way back otherwise: {e}"
                )
            };
            return (Exit::Failed, format!("{why}{}", still_on(&still)));
        }
    }

    // Phase 4: host by host, activate and verify.
    let mut activated: Vec<usize> = Vec::new();
    // Hosts where the release went live (their ids stay used).
    let mut switched: Vec<usize> = Vec::new();
    let mut failure = None;
    // With `[[waves]]` (issue 14): wave by wave, each wave's hosts at once;
    // the loop below, host by host, is then skipped.
    let mut tolerated: Vec<String> = Vec::new();
    let one_by_one = if plan.waves.is_empty() {
        plan.hosts.len()
    } else {
        failure = run_waves(
            out,
            journal,
            exec,
            plan,
            id,
            previous,
            &before,
            &leases,
            &mut warnings,
            unavailable,
            watched,
            (&mut activated, &mut switched),
            &mut tolerated,
        )
        .await;
        0
    };
    for (i, (host, lease)) in plan.hosts.iter().zip(&leases).enumerate().take(one_by_one) {
        if let Err(e) = lease.check() {
            failure = Some((Exit::Failed, e));
            break;
        }
        let c = &host.client;
        let job = job_step(exec, out, host, "activate", lease, LOST, None).await;
        if let Ok(job) = &job {
            unavailable.add(&host.name, job);
        }
        let result = step_ok(job);
        if let Err(Failure(_, e)) = result {
            step(out, &host.name, "activate", "failed", &e);
            // A failed switch may or may not have happened: roll this host back too.
            activated.push(i);
            failure = Some((
                Exit::Failed,
                format!("activation on {} failed: {}", host.name, error_headline(&e)),
            ));
            break;
        }
        activated.push(i);
        switched.push(i);
        let _ = journal.set_host(id, &host.name, &c.addr, None, "active");
        step(
            out,
            &host.name,
            "activate",
            "ok",
            &format!("current -> {}", release.id),
        );
        // In maintenance the web server answers 503: probe after it is off.
        if maintenance.is_some() {
            continue;
        }
        if let Err(f) = validate_host(
            out,
            journal,
            plan,
            id,
            host,
            &before[i],
            &leases,
            &mut warnings,
        )
        .await
        {
            failure = Some(f);
            break;
        }
        match arm_host(out, journal, exec, plan, id, host, previous[i].as_deref()).await {
            Ok(true) => watched.push(host.name.clone()),
            Ok(false) => {}
            Err(f) => {
                failure = Some(f);
                break;
            }
        }
    }

    // Phase 4a (maintenance): every host is switched; maintenance off, then
    // the probes, host by host.
    if maintenance.is_some() && failure.is_none() {
        let (ms, still) =
            maintenance_off_all(out, exec, plan, &leases, &mut in_maintenance, "").await;
        longest_downtime = ms;
        if !still.is_empty() {
            failure = Some((
                Exit::Failed,
                format!("maintenance off failed: {}", still.join("; ")),
            ));
        } else {
            for &i in &activated {
                let host = &plan.hosts[i];
                if let Err(f) = validate_host(
                    out,
                    journal,
                    plan,
                    id,
                    host,
                    &before[i],
                    &leases,
                    &mut warnings,
                )
                .await
                {
                    failure = Some(f);
                    break;
                }
                match arm_host(out, journal, exec, plan, id, host, previous[i].as_deref()).await {
                    Ok(true) => watched.push(host.name.clone()),
                    Ok(false) => {}
                    Err(f) => {
                        failure = Some(f);
                        break;
                    }
                }
            }
        }
    }

    // A pause that got no decision: leave every host as it is, for the
    // operator's `go` / `no-go`.
    if let Some((Exit::Paused, message)) = &failure {
        release_all(leases).await;
        return (Exit::Paused, message.clone());
    }
    // A host whose watchdog fired while later hosts were validated: the
    // release failed there, so every host goes back (its own rollback is
    // the same job, followed).
    if failure.is_none() && !watched.is_empty() {
        failure = watchdogs_fired(plan, id, watched).await;
        if failure.is_some() {
            watched.clear();
        }
    } else if failure.is_some() {
        watched.clear();
    }
    let mut stuck = Vec::new();
    let mut outcome = switch_back_if_failed(
        out,
        journal,
        exec,
        plan,
        id,
        previous,
        &leases,
        &activated,
        failure,
        unavailable,
        &mut stuck,
    )
    .await;
    if outcome.0 == Exit::Done && !tolerated.is_empty() {
        outcome.1 = format!(
            "release {} is live on {} of {} host(s); failed within their wave's max_fail: {}",
            release.id,
            plan.hosts.len() - tolerated.len(),
            plan.hosts.len(),
            tolerated.join("; ")
        );
    }
    if outcome.0 == Exit::RolledBack
        && pending > 0
        && let Some(note) = schema_after_switch_back(plan, id).await
    {
        outcome.1.push_str(&format!("; {note}"));
    }
    // The release is live on every host and passed its gate: it is
    // committed, and the migrations kept for the commit run now, behind a
    // verified backup (they destroy what the previous release needed).
    if outcome.0 == Exit::Done && !watched.is_empty() {
        let spec = plan.watchdog.as_ref().expect("armed from the plan");
        outcome.1.push_str(&format!(
            "; watched on {} for {}: each host commits when its window ends quietly{}{}, or \
             rolls itself back when a trigger holds; `golivectl status {}` shows it",
            watched.join(", "),
            human_secs(spec.window_secs),
            match spec.confirm_within_secs {
                Some(c) => format!(
                    " and `golivectl go {id}` came within {} (without it, every host rolls back)",
                    human_secs(c)
                ),
                None => format!(" (or at once on `golivectl go {id}`)"),
            },
            if at_commit > 0 {
                format!(
                    "; the {at_commit} migration(s) kept for the commit run then, behind a \
                     verified backup"
                )
            } else {
                String::new()
            },
            plan.path.display()
        ));
    } else if outcome.0 == Exit::Done && at_commit > 0 {
        match commit_migrations(out, exec, plan, &leases).await {
            Ok(()) => outcome.1.push_str(&format!(
                "; committed: the {at_commit} migration(s) kept for the commit ran"
            )),
            Err((host, e)) => {
                outcome.0 = Exit::Failed;
                outcome.1.push_str(&format!(
                    "; the release is live, but the migrations kept for the commit failed on \
                     {host}: {e}; fix it, then `golivectl migrate up {}`",
                    plan.path.display()
                ));
            }
        }
    }
    if !warnings.is_empty() {
        outcome
            .1
            .push_str(&format!("; gate warnings: {}", warnings.join("; ")));
    }

    // A host the switch-back could not return stays in maintenance: off,
    // its web server would serve the release that failed (issue 12).
    let kept_on = keep_on_where_stuck(&mut in_maintenance, &stuck);
    // After a switch-back (or a failed activation): maintenance off where it
    // is still on.
    if !in_maintenance.is_empty() {
        let (ms, still) = maintenance_off_all(
            out,
            exec,
            plan,
            &leases,
            &mut in_maintenance,
            "-after-switch-back",
        )
        .await;
        longest_downtime = longest_downtime.max(ms);
        if !still.is_empty() {
            outcome.0 = Exit::Failed;
            outcome.1.push_str(&still_on(&still));
        }
    }
    if !kept_on.is_empty() {
        outcome.0 = Exit::Failed;
        outcome.1.push_str(&format!(
            "; MAINTENANCE LEFT ON on {}: the switch-back did not happen there, so without it the \
             release that failed would serve; fix what is named above, then `golivectl maintenance off PLAN`",
            in_maintenance_names(plan, &kept_on).join(", ")
        ));
        in_maintenance.extend(kept_on);
    }
    if outcome.0 != Exit::Done {
        let not_live: Vec<usize> = staged_on
            .iter()
            .copied()
            .filter(|i| !switched.contains(i))
            .collect();
        give_back_ids(out, exec, plan, &leases, &not_live).await;
    }
    if maintenance.is_some() {
        *downtime = downtime_of(
            true,
            longest_downtime,
            &in_maintenance_names(plan, &in_maintenance),
        );
    }
    report_downtime(out, *downtime, unavailable, &mut outcome.1);
    release_all(leases).await;
    outcome
}

/// Phase 3 on one host: upload (unless the agent has the artifact) and
/// stage, each journaled and reported as a step. `Ok(commit)` (git sources)
/// or `Err((staged, exit, message))`, `staged` when the release got staged
/// there anyway (a git source that reported no commit).
#[allow(clippy::too_many_arguments)]
async fn stage_host(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    lease: &Lease,
) -> Result<Option<String>, (bool, Exit, String)> {
    let release = plan.release.as_ref().expect("checked by deploy");
    let c = &host.client;
    if let Source::Artifact(artifact) = &release.source {
        let send = |_key: String, request: StepRequest| async move {
            let StepRequest::Upload { sha256, bytes } = request else {
                return Err(ClientError::Transport {
                    host: host.name.clone(),
                    addr: c.addr.clone(),
                    detail: "the upload step is not an upload (a golivectl bug); not sent".into(),
                });
            };
            if c.call(&Request::HasArtifact(
                golive_shared::protocol::HasArtifactRequest {
                    sha256: sha256.clone(),
                },
            ))
            .await
            .is_ok()
            {
                return Ok("already on the agent".to_string());
            }
            c.upload(artifact, &sha256, bytes)
                .await
                .map(|_| format!("{bytes} bytes"))
        };
        let judge = |r: &Result<String, ClientError>| match r {
            Ok(d) => Ok(d.clone()),
            Err(e) => Err(e.to_string()),
        };
        let uploaded = match exec.run(out, &host.name, "upload", None, send, judge).await {
            Ok(r) => r,
            Err(e) => return Err((false, Exit::Failed, e.to_string())),
        };
        match uploaded {
            Ok(detail) => step(out, &host.name, "upload", "ok", &detail),
            Err(e) => {
                step(out, &host.name, "upload", "failed", &e.to_string());
                return Err((
                    false,
                    exit_of(&e),
                    format!("upload to {} failed: {e}", host.name),
                ));
            }
        }
    }
    // The stage request is the compiled one (its key, its scan).
    let staged = job_step(exec, out, host, "stage", lease, Deadline::of(plan), None).await;
    let commit = staged.as_ref().ok().and_then(staged_commit);
    let staged = step_ok(staged);
    if let Err(Failure(exit, e)) = staged {
        step(out, &host.name, "stage", "failed", &e);
        // Staging changes nothing live: a refused archive is bad input.
        return Err((
            false,
            exit,
            format!(
                "staging on {} failed, nothing live changed: {}",
                host.name,
                error_headline(&e)
            ),
        ));
    }
    let commit = match git_ref(release) {
        Some(git_ref) => {
            let Some(commit) = commit else {
                return Err((
                    true,
                    Exit::Failed,
                    format!(
                        "{} staged git ref {git_ref} but reported no commit; nothing live changed",
                        host.name
                    ),
                ));
            };
            step(
                out,
                &host.name,
                "stage",
                "ok",
                &format!("{git_ref} is commit {commit}"),
            );
            Some(commit)
        }
        None => {
            step(out, &host.name, "stage", "ok", "");
            None
        }
    };
    let _ = journal.set_host(id, &host.name, &c.addr, None, "staged");
    Ok(commit)
}

/// Phase 3 on every host, `[deploy] parallel` at a time; after a failure
/// no further host starts. `Ok((staged hosts, first (host, commit)))`, or
/// `Err((staged hosts, exit, message))` naming the first failed host in
/// plan order (and how many others failed), or the hosts that resolved a
/// git ref to different commits: every host must run the same code.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
async fn stage_all(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    leases: &[Lease],
) -> Result<(Vec<usize>, Option<(String, String)>), (Vec<usize>, Exit, String)> {
    let results = crate::fanout::until(
        plan.parallel,
        plan.hosts.iter().zip(leases),
        |(host, lease)| stage_host(out, journal, exec, plan, id, host, lease),
        Result::is_err,
    )
    .await;
    let mut staged_on = Vec::new();
    let mut failed: Vec<(Exit, String)> = Vec::new();
    // (host, commit) of the first host, in plan order, that staged a git ref.
    let mut first_commit: Option<(String, String)> = None;
    let mut differ: Option<String> = None;
    for (i, r) in results.into_iter().enumerate() {
        let host = &plan.hosts[i].name;
        match r {
            Some(Ok(commit)) => {
                staged_on.push(i);
                match (commit, &first_commit) {
                    (Some(c), None) => first_commit = Some((host.clone(), c)),
                    (Some(c), Some((first, expected))) if *expected != c && differ.is_none() => {
                        differ = Some(format!("{first}: {expected}, {host}: {c}"));
                    }
                    _ => {}
                }
            }
            Some(Err((staged, exit, e))) => {
                if staged {
                    staged_on.push(i);
                }
                failed.push((exit, e));
            }
            None => {}
        }
    }
    if let Some((exit, first)) = failed.first() {
        let more = match failed.len() {
            1 => String::new(),
            n => format!(" (and on {} other host(s), above)", n - 1),
        };
        return Err((staged_on, *exit, format!("{first}{more}")));
    }
    if let Some(differ) = differ {
        let git_ref = plan.release.as_ref().and_then(git_ref).unwrap_or_default();
        return Err((
            staged_on,
            Exit::Failed,
            format!(
                "hosts resolved git ref {git_ref} to different commits ({differ}), \
                 nothing live changed; the ref moved while the hosts fetched, or their agent configs \
                 name different repositories. Deploy a tag or a commit id so every host runs the same code"
            ),
        ));
    }
    Ok((staged_on, first_commit))
}

/// Takes the hosts in `stuck` out of `in_maintenance` and returns them:
/// maintenance stays on there (see the call site).
fn keep_on_where_stuck(in_maintenance: &mut Vec<usize>, stuck: &[usize]) -> Vec<usize> {
    let kept: Vec<usize> = in_maintenance
        .iter()
        .copied()
        .filter(|i| stuck.contains(i))
        .collect();
    in_maintenance.retain(|i| !stuck.contains(i));
    kept
}

/// After a deployment failed or was refused: removes the staged release
/// from `hosts`, where it never went live, so its id can be deployed again
/// (issue 12). The agent refuses a release that went live, is current or is
/// the rollback target, or that another deployment staged; such a refusal,
/// or any failure here, is reported and changes nothing else: the
/// deployment's outcome stands.
async fn give_back_ids(
    out: Out,
    exec: &Executor<'_>,
    plan: &Plan,
    leases: &[Lease],
    hosts: &[usize],
) {
    crate::fanout::all(plan.parallel, hosts, |&i| {
        give_back_id(out, exec, &leases[i], &plan.hosts[i])
    })
    .await;
}

/// [`give_back_ids`] on one host.
async fn give_back_id(out: Out, exec: &Executor<'_>, lease: &Lease, host: &plan::Host) {
    let r = step_ok(job_step(exec, out, host, "discard", lease, LOST, None).await);
    match r {
        Ok(detail) => step(
            out,
            &host.name,
            "discard",
            "ok",
            &format!("{detail}, never live: the id can be deployed again"),
        ),
        Err(Failure(_, e)) => step(out, &host.name, "discard", "kept", &e),
    }
}

fn in_maintenance_names(plan: &Plan, on: &[usize]) -> Vec<String> {
    on.iter().map(|&i| plan.hosts[i].name.clone()).collect()
}

fn downtime_of(used: bool, longest: Option<u64>, still: &[String]) -> Downtime {
    if !still.is_empty() {
        Downtime::StillOn
    } else if !used {
        Downtime::None
    } else {
        Downtime::Measured(longest.unwrap_or(0))
    }
}

/// "; MAINTENANCE STILL ON: ..." for an outcome message, or nothing.
fn still_on(still: &[String]) -> String {
    if still.is_empty() {
        String::new()
    } else {
        format!(
            "; MAINTENANCE STILL ON: {}; fix it and run `golivectl maintenance off PLAN`",
            still.join("; ")
        )
    }
}

/// Runs the app's probes on one host, all of them; reports each result.
async fn run_probes(
    out: Out,
    plan: &Plan,
    host: &plan::Host,
    phase: &str,
) -> Result<ProbeReport, String> {
    let c = &host.client;
    let req = Request::RunProbes(RunProbesRequest {
        app: plan.app.clone(),
        tags: vec![],
    });
    let report = match Deadline::of(plan)
        .bound(c, Duration::ZERO, c.call(&req))
        .await
    {
        Ok(Response::Probes(r)) => r,
        Ok(other) => return Err(c.unexpected(&other).to_string()),
        Err(e) => return Err(format!("probes on {} could not run: {e}", host.name)),
    };
    for r in &report.results {
        out.line(format!(
            "[{}]   probe {} ({}): {} — {}{} ({} ms)",
            host.name,
            r.name,
            r.severity.as_str(),
            r.status.as_str(),
            r.message,
            r.value
                .as_ref()
                .map(|v| format!(" [{v}]"))
                .unwrap_or_default(),
            r.duration_ms
        ));
        out.event(&json!({"event": "probe", "phase": phase, "host": host.name, "probe": r.name, "kind": r.kind, "severity": r.severity.as_str(), "status": r.status.as_str(), "value": r.value, "threshold": r.threshold, "message": r.message, "duration_ms": r.duration_ms}));
    }
    if report.results.is_empty() {
        out.line(format!(
            "[{}]   warning: app {} declares no probes on this host; nothing verified the release",
            host.name, plan.app
        ));
    }
    Ok(report)
}

/// The figures before the switch: every host's probes on the live release,
/// recorded as phase "before" (the deployment record compares them with
/// the results after). A failure here is reported, not a stop: preflight is
/// the place to refuse a deployment on the current release's health.
async fn probe_before(out: Out, journal: &Journal, plan: &Plan, id: &str) -> Vec<Vec<ProbeResult>> {
    // Read-only: every host at once, up to `[deploy] parallel` (issue 14).
    crate::fanout::all(plan.parallel, &plan.hosts, |host| {
        probe_before_host(out, journal, plan, id, host)
    })
    .await
}

/// [`probe_before`] on one host.
async fn probe_before_host(
    out: Out,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
) -> Vec<ProbeResult> {
    // A resumed deployment keeps the figures its start took: the host may
    // run the new release by now.
    let fact = format!("before:{}", host.name);
    if let Some(results) = journal
        .fact(id, &fact)
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_str::<Vec<ProbeResult>>(&v).ok())
    {
        step(
            out,
            &host.name,
            "probe-before",
            "ok",
            "taken before the interruption",
        );
        return results;
    }
    let seq = journal.start_step(id, &host.name, "probe-before").ok();
    match run_probes(out, plan, host, "before").await {
        Ok(report) => {
            let _ = journal.save_probes(id, &host.name, "before", &report.results);
            if let Ok(v) = serde_json::to_string(&report.results) {
                let _ = journal.set_fact(id, &fact, &v);
            }
            let failing: Vec<String> = report
                .failures()
                .iter()
                .map(|r| format!("{} ({})", r.name, r.severity.as_str()))
                .collect();
            let (judged, na) = judged(&report);
            let passed = judged - failing.len();
            let mut detail = if failing.is_empty() {
                format!("{passed}/{judged} passed on the live release")
            } else {
                format!(
                    "{passed}/{judged} passed on the live release; already failing: {}",
                    failing.join(", ")
                )
            };
            if na > 0 {
                detail.push_str(&format!("; {na} n/a (nothing live yet)"));
            }
            finish::<String, String>(journal, seq, &Ok(detail.clone()));
            step(out, &host.name, "probe-before", "ok", &detail);
            report.results
        }
        Err(e) => {
            finish::<String, String>(journal, seq, &Err(e.clone()));
            step(out, &host.name, "probe-before", "failed", &e);
            Vec::new()
        }
    }
}

/// (probes judged, probes not applicable): an app with nothing live has
/// probes that were not run (issue 12).
fn judged(report: &ProbeReport) -> (usize, usize) {
    let na = report
        .results
        .iter()
        .filter(|r| r.status == ProbeStatus::NotApplicable)
        .count();
    (report.results.len() - na, na)
}

/// Validates one host after its switch: probes (recorded as phase "after"),
/// then the gate. `Ok` to go on (with a warning pushed when the gate says
/// warn); `Err` with exit 3 to switch back, or exit 4 when a pause got no
/// decision in time.
#[allow(clippy::too_many_arguments)]
async fn validate_host(
    out: Out,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    before: &[ProbeResult],
    leases: &[Lease],
    warnings: &mut Vec<String>,
) -> Result<(), (Exit, String)> {
    let seq = journal.start_step(id, &host.name, "probe").ok();
    let report = match run_probes(out, plan, host, "after").await {
        Ok(r) => r,
        Err(e) => {
            finish::<String, String>(journal, seq, &Err(e.clone()));
            return Err((Exit::Failed, e));
        }
    };
    let _ = journal.save_probes(id, &host.name, "after", &report.results);
    let passed = report
        .results
        .iter()
        .filter(|r| r.status == ProbeStatus::Pass)
        .count();
    let (judged, _) = judged(&report);
    let detail = format!("{passed}/{judged} passed");
    let all_passed = passed == judged;
    finish::<String, String>(
        journal,
        seq,
        &if all_passed {
            Ok(detail.clone())
        } else {
            Err(detail.clone())
        },
    );
    step(
        out,
        &host.name,
        "probe",
        if all_passed { "ok" } else { "failed" },
        &detail,
    );

    let eval = gate::evaluate(&plan.gate, &host.name, &report, before);
    let _ = journal.save_gate(id, &eval);
    out.event(&json!({"event": "gate", "host": host.name, "action": eval.action.as_str(), "summary": eval.summary(), "reasons": eval.reasons}));
    let seq = journal.start_step(id, &host.name, "gate").ok();
    let summary = eval.summary();
    let state = match eval.action {
        Action::Continue => "ok",
        Action::Warn => "warn",
        Action::Pause => "pause",
        Action::Rollback => "rollback",
    };
    finish::<String, String>(
        journal,
        seq,
        &if eval.action == Action::Rollback {
            Err(summary.clone())
        } else {
            Ok(format!("{state}: {summary}"))
        },
    );
    step(out, &host.name, "gate", state, &summary);
    match eval.action {
        Action::Continue => Ok(()),
        Action::Warn => {
            warnings.push(format!("{}: {summary}", host.name));
            Ok(())
        }
        Action::Rollback => {
            // The gate decides like a person would, and the record says so
            // (issue 12): which rule, which probes, what happens next.
            let rules: std::collections::BTreeSet<String> = eval
                .reasons
                .iter()
                .filter(|r| r.action == Action::Rollback)
                .map(|r| format!("{} = rollback", r.severity))
                .collect();
            let rules: Vec<String> = rules.into_iter().collect();
            let reason = format!("[gate] {} on {}: {summary}", rules.join(", "), host.name);
            let _ = journal.add_decision(
                id,
                "gate policy",
                "rollback",
                Some(&reason),
                "switch back every host this deployment switched, to the release it ran before",
            );
            out.event(&json!({"event": "decision", "by": "gate policy", "decision": "rollback", "reason": reason}));
            Err((
                Exit::RolledBack,
                format!("the gate rolled back on {}: {summary}", host.name),
            ))
        }
        Action::Pause => wait_for_decision(out, journal, plan, id, host, &summary, leases).await,
    }
}

/// How often a paused deploy looks for a decision, and how far ahead its
/// heartbeat promises to keep looking.
const DECISION_POLL: Duration = Duration::from_millis(500);
const WAIT_HEARTBEAT_MS: i64 = 15_000;

/// A pause: waits (holding the locks) for `golivectl go` or `no-go` on this
/// deployment, up to the plan's `[gate] pause_timeout_secs`.
async fn wait_for_decision(
    out: Out,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    summary: &str,
    leases: &[Lease],
) -> Result<(), (Exit, String)> {
    let timeout = plan.gate.pause_timeout_secs;
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    let seen = journal
        .decisions(id, 0)
        .ok()
        .and_then(|d| d.last().map(|d| d.seq))
        .unwrap_or(0);
    let mut beat = std::time::Instant::now();
    let _ = journal.set_paused(id, Some(now_millis() + WAIT_HEARTBEAT_MS));
    out.line(format!(
        "[{}] PAUSED: {summary}\n  decide with `golivectl go {id} --by NAME [--note TEXT]` or \
         `golivectl no-go {id} --by NAME --reason TEXT`; waiting up to {timeout} s",
        host.name
    ));
    out.event(&json!({"event": "paused", "deployment": id, "host": host.name, "summary": summary, "timeout_secs": timeout}));
    crate::notify::tell(
        plan,
        journal,
        id,
        crate::notify::Kind::Paused,
        Some(&format!("{}: {summary}", host.name)),
        None,
    );
    loop {
        tokio::time::sleep(DECISION_POLL).await;
        for lease in leases {
            if let Err(e) = lease.check() {
                let _ = journal.set_running(id);
                return Err((Exit::Failed, e));
            }
        }
        if let Ok(decisions) = journal.decisions(id, seen)
            && let Some(d) = decisions.into_iter().next()
        {
            let _ = journal.set_running(id);
            let who = format!(
                "{} by {}{}",
                d.decision,
                d.by,
                d.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            let seq = journal.start_step(id, &host.name, "decision").ok();
            finish::<String, String>(journal, seq, &Ok(who.clone()));
            step(out, &host.name, "decision", &d.decision, &who);
            return if d.decision == "go" {
                Ok(())
            } else {
                Err((Exit::RolledBack, format!("no-go on {}: {who}", host.name)))
            };
        }
        if std::time::Instant::now() >= deadline {
            let _ = journal.set_paused(id, None);
            return Err((
                Exit::Paused,
                format!(
                    "paused on {} with no decision within {timeout} s ({summary}); the hosts keep what \
                     they run now: `golivectl no-go {id} --by NAME --reason TEXT` rolls the activated \
                     hosts back, `golivectl go {id} --by NAME` accepts them as they are",
                    host.name
                ),
            ));
        }
        if beat.elapsed() >= Duration::from_secs(5) {
            beat = std::time::Instant::now();
            let _ = journal.set_paused(id, Some(now_millis() + WAIT_HEARTBEAT_MS));
        }
    }
}

/// Arms the plan's `[watchdog]` on a host whose release passed its gate
/// (issue 13). `Ok(true)`: armed; `Ok(false)`: no watchdog in the plan, or
/// a first install (nothing to return to, so not watched). A host that
/// refuses fails the deployment: the plan asks for the release to be
/// watched, and it is not left live unwatched.
async fn arm_host(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    previous: Option<&str>,
) -> Result<bool, (Exit, String)> {
    if plan.watchdog.is_none() {
        return Ok(false);
    }
    if previous.is_none() {
        let seq = journal.start_step(id, &host.name, "watchdog-arm").ok();
        let detail = "a first install: there is no earlier release to roll back to, so it is not \
                      watched";
        if let Some(seq) = seq {
            let _ = journal.finish_step(seq, "skipped", Some(detail));
        }
        step(out, &host.name, "watchdog-arm", "skipped", detail);
        return Ok(false);
    }
    // The agent answers a second arm of the same deployment with the same
    // spec with the armed watchdog: a resubmission is safe.
    let send = |_key: String, request: StepRequest| async move {
        let StepRequest::ArmWatchdog(arm) = request else {
            return Err(ClientError::Transport {
                host: host.name.clone(),
                addr: host.client.addr.clone(),
                detail: "the watchdog-arm step is not an arm request (a golivectl bug)".into(),
            });
        };
        let arm = Request::ArmWatchdog(arm);
        match Deadline::of(plan)
            .bound(&host.client, Duration::ZERO, host.client.call(&arm))
            .await
        {
            Ok(Response::Watchdog(info)) => Ok(info),
            Ok(other) => Err(host.client.unexpected(&other)),
            Err(e) => Err(e),
        }
    };
    let judge = |r: &Result<WatchdogInfo, ClientError>| match r {
        Ok(info) => Ok(watchdog_detail(info)),
        Err(e) => Err(e.to_string()),
    };
    let r = match exec
        .run(out, &host.name, "watchdog-arm", None, send, judge)
        .await
    {
        Ok(r) => r.map(|info| watchdog_detail(&info)),
        Err(e) => {
            return Err((Exit::Failed, e.to_string()));
        }
    };
    match r {
        Ok(detail) => {
            step(out, &host.name, "watchdog-arm", "ok", &detail);
            out.event(&json!({"event": "watchdog", "host": host.name, "state": "armed", "detail": detail}));
            Ok(true)
        }
        Err(e) => {
            let e = match &e {
                ClientError::Agent { body, .. } => body.message.clone(),
                other => other.to_string(),
            };
            step(out, &host.name, "watchdog-arm", "failed", &e);
            Err((
                Exit::Failed,
                format!(
                    "the watchdog could not be armed on {}: {e}; the plan asks for the release to \
                     be watched, so it does not stay live unwatched",
                    host.name
                ),
            ))
        }
    }
}

/// "until 10:42:07Z, every 10 s, triggers: traffic 5xx above 5.0 % for 120 s, ...".
fn watchdog_detail(info: &WatchdogInfo) -> String {
    format!(
        "until {}, every {} ms, triggers: {}{}",
        utc(info.until),
        info.spec.interval_ms,
        info.spec
            .triggers
            .iter()
            .map(|t| format!(
                "{} ({} for {} s)",
                t.name,
                t.condition.describe(),
                t.for_secs
            ))
            .collect::<Vec<_>>()
            .join(", "),
        info.confirm_by
            .map(|c| format!("; a go is needed by {}", utc(c)))
            .unwrap_or_default()
    )
}

/// The hosts of `watched` whose watchdog no longer watches (it fired and
/// rolled back, or is rolling back) as the deployment's failure.
async fn watchdogs_fired(plan: &Plan, id: &str, watched: &[String]) -> Option<(Exit, String)> {
    for host in plan.hosts.iter().filter(|h| watched.contains(&h.name)) {
        let req = Request::WatchdogStatus(WatchdogStatusRequest {
            app: plan.app.clone(),
            deployment: Some(id.to_string()),
        });
        if let Ok(Response::WatchdogStatus(Some(info))) = host.client.call(&req).await
            && matches!(
                info.state,
                WatchdogState::Fired | WatchdogState::RolledBack | WatchdogState::RollbackFailed
            )
        {
            return Some((
                Exit::Failed,
                format!(
                    "the watchdog on {} fired while the deployment went on: {}",
                    host.name,
                    info.reason.as_deref().unwrap_or("no reason given")
                ),
            ));
        }
    }
    None
}

/// "30 min", "90 s".
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// What happened on one host of a wave.
#[derive(Default)]
struct WaveHost {
    /// The activate job ran (the switch may have happened: roll back).
    activated: bool,
    /// The release went live.
    switched: bool,
    /// Its watchdog is armed.
    armed: bool,
    warnings: Vec<String>,
    failure: Option<(Exit, String)>,
}

/// One host of a wave: activate, validate (probes and gate, a pause
/// waiting for its decision), arm its watchdog. Runs beside the wave's
/// other hosts on the sequencer's task, so `unavailable` is shared through
/// a `RefCell` borrowed between awaits only.
#[allow(clippy::too_many_arguments)]
async fn wave_host(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    i: usize,
    before: &[ProbeResult],
    previous: Option<&str>,
    leases: &[Lease],
    unavailable: &std::cell::RefCell<Unavailable>,
) -> WaveHost {
    let release = plan.release.as_ref().expect("checked by deploy");
    let (host, lease) = (&plan.hosts[i], &leases[i]);
    let mut r = WaveHost::default();
    if let Err(e) = lease.check() {
        r.failure = Some((Exit::Failed, e));
        return r;
    }
    let job = job_step(exec, out, host, "activate", lease, Deadline::of(plan), None).await;
    if let Ok(job) = &job {
        unavailable.borrow_mut().add(&host.name, job);
    }
    let result = step_ok(job);
    // A failed switch may or may not have happened: roll this host back too.
    r.activated = true;
    if let Err(Failure(_, e)) = result {
        step(out, &host.name, "activate", "failed", &e);
        r.failure = Some((
            Exit::Failed,
            format!("activation on {} failed: {}", host.name, error_headline(&e)),
        ));
        return r;
    }
    r.switched = true;
    let _ = journal.set_host(id, &host.name, &host.client.addr, None, "active");
    step(
        out,
        &host.name,
        "activate",
        "ok",
        &format!("current -> {}", release.id),
    );
    if let Err(f) = validate_host(
        out,
        journal,
        plan,
        id,
        host,
        before,
        leases,
        &mut r.warnings,
    )
    .await
    {
        r.failure = Some(f);
        return r;
    }
    match arm_host(out, journal, exec, plan, id, host, previous).await {
        Ok(armed) => r.armed = armed,
        Err(f) => r.failure = Some(f),
    }
    r
}

/// Phase 4 with `[[waves]]` (issue 14): each wave's hosts activate and
/// validate at once (up to `[deploy] parallel`), judged in plan order once
/// all are done; then the wave's soak. A wave with more failures than its
/// `max_fail` allows, a pause without a decision or a failed soak stops
/// the deployment: the failure returned, and `activated` names every host
/// for the switch-back. A failure within `max_fail` is rolled back on its
/// own host at once and named in `tolerated`.
#[allow(clippy::too_many_arguments)]
async fn run_waves(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    previous: &[Option<String>],
    before: &[Vec<ProbeResult>],
    leases: &[Lease],
    warnings: &mut Vec<String>,
    unavailable: &mut Unavailable,
    watched: &mut Vec<String>,
    (activated, switched): (&mut Vec<usize>, &mut Vec<usize>),
    tolerated: &mut Vec<String>,
) -> Option<(Exit, String)> {
    let of = plan.waves.len();
    for (w, wave) in plan.waves.iter().enumerate() {
        let label = wave.label(w + 1, of);
        let names: Vec<&str> = wave
            .hosts
            .iter()
            .map(|&i| plan.hosts[i].name.as_str())
            .collect();
        out.line(format!("{label}: {}", names.join(", ")));
        out.event(&json!({"event": "wave", "wave": w + 1, "of": of, "name": wave.name, "hosts": names, "state": "running", "max_fail": wave.max_fail, "soak_secs": wave.soak.map(|s| s.as_secs())}));
        let seq = journal
            .start_step(id, &names.join(","), &format!("wave-{}", w + 1))
            .ok();
        let end = |state: &str, detail: &str| {
            if let Some(seq) = seq {
                let _ = journal.finish_step(seq, state, Some(detail));
            }
            out.line(format!("{label}: {state} — {detail}"));
            out.event(&json!({"event": "wave", "wave": w + 1, "of": of, "name": wave.name, "hosts": names, "state": state, "detail": detail}));
        };

        let cell = std::cell::RefCell::new(std::mem::take(unavailable));
        let results = crate::fanout::all(plan.parallel, wave.hosts.iter().copied(), |i| {
            wave_host(
                out,
                journal,
                exec,
                plan,
                id,
                i,
                &before[i],
                previous[i].as_deref(),
                leases,
                &cell,
            )
        })
        .await;
        *unavailable = cell.into_inner();

        // Judged in plan order, whatever order the hosts finished in.
        let mut failed: Vec<(usize, (Exit, String))> = Vec::new();
        for (&i, r) in wave.hosts.iter().zip(results) {
            if r.activated {
                activated.push(i);
            }
            if r.switched {
                switched.push(i);
            }
            if r.armed {
                watched.push(plan.hosts[i].name.clone());
            }
            warnings.extend(r.warnings);
            if let Some(f) = r.failure {
                failed.push((i, f));
            }
        }
        // A pause that got no decision: the hosts stay as they are.
        if let Some((_, paused)) = failed.iter().find(|(_, f)| f.0 == Exit::Paused) {
            end("paused", &paused.1);
            return Some(paused.clone());
        }
        let allowed = wave.allowed_failures();
        if failed.len() > allowed {
            let hosts: Vec<&str> = failed
                .iter()
                .map(|(i, _)| plan.hosts[*i].name.as_str())
                .collect();
            let detail = format!(
                "{} of {} host(s) failed ({}), {allowed} allowed by max_fail = {}: {}",
                failed.len(),
                wave.hosts.len(),
                hosts.join(", "),
                wave.max_fail,
                failed[0].1.1
            );
            end("failed", &detail);
            let (exit, _) = failed[0].1;
            return Some((exit, format!("{label} failed: {detail}")));
        }
        for (i, (exit, why)) in failed {
            let name = plan.hosts[i].name.clone();
            // Rolled back on its own; the rest of the wave stays.
            let mut stuck = Vec::new();
            let (back, message) = switch_back_if_failed(
                out,
                journal,
                exec,
                plan,
                id,
                previous,
                leases,
                &[i],
                Some((exit, why.clone())),
                unavailable,
                &mut stuck,
            )
            .await;
            activated.retain(|&a| a != i);
            watched.retain(|h| *h != name);
            if back != Exit::RolledBack && Deadline::of(plan).lost(&plan.hosts[i].client).await {
                // Unreachable (issue 14): it counts as failed, and the wave,
                // within its share, goes on without it. Nothing more can be
                // done to it from here; its state is named.
                let note = format!(
                    "{name} ({why}; not switched back: it did not answer, so it runs the release \
                     it was on when it was lost; check `golivectl status` once it answers)"
                );
                tolerated.push(note);
                continue;
            }
            if back != Exit::RolledBack {
                let detail = format!(
                    "{name} failed within max_fail = {}, but could not be rolled back: {message}",
                    wave.max_fail
                );
                end("failed", &detail);
                return Some((Exit::Failed, format!("{label} failed: {detail}")));
            }
            tolerated.push(format!("{name} ({why}; rolled back)"));
        }

        let live: Vec<usize> = wave
            .hosts
            .iter()
            .copied()
            .filter(|i| activated.contains(i))
            .collect();
        let mut detail = format!("{} of {} host(s) validated", live.len(), wave.hosts.len());
        if let Some(soak) = wave.soak {
            if let Err(why) = soak_wave(out, journal, plan, id, &label, soak, &live, leases).await {
                end("failed", &why);
                return Some((Exit::Failed, format!("{label} failed: {why}")));
            }
            detail.push_str(&format!("; soaked {}", human_secs(soak.as_secs())));
        }
        end("ok", &detail);
        // The team channel hears of each wave (issue 15), but the last: the
        // deployment's own end says it.
        if w + 1 < of {
            crate::notify::tell(
                plan,
                journal,
                id,
                crate::notify::Kind::WaveDone,
                Some(&format!("{label}: {detail}")),
                None,
            );
        }
    }
    None
}

/// A wave's soak: its live hosts' probes re-run every few seconds for
/// `soak`; a failing critical probe (or probes that cannot run, or a lost
/// lock) fails the wave.
#[allow(clippy::too_many_arguments)]
async fn soak_wave(
    out: Out,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    label: &str,
    soak: Duration,
    live: &[usize],
    leases: &[Lease],
) -> Result<(), String> {
    let every = (soak / 5).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let until = tokio::time::Instant::now() + soak;
    out.line(format!(
        "{label}: soaking for {}, probes every {} s",
        human_secs(soak.as_secs()),
        every.as_secs()
    ));
    loop {
        let now = tokio::time::Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep(every.min(until - now)).await;
        for lease in leases {
            lease.check()?;
        }
        let reports = crate::fanout::all(plan.parallel, live.iter().copied(), |i| async move {
            (i, run_probes(out, plan, &plan.hosts[i], "soak").await)
        })
        .await;
        for (i, report) in reports {
            let host = &plan.hosts[i].name;
            let report = report.map_err(|e| format!("during the soak: {e}"))?;
            if let Some(r) = report.results.iter().find(|r| {
                r.status.failed() && r.severity == golive_shared::protocol::Severity::Critical
            }) {
                let why = format!(
                    "critical probe {} failed on {host} during the soak: {}",
                    r.name, r.message
                );
                let _ = journal.add_decision(
                    id,
                    "wave soak",
                    "rollback",
                    Some(&why),
                    "switch back every host this deployment switched, to the release it ran before",
                );
                out.event(&json!({"event": "decision", "by": "wave soak", "decision": "rollback", "reason": why}));
                return Err(why);
            }
        }
    }
}

/// Phase 4b: on a failure, switch every activated host back, newest first;
/// the outcome of the deployment.
#[allow(clippy::too_many_arguments)]
async fn switch_back_if_failed(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    previous: &[Option<String>],
    leases: &[Lease],
    activated: &[usize],
    failure: Option<(Exit, String)>,
    unavailable: &mut Unavailable,
    stuck: &mut Vec<usize>,
) -> (Exit, String) {
    let release = plan.release.as_ref().expect("checked by deploy");
    match failure {
        None => (
            Exit::Done,
            format!(
                "release {} is live on {} host(s)",
                release.id,
                plan.hosts.len()
            ),
        ),
        Some((exit, why)) => {
            let mut all_back = true;
            // Each host the switch-back left where it was, and why.
            let mut not_back: Vec<String> = Vec::new();
            for (i, spec) in rollback_order(journal, plan, id, activated, &why) {
                let host = &plan.hosts[i];
                let to = previous[i].clone();
                let Some(to) = to else {
                    let e =
                        "this host had no release before; nothing to switch back to".to_string();
                    let seq = journal.start_step(id, &host.name, "switch-back").ok();
                    finish::<String, String>(journal, seq, &Err(e.clone()));
                    step(out, &host.name, "switch-back", "failed", &e);
                    all_back = false;
                    stuck.push(i);
                    not_back.push(format!("{}: {e}", host.name));
                    continue;
                };
                // The host's one rollback (issue 13): code, database the
                // gentlest correct way, flags, hooks, from its rollback point.
                let job = job_step(
                    exec,
                    out,
                    host,
                    "switch-back",
                    &leases[i],
                    Deadline::of(plan),
                    spec,
                )
                .await;
                if let Ok(job) = &job {
                    unavailable.add(&host.name, job);
                }
                let r = step_ok(job);
                match r {
                    Ok(detail) => {
                        step(out, &host.name, "switch-back", "ok", &detail);
                        let _ = to;
                        let _ = journal.set_host(
                            id,
                            &host.name,
                            &host.client.addr,
                            None,
                            "rolled_back",
                        );
                    }
                    Err(Failure(_, e)) => {
                        step(out, &host.name, "switch-back", "failed", &e);
                        all_back = false;
                        stuck.push(i);
                        not_back.push(format!("{}: {e}", host.name));
                    }
                }
            }
            if all_back && !activated.is_empty() {
                (
                    Exit::RolledBack,
                    format!("{why}; switched back to the previous release"),
                )
            } else if activated.is_empty() {
                (exit, why)
            } else {
                (
                    Exit::Failed,
                    format!(
                        "{why}; SWITCH-BACK INCOMPLETE, check `golivectl status`: {}",
                        not_back.join("; ")
                    ),
                )
            }
        }
    }
}

/// The hosts of `activated` to switch back and their host rollback jobs,
/// in the deployment's rollback plan (issue 14): newest activation first,
/// from the journal's record, those already rolled back left out, a first
/// install (nothing to go back to) last. When the journal cannot be read,
/// every host of `activated`, newest first, so none is left on the release.
fn rollback_order(
    journal: &Journal,
    plan: &Plan,
    id: &str,
    activated: &[usize],
    why: &str,
) -> Vec<(usize, Option<JobSpec>)> {
    let index = |name: &str| plan.hosts.iter().position(|h| h.name == name);
    let Ok(Some(d)) = journal.deployment(id) else {
        return activated
            .iter()
            .rev()
            .map(|&i| (i, Some(host_rollback(&plan.app, id, why))))
            .collect();
    };
    let p = deployment::rollback::plan(id, &plan.app, &d.hosts, &d.steps, "switch-back", why);
    let back = p
        .hosts
        .into_iter()
        .map(|h| (index(&h.host), Some(h.request)));
    let first = p.first_install.iter().map(|h| (index(h), None));
    back.chain(first)
        .filter_map(|(i, spec)| Some((i?, spec)))
        .filter(|(i, _)| activated.contains(i))
        .collect()
}

/// After the code was switched back from a release that migrated: the
/// schema stays migrated. Says at which version, and whether that is safe
/// (every migration ahead of the previous release is `expand`) or not
/// (issue 12). Reads the ledger of the first host's live release.
async fn schema_after_switch_back(plan: &Plan, id: &str) -> Option<String> {
    let host = plan.hosts.first()?;
    let req = Request::MigrationStatus(MigrationStatusRequest {
        app: plan.app.clone(),
        release: None,
    });
    let st = match host.client.call(&req).await {
        Ok(Response::MigrationStatus(st)) => st,
        Ok(other) => return Some(format!("{}", host.client.unexpected(&other))),
        Err(e) => {
            return Some(format!(
                "the schema's state after the switch-back could not be read on {}: {e}",
                host.name
            ));
        }
    };
    let ahead: Vec<_> = st.applied.iter().filter(|a| a.ahead).collect();
    let version = ahead.last()?.version;
    let below = st
        .applied
        .iter()
        .filter(|a| !a.ahead)
        .map(|a| a.version)
        .max()
        .unwrap_or(0);
    let names = ahead
        .iter()
        .map(|a| format!("{:04}_{}", a.version, a.name))
        .collect::<Vec<_>>()
        .join(", ");
    let (migration, is, it) = if ahead.len() == 1 {
        ("migration", "is", "it")
    } else {
        ("migrations", "are", "them")
    };
    Some(
        if ahead.iter().all(|a| a.tag.as_deref() == Some("expand")) {
            format!(
                "the schema stays at version {version} ({migration} {names} {is} expand: the previous \
             release runs on it; `golivectl migrate down {} --to {below}` reverts {it})",
                plan.path.display()
            )
        } else {
            format!(
                "the schema stays at version {version}, ahead of release {}: {migration} {names} {is} \
             not tagged expand, so the previous release may not run on it. golive does not yet \
             roll the schema back with the code; if the release fails, restore the pre-deploy \
             backup of deployment {id} (`golivectl backup list {}`, then `golivectl backup \
             restore {} ID --deployment {id}`)",
                st.release,
                plan.path.display(),
                plan.path.display()
            )
        },
    )
}

/// Downtime as users see it (issue 12, part 15): what each host's agent
/// measured with the app's http probe through its switches (activate and
/// switch-back). Time in maintenance is counted by [`Downtime`], not here.
#[derive(Debug, Default)]
struct Unavailable {
    /// (host, figures), one per switch that was sampled.
    hosts: Vec<(String, Availability)>,
}

impl Unavailable {
    /// Keeps the figures of a finished activate or rollback job.
    fn add(&mut self, host: &str, r: &Result<JobInfo, ClientError>) {
        if let Some(a) = availability_of(r) {
            self.hosts.push((host.to_string(), a));
        }
    }

    /// The longest time one host did not answer (hosts are reached in
    /// parallel by users; a stretch on one host is what they saw), or
    /// `None` when no switch was sampled.
    fn ms(&self) -> Option<u64> {
        let per_host = self.per_host();
        (!per_host.is_empty()).then(|| per_host.iter().map(|h| h.1).max().unwrap_or(0))
    }

    /// Each host's total over its switches, in the order first sampled.
    fn per_host(&self) -> Vec<(String, u64, bool)> {
        let mut out: Vec<(String, u64, bool)> = Vec::new();
        for (host, a) in &self.hosts {
            match out.iter_mut().find(|h| &h.0 == host) {
                Some(h) => {
                    h.1 += a.unavailable_ms;
                    h.2 &= a.recovered;
                }
                None => out.push((host.clone(), a.unavailable_ms, a.recovered)),
            }
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.per_host()
                .into_iter()
                .map(|(host, ms, recovered)| {
                    json!({"host": host, "unavailable_ms": ms, "recovered": recovered})
                })
                .collect(),
        )
    }
}

/// The availability a finished activate or rollback job measured.
fn availability_of(r: &Result<JobInfo, ClientError>) -> Option<Availability> {
    match r {
        Ok(JobInfo {
            state: JobState::Succeeded,
            result:
                Some(
                    JobResult::Activated { availability, .. }
                    | JobResult::RolledBack { availability, .. },
                ),
            ..
        }) => availability.clone(),
        Ok(JobInfo {
            state: JobState::Succeeded,
            result: Some(JobResult::HostRolledBack(r)),
            ..
        }) => r.availability.clone(),
        _ => None,
    }
}

/// "; not answering 1020 ms (longest 1020 ms, probe health)" for a step's
/// detail, or nothing when the switch was not sampled.
fn availability_detail(a: Option<&Availability>) -> String {
    match a {
        None => String::new(),
        Some(a) if a.in_maintenance => "; in maintenance (not sampled)".into(),
        Some(a) => format!(
            "; not answering {} ms (longest {} ms, {} of {} samples of probe {}{})",
            a.unavailable_ms,
            a.longest_ms,
            a.failed,
            a.samples,
            a.probe,
            if a.recovered {
                ""
            } else {
                "; still not answering when sampling ended"
            }
        ),
    }
}

/// Prints the downtime of a deployment as users saw it and as maintenance
/// took it, per host and overall, and adds it to the outcome message.
fn report_downtime(out: Out, downtime: Downtime, unavailable: &Unavailable, message: &mut String) {
    for (host, ms, recovered) in unavailable.per_host() {
        out.line(format!(
            "[{host}] not answering: {ms} ms (as users see it){}",
            if recovered {
                ""
            } else {
                ", and still not answering when sampling ended"
            }
        ));
    }
    let users = unavailable
        .ms()
        .map(|ms| format!("{ms} ms not answering (as users see it)"));
    let maintenance = match downtime {
        Downtime::None => Some("0 ms in maintenance".to_string()),
        Downtime::Measured(ms) => Some(format!("{ms} ms in maintenance")),
        Downtime::StillOn => None,
    };
    match (users, maintenance) {
        (Some(u), Some(m)) => {
            out.line(format!("downtime: {u}, {m}"));
            message.push_str(&format!("; downtime {u}, {m}"));
        }
        (None, Some(m)) if downtime != Downtime::None => {
            out.line(format!("downtime: {m}"));
            message.push_str(&format!("; downtime {m}"));
        }
        (Some(u), None) => {
            out.line(format!("downtime: {u}; maintenance is still ON"));
            message.push_str(&format!("; downtime {u}"));
        }
        (None, None) => out.line("downtime: maintenance is still ON"),
        (None, Some(_)) => {}
    }
}

/// The git ref a release is fetched at, if it comes from git.
fn git_ref(release: &plan::Release) -> Option<&str> {
    match &release.source {
        Source::Git(r) => Some(r),
        Source::Artifact(_) => None,
    }
}

/// The commit a successful stage job reports (git sources).
fn staged_commit(r: &Result<JobInfo, ClientError>) -> Option<String> {
    match r {
        Ok(JobInfo {
            state: JobState::Succeeded,
            result: Some(JobResult::Staged { commit, .. }),
            ..
        }) => commit.clone(),
        _ => None,
    }
}

fn exit_of(e: &ClientError) -> Exit {
    if e.exit_code() == 2 {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

/// Why a step failed, and the exit code it leads to.
struct Failure(Exit, String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

/// A finished job as `Ok(summary)` or `Err(Failure)`.
fn job_ok(r: Result<JobInfo, ClientError>) -> Result<String, Failure> {
    match r {
        Err(e) => Err(Failure(exit_of(&e), e.to_string())),
        Ok(job) if job.state == JobState::Succeeded => Ok(match job.result {
            Some(JobResult::Staged {
                files,
                bytes,
                commit,
                ..
            }) => match commit {
                Some(c) => format!("commit {c}, {files} files, {bytes} bytes"),
                None => format!("{files} files, {bytes} bytes"),
            },
            Some(JobResult::Activated {
                release,
                previous,
                availability,
            }) => format!(
                "{} -> {release}{}",
                previous.as_deref().unwrap_or("none"),
                availability_detail(availability.as_ref())
            ),
            Some(JobResult::RolledBack {
                from,
                to,
                availability,
            }) => format!(
                "{} -> {to}{}",
                from.as_deref().unwrap_or("none"),
                availability_detail(availability.as_ref())
            ),
            Some(JobResult::BackedUp { id, bytes, .. }) => format!("backup {id}, {bytes} bytes"),
            Some(JobResult::Verified { id, detail, .. }) => format!("backup {id}: {detail}"),
            Some(JobResult::Maintenance {
                on, downtime_ms, ..
            }) => match downtime_ms {
                Some(ms) => format!(
                    "maintenance {}; downtime {ms} ms",
                    if on { "on" } else { "off" }
                ),
                None => format!("maintenance {}", if on { "on" } else { "off" }),
            },
            Some(JobResult::FlagSet {
                name,
                on,
                percent,
                previous_on,
                previous_percent,
            }) => {
                format!("flag {name}: {previous_on} ({previous_percent:?}%) -> {on} ({percent:?}%)")
            }
            Some(JobResult::Migrated {
                applied, reverted, ..
            }) => {
                format!("applied {applied:?}, reverted {reverted:?}")
            }
            Some(JobResult::Command {
                name,
                exit_code,
                duration_ms,
            }) => format!("{name}: exit {exit_code} in {duration_ms} ms"),
            Some(JobResult::Restored {
                id,
                failed_state_backup,
                duration_ms,
                ..
            }) => format!(
                "restored {id} in {duration_ms} ms (what was there is saved as {failed_state_backup})"
            ),
            Some(JobResult::Discarded { release }) => format!("removed release {release}"),
            Some(JobResult::HostRolledBack(r)) => rollback_summary(&r),
            None => String::new(),
        }),
        Ok(job) => Err(Failure(
            Exit::Usage,
            format!(
                "job {} {}: {}",
                job.id,
                job.state.as_str(),
                job.error.unwrap_or_else(|| "no message".into())
            ),
        )),
    }
}

/// The host rollback job of deployment `id` for `app`, as the controller
/// asks for it: the point's previous release, the point's restore policy.
fn host_rollback(app: &str, id: &str, reason: &str) -> JobSpec {
    JobSpec::HostRollback(HostRollback {
        app: app.into(),
        deployment: Some(id.into()),
        to: None,
        reason: reason.into(),
        requested_by: RollbackRequester::Controller,
        force: false,
        restore: None,
    })
}

/// One line for a finished host rollback: the switch, how the database went
/// back and what that cost, the flags, what an operator must do.
pub fn rollback_summary(r: &HostRolledBack) -> String {
    let database = match &r.database {
        DatabaseChoice::CodeOnly { why } => format!("code only ({why})"),
        DatabaseChoice::DownMigrations {
            to_version,
            reverted,
            snapshot,
            ..
        } => format!(
            "down migrations {reverted:?} to version {to_version}{}",
            snapshot
                .as_ref()
                .map(|s| format!(", snapshot {s}"))
                .unwrap_or_default()
        ),
        DatabaseChoice::Restore {
            backup,
            window_from,
            window_to,
            failed_state_backup,
            tables,
        } => {
            let lost: u64 = tables.iter().map(|t| t.lost()).sum();
            format!(
                "restored {backup}: writes from {} to {} discarded ({lost} row(s) only in \
                 failed-state backup {failed_state_backup})",
                utc(*window_from),
                utc(*window_to)
            )
        }
        DatabaseChoice::RestoreForbidden { why, .. } => format!("schema stays ({why})"),
    };
    let flags = r
        .steps
        .iter()
        .find(|s| s.step == "flags" && s.state == StepState::Done)
        .map(|s| format!("; flags: {}", s.detail))
        .unwrap_or_default();
    format!(
        "{} -> {}; database: {database}{flags}{}{}",
        r.from.as_deref().unwrap_or("none"),
        r.to,
        r.operator_action
            .as_ref()
            .map(|a| format!("; OPERATOR ACTION: {a}"))
            .unwrap_or_default(),
        availability_detail(r.availability.as_ref())
    )
}

fn finish<T: ToString, E: ToString>(journal: &Journal, seq: Option<i64>, r: &Result<T, E>) {
    if let Some(seq) = seq {
        let _ = match r {
            Ok(d) => journal.finish_step(seq, "ok", Some(&d.to_string())),
            Err(e) => journal.finish_step(seq, "failed", Some(&e.to_string())),
        };
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The deployment `id` of the journal at `state`, or a usage error that
/// names the most recent ones.
pub(crate) fn known_deployment(
    journal: &Journal,
    state: &Path,
    id: &str,
) -> anyhow::Result<crate::journal::Deployment> {
    match journal.deployment(id)? {
        Some(d) => Ok(d),
        None => {
            let recent = journal.deployment_ids(5)?;
            Err(usage(format!(
                "no deployment {id:?} in {}; recent: {}",
                state.display(),
                if recent.is_empty() {
                    "(none)".into()
                } else {
                    recent.join(", ")
                }
            )))
        }
    }
}

pub async fn rollback(
    out: Out,
    state: &Path,
    id: &str,
    plan_override: Option<&Path>,
    only: Option<&[String]>,
) -> anyhow::Result<Exit> {
    let journal = Journal::open(state)?;
    let d = known_deployment(&journal, state, id)?;
    let plan_path = plan_override
        .map(Path::to_path_buf)
        .unwrap_or_else(|| d.plan_path.clone().into());
    let plan = plan::load(&plan_path).map_err(|e| usage(e.to_string()))?;
    // The deployment's rollback plan (issue 14), from its recorded
    // outcomes: the hosts it switched, newest first, each through its one
    // host rollback job; `--hosts` narrows it to hosts of this deployment.
    let rollback_plan = deployment::rollback::plan(
        id,
        &d.app,
        &d.hosts,
        &d.steps,
        "rollback",
        &format!("golivectl rollback {id}"),
    );
    // Switched hosts `--hosts` leaves on the release: the deployment stays
    // in its state, only the named hosts go back.
    let kept: Vec<String> = rollback_plan
        .names()
        .into_iter()
        .filter(|h| only.is_some_and(|o| !o.iter().any(|x| x == h)))
        .map(String::from)
        .collect();
    let rollback_plan = match only {
        None => rollback_plan,
        Some(only) => {
            let known: Vec<&str> = d.hosts.iter().map(|h| h.host.as_str()).collect();
            if let Some(unknown) = only.iter().find(|h| !known.contains(&h.as_str())) {
                return Err(usage(format!(
                    "--hosts: {unknown} is not a host of deployment {id}; its hosts are {}",
                    known.join(", ")
                )));
            }
            rollback_plan.only(only)
        }
    };
    if let Some(h) = rollback_plan.first_install.first() {
        return Err(usage(format!(
            "host {h} had no release before deployment {id}; there is nothing to roll back to"
        )));
    }
    let mut targets = Vec::new();
    for h in &rollback_plan.hosts {
        let Some(host) = plan.hosts.iter().find(|p| p.name == h.host) else {
            return Err(usage(format!(
                "host {} of deployment {id} is not in {}; pass the plan that names it with --plan",
                h.host,
                plan_path.display()
            )));
        };
        targets.push((host, h));
    }
    for h in &rollback_plan.already {
        step(out, h, "rollback", "skipped", "already rolled back");
    }
    for h in &rollback_plan.untouched {
        step(
            out,
            h,
            "rollback",
            "skipped",
            "the deployment never switched this host",
        );
    }
    out.line(format!(
        "rolling back deployment {id} ({} release {})",
        d.app, d.release
    ));
    let lock_id = format!("rollback-{id}");
    let mut failed = Vec::new();
    // What each host got back, for the record's "later actions".
    let mut done: Vec<String> = Vec::new();
    let mut unavailable = Unavailable::default();
    let count = targets.len() + rollback_plan.already.len();
    for (host, back) in targets {
        let lease = match Lease::acquire(&host.client, &d.app, &lock_id, plan.lock_ttl_secs).await {
            Ok(l) => l,
            Err(e) => {
                step(out, &host.name, "rollback", "refused", &e.to_string());
                failed.push((exit_of(&e), e.to_string()));
                continue;
            }
        };
        // Intent (key and request) on disk before the request goes out.
        let request =
            serde_json::to_string(&StepRequest::Job(back.request.clone())).unwrap_or_default();
        let seq = match journal.intent(id, &host.name, "rollback", &back.key, &request) {
            Ok(seq) => Some(seq),
            Err(e) => {
                // Nothing is sent without its intent on disk.
                let e = format!(
                    "cannot journal the rollback of {} in the controller journal: {e}; not sent. \
                     Fix the controller's state directory, then run the rollback again",
                    host.name
                );
                step(out, &host.name, "rollback", "failed", &e);
                failed.push((Exit::Failed, e));
                lease.release().await;
                continue;
            }
        };
        // The host's one rollback of this deployment (issue 13): the agent
        // keys it per deployment and host, so the gate's switch-back, this
        // command, a no-go and the host's watchdog all get the same job and
        // it runs once. Its flags and database come from the host's own
        // rollback point.
        let job = run_job(
            out,
            &host.client,
            back.key.clone(),
            Some(lease.token.clone()),
            back.request.clone(),
        )
        .await;
        unavailable.add(&host.name, &job);
        let r = job_ok(job);
        finish(&journal, seq, &r);
        match r {
            Ok(detail) => {
                step(out, &host.name, "rollback", "ok", &detail);
                let _ = journal.set_host(id, &host.name, &host.client.addr, None, "rolled_back");
                done.push(format!("{}: {detail}", host.name));
            }
            Err(Failure(exit, e)) => {
                step(out, &host.name, "rollback", "failed", &e);
                failed.push((exit, error_headline(&e).to_string()));
            }
        }
        lease.release().await;
    }
    let (exit, message) = if failed.is_empty() {
        // The deployment's own end stays as it was; the rollback is a later
        // action on it, with who and when (issue 12).
        if !kept.is_empty() {
            // A partial rollback (`--hosts`): the deployment keeps its state.
        } else if d.finished_at.is_some() {
            journal.set_state(id, "rolled_back")?;
        } else {
            journal.finish_deployment(
                id,
                "rolled_back",
                Some("rolled back by golivectl rollback"),
            )?;
        }
        let mut message = format!("deployment {id} rolled back on {count} host(s)");
        if !kept.is_empty() {
            message.push_str(&format!(
                "; {} keep release {} (not in --hosts)",
                kept.join(", "),
                d.release
            ));
        }
        journal.add_action(id, &plan.operator, "rollback", &done.join("; "))?;
        (Exit::Done, message)
    } else {
        let exit = if failed.iter().all(|(e, _)| *e == Exit::Usage) {
            Exit::Usage
        } else {
            Exit::Failed
        };
        (
            exit,
            format!(
                "rollback of {id} incomplete: {}",
                failed
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    };
    if exit != Exit::Done {
        done.push(message.clone());
        journal.add_action(id, &plan.operator, "rollback-incomplete", &done.join("; "))?;
    }
    if unavailable.ms().is_some() {
        // Its own lines and event fields; the message stays the outcome.
        report_downtime(out, Downtime::None, &unavailable, &mut String::new());
    }
    let kind = if exit == Exit::Done {
        crate::notify::Kind::RolledBack
    } else {
        crate::notify::Kind::Failed
    };
    crate::notify::tell(
        &plan,
        &journal,
        id,
        kind,
        Some(&message),
        unavailable.ms().map(|ms| format!("{ms} ms not answering")),
    );
    crate::notify::flush(&journal).await;
    out.line(&message);
    out.event(
        &json!({"event": "result", "deployment": id, "message": message, "exit": exit.code(), "unavailable_ms": unavailable.ms(), "unavailable": unavailable.json()}),
    );
    Ok(exit)
}

pub async fn follow_cmd(out: Out, plan_path: &Path, host: &str, job: u64) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    let Some(h) = plan.hosts.iter().find(|h| h.name == host) else {
        return Err(usage(format!(
            "no host {host:?} in {}; hosts: {}",
            plan_path.display(),
            plan.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let info = follow(out, &h.client, job).await.map_err(|e| {
        if e.exit_code() == 2 {
            usage(e.to_string())
        } else {
            e.into()
        }
    })?;
    out.line(format!("job {job} {}", info.state.as_str()));
    out.event(
        &json!({"event": "result", "job": job, "state": info.state.as_str(), "error": info.error}),
    );
    Ok(if info.state == JobState::Succeeded {
        Exit::Done
    } else {
        Exit::Failed
    })
}

pub async fn unlock(out: Out, plan_path: &Path, reason: &str) -> anyhow::Result<Exit> {
    let plan = plan::load(plan_path).map_err(|e| usage(e.to_string()))?;
    for host in &plan.hosts {
        let r = host
            .client
            .call(&Request::Lock(LockRequest::Break {
                app: plan.app.clone(),
                reason: reason.into(),
            }))
            .await
            .map_err(|e| usage(e.to_string()))?;
        let msg = match r {
            Response::Lock(LockResponse::Broken { previous: Some(p) }) => format!(
                "broke the lock of deployment {} (held by {} since {})",
                p.deployment,
                p.holder,
                utc(p.since)
            ),
            _ => "was not locked".into(),
        };
        step(out, &host.name, "unlock", "ok", &msg);
    }
    Ok(Exit::Done)
}
