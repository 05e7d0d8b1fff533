//! `golivectl history` and `golivectl show ID`: the deployment record from
//! the controller's journal, as markdown or JSON.

use std::path::Path;

use golive_shared::timefmt::utc;
use serde_json::json;

use crate::cli::RecordFormat;
use crate::journal::Journal;
use crate::output::{Exit, Out, usage};
use crate::record;

/// Writes a record file (0600: records name hosts, operators and reasons),
/// creating its directory (0700) when needed; atomically, through a
/// temporary file renamed into place.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    golive_shared::private::create_private_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("record")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// A staged deployment's stages for its page: each started stage's record
/// and the compiled stages (nothing for one app's deployment).
fn stages_of(
    journal: &Journal,
    d: &crate::journal::Deployment,
) -> anyhow::Result<record::StagesOf> {
    if d.stages.is_empty() {
        return Ok(record::StagesOf::default());
    }
    let mut records = Vec::new();
    for id in d.stages.iter().filter_map(|s| s.deployment.as_deref()) {
        if let Some(r) = journal.deployment(id)? {
            records.push(r);
        }
    }
    // Written by this golivectl (a staged deployment is always compiled);
    // unreadable, the stages not started show no release.
    let planned = journal
        .compiled(&d.id)?
        .and_then(|(_, text)| serde_json::from_str(&text).ok());
    Ok(record::StagesOf { records, planned })
}

/// The newest `limit` deployments, of the app `plan` names when given.
pub fn history(
    out: Out,
    state: &Path,
    plan: Option<&Path>,
    limit: u32,
    format: RecordFormat,
    dir: Option<&Path>,
) -> anyhow::Result<Exit> {
    // Only the app's name is needed: no certificate has to be readable.
    let app = plan
        .map(crate::plan::app_name)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    let journal = Journal::open(state)?;
    if format == RecordFormat::Html {
        // The index and every listed deployment's page, linked by file name.
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| state.join("records"));
        let mut all = Vec::new();
        for id in journal.deployment_ids_of(app.as_deref(), limit)? {
            if let Some(d) = journal.deployment(&id)? {
                all.push(d);
            }
        }
        let now = golive_shared::protocol::now_millis();
        for d in &all {
            write_private(
                &dir.join(format!("{}.html", d.id)),
                &record::page(d, &stages_of(&journal, d)?, &[], now),
            )?;
        }
        let index = dir.join("index.html");
        write_private(&index, &record::index(app.as_deref(), &all, now))?;
        out.line(format!(
            "{} ({} deployment record(s) beside it)",
            index.display(),
            all.len()
        ));
        out.event(&json!({"index": index, "records": all.len()}));
        return Ok(Exit::Done);
    }
    let mut rows = Vec::new();
    for id in journal.deployment_ids_of(app.as_deref(), limit)? {
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
            for st in &d.stages {
                out.line(format!(
                    "    stage {} {}: {} {}",
                    st.position,
                    st.name,
                    st.deployment.as_deref().unwrap_or("(not started)"),
                    st.state
                ));
            }
            // Its controller is gone (issue 14): say how to carry it on.
            if let Some(cmd) = &d.resume {
                out.line(format!("    resume: {cmd}"));
            }
            rows.push(json!({"id": d.id, "app": d.app, "release": d.release, "state": d.state, "operator": d.operator, "started_at": d.started_at, "finished_at": d.finished_at, "resume": d.resume, "stages": d.stages, "stage_of": d.stage_of}));
        }
    }
    if rows.is_empty() {
        out.line(match &app {
            Some(app) => format!("no deployments of {app} recorded in {}", state.display()),
            None => format!("no deployments recorded in {}", state.display()),
        });
    }
    out.event(&json!({ "deployments": rows }));
    Ok(Exit::Done)
}

pub async fn show(
    out: Out,
    state: &Path,
    id: &str,
    format: RecordFormat,
    file: Option<&Path>,
) -> anyhow::Result<Exit> {
    let journal = Journal::open(state)?;
    let Some(mut d) = journal.deployment(id)? else {
        return Err(usage(format!(
            "no deployment {id:?} in {}; see `golivectl history`",
            state.display()
        )));
    };
    // A live deployment: what its hosts did since (a watchdog's rollback or
    // commit, a rollback run on a host alone) is recorded first (issue 13).
    let mut watch = Vec::new();
    let mut not_asked = None;
    // (An ended deployment that was watched is asked too, for its
    // watchdogs' events; nothing is recorded for hosts no longer active.)
    // (A staged deployment has no hosts of its own: its stages have.)
    if d.stages.is_empty()
        && (matches!(d.state.as_str(), "watching" | "succeeded" | "partial")
            || !crate::watchdog::armed_hosts(&d).is_empty())
    {
        match crate::plan::load(Path::new(&d.plan_path)) {
            Ok(plan) => {
                watch = crate::watchdog::sync(state, &journal, &d, &plan).await?;
                d = journal.deployment(id)?.unwrap_or(d);
            }
            Err(e) => not_asked = Some(e.to_string()),
        }
    }
    // Its event stream as journaled (issue 14): in the JSON and the page.
    d.events = journal.events(id)?;
    if format == RecordFormat::Html {
        let infos: Vec<record::HostWatchdog> = watch
            .iter()
            .filter_map(|h| match &h.watchdog {
                Ok(Some(info)) => Some(record::HostWatchdog {
                    host: &h.host,
                    info,
                }),
                _ => None,
            })
            .collect();
        let path = file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| state.join("records").join(format!("{}.html", d.id)));
        write_private(
            &path,
            &record::page(
                &d,
                &stages_of(&journal, &d)?,
                &infos,
                golive_shared::protocol::now_millis(),
            ),
        )?;
        out.line(path.display().to_string());
        out.event(&json!({"deployment": d.id, "html": path}));
        return Ok(Exit::Done);
    }
    out.event(&d);
    // The hosts' watchdogs as the markdown shows them (issue 15: the same
    // content in every format).
    let watchdogs: Vec<serde_json::Value> = watch
        .iter()
        .filter_map(|h| match &h.watchdog {
            Ok(Some(info)) => Some(json!({"host": h.host, "watchdog": info})),
            Ok(None) => None,
            Err(e) => Some(json!({"host": h.host, "error": e})),
        })
        .collect();
    if !watchdogs.is_empty() {
        out.event(&json!({"deployment": d.id, "watchdogs": watchdogs}));
    }
    out.line(format!("# Deployment {}\n", d.id));
    let source = match (&d.git_ref, &d.git_commit) {
        (Some(r), Some(c)) => format!("git {r} at commit {c}"),
        (Some(r), None) => format!("git {r}, not staged everywhere"),
        _ => format!("sha256 {}", d.artifact_sha256),
    };
    let approvers: Vec<&str> = d
        .decisions
        .iter()
        .filter(|x| x.decision == "approve")
        .map(|x| x.by.as_str())
        .collect();
    out.line(format!("- app: {}\n- release: {} ({source})\n- operator: {}\n- approved by: {}\n- started: {}\n- finished: {}\n- duration: {}\n- outcome: {}{}",
        d.app, d.release, d.operator,
        if approvers.is_empty() { "(nobody; the plan asks for no approval)".to_string() } else { approvers.join(", ") },
        utc(d.started_at),
        d.finished_at.map(utc).unwrap_or_else(|| "(running or interrupted)".into()),
        d.duration_ms.map(duration).unwrap_or_else(|| "(not finished)".into()),
        d.state, d.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default()));
    if let Some(cmd) = &d.resume {
        out.line(format!(
            "- INTERRUPTED: its controller is gone; carry it on with `{cmd}`"
        ));
    }
    if let Some(of) = &d.stage_of {
        out.line(format!(
            "- stage {}/{} ({}) of staged deployment {}",
            of.position, of.of, of.name, of.parent
        ));
    }
    if let Some(reason) = &d.hotfix_reason {
        out.line(format!("- hotfix: {reason}"));
    }
    if let Some(reason) = &d.forced_reason {
        out.line(format!(
            "- forced over blocking preflight checks: {reason} (overrode: {})",
            d.forced_over.join("; ")
        ));
    }
    if !d.stages.is_empty() {
        // Issue 14: a staged deployment's stages, in the order they ran.
        out.line(
            "\n## Stages\n\n| stage | name | app | deployment | state |\n|---|---|---|---|---|",
        );
        for s in &d.stages {
            out.line(format!(
                "| {} | {} | {} | {} | {} |",
                s.position,
                s.name,
                s.app,
                s.deployment.as_deref().unwrap_or("(not started)"),
                s.state
            ));
        }
    }
    out.line("");
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
    if !d.probes.is_empty() {
        out.line("\n## Probes before and after\n\n| host | probe | severity | before | after | expected |\n|---|---|---|---|---|---|");
        let cell = |r: Option<&crate::journal::ProbeRecord>| {
            r.map(|r| {
                if r.status == golive_shared::protocol::ProbeStatus::NotApplicable.as_str() {
                    return crate::probes::NOT_APPLICABLE.to_string();
                }
                format!("{} {}", r.status, r.value.as_deref().unwrap_or(""))
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|| "—".into())
        };
        let mut seen = std::collections::BTreeSet::new();
        for r in &d.probes {
            if !seen.insert((r.host.clone(), r.probe.clone())) {
                continue;
            }
            let find = |phase: &str| {
                d.probes
                    .iter()
                    .rev()
                    .find(|p| p.host == r.host && p.probe == r.probe && p.phase == phase)
            };
            let (before, after) = (find("before"), find("after"));
            out.line(format!(
                "| {} | {} | {} | {} | {} | {} |",
                r.host,
                r.probe,
                r.severity,
                cell(before),
                cell(after),
                after
                    .or(before)
                    .and_then(|p| p.threshold.as_deref())
                    .unwrap_or("")
                    .replace('|', "\\|")
            ));
        }
    }
    if !d.gate.is_empty() {
        out.line("\n## Gate\n\n| host | at | action | why |\n|---|---|---|---|");
        for g in &d.gate {
            out.line(format!(
                "| {} | {} | {} | {} |",
                g.host,
                utc(g.at),
                g.action,
                g.summary.replace('|', "\\|")
            ));
        }
    }
    if !d.decisions.is_empty() {
        out.line("\n## Decisions\n\n| at | by | decision | reason | next action |\n|---|---|---|---|---|");
        for x in &d.decisions {
            out.line(format!(
                "| {} | {} | {} | {} | {} |",
                utc(x.at),
                x.by,
                x.decision,
                x.reason.as_deref().unwrap_or("").replace('|', "\\|"),
                x.next_action.replace('|', "\\|")
            ));
        }
    }
    let watched: Vec<String> = watch
        .iter()
        .filter_map(|h| match &h.watchdog {
            Ok(Some(w)) => Some(format!(
                "- {}: {}",
                h.host,
                crate::watchdog::watchdog_line(w)
            )),
            Ok(None) => None,
            Err(e) => Some(format!(
                "- {}: not reachable, its watchdog unknown: {e}",
                h.host
            )),
        })
        .collect();
    if !watched.is_empty() {
        out.line("\n## Watchdog\n");
        for line in &watched {
            out.line(line);
        }
        for h in &watch {
            let Ok(Some(w)) = &h.watchdog else { continue };
            out.line(format!("\n### Watchdog events on {}\n", h.host));
            for e in &w.events {
                out.line(format!("- {} {}: {}", utc(e.at), e.kind, e.line));
            }
        }
    }
    if let Some(e) = not_asked {
        out.line(format!(
            "\n(the hosts were not asked what happened since: {e})"
        ));
    }
    if !d.actions.is_empty() {
        out.line("\n## Later actions\n\n| at | by | action | detail |\n|---|---|---|---|");
        for a in &d.actions {
            out.line(format!(
                "| {} | {} | {} | {} |",
                utc(a.at),
                a.by,
                a.action,
                a.detail.replace('|', "\\|")
            ));
        }
    }
    Ok(Exit::Done)
}

/// `1 h 02 min`, `3 min 05 s`, `2.4 s`.
fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{}.{} s", s, (ms % 1000) / 100)
    }
}
