//! Verifying a switched host: its probes (before and after), the gate's
//! verdict and, on a pause, waiting for `go` / `no-go`; arming the host's
//! watchdog and noticing one that fired.

use std::time::Duration;

use golive_shared::protocol::{
    ProbeReport, ProbeResult, ProbeStatus, Request, Response, RunProbesRequest, now_millis,
};
use golive_shared::protocol::{WatchdogInfo, WatchdogState, WatchdogStatusRequest};
use golive_shared::timefmt::utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::ClientError;
use crate::deployment::events::Event;
use crate::deployment::executor::{Recorded, Scope};
use crate::deployment::leases::Lease;
use crate::deployment::sequencer::Handler;
use crate::deployment::{DeployError, Executor, StepError, StepRequest};
use crate::gate::{self, Action};
use crate::jobs::{Deadline, step};
use crate::journal::Journal;
use crate::output::Out;
use crate::plan::{self, Plan};

/// Runs the app's probes on one host, all of them; reports each result.
pub(crate) async fn run_probes(
    out: Out,
    plan: &Plan,
    host: &plan::Host,
    phase: &str,
) -> Result<ProbeReport, DeployError> {
    let report = take_probes(plan, host).await?;
    show_probes(out, plan, host, phase, &report);
    Ok(report)
}

/// Runs the app's probes on one host and reports nothing: the request of
/// [`run_probes`], for a caller that reports the results later.
pub(crate) async fn take_probes(
    plan: &Plan,
    host: &plan::Host,
) -> Result<ProbeReport, DeployError> {
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
        Ok(other) => return Err(c.unexpected(&other).into()),
        Err(source) => {
            return Err(DeployError::Probes {
                host: host.name.clone(),
                source: Box::new(source),
            });
        }
    };
    Ok(report)
}

/// Reports probe results `report` of `host` in `phase`: a line and an event
/// each, and a warning when the app declares none.
fn show_probes(out: Out, plan: &Plan, host: &plan::Host, phase: &str, report: &ProbeReport) {
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
        out.emit(Event::Probe {
            phase: phase.to_string(),
            host: host.name.clone(),
            probe: r.name.clone(),
            kind: r.kind.clone(),
            severity: r.severity.as_str().into(),
            status: r.status.as_str().into(),
            value: r.value.clone(),
            threshold: r.threshold.clone(),
            message: r.message.clone(),
            duration_ms: r.duration_ms,
        });
    }
    if report.results.is_empty() {
        out.line(format!(
            "[{}]   warning: app {} declares no probes on this host; nothing verified the release",
            host.name, plan.app
        ));
    }
}

/// Probe results taken early, one slot per host of the plan: `None` where
/// none were taken. See [`take_before_early`].
pub(crate) type Early = Vec<Option<Result<ProbeReport, String>>>;

/// The probes before, taken while the release uploads and stages (issue
/// 14): they read the live release, which staging does not touch, so they
/// need not wait for it. Nothing is reported or recorded here; the
/// `probe-before` step does both, in its compiled place ([`probe_before`]).
/// A host whose figures a resumed deployment reads back is not asked.
/// `probed[i]` is notified once host `i` (plan order) is done here, asked
/// or not: its upload waits for it ([`super::sequencer::stage_all`]).
pub(crate) async fn take_before_early(
    exec: &Executor<'_>,
    plan: &Plan,
    probed: &[tokio::sync::Notify],
) -> Early {
    crate::fanout::all(
        plan.parallel,
        plan.hosts.iter().enumerate(),
        |(i, host)| async move {
            let taken = if exec.replays(Scope::Host(&host.name), "probe-before") {
                None
            } else {
                Some(take_probes(plan, host).await.map_err(|e| e.to_string()))
            };
            // A stored permit when the host's upload is not waiting yet.
            if let Some(n) = probed.get(i) {
                n.notify_one();
            }
            taken
        },
    )
    .await
}

/// The figures before the switch: every host's probes on the live release,
/// recorded as phase "before" (the deployment record compares them with
/// the results after). A failure here is reported, not a stop: preflight is
/// the place to refuse a deployment on the current release's health.
/// `early` holds the results [`take_before_early`] took beside staging;
/// a host without them is probed now.
pub(crate) async fn probe_before(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    mut early: Early,
) -> Result<Vec<Vec<ProbeResult>>, DeployError> {
    early.resize(plan.hosts.len(), None);
    // Read-only: every host at once, up to `[deploy] parallel` (issue 14).
    crate::fanout::all(
        plan.parallel,
        plan.hosts.iter().zip(early),
        |(host, early)| probe_before_host(out, journal, exec, plan, id, host, early),
    )
    .await
    .into_iter()
    .collect()
}

/// [`probe_before`] on one host: a record step. A resumed deployment reads
/// back the figures its start took (the host may run the new release by
/// now, so probing again would compare the release with itself); a run
/// whose probes could not be taken is recorded as no figures.
pub(crate) async fn probe_before_host(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    early: Option<Result<ProbeReport, String>>,
) -> Result<Vec<ProbeResult>, DeployError> {
    let run = || async {
        let taken = match early {
            Some(taken) => taken,
            None => take_probes(plan, host).await.map_err(|e| e.to_string()),
        };
        Ok::<_, DeployError>(match taken {
            Ok(report) => {
                show_probes(out, plan, host, "before", &report);
                let _ = journal.save_probes(id, &host.name, "before", &report.results);
                Ok(report)
            }
            Err(e) => Err(e),
        })
    };
    let judge = |r: &Result<Result<ProbeReport, String>, DeployError>| match r {
        Ok(Ok(report)) => ("ok", before_detail(report)),
        Ok(Err(e)) => ("failed", e.clone()),
        Err(e) => ("failed", e.to_string()),
    };
    let r = match exec
        .record(Scope::Host(&host.name), "probe-before", run, judge)
        .await?
    {
        Recorded::Before(r) => {
            let detail = match &r {
                Ok(report) => before_detail(report),
                Err(e) => format!("could not be taken: {e}"),
            };
            step(
                out,
                &host.name,
                "probe-before",
                "ok",
                &format!("taken before the interruption, read back: {detail}"),
            );
            return Ok(r.map(|report| report.results).unwrap_or_default());
        }
        Recorded::Now(r) => r?,
    };
    match r {
        Ok(report) => {
            step(
                out,
                &host.name,
                "probe-before",
                "ok",
                &before_detail(&report),
            );
            Ok(report.results)
        }
        Err(e) => {
            step(out, &host.name, "probe-before", "failed", &e);
            Ok(Vec::new())
        }
    }
}

/// probe-before's detail: how many passed on the live release.
fn before_detail(report: &ProbeReport) -> String {
    let failing: Vec<String> = report
        .failures()
        .iter()
        .map(|r| format!("{} ({})", r.name, r.severity.as_str()))
        .collect();
    let (judged, na) = judged(report);
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
    detail
}

/// (probes judged, probes not applicable): an app with nothing live has
/// probes that were not run (issue 12).
pub(crate) fn judged(report: &ProbeReport) -> (usize, usize) {
    let na = report
        .results
        .iter()
        .filter(|r| r.status == ProbeStatus::NotApplicable)
        .count();
    (report.results.len() - na, na)
}

/// A switched host's own steps after its `activate`, as the compiled
/// deployment lists them (issue 14): `steps` in their compiled order, each
/// dispatched to its handler: `probe`, `gate` (its verdict), `decision`
/// (when the gate paused), `watchdog-arm` (when compiled: none runs
/// otherwise). `Ok(true)`: the watchdog is armed. The one walk every path
/// (host by host, after maintenance, in a wave) follows; the phase decides
/// which of the switch's steps it hands here ([`program`] checked their
/// order). `Err` with exit 3 to switch back, exit 4 when a pause got no
/// decision in time.
///
/// [`program`]: super::sequencer::program
#[allow(clippy::too_many_arguments)]
pub(crate) async fn verify_and_arm(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    before: &[ProbeResult],
    previous: Option<&str>,
    leases: &[Lease],
    warnings: &mut Vec<String>,
    steps: &[Handler],
) -> Result<bool, DeployError> {
    let out_of_place = |step: &str| {
        DeployError::from(StepError::NotRunnable {
            id: id.to_string(),
            step: step.into(),
            why: "out of its place in the switch".into(),
        })
    };
    let mut report: Option<ProbeReport> = None;
    let mut paused: Option<GateVerdict> = None;
    let mut armed = false;
    for h in steps {
        match h {
            Handler::Probe => {
                report = Some(probe_step(out, journal, exec, plan, id, host).await?);
            }
            Handler::Gate => {
                let report = report.as_ref().ok_or_else(|| out_of_place("gate"))?;
                paused =
                    gate_step(out, journal, exec, plan, id, host, report, before, warnings).await?;
            }
            Handler::Decision => {
                if let Some(verdict) = paused.take() {
                    decision_step(out, journal, exec, plan, id, host, &verdict, leases).await?;
                }
            }
            Handler::WatchdogArm => {
                armed = arm_host(out, journal, exec, plan, id, host, previous).await?;
            }
            other => return Err(out_of_place(&format!("{other:?}"))),
        }
    }
    if paused.is_some() {
        return Err(out_of_place("decision"));
    }
    Ok(armed)
}

/// The gate's verdict on one host as the journal records it (the `gate`
/// record step's value), so that a resume reads it back rather than
/// evaluating again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GateVerdict {
    /// [`Action::as_str`].
    pub(crate) action: String,
    pub(crate) summary: String,
    /// The reasons, as the gate event carries them.
    pub(crate) reasons: serde_json::Value,
    /// A pause: the newest decision's seq when it began, so a `go` given
    /// while the controller was gone is the one a resume finds.
    pub(crate) decisions_after: i64,
}

/// The host's `probe` step: its probes after the switch (recorded as phase
/// "after"), a record step (a resume reads back the probes taken then).
async fn probe_step(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
) -> Result<ProbeReport, DeployError> {
    let run = || async {
        let report = run_probes(out, plan, host, "after").await?;
        let _ = journal.save_probes(id, &host.name, "after", &report.results);
        Ok(report)
    };
    let judge = |r: &Result<ProbeReport, DeployError>| match r {
        Ok(report) => {
            let (passed, judged) = passed(report);
            let state = if passed == judged { "ok" } else { "failed" };
            (state, format!("{passed}/{judged} passed"))
        }
        Err(e) => ("failed", e.to_string()),
    };
    Ok(
        match exec
            .record(Scope::Host(&host.name), "probe", run, judge)
            .await?
        {
            Recorded::Before(report) => {
                let (passed, judged) = passed(&report);
                step(
                    out,
                    &host.name,
                    "probe",
                    if passed == judged { "ok" } else { "failed" },
                    &format!("{passed}/{judged} passed (taken before the interruption, read back)"),
                );
                report
            }
            Recorded::Now(r) => {
                let report = r?;
                let (passed, judged) = passed(&report);
                step(
                    out,
                    &host.name,
                    "probe",
                    if passed == judged { "ok" } else { "failed" },
                    &format!("{passed}/{judged} passed"),
                );
                report
            }
        },
    )
}

/// The host's `gate` step: the gate's verdict on its probes, a record step
/// (a resume reads the verdict back). `Ok(None)` to go on (a warning
/// pushed when the gate says warn), `Ok(Some(verdict))` when it pauses
/// (the `decision` step answers it), `Err` (exit 3) to switch back.
#[allow(clippy::too_many_arguments)]
async fn gate_step(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    report: &ProbeReport,
    before: &[ProbeResult],
    warnings: &mut Vec<String>,
) -> Result<Option<GateVerdict>, DeployError> {
    let run = || async {
        let eval = gate::evaluate(&plan.gate, &host.name, report, before);
        let _ = journal.save_gate(id, &eval);
        let summary = eval.summary();
        out.emit(Event::Gate {
            host: host.name.clone(),
            action: eval.action.as_str().into(),
            summary: summary.clone(),
            reasons: json!(eval.reasons),
        });
        Ok::<_, DeployError>(GateVerdict {
            action: eval.action.as_str().into(),
            summary,
            reasons: json!(eval.reasons),
            decisions_after: journal
                .decisions(id, 0)
                .ok()
                .and_then(|d| d.last().map(|d| d.seq))
                .unwrap_or(0),
        })
    };
    let judge = |r: &Result<GateVerdict, DeployError>| match r {
        Ok(v) if v.action == Action::Rollback.as_str() => ("failed", v.summary.clone()),
        Ok(v) => ("ok", format!("{}: {}", gate_state(&v.action), v.summary)),
        Err(e) => ("failed", e.to_string()),
    };
    let (verdict, again) = match exec
        .record(Scope::Host(&host.name), "gate", run, judge)
        .await?
    {
        Recorded::Before(v) => (v, true),
        Recorded::Now(r) => (r?, false),
    };
    let action = Action::parse(&verdict.action).unwrap_or(Action::Rollback);
    let summary = verdict.summary.clone();
    let state = gate_state(&verdict.action);
    if again {
        step(
            out,
            &host.name,
            "gate",
            state,
            &format!("{summary} (the verdict taken before the interruption, read back)"),
        );
    } else {
        step(out, &host.name, "gate", state, &summary);
    }
    match action {
        Action::Continue => Ok(None),
        Action::Warn => {
            warnings.push(format!("{}: {summary}", host.name));
            Ok(None)
        }
        Action::Rollback => {
            if !again {
                gate_decision(out, journal, id, host, &verdict);
            }
            Err(DeployError::Gate {
                host: host.name.clone(),
                summary,
            })
        }
        Action::Pause => Ok(Some(verdict)),
    }
}

/// The host's `decision` step: the answer (`go` / `no-go`) to its gate's
/// pause, a record step (a resume reads it back rather than waiting again).
#[allow(clippy::too_many_arguments)]
async fn decision_step(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    verdict: &GateVerdict,
    leases: &[Lease],
) -> Result<(), DeployError> {
    let wait = || {
        wait_for_decision(
            out,
            journal,
            plan,
            id,
            host,
            &verdict.summary,
            leases,
            verdict.decisions_after,
        )
    };
    let judge = |r: &Result<Decided, DeployError>| match r {
        Ok(d) if d.decision == "go" => ("go", d.who.clone()),
        Ok(d) => ("no-go", d.who.clone()),
        Err(e @ DeployError::NoDecision { .. }) => ("no decision", e.to_string()),
        Err(e) => ("failed", e.to_string()),
    };
    let d = match exec
        .record(Scope::Host(&host.name), "decision", wait, judge)
        .await?
    {
        Recorded::Before(d) => {
            let who = format!("{} (taken before the interruption, read back)", d.who);
            step(out, &host.name, "decision", &d.decision, &who);
            d
        }
        Recorded::Now(r) => {
            let d = r?;
            step(out, &host.name, "decision", &d.decision, &d.who);
            d
        }
    };
    if d.decision == "go" {
        Ok(())
    } else {
        Err(DeployError::NoGo {
            host: host.name.clone(),
            who: d.who,
        })
    }
}

/// A pause's decision as the journal records it (the host's `decision`
/// record step): a resume reads it back rather than waiting again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Decided {
    /// "go" or "no-go".
    pub(crate) decision: String,
    /// "go by alice: NOTE".
    pub(crate) who: String,
}

/// The gate's rollback as a decision: the gate decides like a person
/// would, and the record says so (issue 12): which rule, which probes,
/// what happens next.
fn gate_decision(out: Out, journal: &Journal, id: &str, host: &plan::Host, verdict: &GateVerdict) {
    let rules: std::collections::BTreeSet<String> = verdict
        .reasons
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "rollback")
        .filter_map(|r| r["severity"].as_str())
        .map(|s| format!("{s} = rollback"))
        .collect();
    let rules: Vec<String> = rules.into_iter().collect();
    let reason = format!(
        "[gate] {} on {}: {}",
        rules.join(", "),
        host.name,
        verdict.summary
    );
    let _ = journal.add_decision(
        id,
        "gate policy",
        "rollback",
        Some(&reason),
        "switch back every host this deployment switched, to the release it ran before",
    );
    out.emit(Event::Decision {
        by: "gate policy".into(),
        decision: "rollback".into(),
        reason,
    });
}

/// (probes passed, probes judged) of a report.
fn passed(report: &ProbeReport) -> (usize, usize) {
    let passed = report
        .results
        .iter()
        .filter(|r| r.status == ProbeStatus::Pass)
        .count();
    (passed, judged(report).0)
}

/// The gate step's state word for action `action` ("continue" is "ok").
fn gate_state(action: &str) -> &'static str {
    match Action::parse(action) {
        Some(Action::Continue) => "ok",
        Some(Action::Warn) => "warn",
        Some(Action::Pause) => "pause",
        Some(Action::Rollback) | None => "rollback",
    }
}

/// How often a paused deploy looks for a decision, and how far ahead its
/// heartbeat promises to keep looking.
pub(crate) const DECISION_POLL: Duration = Duration::from_millis(500);
pub(crate) const WAIT_HEARTBEAT_MS: i64 = 15_000;

/// A pause: waits (holding the locks) for `golivectl go` or `no-go` on this
/// deployment, up to the plan's `[gate] pause_timeout_secs`: the first
/// decision after seq `seen` (the newest when the pause began). Run as the
/// host's `decision` record step (`validate_host`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn wait_for_decision(
    out: Out,
    journal: &Journal,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    summary: &str,
    leases: &[Lease],
    seen: i64,
) -> Result<Decided, DeployError> {
    let timeout = plan.gate.pause_timeout_secs;
    // tokio's clock (the sequencer's tests wait out a pause on paused time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut beat = tokio::time::Instant::now();
    let _ = journal.set_paused(id, Some(now_millis() + WAIT_HEARTBEAT_MS));
    out.line(format!(
        "[{}] PAUSED: {summary}\n  decide with `golivectl go {id} --by NAME [--note TEXT]` or \
         `golivectl no-go {id} --by NAME --reason TEXT`; waiting up to {timeout} s",
        host.name
    ));
    // The notice of the pause is derived from this event.
    out.emit(Event::Paused {
        deployment: id.to_string(),
        host: host.name.clone(),
        summary: summary.to_string(),
        timeout_secs: timeout,
    });
    loop {
        tokio::time::sleep(DECISION_POLL).await;
        for lease in leases {
            if let Err(e) = lease.check() {
                let _ = journal.set_running(id);
                return Err(e.into());
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
            return Ok(Decided {
                decision: if d.decision == "go" { "go" } else { "no-go" }.into(),
                who,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = journal.set_paused(id, None);
            return Err(DeployError::NoDecision {
                host: host.name.clone(),
                id: id.to_string(),
                timeout_secs: timeout,
                summary: summary.to_string(),
            });
        }
        if beat.elapsed() >= Duration::from_secs(5) {
            beat = tokio::time::Instant::now();
            let _ = journal.set_paused(id, Some(now_millis() + WAIT_HEARTBEAT_MS));
        }
    }
}

/// Arms the plan's `[watchdog]` on a host whose release passed its gate
/// (issue 13). `Ok(true)`: armed; `Ok(false)`: no watchdog in the plan, or
/// a first install (nothing to return to, so not watched). A host that
/// refuses fails the deployment: the plan asks for the release to be
/// watched, and it is not left live unwatched.
pub(crate) async fn arm_host(
    out: Out,
    journal: &Journal,
    exec: &Executor<'_>,
    plan: &Plan,
    id: &str,
    host: &plan::Host,
    previous: Option<&str>,
) -> Result<bool, DeployError> {
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
        Err(e) => return Err(e.into()),
    };
    match r {
        Ok(detail) => {
            step(out, &host.name, "watchdog-arm", "ok", &detail);
            out.emit(Event::Watchdog {
                host: host.name.clone(),
                state: "armed".into(),
                detail: detail.clone(),
            });
            Ok(true)
        }
        Err(e) => {
            let e = match &e {
                ClientError::Agent { body, .. } => body.message.clone(),
                other => other.to_string(),
            };
            step(out, &host.name, "watchdog-arm", "failed", &e);
            Err(DeployError::Arm {
                host: host.name.clone(),
                why: e,
            })
        }
    }
}

/// "until 10:42:07Z, every 10 s, triggers: traffic 5xx above 5.0 % for 120 s, ...".
pub(crate) fn watchdog_detail(info: &WatchdogInfo) -> String {
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
pub(crate) async fn watchdogs_fired(
    plan: &Plan,
    id: &str,
    watched: &[String],
) -> Option<DeployError> {
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
            return Some(DeployError::WatchdogFired {
                host: host.name.clone(),
                reason: info.reason.unwrap_or_else(|| "no reason given".into()),
            });
        }
    }
    None
}
