//! `golivectl history` and `golivectl show ID`: the deployment record from
//! the controller's journal, as markdown or JSON.

use std::path::Path;

use golive_shared::timefmt::utc;
use serde_json::json;

use crate::journal::Journal;
use crate::output::{Exit, Out, usage};

pub fn history(out: Out, state: &Path, limit: u32) -> anyhow::Result<Exit> {
    let journal = Journal::open(state)?;
    let mut rows = Vec::new();
    for id in journal.deployment_ids(limit)? {
        if let Some(d) = journal.deployment(&id)? {
            out.line(format!(
                "{}  {}  {} {}  {}  by {}",
                d.id,
                utc(d.started_at),
                d.app,
                d.release,
                d.state,
                d.operator
            ));
            rows.push(json!({"id": d.id, "app": d.app, "release": d.release, "state": d.state, "operator": d.operator, "started_at": d.started_at, "finished_at": d.finished_at}));
        }
    }
    if rows.is_empty() {
        out.line(format!("no deployments recorded in {}", state.display()));
    }
    out.event(&json!({ "deployments": rows }));
    Ok(Exit::Done)
}

pub fn show(out: Out, state: &Path, id: &str) -> anyhow::Result<Exit> {
    let journal = Journal::open(state)?;
    let Some(d) = journal.deployment(id)? else {
        return Err(usage(format!(
            "no deployment {id:?} in {}; see `golivectl history`",
            state.display()
        )));
    };
    out.event(&d);
    out.line(format!("# Deployment {}\n", d.id));
    out.line(format!("- app: {}\n- release: {} (sha256 {})\n- operator: {}\n- started: {}\n- finished: {}\n- outcome: {}{}\n",
        d.app, d.release, d.artifact_sha256, d.operator, utc(d.started_at),
        d.finished_at.map(utc).unwrap_or_else(|| "(running or interrupted)".into()),
        d.state, d.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default()));
    if let Some(reason) = &d.hotfix_reason {
        out.line(format!("- hotfix: {reason}\n"));
    }
    out.line("## Hosts\n\n| host | address | release before | state |\n|---|---|---|---|");
    for h in &d.hosts {
        out.line(format!(
            "| {} | {} | {} | {} |",
            h.host,
            h.address,
            h.previous_release.as_deref().unwrap_or("(none)"),
            h.state
        ));
    }
    out.line("\n## Steps\n\n| host | step | started | ended | result | detail |\n|---|---|---|---|---|---|");
    for s in &d.steps {
        out.line(format!(
            "| {} | {} | {} | {} | {} | {} |",
            s.host,
            s.step,
            utc(s.started_at),
            s.finished_at.map(utc).unwrap_or_default(),
            s.state,
            s.detail.as_deref().unwrap_or("").replace('|', "\\|")
        ));
    }
    Ok(Exit::Done)
}
