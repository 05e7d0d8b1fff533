//! Staged deployments (issue 14, seed 002): several apps go live in order
//! in one deployment — database, auth, catalog, orders, frontend — each
//! verified (its own waves, probes and gate) before the next starts.
//!
//! Each stage is one app's ordinary deployment with its own id, run by
//! `deployment::start::deploy_with_id` (and resumed by its `--resume` path); the
//! parent deployment records the stages in order (`deployment_stages`),
//! holds every stage's app lock from the start, and, when a stage fails
//! (it switches itself back as any deployment does), rolls back the stages
//! before it, newest first, each through its own rollback plan
//! (`deployment::rollback_run`: the agent's one host rollback job per host).

use std::path::Path;

use serde_json::json;

use crate::deployment::events::Event;
use crate::deployment::leases::{Heartbeat, Lease, lock_all, release_all};
use crate::deployment::rollback_run::rollback as rollback_one;
use crate::deployment::start::{self as deploy, Options};
use crate::jobs::{hash_file, headline, known_deployment};
use crate::journal::{Journal, Stage};
use crate::output::{Exit, Out, usage};
use crate::stages::{StageSpec, StagesFile};

/// The options a staged deployment started with, kept in its facts so that
/// a resume starts the stages that had not started yet the same way.
const OPTIONS_FACT: &str = "stage-options";

/// Stage states after which the next stage may start.
fn passed(state: &str) -> bool {
    matches!(state, "succeeded" | "watching")
}

/// `golivectl deploy STAGES.toml [--dry-run | --resume ID]`.
pub async fn deploy(
    out: Out,
    state: &Path,
    path: &Path,
    options: &Options,
) -> anyhow::Result<Exit> {
    let file = crate::stages::load(path).map_err(|e| usage(e.to_string()))?;
    let (sha, _) = hash_file(path)
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    if let Some(id) = &options.resume {
        return resume(out, state, &file, &sha, id, options).await;
    }
    if options.dry_run {
        return dry_run(out, state, &file, &sha, options).await;
    }
    // Every stage checked before anything changes: a problem in the last
    // stage's plan or hosts stops the first one from starting.
    for (i, s) in file.stages.iter().enumerate() {
        check(s, options)
            .await
            .map_err(|e| usage(format!("{}: {e}; nothing changed", at(&file, i))))?;
    }
    let now = golive_shared::protocol::now_millis();
    let id = crate::journal::new_deployment_id(now)?;
    let ids: Vec<String> = (0..file.stages.len())
        .map(|_| crate::journal::new_deployment_id(now))
        .collect::<Result<_, _>>()?;
    let journal = Journal::open(state)?;
    let first = &file.stages[0].plan;
    journal.create_deployment(
        &id,
        &path.display().to_string(),
        &apps(&file),
        &format!("{} stages", file.stages.len()),
        &sha,
        &first.operator,
    )?;
    let compiled = compiled(&file, &id, &sha, &ids);
    journal.store_compiled(&id, &sha, &serde_json::to_string(&compiled)?)?;
    journal.claim_controller(&id, std::process::id(), &crate::journal::this_host(), None)?;
    journal.set_fact(
        &id,
        OPTIONS_FACT,
        &json!({"hotfix": options.hotfix, "force": options.force, "approved_by": options.approved_by})
            .to_string(),
    )?;
    for (i, (s, sid)) in file.stages.iter().zip(&ids).enumerate() {
        let n = i as u32 + 1;
        journal.add_stage(
            &id,
            n,
            &s.name,
            &s.plan.app,
            &s.plan_path.display().to_string(),
        )?;
        journal.set_stage_deployment(&id, n, sid)?;
    }
    let heartbeat = Heartbeat::start(state, &id);
    out.line(format!(
        "deployment {id}: {} stage(s), in order: {}",
        file.stages.len(),
        compiled
            .stages
            .iter()
            .map(|s| format!("{} release {}", s.app, s.release))
            .collect::<Vec<_>>()
            .join(" → ")
    ));
    emit(
        out,
        state,
        &id,
        Event::Stages {
            deployment: id.clone(),
            stages: json!(compiled.stages),
        },
    );
    let exit = run(out, state, &journal, &file, &id, 0, options).await;
    drop(heartbeat);
    exit
}

/// `--dry-run`: the staged deployment (its stages in order) and then every
/// stage's own dry run (waves, hosts, steps, window and preflight
/// verdicts). Nothing changes; the first stage that would be refused stops
/// it with that stage's error.
async fn dry_run(
    out: Out,
    state: &Path,
    file: &StagesFile,
    sha: &str,
    options: &Options,
) -> anyhow::Result<Exit> {
    let ids: Vec<String> = file
        .stages
        .iter()
        .map(|s| format!("ID-{}", s.name))
        .collect();
    let compiled = compiled(file, "ID", sha, &ids);
    out.line(format!(
        "dry run: {} stage(s), each deployed and verified before the next starts; a failed \
         stage is switched back, then the stages before it are rolled back, newest first",
        file.stages.len()
    ));
    out.emit(Event::StagesDryRun {
        dry_run: true,
        stages: Box::new(compiled.clone()),
    });
    for (i, s) in file.stages.iter().enumerate() {
        out.line(format!(
            "\n{}: {} release {} from {}",
            compiled.stages[i].label,
            s.plan.app,
            compiled.stages[i].release,
            s.plan_path.display()
        ));
        let (exit, _) = deploy::deploy_with_id(out, state, &s.plan_path, options)
            .await
            .map_err(|e| usage(format!("{}: {e}", at(file, i))))?;
        if exit != Exit::Done {
            return Ok(exit);
        }
    }
    Ok(Exit::Done)
}

/// Runs stages `from..` of staged deployment `id` in order (new stages
/// start, an interrupted one resumes), then records the outcome. Every
/// stage not started yet has its app locked first, all of them before the
/// first one runs, under the stage's own id: no other deployment takes a
/// later stage's app while the earlier ones go live.
async fn run(
    out: Out,
    state: &Path,
    journal: &Journal,
    file: &StagesFile,
    id: &str,
    from: usize,
    options: &Options,
) -> anyhow::Result<Exit> {
    let stages = journal.stages(id)?;
    let mut held: Vec<Vec<Lease>> = Vec::new();
    for (i, s) in file.stages.iter().enumerate() {
        let sid = stage_id(&stages, i)?;
        if i < from || stages[i].state != "pending" {
            held.push(Vec::new());
            continue;
        }
        match lock_all(&s.plan, &sid).await {
            Ok(leases) => held.push(leases),
            Err(e) => {
                for leases in held {
                    release_all(leases).await;
                }
                let message = format!("{}: {e}; no stage started", at(file, i));
                journal.finish_deployment(id, "refused", Some(&message))?;
                return Err(usage(message));
            }
        }
    }
    let mut held = held.into_iter();
    for _ in 0..from {
        held.next();
    }
    for (i, s) in file.stages.iter().enumerate().skip(from) {
        let leases = held.next().unwrap_or_default();
        let now = journal.stages(id)?;
        let sid = stage_id(&now, i)?;
        let stage = &now[i];
        let label = crate::stages::label(i + 1, file.stages.len(), &s.name);
        let resuming = stage.state == "interrupted";
        out.line(format!(
            "\n{label}: {} {} ({sid}) from {}",
            if resuming { "resuming" } else { "deploying" },
            s.plan.app,
            s.plan_path.display()
        ));
        emit(
            out,
            state,
            id,
            Event::Stage {
                deployment: id.to_string(),
                stage: i + 1,
                name: s.name.clone(),
                app: s.plan.app.clone(),
                stage_deployment: sid.clone(),
                resume: resuming,
            },
        );
        // The stage takes the lock itself, under the same id, after its
        // preflight (which counts any held lock as blocking): the one held
        // since the start is let go just before.
        release_all(leases).await;
        let r = match stage.state.as_str() {
            "pending" => {
                let opts = Options {
                    dry_run: false,
                    resume: None,
                    id: Some(sid.clone()),
                    ..options.clone()
                };
                deploy::deploy_with_id(out, state, &s.plan_path, &opts).await
            }
            "interrupted" => {
                let opts = Options {
                    resume: Some(sid.clone()),
                    ..Options::default()
                };
                deploy::deploy_with_id(out, state, &s.plan_path, &opts).await
            }
            // Ended before (a resume after the controller died between the
            // stage's end and the next one's start).
            done => Ok((
                if passed(done) {
                    Exit::Done
                } else {
                    Exit::Failed
                },
                Some(sid.clone()),
            )),
        };
        let after = journal
            .stages(id)?
            .get(i)
            .map(|s| s.state.clone())
            .unwrap_or_default();
        match r {
            Ok((Exit::Done, _)) if passed(&after) => {
                out.line(format!("{label}: {after}"));
                emit(
                    out,
                    state,
                    id,
                    Event::StageDone {
                        deployment: id.to_string(),
                        stage: i + 1,
                        state: after,
                    },
                );
            }
            Ok((Exit::Paused, _)) => {
                for leases in held {
                    release_all(leases).await;
                }
                journal.set_paused(id, None)?;
                let message = format!(
                    "{label} is paused at its gate: decide it with `golivectl go {sid} --by NAME` \
                     or `golivectl no-go {sid} --by NAME --reason TEXT`, then carry the stages \
                     on with `golivectl deploy {} --resume {id}`",
                    file.path.display()
                );
                out.line(format!("deployment {id}: paused: {message}"));
                emit(
                    out,
                    state,
                    id,
                    Event::StagesResult {
                        deployment: id.to_string(),
                        state: Some("paused".into()),
                        message,
                        exit: Exit::Paused.code(),
                    },
                );
                return Ok(Exit::Paused);
            }
            other => {
                for leases in held {
                    release_all(leases).await;
                }
                let why = match other {
                    Ok((exit, _)) => format!("ended {after} (exit {})", exit.code()),
                    Err(e) => {
                        out.line(format!("{label}: refused: {e}"));
                        format!("was refused: {}", headline(&e.to_string()))
                    }
                };
                return failed(out, state, journal, file, id, i, &why).await;
            }
        }
    }
    let message = format!(
        "{} stage(s) live in order: {}",
        file.stages.len(),
        file.stages
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    journal.finish_deployment(id, "succeeded", Some(&message))?;
    out.line(format!("deployment {id}: succeeded: {message}"));
    emit(
        out,
        state,
        id,
        Event::StagesResult {
            deployment: id.to_string(),
            state: Some("succeeded".into()),
            message,
            exit: 0,
        },
    );
    Ok(Exit::Done)
}

/// Stage `failed` (0-based) failed: it switched itself back (or changed
/// nothing); the stages before it are rolled back now, newest first.
async fn failed(
    out: Out,
    state: &Path,
    journal: &Journal,
    file: &StagesFile,
    id: &str,
    failed: usize,
    why: &str,
) -> anyhow::Result<Exit> {
    let label = crate::stages::label(failed + 1, file.stages.len(), &file.stages[failed].name);
    out.line(format!(
        "{label} {why}; rolling back the stages before it, newest first"
    ));
    let stages = journal.stages(id)?;
    let (back, problems) = roll_back(out, state, id, &stages[..failed], file.stages.len()).await;
    // The failed stage's own end: rolled back, or nothing changed.
    let own = stages[failed].state.as_str();
    let own_ok = matches!(own, "rolled_back" | "refused" | "pending");
    let (exit, state_name) = if problems.is_empty() && own_ok {
        (Exit::RolledBack, "rolled_back")
    } else {
        (Exit::Failed, "failed")
    };
    let mut message = format!("{label} {why}");
    if !back.is_empty() {
        message.push_str(&format!("; rolled back: {}", back.join(", ")));
    }
    if !problems.is_empty() {
        message.push_str(&format!("; NOT rolled back: {}", problems.join("; ")));
    }
    journal.finish_deployment(id, state_name, Some(&message))?;
    out.line(format!("deployment {id}: {state_name}: {message}"));
    emit(
        out,
        state,
        id,
        Event::StagesResult {
            deployment: id.to_string(),
            state: Some(state_name.into()),
            message,
            exit: exit.code(),
        },
    );
    Ok(exit)
}

/// Emits one of staged deployment `id`'s own events and records it in the
/// journal under `id` (`golivectl show ID`). Its journal reader is
/// subscribed for this one event only: subscribers get every event emitted,
/// and while a stage runs its events are its own deployment's, recorded
/// under the stage's id by the stage itself. Journal only, no notices: each
/// stage's deployment notifies for itself (README "Decisions").
fn emit(out: Out, state: &Path, id: &str, event: Event) {
    match super::subscribers::attach(state, None, id) {
        Ok(subscription) => {
            out.emit(event);
            drop(subscription);
        }
        Err(e) => {
            eprintln!(
                "golivectl: cannot record the events of staged deployment {id} in the controller \
                 journal: {e:#}; its record (`golivectl show {id}`) lacks this one. Fix the \
                 controller's state directory (disk space, permissions)"
            );
            out.emit(event);
        }
    }
}

/// Rolls `stages` back, newest first, each through its deployment's
/// rollback plan; stages that never started or are rolled back already
/// are skipped. Returns the stages rolled back and the problems.
async fn roll_back(
    out: Out,
    state: &Path,
    parent: &str,
    stages: &[Stage],
    of: usize,
) -> (Vec<String>, Vec<String>) {
    let mut back = Vec::new();
    let mut problems = Vec::new();
    for s in stages.iter().rev() {
        let label = crate::stages::label(s.position as usize, of, &s.name);
        let Some(sid) = s.deployment.as_deref() else {
            continue;
        };
        match s.state.as_str() {
            "pending" | "refused" | "rolled_back" => {
                out.line(format!("{label}: nothing to roll back ({})", s.state));
                continue;
            }
            _ => {}
        }
        out.line(format!("{label}: rolling back {sid}"));
        emit(
            out,
            state,
            parent,
            Event::StageRollback {
                stage: s.position,
                name: s.name.clone(),
                stage_deployment: sid.to_string(),
            },
        );
        match rollback_one(out, state, sid, None, None).await {
            Ok(Exit::Done) => back.push(format!("{} ({sid})", s.name)),
            Ok(exit) => problems.push(format!(
                "{label} ({sid}): exit {}; `golivectl show {sid}` says why, \
                 `golivectl rollback {sid}` tries again",
                exit.code()
            )),
            Err(e) => problems.push(format!(
                "{label} ({sid}): {}; `golivectl rollback {sid}` tries again",
                headline(&e.to_string())
            )),
        }
    }
    (back, problems)
}

/// `golivectl rollback ID` of a staged deployment: every stage that
/// switched hosts, newest first.
pub async fn rollback(
    out: Out,
    state: &Path,
    id: &str,
    plan: Option<&Path>,
    hosts: Option<&[String]>,
) -> anyhow::Result<Exit> {
    let journal = Journal::open(state)?;
    let d = known_deployment(&journal, state, id)?;
    if plan.is_some() || hosts.is_some() {
        return Err(usage(format!(
            "deployment {id} is a staged deployment: it is rolled back whole, without --plan or \
             --hosts; roll one stage back with `golivectl rollback STAGE_ID [--hosts ...]`, its \
             stages being {}",
            d.stages
                .iter()
                .map(|s| format!(
                    "{} ({})",
                    s.deployment.as_deref().unwrap_or("not started"),
                    s.name
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if d.state == "running" {
        return Err(usage(format!(
            "staged deployment {id} is still running; it rolls back on its own when a stage \
             fails. Wait for it, then roll it back"
        )));
    }
    out.line(format!(
        "rolling back staged deployment {id} ({}), newest stage first",
        d.app
    ));
    let (back, problems) = roll_back(out, state, id, &d.stages, d.stages.len()).await;
    let (exit, message) = if problems.is_empty() {
        if d.finished_at.is_some() {
            journal.set_state(id, "rolled_back")?;
        } else {
            journal.finish_deployment(
                id,
                "rolled_back",
                Some("rolled back by golivectl rollback"),
            )?;
        }
        journal.add_action(
            id,
            &d.operator,
            "rollback",
            &format!("stages rolled back: {}", back.join(", ")),
        )?;
        (
            Exit::Done,
            format!(
                "staged deployment {id} rolled back ({} stage(s))",
                back.len()
            ),
        )
    } else {
        let message = format!(
            "rollback of staged deployment {id} incomplete: {}",
            problems.join("; ")
        );
        journal.add_action(id, &d.operator, "rollback-incomplete", &message)?;
        (Exit::Failed, message)
    };
    out.line(&message);
    emit(
        out,
        state,
        id,
        Event::StagesResult {
            deployment: id.to_string(),
            state: None,
            message,
            exit: exit.code(),
        },
    );
    Ok(exit)
}

/// Whether `id` is a staged deployment in the journal at `state` (a
/// journal that cannot be opened is the single-app path's to report).
pub fn is_staged(state: &Path, id: &str) -> bool {
    Journal::open(state)
        .ok()
        .and_then(|j| j.stages(id).ok())
        .is_some_and(|s| !s.is_empty())
}

/// `deploy STAGES.toml --resume ID`: carries on from the first stage that
/// did not pass: an interrupted one resumes through its own resume, one
/// not started starts, a failed one rolls the stages before it back.
async fn resume(
    out: Out,
    state: &Path,
    file: &StagesFile,
    sha: &str,
    id: &str,
    options: &Options,
) -> anyhow::Result<Exit> {
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
    if d.stages.is_empty() {
        return Err(usage(format!(
            "deployment {id} is not a staged deployment; resume it with its plan: \
             `golivectl deploy {} --resume {id}`",
            d.plan_path
        )));
    }
    let paused = d.stages.iter().find(|s| s.state == "paused");
    match (d.state.as_str(), paused) {
        ("interrupted", _) => {}
        ("paused", None) => {}
        ("paused", Some(s)) => {
            let sid = s.deployment.as_deref().unwrap_or_default();
            return Err(usage(format!(
                "stage {} ({}) of {id} still waits at its gate: decide it with `golivectl go \
                 {sid} --by NAME` or `golivectl no-go {sid} --by NAME --reason TEXT` first",
                s.position, s.name
            )));
        }
        ("running", _) => {
            return Err(usage(format!(
                "staged deployment {id} is still running; nothing to resume. A controller is \
                 counted gone when its process is dead or its heartbeat is over {} s old",
                crate::journal::HEARTBEAT_STALE_MS / 1000
            )));
        }
        (other, _) => {
            return Err(usage(format!(
                "staged deployment {id} is finished ({other}); nothing to resume. `golivectl \
                 show {id}` shows it"
            )));
        }
    }
    let Some((stored_sha, compiled)) = journal.compiled(id)? else {
        return Err(usage(format!(
            "deployment {id} has no compiled stages in the journal"
        )));
    };
    if stored_sha != sha {
        return Err(usage(format!(
            "{} changed since staged deployment {id} started (its sha256 was {stored_sha}, now \
             {sha}); resume with the stages file as it was ({} then), or roll it back with \
             `golivectl rollback {id}`",
            file.path.display(),
            d.plan_path
        )));
    }
    let compiled: super::Staged = serde_json::from_str(&compiled)
        .map_err(|e| anyhow::anyhow!("the compiled stages of {id} cannot be read: {e}"))?;
    let stages = journal.stages(id)?;
    if compiled.stages.len() != file.stages.len() || stages.len() != file.stages.len() {
        return Err(usage(format!(
            "{} does not list the stages deployment {id} started with",
            file.path.display()
        )));
    }
    if let Some(s) = stages.iter().find(|s| s.state == "running") {
        return Err(usage(format!(
            "stage {} ({}) of {id} is still running under another golivectl; nothing to resume",
            s.position, s.name
        )));
    }
    if !journal.claim_controller(
        id,
        std::process::id(),
        &crate::journal::this_host(),
        d.controller.as_ref(),
    )? {
        return Err(usage(format!(
            "another golivectl took deployment {id} over just now; `golivectl show {id}` says which"
        )));
    }
    journal.set_running(id)?;
    // Stages not started yet start as the deployment did.
    let started: serde_json::Value = journal
        .fact(id, OPTIONS_FACT)?
        .and_then(|f| serde_json::from_str(&f).ok())
        .unwrap_or_default();
    let options = Options {
        hotfix: started["hotfix"].as_str().map(String::from),
        force: started["force"].as_str().map(String::from),
        approved_by: serde_json::from_value(started["approved_by"].clone()).unwrap_or_default(),
        ..Options::default()
    };
    let from = stages
        .iter()
        .position(|s| !passed(&s.state))
        .unwrap_or(stages.len());
    out.line(format!(
        "deployment {id}: resuming {} stage(s) from stage {} of {}",
        file.stages.len(),
        from + 1,
        file.stages.len()
    ));
    emit(
        out,
        state,
        id,
        Event::StagesResume {
            deployment: id.to_string(),
            from_stage: from + 1,
        },
    );
    let heartbeat = Heartbeat::start(state, id);
    let exit = run(out, state, &journal, file, id, from, &options).await;
    drop(heartbeat);
    exit
}

/// The up-front check of one stage, as its own deployment will check it
/// when it starts: the window, the approvals, the artifact readable, every
/// host reachable, declaring the app and not locked, and preflight's
/// blocking checks (unless `--force`).
async fn check(s: &StageSpec, options: &Options) -> Result<(), String> {
    let plan = &s.plan;
    crate::window::admit(
        plan.window.as_ref(),
        options.hotfix.as_deref(),
        jiff::Timestamp::now(),
    )?;
    deploy::approvers(plan, &options.approved_by)?;
    let release = plan.release.as_ref().ok_or("no [release]")?;
    if let crate::plan::Source::Artifact(artifact) = &release.source {
        hash_file(artifact)
            .await
            .map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
    }
    let statuses = crate::fanout::all(plan.parallel, &plan.hosts, |h| {
        crate::jobs::agent_status(&h.client)
    })
    .await;
    for (host, st) in plan.hosts.iter().zip(statuses) {
        let st = st.map_err(|e| e.to_string())?;
        let Some(app) = st.apps.iter().find(|a| a.name == plan.app) else {
            return Err(format!(
                "host {} declares no app {:?}; declare it in that agent's config",
                host.name, plan.app
            ));
        };
        if let Some(lock) = &app.lock {
            return Err(format!(
                "app {} on {} is locked by deployment {}; wait for it, or `golivectl unlock {} \
                 --reason TEXT`",
                plan.app,
                host.name,
                lock.deployment,
                s.plan_path.display()
            ));
        }
    }
    let (blocking, _) = crate::preflight::deploy_checks(plan).await;
    if !blocking.is_empty() && options.force.is_none() {
        return Err(format!(
            "preflight: NOT READY:\n  - {}\nfix these (`golivectl preflight {}`), or deploy \
             anyway with --force --reason TEXT",
            blocking.join("\n  - "),
            s.plan_path.display()
        ));
    }
    Ok(())
}

/// "STAGES.toml, stage 2/3 (auth)".
fn at(file: &StagesFile, i: usize) -> String {
    format!(
        "{}, {}",
        file.path.display(),
        crate::stages::label(i + 1, file.stages.len(), &file.stages[i].name)
    )
}

/// The apps, in order, as the staged deployment's `app` in the journal.
fn apps(file: &StagesFile) -> String {
    file.stages
        .iter()
        .map(|s| s.plan.app.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn compiled(file: &StagesFile, id: &str, sha: &str, ids: &[String]) -> super::Staged {
    let inputs: Vec<super::StageInput> = file
        .stages
        .iter()
        .zip(ids)
        .map(|(s, sid)| super::StageInput {
            name: &s.name,
            app: &s.plan.app,
            release: s.plan.release.as_ref().map(|r| r.id.as_str()).unwrap_or(""),
            plan: s.plan_path.display().to_string(),
            deployment: sid,
            hosts: s.plan.hosts.iter().map(|h| h.name.clone()).collect(),
        })
        .collect();
    super::compile_stages(id, sha, &inputs)
}

/// Stage `i`'s deployment id (given to every stage before the first runs).
fn stage_id(stages: &[Stage], i: usize) -> anyhow::Result<String> {
    stages
        .get(i)
        .and_then(|s| s.deployment.clone())
        .ok_or_else(|| anyhow::anyhow!("stage {} has no deployment id in the journal", i + 1))
}
