//! Running the waves of a deployment: each wave's hosts at once, its soak,
//! its max-fail share, and the switch-back of what a failed wave (or the
//! policy) sends back.

use std::time::Duration;

use golive_shared::protocol::{
    JobSpec, MigrationStatusRequest, ProbeResult, Request, Response, error_headline,
};

use crate::deployment::downtime::Unavailable;
use crate::deployment::error::Outcome;
use crate::deployment::events::Event;
use crate::deployment::executor::{Recorded, Scope};
use crate::deployment::leases::Lease;
use crate::deployment::sequencer::{Handler, verify_steps};
use crate::deployment::sequencer::{host_rollback, job_step, step_ok};
use crate::deployment::verify::{run_probes, verify_and_arm};
use crate::deployment::{self, DeployError, Executor};
use crate::jobs::{Deadline, finish, human_secs, step};
use crate::journal::Journal;
use crate::output::{Exit, Out};
use crate::plan::{OnWaveFailure, Plan};

/// What happened on one host of a wave.
#[derive(Default)]
pub(crate) struct WaveHost {
    /// The activate job ran (the switch may have happened: roll back).
    pub(crate) activated: bool,
    /// The release went live.
    pub(crate) switched: bool,
    /// Its watchdog is armed.
    pub(crate) armed: bool,
    pub(crate) warnings: Vec<String>,
    pub(crate) failure: Option<DeployError>,
}

/// One host of a wave: `activate`, then the switch's other steps (`steps`,
/// compiled; a wave runs without maintenance) in their compiled order:
/// validate (probes and gate, a pause waiting for its decision), arm its
/// watchdog. Runs beside the wave's
/// other hosts on the sequencer's task, so `unavailable` is shared through
/// a `RefCell` borrowed between awaits only.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn wave_host(
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
    steps: &[Handler],
) -> WaveHost {
    let release = plan.release.as_ref().expect("checked by deploy");
    let (host, lease) = (&plan.hosts[i], &leases[i]);
    let mut r = WaveHost::default();
    if let Err(e) = lease.check() {
        r.failure = Some(e.into());
        return r;
    }
    let job = job_step(exec, out, host, "activate", lease, Deadline::of(plan), None).await;
    if let Ok(job) = &job {
        unavailable.borrow_mut().add(&host.name, job);
    }
    let result = step_ok(job);
    // A failed switch may or may not have happened: roll this host back too.
    r.activated = true;
    if let Err(e) = result {
        let e = e.to_string();
        step(out, &host.name, "activate", "failed", &e);
        r.failure = Some(DeployError::Activation {
            host: host.name.clone(),
            headline: error_headline(&e).to_string(),
        });
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
    match verify_and_arm(
        out,
        journal,
        exec,
        plan,
        id,
        host,
        before,
        previous,
        leases,
        &mut r.warnings,
        &verify_steps(steps),
    )
    .await
    {
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
/// own host at once and named in `tolerated`. Each wave is its `wave`
/// record step (the `wave-N` row: its outcome), run again on a resume
/// (its hosts' steps replay by their own rules).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_waves(
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
    steps: &[Handler],
) -> Option<DeployError> {
    let of = plan.waves.len();
    for (w, wave) in plan.waves.iter().enumerate() {
        let label = wave.label(w + 1, of);
        let names: Vec<String> = wave
            .hosts
            .iter()
            .map(|&i| plan.hosts[i].name.clone())
            .collect();
        out.line(format!("{label}: {}", names.join(", ")));
        out.emit(Event::Wave {
            wave: w + 1,
            of,
            name: wave.name.clone(),
            hosts: names.clone(),
            state: "running".into(),
            detail: None,
            max_fail: Some(wave.max_fail),
            soak_secs: wave.soak.map(|s| s.as_secs()),
        });
        let mut stop: Option<DeployError> = None;
        let (label_ref, names_ref, stop_ref) = (&label, &names, &mut stop);
        let mine = (
            &mut *warnings,
            &mut *unavailable,
            &mut *watched,
            (&mut *activated, &mut *switched),
            &mut *tolerated,
        );
        let run = move || async move {
            let (warnings, unavailable, watched, activated_switched, tolerated) = mine;
            let (state, detail, failure) = one_wave(
                out,
                journal,
                exec,
                plan,
                id,
                w,
                label_ref,
                previous,
                before,
                leases,
                warnings,
                unavailable,
                watched,
                activated_switched,
                tolerated,
                steps,
            )
            .await;
            *stop_ref = failure;
            out.line(format!("{label_ref}: {state} — {detail}"));
            out.emit(Event::Wave {
                wave: w + 1,
                of,
                name: wave.name.clone(),
                hosts: names_ref.clone(),
                state: state.into(),
                detail: Some(detail.clone()),
                max_fail: None,
                soak_secs: None,
            });
            Ok::<_, std::convert::Infallible>(WaveEnd {
                state: state.into(),
                detail,
            })
        };
        let judge = |r: &Result<WaveEnd, std::convert::Infallible>| match r {
            Ok(end) if end.state == "ok" => ("ok", end.detail.clone()),
            Ok(end) if end.state == "paused" => ("paused", end.detail.clone()),
            Ok(end) => ("failed", end.detail.clone()),
            Err(never) => match *never {},
        };
        if let Err(e) = exec.record(Scope::Wave(w), "wave", run, judge).await {
            return Some(e.into());
        }
        if stop.is_some() {
            return stop;
        }
    }
    None
}

/// A wave's outcome as its `wave-N` row records it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WaveEnd {
    /// "ok", "failed" or "paused".
    pub(crate) state: String,
    pub(crate) detail: String,
}

/// Wave `w` of [`run_waves`]: `(state, detail, the failure that stops the
/// deployment)`.
#[allow(clippy::too_many_arguments)]
async fn one_wave(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    w: usize,
    label: &str,
    previous: &[Option<String>],
    before: &[Vec<ProbeResult>],
    leases: &[Lease],
    warnings: &mut Vec<String>,
    unavailable: &mut Unavailable,
    watched: &mut Vec<String>,
    (activated, switched): (&mut Vec<usize>, &mut Vec<usize>),
    tolerated: &mut Vec<String>,
    steps: &[Handler],
) -> (&'static str, String, Option<DeployError>) {
    let wave = &plan.waves[w];
    let label = label.to_string();
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
            steps,
        )
    })
    .await;
    *unavailable = cell.into_inner();

    // Judged in plan order, whatever order the hosts finished in.
    let mut failed: Vec<(usize, DeployError)> = Vec::new();
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
    if let Some(at) = failed.iter().position(|(_, f)| f.exit() == Exit::Paused) {
        let (_, paused) = failed.swap_remove(at);
        return ("paused", paused.to_string(), Some(paused));
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
            failed[0].1
        );
        let (_, first) = failed.swap_remove(0);
        let stop = DeployError::Wave {
            label,
            detail: detail.clone(),
            first: Box::new(first),
        };
        policy(out, journal, plan, id, w, activated, &stop.to_string());
        return ("failed", detail, Some(stop));
    }
    for (i, failure) in failed {
        let name = plan.hosts[i].name.clone();
        let why = failure.to_string();
        // Rolled back on its own; the rest of the wave stays.
        let mut stuck = Vec::new();
        let back = switch_back(
            out,
            journal,
            exec,
            plan,
            id,
            previous,
            leases,
            &[i],
            Some(failure),
            unavailable,
            &mut stuck,
        )
        .await;
        activated.retain(|&a| a != i);
        watched.retain(|h| *h != name);
        let rolled_back = back.exit() == Exit::RolledBack;
        if !rolled_back && exec.lost(&name).is_some() {
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
        if !rolled_back {
            let detail = format!(
                "{name} failed within max_fail = {}, but could not be rolled back: {}",
                wave.max_fail,
                back.message()
            );
            let stop = DeployError::WaveNotBack {
                label,
                detail: detail.clone(),
            };
            policy(out, journal, plan, id, w, activated, &stop.to_string());
            return ("failed", detail, Some(stop));
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
        let soaked = soak_step(out, journal, exec, plan, id, w, &label, soak, &live, leases);
        if let Err(why) = soaked.await {
            let detail = why.to_string();
            let stop = DeployError::Soak {
                label,
                source: Box::new(why),
            };
            policy(out, journal, plan, id, w, activated, &stop.to_string());
            return ("failed", detail, Some(stop));
        }
        detail.push_str(&format!("; soaked {}", human_secs(soak.as_secs())));
    }
    // The team channel hears of each wave but the last from this
    // event (issue 15; `notify::derive`).
    ("ok", detail, None)
}

/// A soak's verdict as the journal records it (the wave's `soak` record
/// step): a resume reads it back rather than soaking again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum SoakVerdict {
    Passed,
    /// A critical probe failed on a host during the soak.
    ProbeFailed {
        probe: String,
        host: String,
        message: String,
    },
}

/// The fact under which a wave's soak start (wall clock, ms) is kept.
pub(crate) fn soak_start_fact(wave: usize) -> String {
    format!("soak-start:wave-{}", wave + 1)
}

/// Wave `w`'s soak as a record step (issue 14). Its start is journaled
/// when it first begins; a resume reads back a finished soak's verdict,
/// and soaks an unfinished one only for what remains of its window (the
/// time the controller was gone counts: the agents' leases and watchdogs
/// held meanwhile). A window that ran out while the controller was gone
/// is sampled once more before it is judged: nothing watched the probes
/// meanwhile, and the agents keep no probe history to read.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn soak_step(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    w: usize,
    label: &str,
    soak: Duration,
    live: &[usize],
    leases: &[Lease],
) -> Result<(), DeployError> {
    let run = || async {
        let fact = soak_start_fact(w);
        let now = golive_shared::protocol::now_millis();
        let started = match journal.fact(id, &fact).ok().flatten() {
            Some(v) => v.parse::<i64>().unwrap_or(now),
            None => {
                journal
                    .set_fact(id, &fact, &now.to_string())
                    .map_err(|source| DeployError::JournalFact {
                        id: id.to_string(),
                        source,
                    })?;
                now
            }
        };
        let gone = Duration::from_millis(u64::try_from(now - started).unwrap_or(0));
        match soak_wave(out, journal, plan, id, label, soak, gone, live, leases).await {
            Ok(()) => Ok(SoakVerdict::Passed),
            Err(DeployError::SoakProbe {
                probe,
                host,
                message,
            }) => Ok(SoakVerdict::ProbeFailed {
                probe,
                host,
                message,
            }),
            Err(e) => Err(e),
        }
    };
    let judge = |r: &Result<SoakVerdict, DeployError>| match r {
        Ok(SoakVerdict::Passed) => ("ok", format!("soaked {}", human_secs(soak.as_secs()))),
        Ok(SoakVerdict::ProbeFailed {
            probe,
            host,
            message,
        }) => (
            "failed",
            format!("critical probe {probe} failed on {host}: {message}"),
        ),
        Err(e) => ("failed", e.to_string()),
    };
    let verdict = match exec.record(Scope::Wave(w), "soak", run, judge).await? {
        Recorded::Before(v) => {
            out.line(format!(
                "{label}: soak finished before the interruption ({}), read back",
                match &v {
                    SoakVerdict::Passed => "passed".to_string(),
                    SoakVerdict::ProbeFailed { probe, host, .. } =>
                        format!("critical probe {probe} failed on {host}"),
                }
            ));
            v
        }
        Recorded::Now(r) => r?,
    };
    match verdict {
        SoakVerdict::Passed => Ok(()),
        SoakVerdict::ProbeFailed {
            probe,
            host,
            message,
        } => Err(DeployError::SoakProbe {
            probe,
            host,
            message,
        }),
    }
}

/// A wave's soak: its live hosts' probes re-run every few seconds for
/// `soak`, less `gone` (the part of the window that passed before: a
/// resumed soak), at least one sample; a failing critical probe (or
/// probes that cannot run, or a lost lock) fails the wave.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn soak_wave(
    out: Out,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    label: &str,
    soak: Duration,
    gone: Duration,
    live: &[usize],
    leases: &[Lease],
) -> Result<(), DeployError> {
    let every = (soak / 5).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let left = soak.saturating_sub(gone);
    // A window that ran out while no controller watched: one sample.
    let left = if gone.is_zero() {
        left
    } else {
        left.max(every)
    };
    let until = tokio::time::Instant::now() + left;
    if gone.is_zero() {
        out.line(format!(
            "{label}: soaking for {}, probes every {} s",
            human_secs(soak.as_secs()),
            every.as_secs()
        ));
    } else {
        out.line(format!(
            "{label}: resuming the soak: {} of {} remain (started {} ago), probes every {} s",
            human_secs(left.as_secs()),
            human_secs(soak.as_secs()),
            human_secs(gone.as_secs()),
            every.as_secs()
        ));
    }
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
            let report = report.map_err(|e| DeployError::SoakProbes {
                source: Box::new(e),
            })?;
            if let Some(r) = report.results.iter().find(|r| {
                r.status.failed() && r.severity == golive_shared::protocol::Severity::Critical
            }) {
                let stop = DeployError::SoakProbe {
                    probe: r.name.clone(),
                    host: host.clone(),
                    message: r.message.clone(),
                };
                let why = stop.to_string();
                let _ = journal.add_decision(
                    id,
                    "wave soak",
                    "rollback",
                    Some(&why),
                    &what_goes_back(plan),
                );
                out.emit(Event::Decision {
                    by: "wave soak".into(),
                    decision: "rollback".into(),
                    reason: why,
                });
                return Err(stop);
            }
        }
    }
}

/// `[deploy] on_wave_failure` applied to wave `w` (0-based) that failed
/// with `why`: with "rollback-wave", the hosts of the waves before it leave
/// `activated` (they keep the release; the switch-back takes only this
/// wave's), and the decision goes to the journal beside the wave's failed
/// step. With "rollback-all" (today's behaviour), every host stays in
/// `activated` for the switch-back.
fn policy(
    out: Out,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    w: usize,
    activated: &mut Vec<usize>,
    why: &str,
) {
    if plan.on_wave_failure != OnWaveFailure::RollbackWave {
        return;
    }
    let wave = &plan.waves[w].hosts;
    let kept: Vec<&str> = activated
        .iter()
        .filter(|i| !wave.contains(i))
        .map(|&i| plan.hosts[i].name.as_str())
        .collect();
    activated.retain(|i| wave.contains(i));
    let next = what_goes_back(plan);
    let next = if kept.is_empty() {
        next
    } else {
        format!(
            "{next}; {} keep the release: `golivectl rollback {id}` rolls them back too",
            kept.join(", ")
        )
    };
    let _ = journal.add_decision(id, "wave policy", "rollback-wave", Some(why), &next);
    out.emit(Event::Decision {
        by: "wave policy".into(),
        decision: "rollback-wave".into(),
        reason: why.into(),
    });
}

/// What a failed wave switches back under the plan's `on_wave_failure`.
pub(crate) fn what_goes_back(plan: &Plan) -> String {
    match plan.on_wave_failure {
        OnWaveFailure::RollbackAll => {
            "switch back every host this deployment switched, to the release it ran before"
                .to_string()
        }
        OnWaveFailure::RollbackWave => "switch back only the failed wave's hosts, to the release \
                                        they ran before; earlier waves keep the new release \
                                        (on_wave_failure = \"rollback-wave\")"
            .to_string(),
    }
}

/// The dry run's line on what a failed wave sends back; `None` without
/// `[[waves]]`.
pub(crate) fn policy_line(plan: &Plan) -> Option<String> {
    (!plan.waves.is_empty()).then(|| {
        format!(
            "dry run: a wave that fails (over its max_fail, or in its soak): {} ([deploy] \
             on_wave_failure = {:?})",
            match plan.on_wave_failure {
                OnWaveFailure::RollbackAll => "every host switched so far goes back".to_string(),
                OnWaveFailure::RollbackWave => "only that wave's hosts go back; the waves before \
                     it keep the release and the deployment ends partial (exit 3)"
                    .to_string(),
            },
            plan.on_wave_failure.name()
        )
    })
}

/// Whether deployment `id` ends with hosts that kept the new release
/// after a switch-back (a wave failed under "rollback-wave"): it is then
/// `partial`, not `rolled_back`.
pub(crate) fn kept_the_release(plan: &Plan, journal: &Journal, id: &str) -> bool {
    plan.on_wave_failure == OnWaveFailure::RollbackWave
        && !plan.waves.is_empty()
        && !kept_hosts(journal, id).is_empty()
}

/// Hosts of deployment `id` the journal shows live on its release.
fn kept_hosts(journal: &Journal, id: &str) -> Vec<String> {
    match journal.deployment(id) {
        Ok(Some(d)) => d
            .hosts
            .into_iter()
            .filter(|h| h.state == "active")
            .map(|h| h.host)
            .collect(),
        _ => Vec::new(),
    }
}

/// Phase 4b: on a failure, switch every activated host back, newest first;
/// the outcome of the deployment. Hosts a wave policy left out of
/// `activated` (on_wave_failure = "rollback-wave") keep the release, and
/// the outcome names them and the command that takes them back too.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn switch_back_if_failed(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    previous: &[Option<String>],
    leases: &[Lease],
    activated: &[usize],
    failure: Option<DeployError>,
    unavailable: &mut Unavailable,
    stuck: &mut Vec<usize>,
) -> Outcome {
    let failed = failure.is_some();
    let mut outcome = switch_back(
        out,
        journal,
        exec,
        plan,
        id,
        previous,
        leases,
        activated,
        failure,
        unavailable,
        stuck,
    )
    .await;
    if failed && plan.on_wave_failure == OnWaveFailure::RollbackWave && !plan.waves.is_empty() {
        let kept = kept_hosts(journal, id);
        if !kept.is_empty() {
            let release = plan.release.as_ref().expect("checked by deploy");
            outcome.note(&format!(
                "; {} keep release {} (on_wave_failure = \"rollback-wave\": only the failed \
                 wave went back); `golivectl rollback {id}` rolls them back too",
                kept.join(", "),
                release.id
            ));
        }
    }
    outcome
}

/// The switch-back of `activated` on a failure, newest first; the outcome.
#[allow(clippy::too_many_arguments)]
async fn switch_back(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    previous: &[Option<String>],
    leases: &[Lease],
    activated: &[usize],
    failure: Option<DeployError>,
    unavailable: &mut Unavailable,
    stuck: &mut Vec<usize>,
) -> Outcome {
    let release = plan.release.as_ref().expect("checked by deploy");
    match failure {
        None => Outcome::Live {
            message: format!(
                "release {} is live on {} host(s)",
                release.id,
                plan.hosts.len()
            ),
        },
        Some(stop) => {
            let why = stop.to_string();
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
                    Err(e) => {
                        let e = e.to_string();
                        step(out, &host.name, "switch-back", "failed", &e);
                        all_back = false;
                        stuck.push(i);
                        not_back.push(format!("{}: {e}", host.name));
                        // Not even a hello within the deadline: lost, and
                        // its later steps are skipped at once (issue 14).
                        if exec.lost(&host.name).is_none()
                            && Deadline::of(plan).lost(&host.client).await
                        {
                            exec.lose(&host.name, error_headline(&e));
                        }
                    }
                }
            }
            if all_back && !activated.is_empty() {
                Outcome::SwitchedBack {
                    stop,
                    notes: String::new(),
                }
            } else if activated.is_empty() {
                Outcome::stopped(stop)
            } else {
                Outcome::Failed {
                    message: format!(
                        "{why}; SWITCH-BACK INCOMPLETE, check `golivectl status`: {}",
                        not_back.join("; ")
                    ),
                }
            }
        }
    }
}

/// The hosts of `activated` to switch back and their host rollback jobs,
/// in the deployment's rollback plan (issue 14): newest activation first,
/// from the journal's record, those already rolled back left out, a first
/// install (nothing to go back to) last. When the journal cannot be read,
/// every host of `activated`, newest first, so none is left on the release.
pub(crate) fn rollback_order(
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
pub(crate) async fn schema_after_switch_back(plan: &Plan, id: &str) -> Option<String> {
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
