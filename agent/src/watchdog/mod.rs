//! The watchdog (issue 13, part 5): after a release goes live, the agent
//! watches the app and rolls its own host back when a trigger holds, with
//! no controller running and with the controller's link cut; a window that
//! ends quietly, or a `go`, commits the release, which is when its pending
//! (`contract`) migrations run.
//!
//! # One loop
//!
//! [`run`] is one task over a closed enum of [`Event`]s: requests (arm,
//! confirm, disarm), timers ([`Event::Tick`]), samples coming back from the
//! probes ([`Event::ProbeResult`], [`Event::LogSample`]), the pending
//! migrations of a commit, the end of a rollback or commit job, shutdown.
//! All of its work is the `match` in `Loop::handle`; whatever takes time
//! (probes, the migration status, jobs, webhooks) runs in tasks that answer
//! with an event, so the loop never waits on anything but its channel.
//! The timer is an event too: the loop sleeps until the next due time of
//! an armed app (a sample, the end of the window, the dead-man's deadline)
//! or, with nothing armed, waits on the channel alone: **no timer at all**,
//! so an idle agent stays at zero CPU (ARCHITECTURE.md, invariants). Time
//! is read through [`Clock`], which follows tokio's clock, so a paused-time
//! test drives the whole loop.
//!
//! # The journal
//!
//! Every watchdog is a `watchdogs` row written before it acts (armed, fired
//! with the release it returns to, committing), and its events (transitions
//! of triggers, sample summaries, fire, rollback, commit, webhook) are
//! `watchdog_events` rows. At start the loop re-arms what was armed with
//! the remaining window (at least one trigger duration and one interval
//! more, so nothing is committed unwatched), and finishes a rollback or
//! commit whose job an agent stop interrupted (a new submission, under a
//! new key, of a job that is safe to run twice).

mod judge;
pub mod notify;
pub mod sample;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use golive_shared::protocol::*;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::accesslog::WindowStats;
use crate::journal::{NewWatchdog, WatchdogRow};
use crate::release::layout::AppLayout;
use crate::state::Agent;
use judge::{Outcome, Transition, TriggerWatch};
use sample::{SampleKind, Sampler};

/// How often the samples are summarised in the journal while armed
/// (transitions are journaled as they happen).
const SUMMARY_EVERY_MS: i64 = 60_000;
/// Events returned with a watchdog's status.
const EVENTS_SHOWN: u32 = 200;
/// Submissions of one rollback or commit job before the watchdog gives up
/// (each after an agent stop interrupted the previous one).
const MAX_ATTEMPTS: u32 = 5;
/// Who the watchdog's jobs are submitted by, in the job list.
pub const SUBMITTER: &str = "watchdog";

type Reply<T> = oneshot::Sender<Result<T, ErrorBody>>;

/// Everything the loop acts on. Closed: its work is one `match`.
pub enum Event {
    /// Arm (or re-arm, or replace) the app's watchdog. `spec` is checked;
    /// `release` is the live release.
    Arm {
        req: ArmWatchdog,
        spec: WatchdogSpec,
        release: String,
        by: String,
        reply: Reply<WatchdogInfo>,
    },
    /// `golivectl go`: commit now.
    Confirm {
        req: ConfirmWatchdog,
        peer: String,
        reply: Reply<WatchdogInfo>,
    },
    Disarm {
        req: DisarmWatchdog,
        peer: String,
        reply: Reply<WatchdogInfo>,
    },
    /// A timer: something of the app is due (sample, window end, deadline).
    Tick(String),
    /// A probe's verdict, from the sample round of `generation` at `at`.
    ProbeResult {
        app: String,
        generation: u64,
        at: UnixMillis,
        probe: String,
        result: ProbeResult,
    },
    /// An access log's figures, from the sample round of `generation`.
    LogSample {
        app: String,
        generation: u64,
        at: UnixMillis,
        probe: String,
        stats: Result<WindowStats, String>,
    },
    /// The migrations a commit would apply (versions), or why unknown.
    Pending {
        app: String,
        generation: u64,
        pending: Result<Vec<u32>, String>,
    },
    /// The rollback or commit job of `generation` ended.
    JobFinished {
        app: String,
        generation: u64,
        job: Box<JobInfo>,
    },
    Shutdown,
}

/// The way into the loop, held by [`Agent`].
pub struct Handle {
    tx: mpsc::UnboundedSender<Event>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    /// The live trigger states, by watchdog row, published by the loop
    /// after each event: status reads them without asking the loop.
    live: Mutex<BTreeMap<i64, Vec<TriggerState>>>,
    /// The loop's task, taken at shutdown to wait for it.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Default for Handle {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Handle {
            tx,
            rx: Mutex::new(Some(rx)),
            live: Mutex::new(BTreeMap::new()),
            task: Mutex::new(None),
        }
    }
}

impl Handle {
    fn send(&self, e: Event) -> Result<(), ErrorBody> {
        self.tx.send(e).map_err(|_| {
            ErrorBody::new(
                ErrorCode::Internal,
                "the agent's watchdog is not running (the agent is stopping)",
            )
        })
    }
}

/// Starts the loop on the current runtime with the real probes.
pub fn start(agent: &Arc<Agent>) {
    let sampler = Arc::new(sample::Live(Arc::clone(agent)));
    start_with(agent, sampler, Clock::new());
}

/// [`start`] with a given sampler and clock (tests).
pub fn start_with(agent: &Arc<Agent>, sampler: Arc<dyn Sampler>, clock: Clock) {
    let Some(rx) = lock(&agent.watchdog.rx).take() else {
        return;
    };
    let task = tokio::spawn(run(Arc::clone(agent), rx, sampler, clock));
    *lock(&agent.watchdog.task) = Some(task);
}

/// Stops the loop and waits (bounded) for it: what is armed stays in the
/// journal and is re-armed at the next start.
pub async fn stop(agent: &Agent) {
    let _ = agent.watchdog.tx.send(Event::Shutdown);
    let task = lock(&agent.watchdog.task).take();
    if let Some(task) = task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wall time as the loop sees it: the wall clock when the loop started plus
/// tokio's monotonic time since, so deadlines do not jump with the system
/// clock and a paused-time test moves the loop's "now".
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_ms: UnixMillis,
}

impl Clock {
    pub fn new() -> Clock {
        Clock::at(now_millis())
    }

    /// A clock that reads `ms` now.
    pub fn at(ms: UnixMillis) -> Clock {
        Clock {
            base: Instant::now(),
            base_ms: ms,
        }
    }

    pub fn now(&self) -> UnixMillis {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }

    fn instant(&self, ms: UnixMillis) -> Instant {
        self.base + Duration::from_millis((ms - self.base_ms).max(0) as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

// ----- requests ---------------------------------------------------------------

fn bad(m: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, m)
}

/// `ArmWatchdog`: checked here against the host's config and what is live,
/// then armed by the loop.
pub async fn arm(agent: &Agent, by: &str, req: ArmWatchdog) -> Result<WatchdogInfo, ErrorBody> {
    names_ok(&req.app, &req.deployment)?;
    let app = &agent.known_app(&req.app)?;
    let host = &agent.config().agent.name;
    let spec = spec::check(&req.app, app, &req.spec)
        .map_err(|e| bad(format!("agent {host}: watchdog of app {}: {e}", req.app)))?;
    let layout = AppLayout::new(&app.root);
    let release = layout
        .current()
        .map_err(|e| bad(format!("agent {host}: cannot read the live release: {e}")))?
        .ok_or_else(|| {
            bad(format!(
                "agent {host}: app {} has no live release to watch; arm the watchdog after \
                 activating one",
                req.app
            ))
        })?;
    let back = agent
        .journal
        .rollback_target(&req.app, Some(&release), |id| {
            layout.release_dir(id).is_dir()
        })
        .map_err(crate::state::internal)?;
    if back.is_none() {
        return Err(bad(format!(
            "agent {host}: app {} has no earlier release on disk to roll back to (live: \
             {release}); a first install has nothing to return to, so it is not watched",
            req.app
        )));
    }
    let (reply, answer) = oneshot::channel();
    agent.watchdog.send(Event::Arm {
        req,
        spec,
        release,
        by: by.to_string(),
        reply,
    })?;
    wait(answer).await
}

/// `ConfirmWatchdog` (`golivectl go`).
pub async fn confirm(
    agent: &Agent,
    peer: &str,
    req: ConfirmWatchdog,
) -> Result<WatchdogInfo, ErrorBody> {
    names_ok(&req.app, &req.deployment)?;
    agent.known_app(&req.app)?;
    let (reply, answer) = oneshot::channel();
    agent.watchdog.send(Event::Confirm {
        req,
        peer: peer.to_string(),
        reply,
    })?;
    wait(answer).await
}

/// `DisarmWatchdog`.
pub async fn disarm(
    agent: &Agent,
    peer: &str,
    req: DisarmWatchdog,
) -> Result<WatchdogInfo, ErrorBody> {
    names_ok(&req.app, &req.deployment)?;
    agent.known_app(&req.app)?;
    let (reply, answer) = oneshot::channel();
    agent.watchdog.send(Event::Disarm {
        req,
        peer: peer.to_string(),
        reply,
    })?;
    wait(answer).await
}

/// `WatchdogStatus`: read from the journal and the loop's published
/// trigger states, without asking the loop.
pub fn status(
    agent: &Agent,
    req: &WatchdogStatusRequest,
) -> Result<Option<WatchdogInfo>, ErrorBody> {
    agent.known_app(&req.app)?;
    if let Some(d) = &req.deployment {
        golive_shared::names::check_deployment_id(d).map_err(bad)?;
    }
    info_of(agent, &req.app, req.deployment.as_deref(), EVENTS_SHOWN)
        .map_err(crate::state::internal)
}

/// The app's latest watchdog without events (the agent status summary).
pub fn summary(agent: &Agent, app: &str) -> Result<Option<WatchdogInfo>, ErrorBody> {
    info_of(agent, app, None, 0).map_err(crate::state::internal)
}

fn info_of(
    agent: &Agent,
    app: &str,
    deployment: Option<&str>,
    events: u32,
) -> crate::journal::Result<Option<WatchdogInfo>> {
    let Some(row) = agent.journal.watchdog_of(app, deployment)? else {
        return Ok(None);
    };
    let mut info = row.info;
    if events > 0 {
        info.events = agent.journal.watchdog_events(row.id, events)?;
    }
    if let Some(t) = lock(&agent.watchdog.live).get(&row.id) {
        info.triggers = t.clone();
    }
    Ok(Some(info))
}

fn names_ok(app: &str, deployment: &str) -> Result<(), ErrorBody> {
    golive_shared::names::check_app_name(app).map_err(bad)?;
    golive_shared::names::check_deployment_id(deployment).map_err(bad)
}

async fn wait(
    answer: oneshot::Receiver<Result<WatchdogInfo, ErrorBody>>,
) -> Result<WatchdogInfo, ErrorBody> {
    answer.await.unwrap_or_else(|_| {
        Err(ErrorBody::new(
            ErrorCode::Internal,
            "the agent's watchdog stopped before answering (the agent is stopping)",
        ))
    })
}

// ----- the rollback and the commit ---------------------------------------------

/// **The one place the watchdog rolls its host back**: the host rollback
/// job (`jobs::submit_rollback`, asked by the watchdog), the same job and
/// idempotency key (`rollback:DEPLOYMENT:HOST`) as the controller's and the
/// local CLI's, so whoever asks first runs it and the others follow it. No
/// lease is needed: a dead controller's lock must not keep a host from
/// rolling itself back. The rollback point recorded at activation says
/// where to and how (code only, downs or restore; the plan's restore
/// policy). An interrupted rollback is resumed at the agent's start, and a
/// failed one resumes from its failed step when asked again.
pub fn fire(
    agent: &Arc<Agent>,
    app: &str,
    deployment: &str,
    reason: &str,
) -> Result<JobInfo, String> {
    // A release activated outside a deployment's lock has no rollback
    // point: the host rollback then goes to the previous release.
    let point = agent
        .journal
        .rollback_point(app, deployment)
        .map_err(|e| format!("journal: {e}"))?;
    let req = golive_shared::protocol::HostRollback {
        app: app.to_string(),
        deployment: point.map(|p| p.deployment),
        to: None,
        reason: format!("watchdog of deployment {deployment}: {reason}"),
        requested_by: golive_shared::protocol::RollbackRequester::Watchdog,
        force: false,
        restore: None,
    };
    crate::jobs::submit_rollback(agent, SUBMITTER, crate::jobs::Via::Internal, req)
        .map_err(|e| e.message)
}

/// The commit's `migrate up` of the live release, as a job (journaled,
/// exclusive with the app's other jobs).
fn commit_job(
    agent: &Arc<Agent>,
    app: &str,
    deployment: &str,
    release: &str,
    attempt: u32,
) -> Result<JobInfo, String> {
    let key = job_key("commit", deployment, &agent.config().agent.name, attempt);
    let spec = JobSpec::Migrate(RunMigrations {
        app: app.to_string(),
        release: Some(release.to_string()),
        down_to: None,
        stop_before_contract: false,
        backup_first: true,
    });
    crate::jobs::submit_internal(agent, &key, &spec, SUBMITTER, Some(deployment)).map(|(j, _)| j)
}

/// `WHAT:DEPLOYMENT:HOST`, `:ATTEMPT` from the second; the host's name
/// made printable (idempotency keys are printable ASCII).
fn job_key(what: &str, deployment: &str, host: &str, attempt: u32) -> String {
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(60)
        .collect();
    match attempt {
        0 | 1 => format!("{what}:{deployment}:{host}"),
        n => format!("{what}:{deployment}:{host}:{n}"),
    }
}

// ----- the loop -----------------------------------------------------------------

/// Where an armed watchdog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Watching,
    /// Fired: the rollback job runs.
    RollingBack,
    /// Reading the pending migrations, then the commit job runs (if any).
    Committing,
}

/// One app's live watchdog.
struct Watch {
    id: i64,
    /// Distinguishes this watchdog's late samples and jobs from those of
    /// one it replaced.
    generation: u64,
    app: String,
    deployment: String,
    release: String,
    spec: WatchdogSpec,
    until: UnixMillis,
    confirm_by: Option<UnixMillis>,
    triggers: Vec<TriggerWatch>,
    phase: Phase,
    rollback_to: Option<String>,
    next_sample: UnixMillis,
    /// When the last sample round started.
    last_round: UnixMillis,
    /// Samples of the current round not back yet.
    in_flight: usize,
    last_summary: UnixMillis,
    /// Rollback or commit job submissions so far.
    attempts: u32,
}

impl Watch {
    /// When the loop must next act for it; `None` while a job or a pending
    /// check runs (their end is an event).
    fn due(&self) -> Option<UnixMillis> {
        if self.phase != Phase::Watching {
            return None;
        }
        let mut due = self.until;
        if let Some(c) = self.confirm_by {
            due = due.min(c);
        }
        if self.in_flight == 0 {
            due = due.min(self.next_sample);
            // A sample right when a true trigger would hold: it fires on
            // time, not at the next interval. (A due time the last round
            // already passed waits for the next interval.)
            if let Some(t) = self
                .triggers
                .iter()
                .filter_map(TriggerWatch::due)
                .filter(|&t| t > self.last_round)
                .min()
            {
                due = due.min(t);
            }
        }
        Some(due)
    }

    fn notice(&self, event: WatchdogState, reason: &str, at: UnixMillis) -> notify::Notice {
        notify::Notice {
            watchdog: Some(self.id),
            event,
            app: self.app.clone(),
            deployment: self.deployment.clone(),
            release: self.release.clone(),
            rollback_to: self.rollback_to.clone(),
            reason: reason.to_string(),
            detail: None,
            at,
        }
    }
}

/// Why a watchdog stops when its release is no longer live.
fn superseded(release: &str, live: Option<&str>) -> String {
    format!(
        "release {release} is no longer live ({} is); nothing of it left to watch",
        live.unwrap_or("nothing")
    )
}

/// What a tick finds to do for an app.
enum Due {
    Nothing,
    Fire(String),
    Commit(String),
    /// The watched release is no longer live.
    Superseded(String),
    /// Not judged (maintenance); the transitions to journal.
    Cleared(Vec<String>),
    /// A sample round: the probes to read, for this generation.
    Sample(BTreeSet<(String, SampleKind)>, u64),
}

struct Loop {
    agent: Arc<Agent>,
    tx: mpsc::UnboundedSender<Event>,
    sampler: Arc<dyn Sampler>,
    clock: Clock,
    watches: BTreeMap<String, Watch>,
    generations: u64,
}

/// The loop: resumes what the journal left unfinished, then handles events
/// until shutdown.
pub async fn run(
    agent: Arc<Agent>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    sampler: Arc<dyn Sampler>,
    clock: Clock,
) {
    let tx = agent.watchdog.tx.clone();
    let mut lp = Loop {
        agent,
        tx,
        sampler,
        clock,
        watches: BTreeMap::new(),
        generations: 0,
    };
    lp.resume();
    lp.publish();
    loop {
        let event = match lp.next_wake() {
            // Nothing armed: no timer, the channel alone.
            None => rx.recv().await,
            Some((at, app)) => tokio::select! {
                e = rx.recv() => e,
                () = tokio::time::sleep_until(lp.clock.instant(at)) => Some(Event::Tick(app)),
            },
        };
        let Some(event) = event else { break };
        if !lp.handle(event) {
            break;
        }
        lp.publish();
    }
}

impl Loop {
    /// The earliest due time among armed apps, and the app.
    fn next_wake(&self) -> Option<(UnixMillis, String)> {
        self.watches
            .values()
            .filter_map(|w| w.due().map(|at| (at, w.app.clone())))
            .min()
    }

    fn publish(&self) {
        let live = self
            .watches
            .values()
            .map(|w| (w.id, w.triggers.iter().map(TriggerWatch::state).collect()))
            .collect();
        *lock(&self.agent.watchdog.live) = live;
    }

    fn event(&self, w: &Watch, kind: &str, line: &str) {
        if let Err(e) = self
            .agent
            .journal
            .watchdog_event(w.id, self.clock.now(), kind, line)
        {
            tracing::error!(app = %w.app, deployment = %w.deployment, "cannot journal a watchdog event ({kind}: {line}): {e}");
        }
    }

    /// Everything the watchdog does, one event at a time. False: stop.
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Arm {
                req,
                spec,
                release,
                by,
                reply,
            } => {
                let _ = reply.send(self.arm(req, spec, release, &by));
            }
            Event::Confirm { req, peer, reply } => {
                let _ = reply.send(self.confirm(req, &peer));
            }
            Event::Disarm { req, peer, reply } => {
                let _ = reply.send(self.disarm(req, &peer));
            }
            Event::Tick(app) => self.tick(&app),
            Event::ProbeResult {
                app,
                generation,
                at,
                probe,
                result,
            } => self.sampled(&app, generation, at, &probe, SampleKind::Verdict, |c, _| {
                judge::of_probe(c, &result)
            }),
            Event::LogSample {
                app,
                generation,
                at,
                probe,
                stats,
            } => self.sampled(&app, generation, at, &probe, SampleKind::Log, |c, min| {
                judge::of_log(c, &stats, min)
            }),
            Event::Pending {
                app,
                generation,
                pending,
            } => self.pending(&app, generation, pending),
            Event::JobFinished {
                app,
                generation,
                job,
            } => self.job_finished(&app, generation, *job),
            Event::Shutdown => return false,
        }
        true
    }

    // ----- arming, confirming, disarming -----

    fn arm(
        &mut self,
        req: ArmWatchdog,
        spec: WatchdogSpec,
        release: String,
        by: &str,
    ) -> Result<WatchdogInfo, ErrorBody> {
        let host = self.agent.config().agent.name.clone();
        let mut replaces = None;
        if let Some(w) = self.watches.get(&req.app) {
            if w.deployment == req.deployment && w.spec == spec && w.release == release {
                // A controller arming again (it lost our answer): the same.
                return self.info(w);
            }
            if w.phase != Phase::Watching {
                return Err(ErrorBody::new(
                    ErrorCode::Conflict,
                    format!(
                        "agent {host}: the watchdog of deployment {} of app {} is {}; arm again \
                         once it has finished (golivectl status)",
                        w.deployment,
                        req.app,
                        match w.phase {
                            Phase::RollingBack => "rolling the host back",
                            _ => "committing",
                        }
                    ),
                ));
            }
            replaces = Some((w.id, format!("replaced by deployment {}", req.deployment)));
        }
        let now = self.clock.now();
        let until = now + spec.window_secs as i64 * 1000;
        let confirm_by = spec.confirm_within_secs.map(|s| now + s as i64 * 1000);
        let id = self
            .agent
            .journal
            .watchdog_arm(
                &NewWatchdog {
                    app: &req.app,
                    deployment: &req.deployment,
                    release: &release,
                    spec: &spec,
                    armed_by: by,
                    armed_at: now,
                    until,
                    confirm_by,
                },
                replaces.as_ref().map(|(id, why)| (*id, why.as_str())),
            )
            .map_err(crate::state::internal)?;
        self.generations += 1;
        let w = Watch {
            id,
            generation: self.generations,
            app: req.app.clone(),
            deployment: req.deployment.clone(),
            release: release.clone(),
            triggers: spec
                .triggers
                .iter()
                .cloned()
                .map(TriggerWatch::new)
                .collect(),
            spec,
            until,
            confirm_by,
            phase: Phase::Watching,
            rollback_to: None,
            next_sample: now,
            last_round: UnixMillis::MIN,
            in_flight: 0,
            last_summary: now,
            attempts: 0,
        };
        let line = format!(
            "armed by {by} for release {release}: window {} s{}, every {} ms, triggers: {}",
            w.spec.window_secs,
            w.spec
                .confirm_within_secs
                .map(|s| format!(", a go needed within {s} s"))
                .unwrap_or_default(),
            w.spec.interval_ms,
            w.triggers
                .iter()
                .map(TriggerWatch::title)
                .collect::<Vec<_>>()
                .join("; ")
        );
        self.event(&w, "armed", &line);
        tracing::info!(app = %w.app, deployment = %w.deployment, "watchdog of deployment {} {line}", w.deployment);
        let info = self.info(&w);
        self.watches.insert(req.app, w);
        info
    }

    fn confirm(&mut self, req: ConfirmWatchdog, peer: &str) -> Result<WatchdogInfo, ErrorBody> {
        let by = if req.by.is_empty() || req.by == peer {
            peer.to_string()
        } else {
            format!("{} (certificate {peer})", req.by)
        };
        match self.watches.get(&req.app) {
            Some(w) if w.deployment == req.deployment => match w.phase {
                Phase::Watching => {
                    let live = self.live_release(&req.app);
                    if live.as_deref() != Some(w.release.as_str()) {
                        let why = superseded(&w.release, live.as_deref());
                        self.finish(&req.app, WatchdogState::Disarmed, &why);
                        return Err(ErrorBody::new(
                            ErrorCode::Conflict,
                            format!(
                                "agent {}: nothing to confirm for deployment {}: {why}",
                                self.agent.config().agent.name,
                                req.deployment
                            ),
                        ));
                    }
                    let reason = format!("go from {by}");
                    self.commit(&req.app, &reason);
                    self.info_app(&req.app)
                }
                Phase::Committing => self.info_app(&req.app),
                Phase::RollingBack => Err(self.too_late(w)),
            },
            _ => self.ended(&req.app, &req.deployment, |row| match row.info.state {
                WatchdogState::Committed => Ok(()),
                WatchdogState::RolledBack | WatchdogState::RollbackFailed => Err(format!(
                    "too late: the watchdog fired{} and rolled the host back ({})",
                    row.info
                        .fired_at
                        .map(|t| format!(" at {}", golive_shared::timefmt::utc(t)))
                        .unwrap_or_default(),
                    row.info.reason.as_deref().unwrap_or("no reason recorded")
                )),
                other => Err(format!(
                    "it is {} ({}), so there is nothing to confirm",
                    other.as_str(),
                    row.info.reason.as_deref().unwrap_or("no reason recorded")
                )),
            }),
        }
    }

    fn disarm(&mut self, req: DisarmWatchdog, peer: &str) -> Result<WatchdogInfo, ErrorBody> {
        match self.watches.get(&req.app) {
            Some(w) if w.deployment == req.deployment => match w.phase {
                Phase::Watching => {
                    let reason = format!("disarmed by {peer}: {}", req.reason);
                    self.finish(&req.app, WatchdogState::Disarmed, &reason);
                    self.info_of_row(&req.app, &req.deployment)
                }
                Phase::RollingBack => Err(self.too_late(w)),
                Phase::Committing => Err(ErrorBody::new(
                    ErrorCode::Conflict,
                    format!(
                        "agent {}: the watchdog of deployment {} of app {} is committing; there \
                         is nothing left to disarm",
                        self.agent.config().agent.name,
                        w.deployment,
                        w.app
                    ),
                )),
            },
            _ => self.ended(&req.app, &req.deployment, |row| match row.info.state {
                WatchdogState::Disarmed => Ok(()),
                other => Err(format!(
                    "it is {} already ({})",
                    other.as_str(),
                    row.info.reason.as_deref().unwrap_or("no reason recorded")
                )),
            }),
        }
    }

    fn too_late(&self, w: &Watch) -> ErrorBody {
        ErrorBody::new(
            ErrorCode::Conflict,
            format!(
                "agent {}: too late: the watchdog of deployment {} of app {} fired and is \
                 rolling the host back to {}",
                self.agent.config().agent.name,
                w.deployment,
                w.app,
                w.rollback_to.as_deref().unwrap_or("?")
            ),
        )
    }

    /// A request about a watchdog that is not live: `accept` says whether
    /// its journaled state answers it (idempotent repeats) or why not.
    fn ended(
        &self,
        app: &str,
        deployment: &str,
        accept: impl Fn(&WatchdogRow) -> Result<(), String>,
    ) -> Result<WatchdogInfo, ErrorBody> {
        let host = &self.agent.config().agent.name;
        let row = self
            .agent
            .journal
            .watchdog_of(app, Some(deployment))
            .map_err(crate::state::internal)?
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "agent {host}: app {app} has no watchdog for deployment {deployment}; \
                         see golivectl status"
                    ),
                )
            })?;
        accept(&row).map_err(|why| {
            ErrorBody::new(
                ErrorCode::Conflict,
                format!(
                    "agent {host}: the watchdog of deployment {deployment} of app {app}: {why}"
                ),
            )
        })?;
        self.info_of_row(app, deployment)
    }

    fn info(&self, w: &Watch) -> Result<WatchdogInfo, ErrorBody> {
        let mut info = self
            .agent
            .journal
            .watchdog(w.id)
            .map_err(crate::state::internal)?
            .map(|r| r.info)
            .ok_or_else(|| crate::state::internal("the watchdog's row is missing"))?;
        info.triggers = w.triggers.iter().map(TriggerWatch::state).collect();
        Ok(info)
    }

    fn info_app(&self, app: &str) -> Result<WatchdogInfo, ErrorBody> {
        match self.watches.get(app) {
            Some(w) => self.info(w),
            None => Err(crate::state::internal("the watchdog ended meanwhile")),
        }
    }

    fn info_of_row(&self, app: &str, deployment: &str) -> Result<WatchdogInfo, ErrorBody> {
        self.agent
            .journal
            .watchdog_of(app, Some(deployment))
            .map_err(crate::state::internal)?
            .map(|r| r.info)
            .ok_or_else(|| crate::state::internal("the watchdog's row is missing"))
    }

    // ----- watching -----

    fn tick(&mut self, app: &str) {
        let now = self.clock.now();
        match self.due_now(app, now) {
            Due::Nothing => {}
            Due::Fire(reason) => self.fire(app, &reason),
            Due::Commit(reason) => self.commit(app, &reason),
            Due::Superseded(reason) => self.finish(app, WatchdogState::Disarmed, &reason),
            Due::Cleared(lines) => {
                for line in lines {
                    self.event(&self.watches[app], "trigger", &line);
                }
            }
            Due::Sample(wanted, generation) => {
                for (probe, kind) in wanted {
                    let (sampler, tx) = (Arc::clone(&self.sampler), self.tx.clone());
                    let app = app.to_string();
                    tokio::spawn(async move {
                        let event = match kind {
                            SampleKind::Verdict => Event::ProbeResult {
                                result: sampler.verdict(&app, &probe).await,
                                app,
                                generation,
                                at: now,
                                probe,
                            },
                            SampleKind::Log => Event::LogSample {
                                stats: sampler.log(&app, &probe).await,
                                app,
                                generation,
                                at: now,
                                probe,
                            },
                        };
                        let _ = tx.send(event);
                    });
                }
            }
        }
    }

    /// What is due for `app` at `now`, with the watch's timers moved on.
    fn due_now(&mut self, app: &str, now: UnixMillis) -> Due {
        let live = self.live_release(app);
        let Some(w) = self.watches.get_mut(app) else {
            return Due::Nothing;
        };
        if w.phase != Phase::Watching {
            return Due::Nothing;
        }
        match w.due() {
            Some(due) if now >= due => {}
            _ => return Due::Nothing,
        }
        // Acting for a release that is no longer live (a controller rolled
        // back, another release was activated) would roll back, or migrate
        // for, the wrong one.
        if live.as_deref() != Some(w.release.as_str()) {
            return Due::Superseded(superseded(&w.release, live.as_deref()));
        }
        if let Some(by) = w.confirm_by
            && now >= by
        {
            return Due::Fire(format!(
                "dead-man: no go before the deadline ({}, {} s after arming)",
                golive_shared::timefmt::utc(by),
                w.spec.confirm_within_secs.unwrap_or(0)
            ));
        }
        if now >= w.until {
            return Due::Commit(format!(
                "the window ended at {} without a trigger",
                golive_shared::timefmt::utc(w.until)
            ));
        }
        w.next_sample = now + w.spec.interval_ms as i64;
        if w.in_flight > 0 {
            // The probes are slower than the interval: this round is skipped.
            return Due::Nothing;
        }
        w.last_round = now;
        // golive's own maintenance is not an outage: nothing is judged.
        if let Ok(Some(m)) = self.agent.journal.maintenance(app) {
            let note = format!(
                "not judged: the app is in golive's maintenance since {} ({})",
                golive_shared::timefmt::utc(m.on_since),
                m.reason
            );
            let mut cleared = Vec::new();
            for t in &mut w.triggers {
                if t.observe(now, Outcome::NotJudged(note.clone()), w.spec.error_limit)
                    == Some(Transition::Cleared)
                {
                    cleared.push(format!("{}: cleared ({note})", t.title()));
                }
            }
            return Due::Cleared(cleared);
        }
        let wanted: BTreeSet<(String, SampleKind)> = w
            .triggers
            .iter()
            .map(|t| {
                let kind = if t.trigger.condition.reads_log() {
                    SampleKind::Log
                } else {
                    SampleKind::Verdict
                };
                (t.trigger.probe.clone(), kind)
            })
            .collect();
        w.in_flight = wanted.len();
        Due::Sample(wanted, w.generation)
    }

    /// The release `ROOT/current` points to (read each time: a controller
    /// may have switched it).
    fn live_release(&self, app: &str) -> Option<String> {
        let config = self.agent.config();
        let root = &config.app(app)?.root;
        AppLayout::new(root).current().ok().flatten()
    }

    /// A sample came back: judge the triggers that read it, journal their
    /// transitions, fire when one holds.
    fn sampled(
        &mut self,
        app: &str,
        generation: u64,
        at: UnixMillis,
        probe: &str,
        kind: SampleKind,
        outcome: impl Fn(&Condition, u64) -> Outcome,
    ) {
        let min_requests = self
            .agent
            .config()
            .app(app)
            .and_then(|a| a.probes.iter().find(|p| p.name() == probe))
            .map_or(0, |p| match p {
                golive_shared::config::ProbeConfig::AccessLog(l) => l.min_requests,
                _ => 0,
            });
        let Some(w) = self.watches.get_mut(app) else {
            return;
        };
        if w.generation != generation {
            return;
        }
        w.in_flight = w.in_flight.saturating_sub(1);
        if w.phase != Phase::Watching {
            return;
        }
        let mut lines = Vec::new();
        let mut held = None;
        for t in &mut w.triggers {
            let reads_log = t.trigger.condition.reads_log();
            if t.trigger.probe != probe || reads_log != (kind == SampleKind::Log) {
                continue;
            }
            let o = outcome(&t.trigger.condition, min_requests);
            let value = match &o {
                Outcome::True(v) | Outcome::False(v) | Outcome::NotJudged(v) => v.clone(),
                Outcome::Unknown(e) => format!("error: {e}"),
            };
            match t.observe(at, o, w.spec.error_limit) {
                Some(Transition::BecameTrue) => {
                    lines.push(format!("{}: condition true ({value})", t.title()))
                }
                Some(Transition::Cleared) => {
                    lines.push(format!("{}: cleared ({value})", t.title()))
                }
                Some(Transition::ErrorsCount(n)) => lines.push(format!(
                    "{}: {n} probe errors in a row count as the condition holding ({value})",
                    t.title()
                )),
                None => {}
            }
            if held.is_none() && t.holds(at) {
                held = Some(format!(
                    "trigger {} held: {} on probe {} for {} s (last sample: {value})",
                    t.trigger.name,
                    t.trigger.condition.describe(),
                    t.trigger.probe,
                    (at - t.true_since.unwrap_or(at)) / 1000
                ));
            }
        }
        let summary = (w.in_flight == 0 && at - w.last_summary >= SUMMARY_EVERY_MS).then(|| {
            w.last_summary = at;
            w.triggers
                .iter()
                .map(|t| {
                    format!(
                        "{}: {}",
                        t.trigger.name,
                        t.last_value.as_deref().unwrap_or("no sample yet")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        let w = &self.watches[app];
        for line in &lines {
            self.event(w, "trigger", line);
        }
        if let Some(s) = summary {
            self.event(w, "samples", &s);
        }
        if let Some(reason) = held {
            self.fire(app, &reason);
        }
    }

    // ----- firing -----

    /// Journals the fire (with the release it returns to), then submits
    /// the rollback through [`fire`] and tells the webhook.
    fn fire(&mut self, app: &str, reason: &str) {
        let now = self.clock.now();
        let Some(w) = self.watches.get_mut(app) else {
            return;
        };
        w.phase = Phase::RollingBack;
        let layout = self
            .agent
            .config()
            .app(app)
            .map(|a| AppLayout::new(&a.root));
        w.rollback_to = layout.as_ref().and_then(|l| {
            self.agent
                .journal
                .rollback_target(app, Some(&w.release), |id| l.release_dir(id).is_dir())
                .ok()
                .flatten()
        });
        if let Err(e) =
            self.agent
                .journal
                .watchdog_fired(w.id, reason, w.rollback_to.as_deref(), now)
        {
            tracing::error!(app = %app, "cannot journal the watchdog's fire: {e}");
        }
        let w = &self.watches[app];
        self.event(w, "fired", reason);
        tracing::warn!(app = %app, deployment = %w.deployment, "watchdog of deployment {} fired: {reason}; rolling back from {} to {}",
            w.deployment,
            w.release,
            w.rollback_to.as_deref().unwrap_or("(none)"));
        notify::send(&self.agent, w.notice(WatchdogState::Fired, reason, now));
        self.submit(app);
    }

    /// Submits (again) the job of the watchdog's phase: the rollback, or the
    /// commit's migrations; a waiter reports its end as an event.
    fn submit(&mut self, app: &str) {
        let Some(w) = self.watches.get_mut(app) else {
            return;
        };
        if w.phase == Phase::RollingBack && w.rollback_to.is_none() {
            let reason = format!(
                "no earlier release of {app} is on disk to roll back to: the failing release {} \
                 stays live",
                w.release
            );
            self.finish(app, WatchdogState::RollbackFailed, &reason);
            return;
        }
        if w.attempts >= MAX_ATTEMPTS {
            let (state, what) = match w.phase {
                Phase::RollingBack => (WatchdogState::RollbackFailed, "rollback"),
                _ => (WatchdogState::CommitFailed, "commit"),
            };
            let reason = format!(
                "the {what} job was interrupted {MAX_ATTEMPTS} times by agent stops; finish it by \
                 hand"
            );
            self.finish(app, state, &reason);
            return;
        }
        w.attempts += 1;
        let commit = w.phase == Phase::Committing;
        let submitted = if commit {
            commit_job(&self.agent, app, &w.deployment, &w.release, w.attempts)
        } else {
            let reason = self
                .agent
                .journal
                .watchdog(w.id)
                .ok()
                .flatten()
                .and_then(|r| r.info.reason)
                .unwrap_or_default();
            fire(&self.agent, app, &w.deployment, &reason)
        };
        match submitted {
            Ok(job) => {
                if let Err(e) = self
                    .agent
                    .journal
                    .watchdog_job(w.id, commit, job.id, w.attempts)
                {
                    tracing::error!(app = %app, "cannot journal the watchdog's job: {e}");
                }
                let line = format!(
                    "{} job {} submitted ({})",
                    if commit { "commit" } else { "rollback" },
                    job.id,
                    job.idempotency_key
                );
                let w = &self.watches[app];
                self.event(w, "job", &line);
                self.wait_job(app, w.generation, job.id);
            }
            Err(e) => {
                let (state, what) = if commit {
                    (WatchdogState::CommitFailed, "commit")
                } else {
                    (WatchdogState::RollbackFailed, "rollback")
                };
                self.finish(
                    app,
                    state,
                    &format!("the {what} job could not be submitted: {e}"),
                );
            }
        }
    }

    /// A task that waits (on the job-change signal, no timer) for `job` to
    /// end and reports it.
    fn wait_job(&self, app: &str, generation: u64, job: u64) {
        let (agent, tx, app) = (Arc::clone(&self.agent), self.tx.clone(), app.to_string());
        tokio::spawn(async move {
            let mut changes = agent.subscribe();
            loop {
                changes.borrow_and_update();
                match agent.journal.job(job) {
                    Ok(Some(j)) if j.state.is_final() => {
                        let _ = tx.send(Event::JobFinished {
                            app,
                            generation,
                            job: Box::new(j),
                        });
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!(app = %app, job, "the watchdog cannot read job {job} from the journal: {e}");
                        return;
                    }
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn job_finished(&mut self, app: &str, generation: u64, job: JobInfo) {
        let Some(w) = self.watches.get(app) else {
            return;
        };
        if w.generation != generation {
            return;
        }
        let commit = w.phase == Phase::Committing;
        match job.state {
            JobState::Succeeded => {
                let line = match &job.result {
                    Some(JobResult::RolledBack { from, to, .. }) => format!(
                        "rolled back from {} to {to} (job {})",
                        from.as_deref().unwrap_or("none"),
                        job.id
                    ),
                    Some(JobResult::HostRolledBack(r)) => format!(
                        "rolled back from {} to {} (job {}); database: {}{}",
                        r.from.as_deref().unwrap_or("none"),
                        r.to,
                        job.id,
                        r.database.name(),
                        r.operator_action
                            .as_deref()
                            .map(|a| format!("; OPERATOR ACTION: {a}"))
                            .unwrap_or_default()
                    ),
                    Some(JobResult::Migrated { applied, .. }) if applied.is_empty() => {
                        format!("committed; no migration was pending (job {})", job.id)
                    }
                    Some(JobResult::Migrated { applied, .. }) => format!(
                        "committed; migration(s) {} applied (job {})",
                        applied
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        job.id
                    ),
                    _ => format!("job {} succeeded", job.id),
                };
                let state = if commit {
                    WatchdogState::Committed
                } else {
                    WatchdogState::RolledBack
                };
                self.finish(app, state, &line);
            }
            JobState::Interrupted => {
                let w = &self.watches[app];
                self.event(
                    w,
                    "job",
                    &format!(
                        "job {} was interrupted by an agent stop; submitting it again",
                        job.id
                    ),
                );
                self.submit(app);
            }
            _ => {
                let error = job.error.as_deref().map(error_headline).unwrap_or("failed");
                let state = if commit {
                    WatchdogState::CommitFailed
                } else {
                    WatchdogState::RollbackFailed
                };
                self.finish(app, state, &format!("job {} failed: {error}", job.id));
            }
        }
    }

    // ----- committing -----

    /// The window ended quietly, or a go came: pending migrations of the
    /// live release (the `contract` ones a deploy held back) run now.
    fn commit(&mut self, app: &str, reason: &str) {
        let Some(w) = self.watches.get_mut(app) else {
            return;
        };
        w.phase = Phase::Committing;
        if let Err(e) = self.agent.journal.watchdog_state(
            w.id,
            WatchdogState::Committing,
            Some(reason),
            self.clock.now(),
        ) {
            tracing::error!(app = %app, "cannot journal the commit: {e}");
        }
        let w = &self.watches[app];
        self.event(w, "commit", reason);
        tracing::info!(app = %app, deployment = %w.deployment, release = %w.release, "watchdog of deployment {} commits release {}: {reason}", w.deployment, w.release);
        self.check_pending(app);
    }

    /// Reads the live release's pending migrations on the blocking pool
    /// (database clients); the answer is an event.
    fn check_pending(&self, app: &str) {
        let w = &self.watches[app];
        let declares = self
            .agent
            .config()
            .app(app)
            .is_some_and(|a| a.migrations.is_some());
        let (tx, generation, name) = (self.tx.clone(), w.generation, app.to_string());
        if !declares {
            let _ = tx.send(Event::Pending {
                app: name,
                generation,
                pending: Ok(Vec::new()),
            });
            return;
        }
        let config = self.agent.config().clone();
        let req = MigrationStatusRequest {
            app: name.clone(),
            release: Some(w.release.clone()),
        };
        tokio::spawn(async move {
            let pending = tokio::task::spawn_blocking(move || {
                crate::migrate::release_status(&config, &req)
                    .map(|s| s.pending.iter().map(|p| p.version).collect())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the migration status stopped: {e}")));
            let _ = tx.send(Event::Pending {
                app: name,
                generation,
                pending,
            });
        });
    }

    fn pending(&mut self, app: &str, generation: u64, pending: Result<Vec<u32>, String>) {
        let Some(w) = self.watches.get(app) else {
            return;
        };
        if w.generation != generation || w.phase != Phase::Committing {
            return;
        }
        match pending {
            Ok(p) if p.is_empty() => self.finish(
                app,
                WatchdogState::Committed,
                "committed; no migration was pending",
            ),
            Ok(p) => {
                let line = format!(
                    "pending migration(s) {} run now",
                    p.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                );
                self.event(w, "commit", &line);
                self.submit(app);
            }
            Err(e) => {
                self.event(
                    w,
                    "commit",
                    &format!("cannot read the pending migrations ({e}); running migrate up"),
                );
                self.submit(app);
            }
        }
    }

    // ----- ending -----

    /// Journals a final state, tells the webhook, forgets the watch.
    fn finish(&mut self, app: &str, state: WatchdogState, what: &str) {
        let Some(w) = self.watches.remove(app) else {
            return;
        };
        let now = self.clock.now();
        // Why it fired (or commits) stays the reason; what happened next is
        // an event, and a failure is added to the reason.
        let why = self
            .agent
            .journal
            .watchdog(w.id)
            .ok()
            .flatten()
            .and_then(|r| r.info.reason);
        let reason = match (state, &why) {
            (WatchdogState::RolledBack | WatchdogState::Committed, Some(why)) => why.clone(),
            (WatchdogState::RollbackFailed | WatchdogState::CommitFailed, Some(why)) => {
                format!("{why}; {what}")
            }
            _ => what.to_string(),
        };
        if let Err(e) = self
            .agent
            .journal
            .watchdog_state(w.id, state, Some(&reason), now)
        {
            tracing::error!(app = %app, "cannot journal the watchdog's end: {e}");
        }
        if state == WatchdogState::Committed
            && let Err(e) = self.agent.journal.set_rollback_point_state(
                app,
                &w.deployment,
                golive_shared::protocol::PointState::Committed,
                None,
                None,
                now,
            )
        {
            tracing::error!(app = %app, deployment = %w.deployment, "cannot mark the rollback point of deployment {} committed: {e}", w.deployment);
        }
        self.event(&w, state.as_str(), what);
        let line = format!(
            "watchdog of deployment {} is {}: {what}",
            w.deployment,
            state.as_str()
        );
        let (deployment, state_name) = (w.deployment.as_str(), state.as_str());
        match state {
            WatchdogState::RollbackFailed | WatchdogState::CommitFailed => {
                tracing::error!(app, deployment, state = state_name, "{line}")
            }
            WatchdogState::Disarmed => {
                tracing::warn!(app, deployment, state = state_name, "{line}")
            }
            _ => tracing::info!(app, deployment, state = state_name, "{line}"),
        }
        if matches!(
            state,
            WatchdogState::RolledBack
                | WatchdogState::RollbackFailed
                | WatchdogState::Committed
                | WatchdogState::CommitFailed
        ) {
            let mut notice = w.notice(state, &reason, now);
            notice.detail = Some(what.to_string());
            notify::send(&self.agent, notice);
        }
    }

    // ----- after a restart -----

    /// Re-arms what the journal says was armed, and finishes fires and
    /// commits whose job an agent stop interrupted.
    fn resume(&mut self) {
        let rows = match self.agent.journal.watchdogs_unfinished() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("cannot read the armed watchdogs from the journal: {e}");
                return;
            }
        };
        let now = self.clock.now();
        for row in rows {
            let info = row.info;
            self.generations += 1;
            let phase = match info.state {
                WatchdogState::Fired => Phase::RollingBack,
                WatchdogState::Committing => Phase::Committing,
                _ => Phase::Watching,
            };
            let mut w = Watch {
                id: row.id,
                generation: self.generations,
                app: info.app.clone(),
                deployment: info.deployment.clone(),
                release: info.release.clone(),
                triggers: info
                    .spec
                    .triggers
                    .iter()
                    .cloned()
                    .map(TriggerWatch::new)
                    .collect(),
                spec: info.spec.clone(),
                until: info.until,
                confirm_by: info.confirm_by,
                phase,
                rollback_to: info.rollback_to.clone(),
                next_sample: now,
                last_round: UnixMillis::MIN,
                in_flight: 0,
                last_summary: now,
                attempts: row.attempts,
            };
            let app = info.app.clone();
            if self.agent.config().app(&app).is_none() {
                self.watches.insert(app.clone(), w);
                self.finish(
                    &app,
                    WatchdogState::Disarmed,
                    "the app is no longer declared in the agent's config",
                );
                continue;
            }
            match phase {
                Phase::Watching => {
                    // Nothing was watched while the agent was down: the
                    // release is watched for at least the longest trigger
                    // and one interval more before it may commit.
                    let longest = w
                        .spec
                        .triggers
                        .iter()
                        .map(|t| t.for_secs)
                        .max()
                        .unwrap_or(0);
                    let least = now + longest as i64 * 1000 + w.spec.interval_ms as i64;
                    let line = if w.until < least {
                        w.until = least;
                        let _ = self.agent.journal.watchdog_until(w.id, least);
                        format!(
                            "re-armed after the agent restarted; the window had (almost) ended \
                             unwatched, so it is extended to {} (the longest trigger and one \
                             interval)",
                            golive_shared::timefmt::utc(least)
                        )
                    } else {
                        format!(
                            "re-armed after the agent restarted; {} s of the window remain (until {})",
                            (w.until - now) / 1000,
                            golive_shared::timefmt::utc(w.until)
                        )
                    };
                    self.event(&w, "armed", &line);
                    tracing::info!(app = %app, deployment = %w.deployment, "watchdog of deployment {}: {line}", w.deployment);
                    self.watches.insert(app, w);
                }
                Phase::RollingBack | Phase::Committing => {
                    let job = if phase == Phase::RollingBack {
                        info.rollback_job
                    } else {
                        info.commit_job
                    };
                    let generation = w.generation;
                    self.watches.insert(app.clone(), w);
                    match job {
                        // Interrupted before the job was journaled.
                        None if phase == Phase::Committing => self.check_pending(&app),
                        None => self.submit(&app),
                        // Its end (or its interruption) comes back as an event.
                        Some(job) => self.wait_job(&app, generation, job),
                    }
                }
            }
        }
    }
}
