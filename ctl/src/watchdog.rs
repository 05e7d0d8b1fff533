//! The plan's `[watchdog]` (issue 13): how long each host watches the
//! release after its switch, how often, and which triggers roll it back.
//! Parsed raw, then validated here into [`WatchdogSpec`] before anything
//! connects; the agent checks it again against the probes it declares.

use golive_shared::protocol::{
    JobEventsRequest, JobResult, PointState, Request, Response, RollbackPoint, StepState,
    WatchdogInfo, WatchdogState, WatchdogStatusRequest, error_headline,
};
use golive_shared::timefmt::utc;
use serde::Deserialize;

use crate::client::ClientError;
use crate::journal::{Deployment, Journal};
use crate::output::span;
use crate::plan::Plan;
use crate::transport::Link;

/// `[watchdog]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatchdog {
    /// The watch window after each host's switch, e.g. "30m".
    pub window: Option<String>,
    /// Time between two samples, e.g. "10s".
    pub interval: Option<String>,
    /// Consecutive probe errors that count as the condition holding.
    pub error_limit: Option<u32>,
    /// Dead-man: roll back unless `golivectl go ID` arrives within this.
    pub confirm_within: Option<String>,
    /// Empty or absent: each host's defaults from seed 003, built from the
    /// probes it declares.
    #[serde(default)]
    pub triggers: Vec<RawTrigger>,
}

/// `[[watchdog.triggers]]`: one condition on one probe, for a duration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    pub name: Option<String>,
    /// A probe the hosts' configs declare for the app.
    pub probe: String,
    /// Percent of 5xx answers in an access-log probe's window.
    pub error_rate_above: Option<f64>,
    /// p95 latency in an access-log probe's window, e.g. "5s".
    pub p95_above: Option<String>,
    /// The probe gets no answer.
    pub unresponsive: Option<bool>,
    /// The probe does not pass.
    pub failing: Option<bool>,
    /// How long the condition must hold in every sample, e.g. "2m".
    #[serde(rename = "for")]
    pub for_: Option<String>,
}

pub use golive_shared::protocol::{Condition, Trigger, WatchdogSpec};
use golive_shared::protocol::{
    DEFAULT_ERROR_LIMIT, DEFAULT_INTERVAL_MS, DEFAULT_WINDOW_SECS, MAX_ERROR_LIMIT,
    MAX_INTERVAL_MS, MAX_P95_MS, MAX_TRIGGERS, MAX_WINDOW_SECS, MIN_INTERVAL_MS,
};

/// A duration written with its unit: "500ms", "10s", "2m", "1h", "1d".
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. \"30s\", \"2m\", \"1h\""))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. \"30s\", \"2m\", \"1h\""))?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use ms, s, m, h or d (\"30s\", \"2m\", \"1h\")"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Validates `[watchdog]` into the spec each host is armed with; errors
/// are `(dotted key, message)`. `restore_allowed` is the plan's `[deploy]
/// restore`.
pub fn parse(
    raw: &RawWatchdog,
    restore_allowed: bool,
) -> Result<WatchdogSpec, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut secs =
        |key: &str, text: &Option<String>, default_ms: u64, min_ms: u64, max_ms: u64| match text
            .as_deref()
            .map(parse_duration_ms)
        {
            None => default_ms,
            Some(Ok(ms)) if (min_ms..=max_ms).contains(&ms) => ms,
            Some(Ok(_)) => {
                problems.push((
                    key.to_string(),
                    format!("use {} to {}", span(min_ms), span(max_ms)),
                ));
                default_ms
            }
            Some(Err(e)) => {
                problems.push((key.to_string(), e));
                default_ms
            }
        };
    let window_ms = secs(
        "watchdog.window",
        &raw.window,
        DEFAULT_WINDOW_SECS * 1000,
        1000,
        MAX_WINDOW_SECS * 1000,
    );
    let interval_ms = secs(
        "watchdog.interval",
        &raw.interval,
        DEFAULT_INTERVAL_MS,
        MIN_INTERVAL_MS,
        MAX_INTERVAL_MS,
    );
    let confirm_ms = raw.confirm_within.as_ref().map(|_| {
        secs(
            "watchdog.confirm_within",
            &raw.confirm_within,
            0,
            1000,
            window_ms,
        )
    });
    let mut triggers = Vec::new();
    for (i, t) in raw.triggers.iter().enumerate() {
        let at = |k: &str| format!("watchdog.triggers.{i}.{k}");
        let mut conditions = Vec::new();
        if let Some(p) = t.error_rate_above {
            if !(0.0..100.0).contains(&p) || !p.is_finite() {
                problems.push((at("error_rate_above"), "a percentage from 0 to 100".into()));
            } else {
                conditions.push(Condition::ErrorRateAbove {
                    per_mille: (p * 10.0).round() as u32,
                });
            }
        }
        if let Some(text) = &t.p95_above {
            match parse_duration_ms(text) {
                Ok(ms) if (1..=MAX_P95_MS).contains(&ms) => {
                    conditions.push(Condition::P95Above { ms })
                }
                Ok(_) => problems.push((at("p95_above"), "use 1ms to 10m".into())),
                Err(e) => problems.push((at("p95_above"), e)),
            }
        }
        if t.unresponsive == Some(true) {
            conditions.push(Condition::Unresponsive);
        }
        if t.failing == Some(true) {
            conditions.push(Condition::Failing);
        }
        let condition = match conditions.as_slice() {
            [c] => *c,
            [] => {
                problems.push((
                    format!("watchdog.triggers.{i}"),
                    "no condition: give one of error_rate_above = PERCENT, p95_above = \"5s\", \
                     unresponsive = true, failing = true"
                        .into(),
                ));
                continue;
            }
            _ => {
                problems.push((
                    format!("watchdog.triggers.{i}"),
                    "one condition per trigger: write another [[watchdog.triggers]] for the next"
                        .into(),
                ));
                continue;
            }
        };
        let for_ms = match t.for_.as_deref().map(parse_duration_ms) {
            None => 0,
            Some(Ok(ms)) if ms <= window_ms => ms,
            Some(Ok(_)) => {
                problems.push((
                    at("for"),
                    "longer than the watch window: it could never hold".into(),
                ));
                0
            }
            Some(Err(e)) => {
                problems.push((at("for"), e));
                0
            }
        };
        if t.probe.trim().is_empty() {
            problems.push((
                at("probe"),
                "name a probe the hosts declare for the app".into(),
            ));
        }
        let name = t.name.clone().unwrap_or_else(|| {
            let what = match condition {
                Condition::ErrorRateAbove { .. } => "error-rate",
                Condition::P95Above { .. } => "p95",
                Condition::Unresponsive => "unresponsive",
                Condition::Failing => "failing",
            };
            format!("{}-{what}", t.probe)
        });
        if let Err(e) = golive_shared::names::check_trigger_name(&name) {
            problems.push((at("name"), e));
        }
        triggers.push(Trigger {
            name,
            probe: t.probe.clone(),
            condition,
            for_secs: for_ms / 1000,
        });
    }
    if raw.triggers.len() > MAX_TRIGGERS {
        problems.push((
            "watchdog.triggers".into(),
            format!("at most {MAX_TRIGGERS} triggers"),
        ));
    }
    let error_limit = raw.error_limit.unwrap_or(DEFAULT_ERROR_LIMIT);
    if !(1..=MAX_ERROR_LIMIT).contains(&error_limit) {
        problems.push((
            "watchdog.error_limit".into(),
            format!("use 1 to {MAX_ERROR_LIMIT}"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(WatchdogSpec {
        window_secs: window_ms / 1000,
        interval_ms,
        triggers,
        error_limit,
        confirm_within_secs: confirm_ms.map(|ms| ms / 1000),
        restore_allowed,
    })
}

// ----- the controller's side of an armed deployment -----------------------

/// The hosts of a deployment whose watchdog was armed (its `watchdog-arm`
/// step succeeded).
pub fn armed_hosts(d: &Deployment) -> Vec<String> {
    let mut hosts: Vec<String> = d
        .steps
        .iter()
        .filter(|s| s.step == "watchdog-arm" && s.state == "ok")
        .map(|s| s.host.clone())
        .collect();
    hosts.dedup();
    hosts
}

/// The watchdog of deployment `id` on one host (`None`: never armed there).
pub async fn status_on(
    client: &Link,
    app: &str,
    id: &str,
) -> Result<Option<WatchdogInfo>, ClientError> {
    let req = Request::WatchdogStatus(WatchdogStatusRequest {
        app: app.to_string(),
        deployment: Some(id.to_string()),
    });
    match client.call(&req).await? {
        Response::WatchdogStatus(info) => Ok(info),
        other => Err(client.unexpected(&other)),
    }
}

/// What one host says of a deployment, read by [`sync`].
pub struct HostWatch {
    pub host: String,
    /// `Err`: the host could not be asked (its text).
    pub watchdog: Result<Option<WatchdogInfo>, String>,
}

/// Brings the record of a live deployment up to date from its hosts (issue
/// 13): what their watchdogs did (a rollback, a commit, a failure), and a
/// host rollback run on the host alone (`golive-agent rollback`), each
/// recorded once as a later action by who did it, with the host's new
/// state. Once no watchdog of a `watching` deployment watches any more, its
/// state follows: `succeeded` (every host committed), `rolled_back`,
/// `partial` or `failed`. Hosts that cannot be reached are reported, and
/// nothing is recorded for them.
///
/// What it learns is a typed event of the deployment (issue 14):
/// `host_report` per host, `settled` for the state, journaled by the
/// deployment's subscribers (attached here unless the calling command
/// already has them) and not printed; the plan's `[[notify]]` notices
/// (rolled back, confirmed) are derived from them like every other notice,
/// and waited for before this returns. Each is emitted only by the reader
/// that moved the journal's state (`Journal::change_host_state`,
/// `Journal::change_state`), so `show`, `go` and `no-go` learning the same
/// thing twice, or at once, tell it once.
pub async fn sync(
    state: &std::path::Path,
    journal: &Journal,
    d: &Deployment,
    plan: &Plan,
) -> anyhow::Result<Vec<HostWatch>> {
    let readers = crate::deployment::subscribers::attach(state, Some(plan), &d.id)?;
    let armed = armed_hosts(d);
    let mut seen = Vec::new();
    for h in &d.hosts {
        let Some(host) = plan.hosts.iter().find(|p| p.name == h.host) else {
            continue;
        };
        let watchdog = if armed.contains(&h.host) {
            status_on(&host.client, &d.app, &d.id)
                .await
                .map_err(|e| e.to_string())
        } else {
            Ok(None)
        };
        if h.state == "active" {
            let point = crate::jobs::agent_status(&host.client)
                .await
                .ok()
                .and_then(|s| s.apps.into_iter().find(|a| a.name == d.app))
                .and_then(|a| a.rollback_point)
                .filter(|p| p.deployment == d.id);
            let w = watchdog.as_ref().ok().and_then(Option::as_ref);
            // The rollback's steps and database choice, for the record.
            let job = w
                .and_then(|w| w.rollback_job)
                .or(point.as_ref().and_then(|p| p.rollback_job));
            let how = match job {
                Some(job) => rollback_of(&host.client, job).await,
                None => None,
            };
            if let Some(report) = record_host(journal, d, &h.host, w, point.as_ref(), how)? {
                tell(report);
            }
        }
        seen.push(HostWatch {
            host: h.host.clone(),
            watchdog,
        });
    }
    if (d.state == "watching" || d.state == "succeeded")
        && let Some(settled) = settle(journal, &d.id, &d.state, &armed)?
    {
        tell(settled);
    }
    // The journal's event rows synced, then the notices waited for.
    drop(readers);
    crate::notify::flush(journal).await;
    Ok(seen)
}

/// Gives what `sync` learned to the deployment's subscribers. A journal
/// that cannot take the event says so itself (the subscriber warns); the
/// state it changed is recorded either way.
fn tell(event: crate::deployment::events::Event) {
    let _ = crate::progress::emit_unprinted(event);
}

/// What a host rollback job did: its database choice and each step, read
/// from the host (`None` when it cannot be read or is not one).
async fn rollback_of(client: &Link, job: u64) -> Option<String> {
    let req = Request::JobEvents(JobEventsRequest {
        job_id: job,
        after_seq: u64::MAX,
        wait_ms: 0,
    });
    let Ok(Response::Events(r)) = client.call(&req).await else {
        return None;
    };
    let Some(JobResult::HostRolledBack(result)) = &r.job.result else {
        return r
            .job
            .error
            .as_deref()
            .map(|e| format!("job {job}: {}", error_headline(e)));
    };
    Some(format!(
        "job {job}: {}; steps: {}",
        crate::jobs::rollback_summary(result),
        result
            .steps
            .iter()
            .map(|s| format!(
                "{} {}",
                s.step,
                if s.state == StepState::Done {
                    "done"
                } else {
                    "skipped"
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Records what happened on one host that the record still shows active:
/// its new state and a later action, and the `host_report` event to emit.
/// `None` when there is nothing new, or when another reader recorded it
/// first (the host's state was no longer `active`).
fn record_host(
    journal: &Journal,
    d: &Deployment,
    host: &str,
    watchdog: Option<&WatchdogInfo>,
    point: Option<&RollbackPoint>,
    how: Option<String>,
) -> rusqlite::Result<Option<crate::deployment::events::Event>> {
    let by_watchdog = watchdog.is_some_and(|w| w.fired_at.is_some());
    let by = if by_watchdog {
        format!("watchdog on {host}")
    } else {
        format!("{host} (golive-agent rollback, or the host's own request)")
    };
    let (state, action, detail) = match (watchdog.map(|w| w.state), point.map(|p| p.state)) {
        (Some(WatchdogState::RolledBack), _) | (_, Some(PointState::RolledBack)) => (
            "rolled_back",
            "rollback",
            format!(
                "{host}: rolled back from {} to {}{}",
                d.release,
                watchdog
                    .and_then(|w| w.rollback_to.clone())
                    .or_else(|| point.and_then(|p| p.previous.clone()))
                    .unwrap_or_else(|| "the release before".into()),
                watchdog
                    .and_then(|w| w.reason.as_deref())
                    .filter(|_| by_watchdog)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
        (Some(WatchdogState::RollbackFailed), _) | (_, Some(PointState::RollbackFailed)) => (
            "rollback_failed",
            "rollback-failed",
            format!(
                "{host}: the rollback failed and the host stays in maintenance: {}",
                watchdog
                    .and_then(|w| w.reason.clone())
                    .or_else(|| point.and_then(|p| p.error.clone()))
                    .unwrap_or_else(|| "see `golivectl status`".into())
            ),
        ),
        (Some(WatchdogState::Committed), _) => (
            "committed",
            "commit",
            format!(
                "{host}: committed{}",
                watchdog
                    .and_then(|w| w.reason.as_deref())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ),
        (Some(WatchdogState::CommitFailed), _) => (
            "commit_failed",
            "commit-failed",
            format!(
                "{host}: the commit failed, the release stays live: {}",
                watchdog
                    .and_then(|w| w.reason.as_deref())
                    .unwrap_or("see `golivectl status`")
            ),
        ),
        _ => return Ok(None),
    };
    let detail = match how {
        Some(how) if action.starts_with("rollback") => format!("{detail}; {how}"),
        _ => detail,
    };
    let by = if action.starts_with("commit") {
        format!("watchdog on {host}")
    } else {
        by
    };
    // Whoever moves the host out of `active` records it; a reader that
    // comes second has nothing new to say.
    if !journal.change_host_state(&d.id, host, "active", state)? {
        return Ok(None);
    }
    journal.add_action(&d.id, &by, action, &detail)?;
    Ok(Some(crate::deployment::events::Event::HostReport {
        deployment: d.id.clone(),
        host: host.to_string(),
        action: action.to_string(),
        by,
        detail,
    }))
}

/// A `watching` deployment whose watchdogs all ended takes their outcome
/// (and a `succeeded` one whose host later went back, `partial` or
/// `rolled_back`); the `settled` event to emit when this call changed it.
fn settle(
    journal: &Journal,
    id: &str,
    was: &str,
    armed: &[String],
) -> rusqlite::Result<Option<crate::deployment::events::Event>> {
    let Some(d) = journal.deployment(id)? else {
        return Ok(None);
    };
    let states: Vec<&str> = d.hosts.iter().map(|h| h.state.as_str()).collect();
    let watching = d
        .hosts
        .iter()
        .any(|h| armed.contains(&h.host) && h.state == "active");
    if watching && was == "watching" {
        return Ok(None);
    }
    let new = if states.iter().any(|s| s.ends_with("_failed")) {
        "failed"
    } else if states.iter().all(|s| *s == "rolled_back") {
        "rolled_back"
    } else if states.contains(&"rolled_back") {
        "partial"
    } else if was == "watching" {
        "succeeded"
    } else {
        return Ok(None);
    };
    if new == was || !journal.change_state(id, was, new)? {
        return Ok(None);
    }
    let reason = if new == "succeeded" {
        match d.decisions.iter().rev().find(|x| x.decision == "go") {
            Some(go) => format!(
                "go by {}{}; every watched host committed the release",
                go.by,
                go.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            None => {
                "every watched host's window ended quietly and it committed the release".to_string()
            }
        }
    } else {
        format!(
            "its hosts: {}",
            d.hosts
                .iter()
                .map(|h| format!("{} {}", h.host, h.state))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Ok(Some(crate::deployment::events::Event::Settled {
        deployment: id.to_string(),
        state: new.to_string(),
        was: was.to_string(),
        reason,
    }))
}

/// The app's latest watchdog in one line (issue 13): armed until when,
/// or how it ended.
pub fn watchdog_line(w: &WatchdogInfo) -> String {
    let head = format!(
        "watchdog of deployment {} (release {})",
        w.deployment, w.release
    );
    match w.state {
        WatchdogState::Armed => format!(
            "{head}: ARMED until {}{}; triggers: {}",
            utc(w.until),
            w.confirm_by
                .map(|c| format!(
                    ", rolls back unless `golivectl go {}` by {}",
                    w.deployment,
                    utc(c)
                ))
                .unwrap_or_default(),
            w.triggers
                .iter()
                .map(|t| format!(
                    "{} ({}{})",
                    t.trigger.name,
                    t.last_value.as_deref().unwrap_or("not sampled yet"),
                    t.true_since
                        .map(|s| format!(", holding since {}", utc(s)))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        state => format!(
            "{head}: {}{}{}",
            state.as_str().to_uppercase().replace('_', " "),
            w.ended_at
                .or(w.fired_at)
                .map(|t| format!(" at {}", utc(t)))
                .unwrap_or_default(),
            w.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawWatchdog {
        toml::from_str(text).unwrap()
    }

    fn parse_raw(raw: &RawWatchdog) -> Result<WatchdogSpec, Vec<(String, String)>> {
        parse(raw, true)
    }

    #[test]
    fn issue13_durations_need_their_unit() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("30").unwrap_err().contains("no unit"));
        assert!(
            parse_duration_ms("3 weeks")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration_ms("m").is_err());
    }

    #[test]
    fn issue13_seed_003s_table_reads_as_triggers() {
        let w = parse_raw(&raw(
            "window = \"30m\"\ninterval = \"10s\"\nconfirm_within = \"15m\"\n\
             [[triggers]]\nprobe = \"traffic\"\nerror_rate_above = 5\nfor = \"2m\"\n\
             [[triggers]]\nprobe = \"traffic\"\np95_above = \"5s\"\nfor = \"3m\"\n\
             [[triggers]]\nname = \"down\"\nprobe = \"health\"\nunresponsive = true\nfor = \"1m\"\n",
        ))
        .unwrap();
        assert_eq!(w.window_secs, 1800);
        assert_eq!(w.interval_ms, 10_000);
        assert_eq!(w.confirm_within_secs, Some(900));
        assert_eq!(w.error_limit, 3);
        assert_eq!(
            w.triggers,
            [
                Trigger {
                    name: "traffic-error-rate".into(),
                    probe: "traffic".into(),
                    condition: Condition::ErrorRateAbove { per_mille: 50 },
                    for_secs: 120
                },
                Trigger {
                    name: "traffic-p95".into(),
                    probe: "traffic".into(),
                    condition: Condition::P95Above { ms: 5000 },
                    for_secs: 180
                },
                Trigger {
                    name: "down".into(),
                    probe: "health".into(),
                    condition: Condition::Unresponsive,
                    for_secs: 60
                },
            ]
        );
        // No triggers: the hosts' defaults; every bound checked.
        let w = parse_raw(&raw("")).unwrap();
        assert!(w.triggers.is_empty() && w.window_secs == 1800 && w.confirm_within_secs.is_none());
    }

    #[test]
    fn issue13_bad_watchdogs_name_each_key() {
        let e = parse_raw(&raw(
            "window = \"30\"\ninterval = \"10ms\"\nerror_limit = 0\n\
             [[triggers]]\nprobe = \"x\"\n\
             [[triggers]]\nprobe = \"x\"\nfailing = true\nunresponsive = true\n\
             [[triggers]]\nprobe = \"x\"\nerror_rate_above = 150\n\
             [[triggers]]\nprobe = \"x\"\nfailing = true\nfor = \"2h\"\n",
        ))
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "watchdog.window",
                "watchdog.interval",
                "watchdog.triggers.0",
                "watchdog.triggers.1",
                "watchdog.triggers.2.error_rate_above",
                "watchdog.triggers.2",
                "watchdog.triggers.3.for",
                "watchdog.error_limit",
            ],
            "{e:?}"
        );
    }
}
