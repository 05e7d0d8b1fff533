//! Rolling a recorded deployment back: its rollback plan ([`super::rollback`]),
//! each host through its one host rollback job under a lease, the record and
//! the notice. Run by `golivectl rollback ID [--hosts ...]` and by `no-go`.

use std::path::Path;

use crate::client::ClientError;
use crate::deployment::downtime::{Downtime, Unavailable, report_downtime};
use crate::deployment::error::RollbackError;
use crate::deployment::events::Event;
use crate::deployment::leases::Lease;
use crate::deployment::sequencer::{job_verdict, step_ok};
use crate::deployment::{self, Executor, StepRequest};
use crate::jobs::{known_deployment, run_job, step};
use crate::journal::Journal;
use crate::output::{Exit, Out, usage};
use crate::plan;

/// Rolls deployment `id` back on its switched hosts (`only`: just these),
/// with the plan it recorded or `plan_override`.
pub async fn rollback(
    out: Out,
    state: &Path,
    id: &str,
    plan_override: Option<&Path>,
    only: Option<&[String]>,
) -> anyhow::Result<Exit> {
    let journal = Journal::open(state)?;
    let d = known_deployment(&journal, state, id)?;
    let plan_path = plan_override
        .map(Path::to_path_buf)
        .unwrap_or_else(|| d.plan_path.clone().into());
    let plan = plan::load(&plan_path).map_err(|e| usage(e.to_string()))?;
    // Its events go to the deployment's journal and notices (issue 14).
    let _readers = super::subscribers::attach(state, Some(&plan), id)?;
    // The deployment's rollback plan (issue 14), from its recorded
    // outcomes: the hosts it switched, newest first, each through its one
    // host rollback job; `--hosts` narrows it to hosts of this deployment.
    let rollback_plan = deployment::rollback::plan(
        id,
        &d.app,
        &d.hosts,
        &d.steps,
        "rollback",
        &format!("golivectl rollback {id}"),
    );
    // Switched hosts `--hosts` leaves on the release: the deployment stays
    // in its state, only the named hosts go back.
    let kept: Vec<String> = rollback_plan
        .names()
        .into_iter()
        .filter(|h| only.is_some_and(|o| !o.iter().any(|x| x == h)))
        .map(String::from)
        .collect();
    let rollback_plan = match only {
        None => rollback_plan,
        Some(only) => {
            let known: Vec<&str> = d.hosts.iter().map(|h| h.host.as_str()).collect();
            if let Some(unknown) = only.iter().find(|h| !known.contains(&h.as_str())) {
                return Err(usage(format!(
                    "--hosts: {unknown} is not a host of deployment {id}; its hosts are {}",
                    known.join(", ")
                )));
            }
            rollback_plan.only(only)
        }
    };
    if let Some(h) = rollback_plan.first_install.first() {
        return Err(usage(format!(
            "host {h} had no release before deployment {id}; there is nothing to roll back to"
        )));
    }
    let mut targets = Vec::new();
    for h in &rollback_plan.hosts {
        let Some(host) = plan.hosts.iter().find(|p| p.name == h.host) else {
            return Err(usage(format!(
                "host {} of deployment {id} is not in {}; pass the plan that names it with --plan",
                h.host,
                plan_path.display()
            )));
        };
        targets.push((host, h));
    }
    for h in &rollback_plan.already {
        step(out, h, "rollback", "skipped", "already rolled back");
    }
    for h in &rollback_plan.untouched {
        step(
            out,
            h,
            "rollback",
            "skipped",
            "the deployment never switched this host",
        );
    }
    if targets.is_empty() && rollback_plan.already.is_empty() {
        // Nothing was switched (the deployment stopped before activating,
        // or `--hosts` names only hosts it never switched): every host runs
        // the release it had. Said as such; the deployment's state, its
        // record and the notices stay as they are.
        let message = format!(
            "deployment {id} switched no host{}: nothing to roll back; every host still runs the release it had",
            if only.is_some() { " of --hosts" } else { "" }
        );
        out.line(&message);
        out.emit(Event::Result {
            deployment: id.to_string(),
            state: "unchanged".into(),
            message,
            exit: Exit::Done.code(),
            downtime_ms: None,
            maintenance: serde_json::Value::Null,
            unavailable_ms: None,
            unavailable: serde_json::Value::Null,
        });
        return Ok(Exit::Done);
    }
    out.line(format!(
        "rolling back deployment {id} ({} release {})",
        d.app, d.release
    ));
    out.emit(Event::Rollback {
        deployment: id.to_string(),
        app: d.app.clone(),
        release: d.release.clone(),
        hosts: targets.iter().map(|(h, _)| h.name.clone()).collect(),
    });
    // Each host's rollback is an executor step (issue 14): its intent
    // journaled before the request goes out, its outcome after, under
    // the agent's own key for the deployment's host rollback job. A
    // rollback killed midway and run again sends nothing for a host whose
    // rollback is journaled done, and asks again under the same key for
    // one that was sent: the agent follows the job it has.
    let compiled = journal
        .compiled(id)?
        .and_then(|(_, text)| serde_json::from_str::<deployment::Deployment>(&text).ok())
        .unwrap_or_else(|| deployment::Deployment {
            // Recorded before deployments were compiled: the rollback's
            // steps come from the record alone.
            id: id.to_string(),
            app: d.app.clone(),
            release: d.release.clone(),
            source: String::new(),
            plan_sha256: String::new(),
            parallel: plan.parallel,
            waves: Vec::new(),
            hosts: Vec::new(),
        });
    let exec = Executor::for_rollback(&journal, &compiled);
    let lock_id = format!("rollback-{id}");
    let mut failed: Vec<RollbackError> = Vec::new();
    // What each host got back, for the record's "later actions".
    let mut done: Vec<String> = Vec::new();
    let mut unavailable = Unavailable::default();
    let count = targets.len() + rollback_plan.already.len();
    for (host, back) in targets {
        let lease = match Lease::acquire(&host.client, &d.app, &lock_id, plan.lock_ttl_secs).await {
            Ok(l) => l,
            Err(e) => {
                let e = RollbackError::Lock(e);
                step(out, &host.name, "rollback", "refused", &e.to_string());
                failed.push(e);
                continue;
            }
        };
        // The host's one rollback of this deployment (issue 13): the agent
        // keys it per deployment and host, so the gate's switch-back, this
        // command, a no-go and the host's watchdog all get the same job and
        // it runs once. Its flags and database come from the host's own
        // rollback point.
        let send = |key: String, request: StepRequest| {
            let token = lease.token.clone();
            async move {
                let StepRequest::Job(spec) = request else {
                    return Err(ClientError::Transport {
                        host: host.name.clone(),
                        addr: host.client.addr.clone(),
                        detail: "the rollback step is not a job (a golivectl bug); not sent".into(),
                    });
                };
                run_job(out, &host.client, key, Some(token), spec).await
            }
        };
        let job = exec
            .run_planned(
                out,
                &host.name,
                "rollback",
                &back.key,
                StepRequest::Job(back.request.clone()),
                send,
                job_verdict,
            )
            .await;
        if let Ok(job) = &job {
            unavailable.add(&host.name, job);
        }
        let r = step_ok(job);
        match r {
            Ok(detail) => {
                step(out, &host.name, "rollback", "ok", &detail);
                let _ = journal.set_host(id, &host.name, &host.client.addr, None, "rolled_back");
                done.push(format!("{}: {detail}", host.name));
            }
            Err(e) => {
                let e = RollbackError::Job(e);
                step(out, &host.name, "rollback", "failed", &e.to_string());
                failed.push(e);
            }
        }
        lease.release().await;
    }
    let (exit, message) = if failed.is_empty() {
        // The deployment's own end stays as it was; the rollback is a later
        // action on it, with who and when (issue 12).
        if !kept.is_empty() {
            // A partial rollback (`--hosts`): the deployment keeps its state.
        } else if d.finished_at.is_some() {
            journal.set_state(id, "rolled_back")?;
        } else {
            journal.finish_deployment(
                id,
                "rolled_back",
                Some("rolled back by golivectl rollback"),
            )?;
        }
        let mut message = format!("deployment {id} rolled back on {count} host(s)");
        if !kept.is_empty() {
            message.push_str(&format!(
                "; {} keep release {} (not in --hosts)",
                kept.join(", "),
                d.release
            ));
        }
        journal.add_action(id, &plan.operator, "rollback", &done.join("; "))?;
        (Exit::Done, message)
    } else {
        // Each host's reason, typed: the exit code is the variants' (2 if
        // every host refused, else 1), the message their words.
        let incomplete = RollbackError::Incomplete {
            id: id.to_string(),
            failures: failed,
        };
        (incomplete.exit(), incomplete.to_string())
    };
    if exit != Exit::Done {
        done.push(message.clone());
        journal.add_action(id, &plan.operator, "rollback-incomplete", &done.join("; "))?;
    }
    if unavailable.ms().is_some() {
        // Its own lines and event fields; the message stays the outcome.
        report_downtime(out, Downtime::None, &unavailable, &mut String::new());
    }
    out.line(&message);
    // Its notice (rolled back, or failed) is derived from this event.
    out.emit(Event::Result {
        deployment: id.to_string(),
        state: if exit == Exit::Done {
            "rolled_back"
        } else {
            "failed"
        }
        .into(),
        message,
        exit: exit.code(),
        downtime_ms: None,
        maintenance: serde_json::Value::Null,
        unavailable_ms: unavailable.ms(),
        unavailable: unavailable.json(),
    });
    crate::notify::flush(&journal).await;
    Ok(exit)
}
