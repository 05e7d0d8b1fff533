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

use golive_shared::protocol::now_millis;
use serde_json::json;

use crate::cmd::deploy;
use crate::journal::Journal;
use crate::output::{Exit, Out, usage};

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
    let Some(d) = journal.deployment(id)? else {
        let recent = journal.deployment_ids(5)?;
        return Err(usage(format!(
            "no deployment {id:?} in {}; recent: {}",
            state.display(),
            if recent.is_empty() {
                "(none)".into()
            } else {
                recent.join(", ")
            }
        )));
    };
    if d.state != "paused" {
        return Err(usage(format!(
            "deployment {id} is {}, not paused: there is no decision to take \
             (a deployment pauses when its gate says `pause`, e.g. a high-severity probe fails)",
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
    out.line(format!(
        "deployment {id}: {decision} by {by} recorded (#{seq}); next: {next}"
    ));
    out.event(&json!({"event": "decision", "deployment": id, "decision": decision, "by": by, "reason": text, "next_action": next, "waiting_deploy": waiting}));
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
        (false, false) => deploy::rollback(out, state, id, None).await,
    }
}

fn list(hosts: &[&str]) -> String {
    if hosts.is_empty() {
        "no host".into()
    } else {
        format!("host(s) {}", hosts.join(", "))
    }
}
