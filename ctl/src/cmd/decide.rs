//! `golivectl go ID` and `golivectl no-go ID`: the human decision on a
//! paused deployment, recorded with time, who, decision, reason and next
//! action (seed 000 §5.3).
//!
//! A deploy process that paused keeps waiting (holding the locks) and
//! polls the controller journal: the decision recorded here is what it
//! acts on. When nobody waits any more (the pause timed out, exit 4), a
//! no-go rolls the deployment back from here and a go accepts the hosts as
//! they are.

use std::path::Path;
use std::time::{Duration, Instant};

use golive_shared::protocol::{ConfirmWatchdog, Request, Response, WatchdogState, now_millis};

use crate::deployment::events::Event;
use crate::journal::{Deployment, Journal};
use crate::output::{Exit, Out, usage};
use crate::plan;

pub async fn decide(
    out: Out,
    state: &Path,
    id: &str,
    by: &str,
    go: bool,
    text: Option<&str>,
) -> anyhow::Result<Exit> {
    let by = by.trim();
    if by.is_empty() || by.len() > 100 || by.chars().any(char::is_control) {
        return Err(usage(
            "--by: give the name of who decides (1 to 100 printable characters)",
        ));
    }
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    if !go && text.is_none() {
        return Err(usage(
            "--reason: say why the deployment is stopped; the record keeps it",
        ));
    }
    if text.is_some_and(|t| t.len() > 2000 || t.chars().any(|c| c.is_control() && c != '\n')) {
        return Err(usage("--note/--reason: at most 2000 printable characters"));
    }
    let decision = if go { "go" } else { "no-go" };
    let journal = Journal::open(state)?;
    let d = crate::jobs::known_deployment(&journal, state, id)?;
    if !d.stages.is_empty() {
        // A staged deployment has no hosts of its own: it pauses where one
        // of its stages does, and that stage is decided (issue 14).
        let paused = match d.stages.iter().find(|s| s.state == "paused") {
            Some(s) => format!(
                "decide its paused stage {} ({}) with `golivectl {decision} {} ...`, then",
                s.position,
                s.name,
                s.deployment.as_deref().unwrap_or_default()
            ),
            None => "none of its stages waits for a decision;".into(),
        };
        return Err(usage(format!(
            "deployment {id} is a staged deployment: {paused} carry the stages on with \
             `golivectl deploy {} --resume {id}`",
            d.plan_path
        )));
    }
    if d.state == "watching" {
        return watching(out, state, &journal, &d, by, go, text).await;
    }
    if d.state != "paused" {
        return Err(usage(format!(
            "deployment {id} is {}, not paused: there is no decision to take \
             (a deployment pauses when its gate says `pause`, e.g. a high-severity probe fails; \
             a watched one waits for its hosts' commit)",
            d.state
        )));
    }
    let waiting = d.waiting_until.is_some_and(|t| t > now_millis());
    let active: Vec<&str> = d
        .hosts
        .iter()
        .filter(|h| h.state == "active")
        .map(|h| h.host.as_str())
        .collect();
    let not_yet: Vec<&str> = d
        .hosts
        .iter()
        .filter(|h| h.state != "active")
        .map(|h| h.host.as_str())
        .collect();
    let next = match (waiting, go) {
        (true, true) => "continue: the waiting deploy goes on from the paused host".to_string(),
        (true, false) => {
            "switch back: the waiting deploy switches every activated host back".to_string()
        }
        (false, true) => format!(
            "accept as is: no deploy process waits any more; {} keep release {}{}",
            list(&active),
            d.release,
            if not_yet.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} still run the release before it (finish them with a new deployment)",
                    list(&not_yet)
                )
            }
        ),
        (false, false) => "roll back now, from this command".to_string(),
    };
    let seq = journal.add_decision(id, by, decision, text, &next)?;
    // The decision is an event of the deployment (its journal, and the
    // rollback's notice after a no-go); the plan, for the notices, if it
    // can be read.
    let plan = plan::load(Path::new(&d.plan_path)).ok();
    let _readers = crate::deployment::subscribers::attach(state, plan.as_ref(), id)?;
    out.line(format!(
        "deployment {id}: {decision} by {by} recorded (#{seq}); next: {next}"
    ));
    out.emit(decided(id, decision, by, text, &next, Some(waiting)));
    match (waiting, go) {
        (true, _) => Ok(Exit::Done),
        (false, true) => {
            let state_name = if not_yet.is_empty() {
                "succeeded"
            } else {
                "partial"
            };
            journal.finish_deployment(
                id,
                state_name,
                Some(&format!("go by {by} after the pause: {next}")),
            )?;
            Ok(Exit::Done)
        }
        (false, false) => {
            crate::deployment::rollback_run::rollback(out, state, id, None, None).await
        }
    }
}

/// How long `go` follows the commit it asked for (a backup and the
/// contract migrations) before it leaves them to the hosts.
const COMMIT_WAIT: Duration = Duration::from_secs(900);

/// `go` / `no-go` on a deployment its hosts' watchdogs watch (issue 13):
/// a go confirms every watchdog (the dead-man is satisfied and each host
/// commits now: its contract migrations run behind a verified backup) and
/// follows the commits; a no-go rolls every host back through its one
/// rollback job.
async fn watching(
    out: Out,
    state: &Path,
    journal: &Journal,
    d: &Deployment,
    by: &str,
    go: bool,
    text: Option<&str>,
) -> anyhow::Result<Exit> {
    let plan = plan::load(Path::new(&d.plan_path)).map_err(|e| {
        usage(format!(
            "{e} (the plan of deployment {}, needed to reach its hosts)",
            d.id
        ))
    })?;
    // What the hosts did meanwhile first: a watchdog that rolled back, or
    // a window that already ended.
    crate::watchdog::sync(state, journal, d, &plan).await?;
    let Some(d) = journal.deployment(&d.id)? else {
        return Ok(Exit::Failed);
    };
    if d.state != "watching" {
        return Err(usage(format!(
            "deployment {} is {} now: its hosts' watchdogs ended before this decision ({})",
            d.id,
            d.state,
            d.hosts
                .iter()
                .map(|h| format!("{}: {}", h.host, h.state))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let id = d.id.as_str();
    let _readers = crate::deployment::subscribers::attach(state, Some(&plan), id)?;
    let armed: Vec<String> = crate::watchdog::armed_hosts(&d)
        .into_iter()
        .filter(|h| d.hosts.iter().any(|x| &x.host == h && x.state == "active"))
        .collect();
    if !go {
        let next = "roll back every host now, each through its one rollback job";
        let seq = journal.add_decision(id, by, "no-go", text, next)?;
        out.line(format!(
            "deployment {id}: no-go by {by} recorded (#{seq}); next: {next}"
        ));
        out.emit(decided(id, "no-go", by, text, next, None));
        return crate::deployment::rollback_run::rollback(out, state, id, None, None).await;
    }
    let next = format!(
        "commit now on {}: the watchdogs stop, the migrations kept for the commit run behind a \
         verified backup",
        armed.join(", ")
    );
    let seq = journal.add_decision(id, by, "go", text, &next)?;
    out.line(format!(
        "deployment {id}: go by {by} recorded (#{seq}); next: {next}"
    ));
    out.emit(decided(id, "go", by, text, &next, None));
    let mut failed = Vec::new();
    for name in &armed {
        let Some(host) = plan.hosts.iter().find(|h| &h.name == name) else {
            failed.push(format!("{name}: not in the plan {}", d.plan_path));
            continue;
        };
        let req = Request::ConfirmWatchdog(ConfirmWatchdog {
            app: d.app.clone(),
            deployment: id.to_string(),
            by: by.to_string(),
        });
        match host.client.call(&req).await {
            Ok(Response::Watchdog(_)) => out.line(format!("  {name}: confirmed; committing")),
            Ok(other) => failed.push(format!("{name}: {}", host.client.unexpected(&other))),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    // Follow the commits, bounded: the hosts finish them alone anyway.
    let deadline = Instant::now() + COMMIT_WAIT;
    let mut pending: Vec<&String> = armed.iter().collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for name in pending {
            let Some(host) = plan.hosts.iter().find(|h| &h.name == name) else {
                continue;
            };
            match crate::watchdog::status_on(&host.client, &d.app, id).await {
                Ok(Some(w)) if w.state == WatchdogState::Committing => still.push(name),
                Ok(Some(w)) => {
                    let line = format!(
                        "{name}: {}{}",
                        w.state.as_str(),
                        w.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    );
                    out.line(format!("  {line}"));
                    if w.state != WatchdogState::Committed {
                        failed.push(line);
                    }
                }
                Ok(None) => failed.push(format!("{name}: no watchdog of {id} there")),
                Err(_) => still.push(name),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    for name in &pending {
        failed.push(format!(
            "{name}: still committing after {} s; it finishes alone (`golivectl status PLAN`)",
            COMMIT_WAIT.as_secs()
        ));
    }
    crate::watchdog::sync(state, journal, &d, &plan).await?;
    let (exit, message) = if failed.is_empty() {
        (
            Exit::Done,
            format!("deployment {id} committed on {}", armed.join(", ")),
        )
    } else {
        (
            Exit::Failed,
            format!(
                "deployment {id}: the commit is not complete: {}",
                failed.join("; ")
            ),
        )
    };
    out.line(&message);
    // A complete commit was told as confirmed by the sync above: its
    // state "committed" makes no notice; an incomplete one is "failed".
    out.emit(Event::Result {
        deployment: id.to_string(),
        state: if exit == Exit::Done {
            "committed"
        } else {
            "failed"
        }
        .into(),
        message,
        exit: exit.code(),
        downtime_ms: None,
        maintenance: serde_json::Value::Null,
        unavailable_ms: None,
        unavailable: serde_json::Value::Null,
    });
    crate::notify::flush(journal).await;
    Ok(exit)
}

/// The `decision` event of a person's go / no-go.
fn decided(
    id: &str,
    decision: &str,
    by: &str,
    reason: Option<&str>,
    next: &str,
    waiting_deploy: Option<bool>,
) -> Event {
    Event::Decided {
        deployment: id.to_string(),
        decision: decision.to_string(),
        by: by.to_string(),
        reason: reason.map(str::to_string),
        next_action: next.to_string(),
        waiting_deploy,
    }
}

fn list(hosts: &[&str]) -> String {
    if hosts.is_empty() {
        "no host".into()
    } else {
        format!("host(s) {}", hosts.join(", "))
    }
}
