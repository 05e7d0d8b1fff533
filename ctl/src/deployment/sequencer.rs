//! The sequencer: runs a recorded deployment (new or resumed) on its hosts.
//!
//! A deployment goes in phases so that the live release is touched as late
//! as possible and the way back is always known:
//!
//! 1. reach every agent (hello: protocol and role), check the app is declared
//!    (`deployment/start.rs`, before the deployment is recorded);
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
//! It interprets the compiled deployment (issue 14): `program` turns its
//! steps, in compiled order, into phases, each step name dispatched to its
//! one `Handler`; a step with no handler (or out of its place) refuses the
//! deployment before anything is sent, and the executor refuses a step the
//! compiled deployment does not list. Every step goes through the executor,
//! so a resume replays what is journaled (see `executor.rs` for the rule
//! per kind of step).
//!
//! Every job carries the idempotency key `DEPLOYMENT:HOST:STEP`, so a repeat
//! never runs a step twice. The sequencer knows nothing of TLS: it reaches
//! each host through its [`crate::transport::Link`], which its unit tests
//! (`sequencer_tests.rs`) fill with a scripted agent on paused time.
//!
//! Beside it: [`super::leases`] (locks, heartbeat), [`super::verify`]
//! (probes, gate, watchdog arming), [`super::waves_run`] (waves, soak,
//! switch-back), [`super::downtime`] (maintenance and unavailability).

use golive_shared::protocol::{
    CreateBackup, JobInfo, JobResult, JobSpec, JobState, ListFlagsRequest, MigrationStatusRequest,
    ProbeResult, Request, Response, RunMigrations, error_headline,
};
use golive_shared::protocol::{ErrorCode, HostRollback, RollbackRequester};
use serde_json::json;
use tokio::sync::Notify;

use crate::client::ClientError;
use crate::deployment::downtime::{
    Downtime, Unavailable, downtime_of, in_maintenance_names, report_downtime, still_on,
};
use crate::deployment::error::Outcome;
use crate::deployment::executor::{Recorded, Scope};
use crate::deployment::leases::{Lease, LeaseError, RELEASE_AT_ONCE};
use crate::deployment::verify::{probe_before, take_before_early, verify_and_arm, watchdogs_fired};
use crate::deployment::waves_run::{run_waves, schema_after_switch_back, switch_back_if_failed};
use crate::deployment::{DeployError, Deployment, Executor, StepError, StepRequest};
use crate::jobs::{Deadline, LOST, human_secs, job_ok, run_job_within, step};
use crate::journal::Journal;
use crate::output::{Exit, Out};
use crate::plan::{self, Plan, PreDeployBackup, Source};
use crate::transport::Link;

/// Why this deployment goes into maintenance, or `None` for a
/// zero-downtime switch: the plan asks for it, or the new release has
/// pending migrations (the old code must not run against a changing schema).
/// A first install (no host has a live release) has no users to keep off a
/// changing schema: its migrations need no maintenance (issue 12).
pub(crate) fn maintenance_reason(
    plan: &Plan,
    pending: usize,
    first_install: bool,
) -> Option<String> {
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
pub(crate) async fn on_every_host(
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
            Err(e) => {
                let e = e.to_string();
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
pub(crate) async fn job_step(
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
pub(crate) fn job_verdict(r: &Result<JobInfo, ClientError>) -> Result<String, String> {
    match r {
        Ok(job) => job_ok(Ok(job.clone())).map_err(|f| f.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// [`job_step`]'s answer as [`job_ok`] gives it; a journal failure is a
/// failure (the deployment stops: every later step refuses).
pub(crate) fn step_ok(
    r: Result<Result<JobInfo, ClientError>, StepError>,
) -> Result<String, DeployError> {
    match r {
        Ok(job) => job_ok(job),
        Err(e) => Err(e.into()),
    }
}

/// A maintenance step (`maintenance-on`, `maintenance-off`,
/// `maintenance-off-after-switch-back`) through the executor.
pub(crate) async fn maintenance_step(
    exec: &Executor<'_>,
    out: Out,
    host: &plan::Host,
    name: &str,
    lease: &Lease,
) -> Result<crate::jobs::Switched, DeployError> {
    match job_step(exec, out, host, name, lease, LOST, None).await {
        Ok(job) => crate::jobs::switched(job),
        Err(e) => Err(e.into()),
    }
}

/// The host's feature-flag values, or none when the app declares no flags.
pub(crate) async fn flag_values(
    client: &Link,
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
        Err(ClientError::Agent { body, .. }) if body.code == ErrorCode::NotDeclared => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// The staged release's pending migrations on one host (none when the app
/// declares no migrations): what runs before the switch, and what waits for
/// the release's commit (`contract` ones and those after them, when the
/// plan keeps them for the commit; issue 13).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    pub(crate) now: Vec<String>,
    pub(crate) at_commit: Vec<String>,
}

pub(crate) async fn pending_migrations(
    client: &Link,
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
        Err(ClientError::Agent { body, .. }) if body.code == ErrorCode::NotDeclared => {
            Ok(Pending::default())
        }
        Err(e) => Err(e),
    }
}

/// The release's commit (issue 13, with no watchdog to wait for): a
/// verified backup, then every pending migration, `contract` ones included,
/// on every host.
pub(crate) async fn commit_migrations(
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
pub(crate) async fn maintenance_on_all(
    out: Out,
    exec: &Executor<'_>,
    plan: &Plan,
    leases: &[Lease],
    why: &str,
    on: &mut Vec<usize>,
) -> Result<(), DeployError> {
    for (i, (host, lease)) in plan.hosts.iter().zip(leases).enumerate() {
        let r = maintenance_step(exec, out, host, "maintenance-on", lease).await;
        match r {
            Ok(s) => {
                on.push(i);
                let detail = format!("{} ({why})", s.describe(true));
                step(out, &host.name, "maintenance-on", "ok", &detail);
            }
            Err(e) => {
                // A refusal ran nothing; any other failure may have left the
                // host in maintenance (the agent fails safe): undo it too.
                if e.exit() != Exit::Usage {
                    on.push(i);
                }
                step(out, &host.name, "maintenance-on", "failed", &e.to_string());
                let (_, still) = maintenance_off_all(
                    out,
                    exec,
                    plan,
                    leases,
                    on,
                    "",
                    &mut Unavailable::default(),
                )
                .await;
                let tail = if still.is_empty() {
                    "maintenance is off again everywhere".to_string()
                } else {
                    format!(
                        "MAINTENANCE STILL ON: {}; run `golivectl maintenance off PLAN`",
                        still.join("; ")
                    )
                };
                return Err(DeployError::MaintenanceOn {
                    host: host.name.clone(),
                    source: Box::new(e),
                    tail,
                });
            }
        }
    }
    Ok(())
}

/// Turns maintenance off on the hosts in `on`, removing each that succeeds;
/// returns the longest downtime among them and the failures (`HOST: why`).
/// What each agent sampled as its maintenance went off goes to
/// `unavailable` (issue 12, part 15).
pub(crate) async fn maintenance_off_all(
    out: Out,
    exec: &Executor<'_>,
    plan: &Plan,
    leases: &[Lease],
    on: &mut Vec<usize>,
    attempt: &str,
    unavailable: &mut Unavailable,
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
                unavailable.add_maintenance_off(&host.name, &s);
                if let Some(ms) = s.downtime_ms {
                    longest = Some(longest.unwrap_or(0).max(ms));
                }
            }
            Err(e) => {
                let e = e.to_string();
                step(out, &host.name, "maintenance-off", "failed", &e);
                failures.push(format!("{}: {e}", host.name));
                still.push(i);
            }
        }
    }
    *on = still;
    (longest, failures)
}

/// Phase 2: the app lock on every host, `[deploy] parallel` at a time,
/// each a live `lock` step through the executor (taken again on a resume:
/// a lock is live state); or on none: after a refusal no more are asked
/// for and those taken are released. `Err` names the first host in plan
/// order that refused.
pub(crate) async fn lock_hosts(
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
) -> Result<Vec<Lease>, DeployError> {
    let taken = crate::fanout::until(
        plan.parallel,
        &plan.hosts,
        |h| {
            exec.live(
                &h.name,
                "lock",
                || Lease::acquire(&h.client, &plan.app, id, plan.lock_ttl_secs),
                |r| match r {
                    Ok(_) => (
                        "ok",
                        format!("held for deployment {id}, lease {} s", plan.lock_ttl_secs),
                    ),
                    Err(e) => ("failed", e.to_string()),
                },
            )
        },
        |r| !matches!(r, Ok(Ok(_))),
    )
    .await;
    let mut leases = Vec::new();
    let mut refused: Option<DeployError> = None;
    for (host, r) in plan.hosts.iter().zip(taken) {
        match r {
            Some(Ok(Ok(l))) => leases.push(l),
            Some(Ok(Err(source))) if refused.is_none() => {
                refused = Some(
                    LeaseError::Refused {
                        app: plan.app.clone(),
                        host: host.name.clone(),
                        source: Box::new(source),
                    }
                    .into(),
                );
            }
            Some(Err(e)) if refused.is_none() => refused = Some(e.into()),
            Some(_) | None => {}
        }
    }
    match refused {
        None => Ok(leases),
        Some(e) => {
            unlock_all(exec, leases).await;
            Err(e)
        }
    }
}

/// Releases every lease, [`RELEASE_AT_ONCE`] hosts at a time, each an
/// `unlock` step through the executor. A lock is released even when the
/// journal can no longer take its step (the deployment stopped); that of a
/// host lost in the deployment is left to run out (its step skipped).
pub(crate) async fn unlock_all(exec: &Executor<'_>, leases: Vec<Lease>) {
    crate::fanout::all(RELEASE_AT_ONCE, leases, |lease| async move {
        let host = lease.client.host.clone();
        if exec.lost(&host).is_some() {
            let _ = exec
                .live(
                    &host,
                    "unlock",
                    || async { Ok::<(), ()>(()) },
                    |_| ("skipped", String::new()),
                )
                .await;
            lease.abandon();
            return;
        }
        let held = std::cell::RefCell::new(Some(lease));
        let _ = exec
            .live(
                &host,
                "unlock",
                || async {
                    let lease = held.borrow_mut().take();
                    if let Some(lease) = lease {
                        lease.release().await;
                    }
                    Ok::<(), ()>(())
                },
                |_| ("ok", "released (or left to its lease's end)".to_string()),
            )
            .await;
        let lease = held.borrow_mut().take();
        if let Some(lease) = lease {
            lease.release().await;
        }
    })
    .await;
}

/// The host's feature-flag values (the rollback point's), each host a
/// `read flags` record step: a resume reads back the values its start
/// read, so the rollback point keeps them.
pub(crate) async fn read_flags(
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
) -> Result<(), DeployError> {
    let read = crate::fanout::until(
        plan.parallel,
        &plan.hosts,
        |host| async move {
            let r = exec
                .record(
                    Scope::Host(&host.name),
                    "read flags",
                    || flag_values(&host.client, &plan.app),
                    |r| match r {
                        Ok(v) => ("ok", format!("{} flag(s)", v.len())),
                        Err(e) => ("failed", e.to_string()),
                    },
                )
                .await?;
            match r {
                Recorded::Before(_) => Ok(()),
                Recorded::Now(Ok(values)) => {
                    // The values read first stay (an older record).
                    let first = journal.flags(id, &host.name).is_ok_and(|v| v.is_empty());
                    if first {
                        let _ = journal.save_flags(id, &host.name, &values);
                    }
                    Ok(())
                }
                Recorded::Now(Err(source)) => Err(DeployError::Flags {
                    host: host.name.clone(),
                    source: Box::new(source),
                }),
            }
        },
        Result::is_err,
    )
    .await;
    // The first failure in plan order; a host not asked follows one.
    read.into_iter()
        .flatten()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// What runs a compiled step (issue 14): one handler for each step name
/// `compile` can emit. The sequencer dispatches every step of the compiled
/// deployment to its handler (see [`program`]), so nothing runs that the
/// compiled deployment (and so the dry run) does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handler {
    Lock,
    ReadFlags,
    Upload,
    Stage,
    ProbeBefore,
    Migrations,
    MaintenanceOn,
    Backup,
    Migrate,
    Activate,
    MaintenanceOff,
    Probe,
    Gate,
    Decision,
    WatchdogArm,
    CommitMigrate,
    Unlock,
    SwitchBack,
    MaintenanceOffAfterSwitchBack,
    Discard,
}

/// The handler of compiled step `name`; `None` for a name this golivectl
/// does not run.
pub(crate) fn handler(name: &str) -> Option<Handler> {
    Some(match name {
        "lock" => Handler::Lock,
        "read flags" => Handler::ReadFlags,
        "upload" => Handler::Upload,
        "stage" => Handler::Stage,
        "probe-before" => Handler::ProbeBefore,
        "migrations" => Handler::Migrations,
        "maintenance-on" => Handler::MaintenanceOn,
        "backup" => Handler::Backup,
        "migrate" => Handler::Migrate,
        "activate" => Handler::Activate,
        "maintenance-off" => Handler::MaintenanceOff,
        "probe" => Handler::Probe,
        "gate" => Handler::Gate,
        "decision" => Handler::Decision,
        "watchdog-arm" => Handler::WatchdogArm,
        "commit-migrate" => Handler::CommitMigrate,
        "unlock" => Handler::Unlock,
        "switch-back" => Handler::SwitchBack,
        "maintenance-off-after-switch-back" => Handler::MaintenanceOffAfterSwitchBack,
        "discard" => Handler::Discard,
        _ => return None,
    })
}

/// One phase of a deployment: a compiled step (or a run of them that go
/// together) over every host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Lock,
    ReadFlags,
    /// `upload` (an artifact source) then `stage` on each host, hosts at
    /// once up to `[deploy] parallel`.
    Stage,
    /// `Stage` with `probe-before` (compiled right after it) taken beside
    /// it (issue 14): the probes read the live release, which staging does
    /// not touch. Their results are reported and recorded once every host
    /// is staged, as `probe-before` in its compiled place.
    StageAndProbeBefore,
    ProbeBefore,
    /// `migrations`: the staged release's pending migrations read on every
    /// host, which decide maintenance, the backup and `migrate`.
    Migrations,
    MaintenanceOn,
    Backup,
    Migrate,
    /// `activate`, then its own steps (`maintenance-off`, `probe`, `gate`,
    /// `decision`, `watchdog-arm`, as compiled), in their compiled order:
    /// host by host, or wave by wave; in maintenance every host runs the
    /// steps up to `maintenance-off`, `maintenance-off` follows on every
    /// host, then each runs the rest.
    Switch(Vec<Handler>),
    /// The outcome: a failure's `switch-back`,
    /// `maintenance-off-after-switch-back` and `discard`, or the commit
    /// (`commit-migrate`), as compiled (in their compiled order).
    Finish(Vec<Handler>),
    Unlock,
}

/// The phases of compiled deployment `d`, from its steps in their compiled
/// order (every host lists the same steps). `Err` names a step with no
/// handler, or steps in an order this golivectl does not run: nothing is
/// sent then.
pub(crate) fn program(d: &Deployment) -> Result<Vec<Phase>, DeployError> {
    let refuse = |step: &str, why: &str| {
        DeployError::from(StepError::NotRunnable {
            id: d.id.clone(),
            step: step.into(),
            why: why.into(),
        })
    };
    let first = d
        .hosts
        .first()
        .ok_or_else(|| refuse("-", "it has no host"))?;
    let names: Vec<&str> = first.steps.iter().map(|s| s.name.as_str()).collect();
    if let Some(h) = d
        .hosts
        .iter()
        .find(|h| h.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>() != names)
    {
        return Err(refuse(&h.host, "its hosts list different steps"));
    }
    let mut phases = Vec::new();
    let mut finish = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let name = names[i];
        let h = handler(name).ok_or_else(|| refuse(name, "no handler runs it"))?;
        let phase = match h {
            Handler::Lock => Phase::Lock,
            Handler::ReadFlags => Phase::ReadFlags,
            Handler::Upload if names.get(i + 1) == Some(&"stage") => {
                i += 1;
                stage_phase(&names, &mut i)
            }
            Handler::Stage => stage_phase(&names, &mut i),
            Handler::ProbeBefore => Phase::ProbeBefore,
            Handler::Migrations => Phase::Migrations,
            Handler::MaintenanceOn => Phase::MaintenanceOn,
            Handler::Backup => Phase::Backup,
            Handler::Migrate => Phase::Migrate,
            Handler::Activate => {
                // The switch's own steps follow it, in their compiled order.
                let mut steps = vec![Handler::Activate];
                // The step that ended the switch, when it is not one that
                // may follow a switch (the outcome's, the unlock).
                let mut stray = None;
                while let Some(&next) = names.get(i + 1) {
                    let h = handler(next).ok_or_else(|| refuse(next, "no handler runs it"))?;
                    if !SWITCH_STEPS.contains(&h) {
                        if !matches!(
                            h,
                            Handler::CommitMigrate
                                | Handler::SwitchBack
                                | Handler::MaintenanceOffAfterSwitchBack
                                | Handler::Discard
                                | Handler::Unlock
                        ) {
                            stray = Some(next);
                        }
                        break;
                    }
                    if steps.contains(&h) {
                        return Err(refuse(next, "it is listed twice in the switch"));
                    }
                    steps.push(h);
                    i += 1;
                }
                switch_order(&steps).map_err(|why| match stray {
                    Some(step) => refuse(
                        step,
                        "it sits inside the switch (between activate and its probe, gate and \
                         decision), where it has no place",
                    ),
                    None => refuse(name, why),
                })?;
                Phase::Switch(steps)
            }
            Handler::CommitMigrate
            | Handler::SwitchBack
            | Handler::MaintenanceOffAfterSwitchBack
            | Handler::Discard => {
                // Run by the finish: after a failure, or at the commit.
                if finish.contains(&h) {
                    return Err(refuse(name, "it is listed twice"));
                }
                finish.push(h);
                i += 1;
                continue;
            }
            Handler::Unlock => {
                phases.push(Phase::Finish(Vec::new()));
                Phase::Unlock
            }
            Handler::Upload
            | Handler::MaintenanceOff
            | Handler::Probe
            | Handler::Gate
            | Handler::Decision
            | Handler::WatchdogArm => return Err(refuse(name, "out of its place")),
        };
        phases.push(phase);
        i += 1;
    }
    // The finish runs before the unlock, whatever the compiled order puts
    // after it (the failure's steps are listed last: they run only then).
    if !finish.contains(&Handler::SwitchBack) {
        return Err(refuse("switch-back", "it is missing (no way back)"));
    }
    if let (Some(back), Some(off)) = (
        finish.iter().position(|h| *h == Handler::SwitchBack),
        finish
            .iter()
            .position(|h| *h == Handler::MaintenanceOffAfterSwitchBack),
    ) && off < back
    {
        return Err(refuse(
            "maintenance-off-after-switch-back",
            "it comes before the switch-back it follows",
        ));
    }
    // What maintenance-on turns on, the switch and the finish turn off.
    if names.contains(&"maintenance-on") {
        let off = |p: &Phase| matches!(p, Phase::Switch(s) if s.contains(&Handler::MaintenanceOff));
        if !phases.iter().any(off) {
            return Err(refuse("maintenance-off", "maintenance-on without it"));
        }
        if !finish.contains(&Handler::MaintenanceOffAfterSwitchBack) {
            return Err(refuse(
                "maintenance-off-after-switch-back",
                "maintenance-on without it",
            ));
        }
    }
    for phase in phases.iter_mut() {
        if let Phase::Finish(steps) = phase {
            steps.clone_from(&finish);
        }
    }
    for (phase, step) in [
        (Phase::Lock, "lock"),
        (Phase::Stage, "stage"),
        (Phase::Switch(Vec::new()), "activate"),
        (Phase::Unlock, "unlock"),
    ] {
        let same = |p: &Phase| {
            std::mem::discriminant(p) == std::mem::discriminant(&phase)
                || (phase == Phase::Stage && *p == Phase::StageAndProbeBefore)
        };
        if !phases.iter().any(same) {
            return Err(refuse(step, "it is missing"));
        }
    }
    if phases.first() != Some(&Phase::Lock) || phases.last() != Some(&Phase::Unlock) {
        return Err(refuse("lock", "the lock must come first and unlock last"));
    }
    Ok(phases)
}

/// The phase of the `stage` step at `names[*i]`: with the `probe-before`
/// that follows it, when one does (then `*i` moves onto it).
fn stage_phase(names: &[&str], i: &mut usize) -> Phase {
    if names.get(*i + 1) == Some(&"probe-before") {
        *i += 1;
        Phase::StageAndProbeBefore
    } else {
        Phase::Stage
    }
}

/// The steps a switch may list after its `activate`.
const SWITCH_STEPS: [Handler; 5] = [
    Handler::MaintenanceOff,
    Handler::Probe,
    Handler::Gate,
    Handler::Decision,
    Handler::WatchdogArm,
];

/// The switch's steps a host runs through [`verify_and_arm`]: all but
/// `activate` and `maintenance-off`, which the switch itself places.
pub(crate) fn verify_steps(steps: &[Handler]) -> Vec<Handler> {
    steps
        .iter()
        .copied()
        .filter(|h| !matches!(h, Handler::Activate | Handler::MaintenanceOff))
        .collect()
}

/// Whether a switch's steps (`activate` first, each at most once) are in
/// an order that means something: the gate judges the probes, so they come
/// first; the decision answers the gate's pause; the probes go through the
/// web server, which answers 503 until `maintenance-off`. `Err` says why not.
fn switch_order(steps: &[Handler]) -> Result<(), &'static str> {
    let at = |h: Handler| steps.iter().position(|s| *s == h);
    let (Some(probe), Some(gate)) = (at(Handler::Probe), at(Handler::Gate)) else {
        return Err("a switch without its probe and gate");
    };
    if gate < probe {
        return Err("its gate comes before the probes it judges");
    }
    match at(Handler::Decision) {
        None => return Err("a gate without its decision (a pause would wait for nothing)"),
        Some(d) if d < gate => return Err("its decision comes before the gate it answers"),
        Some(_) => {}
    }
    if at(Handler::MaintenanceOff).is_some_and(|off| off > probe) {
        return Err("its probes come before maintenance-off (they would meet the 503 page)");
    }
    Ok(())
}

/// A deployment as it runs: what each phase leaves for the next.
struct Run<'r, 'e> {
    out: Out,
    journal: &'r Journal,
    exec: &'r Executor<'e>,
    plan: &'r Plan,
    id: &'r str,
    previous: &'r [Option<String>],
    downtime: &'r mut Downtime,
    unavailable: &'r mut Unavailable,
    watched: &'r mut Vec<String>,
    leases: Vec<Lease>,
    /// Hosts where the release is staged: a failure before it goes live
    /// there removes it again, so its id can be reused (issue 12).
    staged_on: Vec<usize>,
    before: Vec<Vec<ProbeResult>>,
    warnings: Vec<String>,
    /// (pending now, kept for the commit), decided once.
    migrations: Option<(usize, usize)>,
    /// Why the deployment is in maintenance, once `maintenance-on` ran.
    maintenance: Option<String>,
    in_maintenance: Vec<usize>,
    longest_downtime: Option<u64>,
    activated: Vec<usize>,
    /// Hosts where the release went live (their ids stay used).
    switched: Vec<usize>,
    failure: Option<DeployError>,
    tolerated: Vec<String>,
    outcome: Option<Outcome>,
}

/// Runs recorded deployment `id` as its compiled deployment
/// (`exec.deployment()`) lists it: phase by phase ([`program`]), each
/// compiled step dispatched to its handler.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_deployment(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    previous: &[Option<String>],
    downtime: &mut Downtime,
    unavailable: &mut Unavailable,
    watched: &mut Vec<String>,
) -> Outcome {
    let phases = match program(exec.deployment()) {
        Ok(phases) => phases,
        Err(e) => return Outcome::stopped(e),
    };
    // A failure's `discard` (compiled or not) gives back the staged ids.
    let discard = phases
        .iter()
        .any(|p| matches!(p, Phase::Finish(s) if s.contains(&Handler::Discard)));
    let mut run = Run {
        out,
        journal,
        exec,
        plan,
        id,
        previous,
        downtime,
        unavailable,
        watched,
        leases: Vec::new(),
        staged_on: Vec::new(),
        before: Vec::new(),
        warnings: Vec::new(),
        migrations: None,
        maintenance: None,
        in_maintenance: Vec::new(),
        longest_downtime: None,
        activated: Vec::new(),
        switched: Vec::new(),
        failure: None,
        tolerated: Vec::new(),
        outcome: None,
    };
    for phase in phases {
        let r = match phase {
            Phase::Lock => run.lock().await,
            Phase::ReadFlags => read_flags(journal, exec, plan, id).await,
            Phase::Stage => run.stage(None).await,
            Phase::StageAndProbeBefore => run.stage_and_probe_before().await,
            Phase::ProbeBefore => run.probe_before().await,
            Phase::Migrations => run.migrations().await.map(|_| ()),
            Phase::MaintenanceOn => run.maintenance_on().await,
            Phase::Backup => run.before_switch("backup").await,
            Phase::Migrate => run.before_switch("migrate").await,
            Phase::Switch(steps) => run.switch(&steps).await,
            Phase::Finish(steps) => {
                run.finish(&steps).await;
                Ok(())
            }
            Phase::Unlock => {
                unlock_all(exec, std::mem::take(&mut run.leases)).await;
                Ok(())
            }
        };
        if let Err(e) = r {
            if discard {
                give_back_ids(out, exec, plan, &run.leases, &run.staged_on).await;
            }
            unlock_all(exec, run.leases).await;
            return Outcome::stopped(e);
        }
        if let Some(outcome) = run.outcome.take_if(|o| o.exit() == Exit::Paused) {
            unlock_all(exec, run.leases).await;
            return outcome;
        }
    }
    run.outcome.unwrap_or_else(|| {
        Outcome::stopped(DeployError::from(StepError::NotRunnable {
            id: id.to_string(),
            step: "unlock".into(),
            why: "the deployment ended without an outcome".into(),
        }))
    })
}

impl Run<'_, '_> {
    /// Phase 2: locks everywhere, or nowhere (taken up to `[deploy]
    /// parallel` at a time; after a refusal no more are asked for, and
    /// every one taken is released). Live state: taken again on a resume.
    async fn lock(&mut self) -> Result<(), DeployError> {
        self.leases = lock_hosts(self.exec, self.plan, self.id).await?;
        Ok(())
    }

    /// Phase 3: upload and stage everywhere (a git source is fetched by
    /// each host instead), `[deploy] parallel` hosts at a time; the live
    /// release is untouched.
    async fn stage(&mut self, after: Option<&[Notify]>) -> Result<(), DeployError> {
        let (out, plan, id) = (self.out, self.plan, self.id);
        let release = plan.release.as_ref().expect("checked by deploy");
        let staged = stage_all(out, self.journal, self.exec, plan, id, &self.leases, after).await;
        let first_commit = match staged {
            Ok((staged_on, first_commit)) => {
                self.staged_on = staged_on;
                first_commit
            }
            Err((staged_on, e)) => {
                self.staged_on = staged_on;
                return Err(e);
            }
        };
        if let (Some(git_ref), Some((_, commit))) = (git_ref(release), &first_commit) {
            let _ = self.journal.set_git(id, git_ref, Some(commit));
            out.emit(super::events::Event::Git {
                deployment: id.to_string(),
                git_ref: git_ref.to_string(),
                commit: commit.to_string(),
            });
        }
        Ok(())
    }

    /// The figures before: the live release's probe results on every host.
    async fn probe_before(&mut self) -> Result<(), DeployError> {
        let (out, journal, exec, plan, id) =
            (self.out, self.journal, self.exec, self.plan, self.id);
        self.before = probe_before(out, journal, exec, plan, id, Vec::new()).await?;
        Ok(())
    }

    /// [`stage`](Self::stage) with the probes before taken beside it
    /// ([`take_before_early`]), then reported and recorded as
    /// [`probe_before`](Self::probe_before) does: the same steps, in the
    /// same order, in the journal and the output. A host's upload starts
    /// once its probes are answered, so both go over the host's one
    /// kept-alive connection: taken during the upload, the probes opened a
    /// second one, a TLS handshake more per host on both sides (issue 14,
    /// speed: the 50-host deploy is CPU-bound). The other hosts' uploads
    /// and stages still run beside them.
    async fn stage_and_probe_before(&mut self) -> Result<(), DeployError> {
        let (out, journal, exec, plan, id) =
            (self.out, self.journal, self.exec, self.plan, self.id);
        let probed: Vec<Notify> = plan.hosts.iter().map(|_| Notify::new()).collect();
        let (staged, early) = tokio::join!(
            self.stage(Some(&probed)),
            take_before_early(exec, plan, &probed)
        );
        staged?;
        self.before = probe_before(out, journal, exec, plan, id, early).await?;
        Ok(())
    }

    /// Pending migrations decide the rest: maintenance, and a verified
    /// backup before anything touches the schema (nothing destroys data
    /// before a verified backup exists). Decided once (issue 14): each
    /// host's read is its `migrations` record step, so a resumed
    /// deployment reads back what its start read and takes the same
    /// decision, whatever the migrations' state is now (a deployment
    /// recorded by an older golivectl: the decision it journaled as a
    /// fact). `(pending now, kept for the commit)`.
    async fn migrations(&mut self) -> Result<(usize, usize), DeployError> {
        if let Some(m) = self.migrations {
            return Ok(m);
        }
        let (out, journal, plan, id) = (self.out, self.journal, self.plan, self.id);
        let release = plan.release.as_ref().expect("checked by deploy");
        let mut pending = 0usize;
        let mut at_commit = 0usize;
        let exec = self.exec;
        let older = exec.deployment().older();
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
            |host| async move {
                let read = || {
                    pending_migrations(
                        &host.client,
                        &plan.app,
                        &release.id,
                        plan.contract_at_commit,
                    )
                };
                let judge = |r: &Result<Pending, ClientError>| match r {
                    Ok(p) => (
                        "ok",
                        format!(
                            "{} pending, {} kept for the commit",
                            p.now.len(),
                            p.at_commit.len()
                        ),
                    ),
                    Err(e) => ("failed", e.to_string()),
                };
                Ok::<_, StepError>(
                    match exec
                        .record(Scope::Host(&host.name), "migrations", read, judge)
                        .await?
                    {
                        Recorded::Before(p) => (Ok(p), true),
                        Recorded::Now(r) => (r, false),
                    },
                )
            },
        )
        .await;
        for (host, list) in plan.hosts.iter().zip(lists) {
            let (list, again) = list?;
            if again {
                step(
                    out,
                    &host.name,
                    "migrations",
                    "ok",
                    "read before the interruption, read back",
                );
            }
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
                                "{} wait for the release's commit (contract: the previous \
                                 release may not run after them)",
                                list.at_commit.join(", ")
                            ),
                        );
                    }
                    pending = pending.max(list.now.len());
                    at_commit = at_commit.max(list.at_commit.len());
                }
                Err(source) => {
                    return Err(DeployError::Migrations {
                        release: release.id.clone(),
                        host: host.name.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        match decided {
            Some((p, c)) => (pending, at_commit) = (p, c),
            // An older record keeps its decision as it did.
            None if older => journal
                .set_fact(id, "migrations", &json!([pending, at_commit]).to_string())
                .map_err(|source| DeployError::JournalFact {
                    id: id.to_string(),
                    source,
                })?,
            None => {}
        }
        if pending > 0 && plan.backup != PreDeployBackup::Verified {
            out.line(format!(
                "the release has pending migrations: taking a verified backup first (plan said \
                 {:?})",
                plan.backup
            ));
        }
        self.migrations = Some((pending, at_commit));
        Ok((pending, at_commit))
    }

    /// Phase 3a: maintenance on everywhere, when this deployment needs it.
    /// From here until maintenance is off again, the site answers 503.
    async fn maintenance_on(&mut self) -> Result<(), DeployError> {
        let (pending, _) = self.migrations().await?;
        let first_install = self.previous.iter().all(Option::is_none);
        self.maintenance = maintenance_reason(self.plan, pending, first_install);
        let Some(why) = &self.maintenance else {
            return Ok(());
        };
        self.out.line(format!("maintenance on every host: {why}"));
        let on = maintenance_on_all(
            self.out,
            self.exec,
            self.plan,
            &self.leases,
            why,
            &mut self.in_maintenance,
        )
        .await;
        if let Err(e) = on {
            *self.downtime = if self.in_maintenance.is_empty() {
                Downtime::None
            } else {
                Downtime::StillOn
            };
            return Err(e);
        }
        Ok(())
    }

    /// Phase 3b: the rollback point (`backup`). Nothing live has changed
    /// yet; a backup that cannot be taken (or verified, when the plan
    /// asks) stops here. Phase 3c: migrations (`migrate`), on every host (a
    /// database shared by several hosts is migrated once: the agents'
    /// migration lock and tracking table make the others find nothing
    /// pending). The old release still runs, behind maintenance.
    async fn before_switch(&mut self, name: &str) -> Result<(), DeployError> {
        let (pending, _) = self.migrations().await?;
        let (plan, id) = (self.plan, self.id);
        let release = plan.release.as_ref().expect("checked by deploy");
        let spec = if name == "backup" {
            let mode = if pending > 0 {
                PreDeployBackup::Verified
            } else {
                plan.backup
            };
            (mode != PreDeployBackup::None).then(|| {
                JobSpec::Backup(CreateBackup {
                    app: plan.app.clone(),
                    label: "pre-deploy".into(),
                    only: vec![],
                    deployment: Some(id.to_string()),
                    verify: mode == PreDeployBackup::Verified,
                })
            })
        } else {
            (pending > 0).then(|| {
                JobSpec::Migrate(RunMigrations {
                    app: plan.app.clone(),
                    release: Some(release.id.clone()),
                    down_to: None,
                    stop_before_contract: plan.contract_at_commit,
                    backup_first: false,
                })
            })
        };
        let Some(spec) = spec else {
            return Ok(());
        };
        let Err((host, headline)) =
            on_every_host(self.out, self.exec, plan, &self.leases, name, &spec).await
        else {
            return Ok(());
        };
        let (ms, still) = maintenance_off_all(
            self.out,
            self.exec,
            plan,
            &self.leases,
            &mut self.in_maintenance,
            "",
            self.unavailable,
        )
        .await;
        *self.downtime = downtime_of(self.maintenance.is_some(), ms, &still);
        let still = still_on(&still);
        Err(if name == "backup" {
            DeployError::Backup {
                host,
                headline,
                still,
            }
        } else {
            DeployError::Migrate {
                host,
                id: id.to_string(),
                headline,
                still,
            }
        })
    }

    /// Phase 4: activate and verify, host by host, or (with `[[waves]]`,
    /// issue 14) wave by wave, each wave's hosts at once. In maintenance
    /// every host is switched first; maintenance off, then the probes.
    /// Validates host `i` after its switch (probes, the gate) and arms its
    /// watchdog; `false` when that failed, the failure kept for the finish.
    async fn verify(&mut self, i: usize, steps: &[Handler]) -> bool {
        let host = &self.plan.hosts[i];
        match verify_and_arm(
            self.out,
            self.journal,
            self.exec,
            self.plan,
            self.id,
            host,
            &self.before[i],
            self.previous[i].as_deref(),
            &self.leases,
            &mut self.warnings,
            steps,
        )
        .await
        {
            Ok(true) => {
                self.watched.push(host.name.clone());
                true
            }
            Ok(false) => true,
            Err(f) => {
                self.failure = Some(f);
                false
            }
        }
    }

    /// The switch (`steps`: `activate` and its own steps, compiled, in
    /// their compiled order; [`program`] checked them). The policy is here,
    /// the order is the compiled one: with `[[waves]]` wave by wave
    /// ([`run_waves`]); otherwise host by host, each host running `activate`
    /// and the steps after it, stopping at the first failure; in
    /// maintenance each host runs only the steps up to `maintenance-off`,
    /// then `maintenance-off` runs on every host, then each host the rest.
    async fn switch(&mut self, steps: &[Handler]) -> Result<(), DeployError> {
        self.migrations().await?;
        let (out, journal, exec, plan, id) =
            (self.out, self.journal, self.exec, self.plan, self.id);
        let release = plan.release.as_ref().expect("checked by deploy");
        // No figures before for a host whose probes were not taken.
        self.before.resize(plan.hosts.len(), Vec::new());
        let in_maintenance = self.maintenance.is_some();
        let off = steps.iter().position(|h| *h == Handler::MaintenanceOff);
        // What each host runs right after its activation, and (in
        // maintenance) what it runs once maintenance is off everywhere.
        let (now, after_off) = match off {
            Some(off) if in_maintenance => {
                (verify_steps(&steps[..off]), verify_steps(&steps[off + 1..]))
            }
            _ => (verify_steps(steps), Vec::new()),
        };
        let one_by_one = if plan.waves.is_empty() {
            plan.hosts.len()
        } else {
            self.failure = run_waves(
                out,
                journal,
                exec,
                plan,
                id,
                self.previous,
                &self.before,
                &self.leases,
                &mut self.warnings,
                self.unavailable,
                self.watched,
                (&mut self.activated, &mut self.switched),
                &mut self.tolerated,
                steps,
            )
            .await;
            0
        };
        let one_by_one = one_by_one.min(self.leases.len());
        for (i, host) in plan.hosts.iter().enumerate().take(one_by_one) {
            let lease = &self.leases[i];
            if let Err(e) = lease.check() {
                self.failure = Some(e.into());
                break;
            }
            let c = &host.client;
            // A host that stops answering fails its activation within
            // `[deploy] host_timeout_secs`, as in a wave.
            let deadline = Deadline::of(plan);
            let job = job_step(exec, out, host, "activate", lease, deadline, None).await;
            if let Ok(job) = &job {
                self.unavailable.add(&host.name, job);
            }
            let result = step_ok(job);
            if let Err(e) = result {
                let e = e.to_string();
                step(out, &host.name, "activate", "failed", &e);
                // A failed switch may or may not have happened: roll this host back too.
                self.activated.push(i);
                self.failure = Some(DeployError::Activation {
                    host: host.name.clone(),
                    headline: error_headline(&e).to_string(),
                });
                break;
            }
            self.activated.push(i);
            self.switched.push(i);
            let _ = journal.set_host(id, &host.name, &c.addr, None, "active");
            step(
                out,
                &host.name,
                "activate",
                "ok",
                &format!("current -> {}", release.id),
            );
            if !self.verify(i, &now).await {
                break;
            }
        }

        // In maintenance (the web server answers 503 until it is off):
        // every host is switched; `maintenance-off` on every host, then
        // each host runs the steps after it (the probes), host by host.
        if in_maintenance && self.failure.is_none() {
            // [`program`] checked a maintenance-on has its maintenance-off.
            let (ms, still) = maintenance_off_all(
                out,
                exec,
                plan,
                &self.leases,
                &mut self.in_maintenance,
                "",
                self.unavailable,
            )
            .await;
            self.longest_downtime = ms;
            if !still.is_empty() {
                self.failure = Some(DeployError::MaintenanceOff { failures: still });
            } else {
                for i in self.activated.clone() {
                    if !self.verify(i, &after_off).await {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Phase 4b and 5: the outcome. A pause without a decision leaves every
    /// host as it is; a failure switches back what was switched
    /// (`switch-back`), turns maintenance off where it is still on
    /// (`maintenance-off-after-switch-back`) and gives back the staged ids
    /// (`discard`); a success commits (`commit-migrate`). `steps`: these
    /// steps as compiled ([`program`]): one not listed does not run, and a
    /// failure's steps after the switch-back run in their compiled order.
    async fn finish(&mut self, steps: &[Handler]) {
        let (out, journal, exec, plan, id) =
            (self.out, self.journal, self.exec, self.plan, self.id);
        let release = plan.release.as_ref().expect("checked by deploy");
        let (pending, at_commit) = self.migrations.unwrap_or_default();
        // A pause that got no decision: leave every host as it is, for the
        // operator's `go` / `no-go`.
        if let Some(stop) = self.failure.take_if(|f| f.exit() == Exit::Paused) {
            self.outcome = Some(Outcome::stopped(stop));
            return;
        }
        let watched = &mut *self.watched;
        // A host whose watchdog fired while later hosts were validated: the
        // release failed there, so every host goes back (its own rollback is
        // the same job, followed).
        if self.failure.is_none() && !watched.is_empty() {
            self.failure = watchdogs_fired(plan, id, watched).await;
            if self.failure.is_some() {
                watched.clear();
            }
        } else if self.failure.is_some() {
            watched.clear();
        }
        let mut stuck = Vec::new();
        let mut outcome = switch_back_if_failed(
            out,
            journal,
            exec,
            plan,
            id,
            self.previous,
            &self.leases,
            &self.activated,
            self.failure.take(),
            self.unavailable,
            &mut stuck,
        )
        .await;
        if let Outcome::Live { message } = &mut outcome
            && !self.tolerated.is_empty()
        {
            *message = format!(
                "release {} is live on {} of {} host(s); failed within their wave's max_fail: {}",
                release.id,
                plan.hosts.len() - self.tolerated.len(),
                plan.hosts.len(),
                self.tolerated.join("; ")
            );
        }
        if outcome.exit() == Exit::RolledBack
            && pending > 0
            && let Some(note) = schema_after_switch_back(plan, id).await
        {
            outcome.note(&format!("; {note}"));
        }
        // The release is live on every host and passed its gate: it is
        // committed, and the migrations kept for the commit run now, behind a
        // verified backup (they destroy what the previous release needed).
        if outcome.exit() == Exit::Done && !self.watched.is_empty() {
            let spec = plan.watchdog.as_ref().expect("armed from the plan");
            outcome.note(&format!(
                "; watched on {} for {}: each host commits when its window ends quietly{}{}, or \
                 rolls itself back when a trigger holds; `golivectl status {}` shows it",
                self.watched.join(", "),
                human_secs(spec.window_secs),
                match spec.confirm_within_secs {
                    Some(c) => format!(
                        " and `golivectl go {id}` came within {} (without it, every host rolls \
                         back)",
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
        } else if outcome.exit() == Exit::Done
            && at_commit > 0
            && !steps.contains(&Handler::CommitMigrate)
        {
            outcome.fail(&format!(
                "; the {at_commit} migration(s) kept for the commit did not run: the compiled \
                 deployment lists no commit-migrate; `golivectl migrate up {}` runs them",
                plan.path.display()
            ));
        } else if outcome.exit() == Exit::Done && at_commit > 0 {
            match commit_migrations(out, exec, plan, &self.leases).await {
                Ok(()) => outcome.note(&format!(
                    "; committed: the {at_commit} migration(s) kept for the commit ran"
                )),
                Err((host, e)) => {
                    outcome.fail(&format!(
                        "; the release is live, but the migrations kept for the commit failed \
                         on {host}: {e}; fix it, then `golivectl migrate up {}`",
                        plan.path.display()
                    ));
                }
            }
        }
        if !self.warnings.is_empty() {
            outcome.note(&format!("; gate warnings: {}", self.warnings.join("; ")));
        }
        let lost = exec.lost_hosts();
        if !lost.is_empty() {
            outcome.note(&format!(
                "; LOST mid-deployment: {}: their later steps were skipped, their locks are left \
                 to expire ({} s), their watchdogs (when armed) cover them; check `golivectl \
                 status` once they answer",
                lost.iter()
                    .map(|(h, why)| format!("{h} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", "),
                plan.lock_ttl_secs
            ));
        }

        // A failure's steps after the switch-back, in their compiled order.
        for h in steps.iter().skip_while(|h| **h != Handler::SwitchBack) {
            match h {
                Handler::MaintenanceOffAfterSwitchBack => {
                    self.maintenance_off_after_switch_back(&stuck, &mut outcome)
                        .await;
                }
                Handler::Discard if outcome.exit() != Exit::Done => {
                    let not_live: Vec<usize> = self
                        .staged_on
                        .iter()
                        .copied()
                        .filter(|i| !self.switched.contains(i))
                        .collect();
                    give_back_ids(out, exec, plan, &self.leases, &not_live).await;
                }
                _ => {}
            }
        }
        if self.maintenance.is_some() {
            *self.downtime = downtime_of(
                true,
                self.longest_downtime,
                &in_maintenance_names(plan, &self.in_maintenance),
            );
        }
        let mut notes = String::new();
        report_downtime(out, *self.downtime, self.unavailable, &mut notes);
        outcome.note(&notes);
        // Staged ids were handled here: an unlock's failure gives none back.
        self.staged_on.clear();
        self.outcome = Some(outcome);
    }

    /// `maintenance-off-after-switch-back`: after a switch-back (or a
    /// failed activation), maintenance off where it is still on, but for
    /// the hosts the switch-back could not return (`stuck`).
    async fn maintenance_off_after_switch_back(&mut self, stuck: &[usize], outcome: &mut Outcome) {
        let (out, exec, plan) = (self.out, self.exec, self.plan);
        // A host the switch-back could not return stays in maintenance: off,
        // its web server would serve the release that failed (issue 12).
        let kept_on = keep_on_where_stuck(&mut self.in_maintenance, stuck);
        // After a switch-back (or a failed activation): maintenance off where
        // it is still on.
        if !self.in_maintenance.is_empty() {
            let (ms, still) = maintenance_off_all(
                out,
                exec,
                plan,
                &self.leases,
                &mut self.in_maintenance,
                "-after-switch-back",
                self.unavailable,
            )
            .await;
            self.longest_downtime = self.longest_downtime.max(ms);
            if !still.is_empty() {
                outcome.fail(&still_on(&still));
            }
        }
        if !kept_on.is_empty() {
            outcome.fail(&format!(
                "; MAINTENANCE LEFT ON on {}: the switch-back did not happen there, so without \
                 it the release that failed would serve; fix what is named above, then \
                 `golivectl maintenance off PLAN`",
                in_maintenance_names(plan, &kept_on).join(", ")
            ));
            self.in_maintenance.extend(kept_on);
        }
    }
}

/// Phase 3 on one host: upload (unless the agent has the artifact) and
/// stage, each journaled and reported as a step. `Ok(commit)` (git sources)
/// or `Err((staged, why))`, `staged` when the release got staged there
/// anyway (a git source that reported no commit).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn stage_host(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    lease: &Lease,
) -> Result<Option<String>, (bool, DeployError)> {
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
            let progress = crate::progress::upload(out, &host.name, bytes);
            c.upload_with(artifact, &sha256, bytes, Some(progress))
                .await
                .map(|_| format!("{bytes} bytes"))
        };
        let judge = |r: &Result<String, ClientError>| match r {
            Ok(d) => Ok(d.clone()),
            Err(e) => Err(e.to_string()),
        };
        let uploaded = match exec.run(out, &host.name, "upload", None, send, judge).await {
            Ok(r) => r,
            Err(e) => return Err((false, e.into())),
        };
        match uploaded {
            Ok(detail) => step(out, &host.name, "upload", "ok", &detail),
            Err(e) => {
                step(out, &host.name, "upload", "failed", &e.to_string());
                return Err((
                    false,
                    DeployError::Upload {
                        host: host.name.clone(),
                        source: Box::new(e),
                    },
                ));
            }
        }
    }
    // The stage request is the compiled one (its key, its scan).
    let staged = job_step(exec, out, host, "stage", lease, Deadline::of(plan), None).await;
    let commit = staged.as_ref().ok().and_then(staged_commit);
    let staged = step_ok(staged);
    if let Err(e) = staged {
        step(out, &host.name, "stage", "failed", &e.to_string());
        // Staging changes nothing live: a refused archive is bad input.
        return Err((
            false,
            DeployError::Stage {
                host: host.name.clone(),
                source: Box::new(e),
            },
        ));
    }
    let commit = match git_ref(release) {
        Some(git_ref) => {
            let Some(commit) = commit else {
                return Err((
                    true,
                    DeployError::NoCommit {
                        host: host.name.clone(),
                        git_ref: git_ref.to_string(),
                    },
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
/// no further host starts. With `after`, a host starts once `after[i]` (its
/// index in the plan) is notified: [`take_before_early`] notifies each
/// host's as soon as its probes are done, and takes them in plan order, as
/// this starts hosts, so every host waited for gets its notice. `Ok((staged hosts, first (host, commit)))`, or
/// `Err((staged hosts, why))` naming the first failed host in
/// plan order (and how many others failed), or the hosts that resolved a
/// git ref to different commits: every host must run the same code.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) async fn stage_all(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    leases: &[Lease],
    after: Option<&[Notify]>,
) -> Result<(Vec<usize>, Option<(String, String)>), (Vec<usize>, DeployError)> {
    let results = crate::fanout::until(
        plan.parallel,
        plan.hosts.iter().zip(leases).enumerate(),
        |(i, (host, lease))| async move {
            if let Some(probed) = after.and_then(|a| a.get(i)) {
                probed.notified().await;
            }
            stage_host(out, journal, exec, plan, id, host, lease).await
        },
        Result::is_err,
    )
    .await;
    let mut staged_on = Vec::new();
    let mut failed: Vec<DeployError> = Vec::new();
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
            Some(Err((staged, e))) => {
                if staged {
                    staged_on.push(i);
                }
                failed.push(e);
            }
            None => {}
        }
    }
    let others = failed.len().saturating_sub(1);
    if let Some(first) = failed.into_iter().next() {
        let e = DeployError::OnHosts {
            first: Box::new(first),
            others,
        };
        return Err((staged_on, e));
    }
    if let Some(differ) = differ {
        let git_ref = plan.release.as_ref().and_then(git_ref).unwrap_or_default();
        let e = DeployError::Commits {
            git_ref: git_ref.to_string(),
            differ,
        };
        return Err((staged_on, e));
    }
    Ok((staged_on, first_commit))
}

/// Takes the hosts in `stuck` out of `in_maintenance` and returns them:
/// maintenance stays on there (see the call site).
pub(crate) fn keep_on_where_stuck(in_maintenance: &mut Vec<usize>, stuck: &[usize]) -> Vec<usize> {
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
pub(crate) async fn give_back_ids(
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
pub(crate) async fn give_back_id(out: Out, exec: &Executor<'_>, lease: &Lease, host: &plan::Host) {
    let r = step_ok(job_step(exec, out, host, "discard", lease, LOST, None).await);
    match r {
        Ok(detail) => step(
            out,
            &host.name,
            "discard",
            "ok",
            &format!("{detail}, never live: the id can be deployed again"),
        ),
        Err(e) => step(out, &host.name, "discard", "kept", &e.to_string()),
    }
}

/// The git ref a release is fetched at, if it comes from git.
pub(crate) fn git_ref(release: &plan::Release) -> Option<&str> {
    match &release.source {
        Source::Git(r) => Some(r),
        Source::Artifact(_) => None,
    }
}

/// The commit a successful stage job reports (git sources).
pub(crate) fn staged_commit(r: &Result<JobInfo, ClientError>) -> Option<String> {
    match r {
        Ok(JobInfo {
            state: JobState::Succeeded,
            result: Some(JobResult::Staged { commit, .. }),
            ..
        }) => commit.clone(),
        _ => None,
    }
}

/// The host rollback job of deployment `id` for `app`, as the controller
/// asks for it: the point's previous release, the point's restore policy.
pub(crate) fn host_rollback(app: &str, id: &str, reason: &str) -> JobSpec {
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
