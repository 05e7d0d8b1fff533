//! The deploy entry (issue 14): `golivectl deploy PLAN [--dry-run | --resume ID]`
//! as a library call, made by `cmd/deploy.rs`, by the stages driver
//! ([`super::stages`]) for each stage, and by the demo. Phase 1 (every
//! agent reachable, the app declared, the release id not reused, the app
//! not locked, preflight's blocking checks), the `--dry-run` report, the
//! deployment recorded (compiled) in the journal before anything changes,
//! the `--resume` checks, then `sequencer::run_deployment` under
//! this process's heartbeat, and the outcome's record and notification.

use std::path::Path;

use golive_shared::timefmt::utc;
use serde_json::json;

use crate::deployment::downtime::{Downtime, Unavailable};
use crate::deployment::events::Event;
use crate::deployment::leases::Heartbeat;
use crate::deployment::sequencer::{git_ref, run_deployment};
use crate::deployment::{self, Executor};
use crate::jobs::agent_status;
use crate::jobs::{hash_file, human_secs, known_deployment, reused_id};
use crate::journal::Journal;
use crate::output::{Exit, Out, usage};
use crate::plan::{self, Plan, Source};

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

/// Runs `golivectl deploy PLAN` (or its `--dry-run`, or its `--resume ID`)
/// and returns the exit code and the deployment id when one was recorded.
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
        out.emit(Event::Window {
            hotfix: true,
            note: note.clone(),
        });
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
            out.emit(Event::ReusedId {
                host: host.name.clone(),
                release: release.id.clone(),
                note,
            });
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
    let (blocking, preflight_warnings) = crate::preflight::deploy_checks(&plan).await;
    for w in &preflight_warnings {
        out.line(format!("preflight warning: {w}"));
    }
    out.emit(Event::Preflight {
        ready: blocking.is_empty(),
        blocking: json!(blocking),
        warnings: json!(preflight_warnings),
        forced: !blocking.is_empty() && options.force.is_some(),
    });
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
        out.emit(Event::DryRunResult {
            dry_run: true,
            release: release.id.clone(),
            sha256: sha,
            git_ref: git_ref(release).map(str::to_string),
            hosts: plan.hosts.len(),
            parallel: plan.parallel,
            exit: Exit::Done.code(),
        });
        return Ok((Exit::Done, None));
    }

    // The id before the journal: a failing random source changes nothing.
    let id = match &options.id {
        Some(id) => id.clone(),
        None => crate::journal::new_deployment_id(golive_shared::protocol::now_millis())?,
    };
    let journal = Journal::open(state)?;
    // Its events go to the journal and the notices too (issue 14).
    let _readers = crate::deployment::subscribers::attach(state, Some(&plan), &id)?;
    // One fsync for the records below, before drive (issue 14, speed).
    journal.group_commit()?;
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
    out.emit(Event::Start {
        deployment: id.clone(),
        app: plan.app.clone(),
        release: release.id.clone(),
        sha256: (!sha.is_empty()).then(|| sha.clone()),
        git_ref: git_ref(release).map(str::to_string),
        hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
    });
    for (host, prev) in plan.hosts.iter().zip(&previous) {
        journal.set_host(
            &id,
            &host.name,
            &host.client.addr,
            prev.as_deref(),
            "pending",
        )?;
    }

    journal.durable().await?;
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
    let _readers = crate::deployment::subscribers::attach(state, Some(plan), id)?;
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
    out.emit(Event::Resume {
        deployment: id.to_string(),
        app: plan.app.clone(),
        release: release.id.clone(),
        interrupted_steps: interrupted,
    });
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
    let outcome = run_deployment(
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
    let (exit, message) = (outcome.exit(), outcome.message());
    let state_name = match exit {
        // Live, and its hosts' watchdogs watch it: committed or rolled back
        // by them, or by `golivectl go` / `no-go` (issue 13).
        Exit::Done if !watched.is_empty() => "watching",
        Exit::Done => "succeeded",
        // A failed wave went back, the waves before it kept the release
        // (on_wave_failure = "rollback-wave", issue 14).
        Exit::RolledBack if crate::deployment::waves_run::kept_the_release(plan, journal, id) => {
            "partial"
        }
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
    out.emit(Event::Result {
        deployment: id.to_string(),
        state: state_name.into(),
        message: message.clone(),
        exit: exit.code(),
        downtime_ms: downtime.ms(),
        maintenance: json!(downtime.json()),
        unavailable_ms: unavailable.ms(),
        unavailable: unavailable.json(),
    });
    // Its notice went with the result event; waited for here.
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
    if let Some(line) = crate::deployment::waves_run::policy_line(plan) {
        out.line(line);
    }
    out.emit(Event::DryRun {
        window,
        preflight: preflight.into(),
        parallel: compiled.parallel,
        on_wave_failure: plan.on_wave_failure.name().into(),
    });
    out.emit(Event::Compiled {
        deployment: Box::new(compiled.clone()),
    });
    let of = compiled.waves.len();
    for (w, wave) in compiled.waves.iter().enumerate() {
        out.line(format!(
            "dry run: {}: {} (up to {} may fail: max_fail {} %){}; journaled as wave-{}: {}",
            wave.label,
            wave.hosts.join(", "),
            wave.allowed_failures,
            wave.max_fail,
            wave.soak_secs
                .map(|s| format!("; soak {}", human_secs(s)))
                .unwrap_or_default(),
            w + 1,
            wave.steps
                .iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.emit(Event::WouldWave {
            wave: w + 1,
            of,
            name: wave.name.clone(),
            hosts: wave.hosts.clone(),
            max_fail: wave.max_fail,
            allowed_failures: wave.allowed_failures,
            soak_secs: wave.soak_secs,
        });
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
        let keys = host.steps.iter().filter_map(|s| s.key.clone()).collect();
        out.emit(Event::Would {
            host: host.host.clone(),
            steps,
            on_failure,
            keys,
        });
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
