//! The host rollback (issue 13): the one function that changes a host
//! back, run as the `host.rollback` job whoever asks (controller, local
//! CLI, watchdog), and, for the code steps only, as the older `rollback`
//! job.
//!
//! It is a resumable state machine (Mender's update client): a `plan` is
//! worked out once and journaled (the target, the database choice, whether
//! maintenance and a snapshot are needed), then each step writes its intent
//! (`started`) before acting and its outcome (`done`/`skipped`/`failed`)
//! after, in `rollback_steps`. After a crash the job is resumed, not marked
//! interrupted ([`crate::journal::RESUMED_KINDS`]): finished steps are not
//! repeated, the step that was running runs again, so every step is
//! idempotent. The steps:
//!
//! 1. `maintenance-on`: only when the database step changes data, or the
//!    deployment itself switched in maintenance (a code-only switch is
//!    atomic); skipped when the app declares no maintenance mode.
//! 2. `snapshot`: a verified `failed-state` backup of the databases and
//!    files, when the database step is not code-only (a restore takes its
//!    own, so not then).
//! 3. `reactivate`: the previous release, after `hooks::before_switch_back`
//!    (a broken target is refused), through the same switch as activation.
//! 4. `database`: the gentlest correct way ([`Choice`], decided in the plan
//!    and reported before acting): code only when every migration the
//!    deployment applied is `expand` (or none); down migrations to the
//!    version before when each has a down; else a restore of the
//!    pre-deploy backup, or, when restores are forbidden or impossible, the
//!    schema stays and an operator must act.
//! 5. `flags`: back to the rollback point's values.
//! 6. `after-rollback`: the app's `after_rollback` hooks.
//! 7. `maintenance-off` (only if this rollback turned it on), then
//! 8. `probe`: the app's probes, reported, never failing the rollback.
//!
//! A failing step leaves (or puts) the app in maintenance, when it declares
//! one: never serve a half-state. The job fails naming the step; asking
//! again (same key) resumes from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use golive_shared::config::{AgentConfig, AppConfig, DatabaseConfig};
use golive_shared::protocol::{
    ActivateRelease, Availability, CreateBackup, DatabaseChoice, DroppedObject, ErrorCode,
    EventKind, FlagValue, HostRollback, HostRolledBack, JobResult, LogLevel, PointMigration,
    PointState, ProbeResult, ProbeStatus, RestoreBackup, RestorePolicy, RollbackPoint,
    RollbackStepReport, SetFlag, SetMaintenance, StepState, TableRows, UnixMillis, now_millis,
};
use golive_shared::timefmt::utc;
use serde::{Deserialize, Serialize};

use crate::jobs::JobError;
use crate::journal::{Journal, StepRow};
use crate::release::layout::AppLayout;

/// The steps, in order.
pub const STEPS: [&str; 8] = [
    "maintenance-on",
    "snapshot",
    "reactivate",
    "database",
    "flags",
    "after-rollback",
    "maintenance-off",
    "probe",
];

/// The plan's own row in `rollback_steps`.
const PLAN: &str = "plan";
/// The row saying a failed step put the app in maintenance: the rollback,
/// once resumed and finished, turns it off again.
const FAILSAFE: &str = "maintenance-failsafe";

/// A step the agent stopped in this many times (a crash each time) is not
/// started again: the job fails, and the host stays in maintenance.
const MAX_ATTEMPTS: u32 = 3;

/// Which rollback: the whole host rollback, or the code steps of the older
/// `Rollback` job (switch back and `after_rollback` hooks; the controller
/// of that protocol handles maintenance, database and flags itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Full,
    CodeOnly,
}

/// What the job runner hands the state machine.
pub struct Job<'a> {
    pub id: u64,
    /// Who submitted it (certificate name, `local:USER`, `watchdog`).
    pub submitted_by: &'a str,
}

/// The database step, decided once before anything acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Choice {
    CodeOnly {
        why: String,
    },
    Down {
        database: String,
        to_version: u32,
        versions: Vec<u32>,
    },
    Restore {
        backup: String,
        backup_at: UnixMillis,
        why: String,
    },
    Forbidden {
        why: String,
        versions: Vec<u32>,
    },
}

impl Choice {
    fn name(&self) -> &'static str {
        match self {
            Choice::CodeOnly { .. } => "code-only",
            Choice::Down { .. } => "down-migrations",
            Choice::Restore { .. } => "restore",
            Choice::Forbidden { .. } => "restore-forbidden",
        }
    }

    /// One line, said before the database step acts.
    fn describe(&self) -> String {
        match self {
            Choice::CodeOnly { why } => format!("code only: {why}"),
            Choice::Down {
                database,
                to_version,
                versions,
            } => format!(
                "down migrations on {database} to version {to_version}, reverting {}: each has a down",
                list(versions)
            ),
            Choice::Restore {
                backup,
                backup_at,
                why,
            } => format!(
                "restore of the pre-deploy backup {backup} ({why}); the writes made since {} are \
                 discarded and kept in a failed-state backup",
                utc(*backup_at)
            ),
            Choice::Forbidden { why, .. } => format!(
                "no database change: {why}; the code goes back, the schema stays, and an operator \
                 must act"
            ),
        }
    }
}

/// Whether this rollback turns maintenance on, and why (not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Maintenance {
    /// Turned on by this rollback, and off at its end.
    On {
        why: String,
    },
    /// Already on when the rollback began: left on at its end.
    AlreadyOn {
        since: UnixMillis,
        by: String,
    },
    Skip {
        why: String,
    },
}

/// Everything decided before acting, journaled as the `plan` step's data so
/// that a resumed rollback acts on the same decisions (the schema may
/// already have changed when it resumes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    scope: Scope,
    deployment: Option<String>,
    from: Option<String>,
    to: String,
    choice: Choice,
    maintenance: Maintenance,
    /// `Some(why)` when no snapshot is taken.
    snapshot_skip: Option<String>,
    flags: Option<Vec<FlagValue>>,
    reason: String,
    requested_by: String,
}

/// What the database step left for the result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DbData {
    reverted: Vec<u32>,
    drops: Vec<DroppedObject>,
    failed_state_backup: Option<String>,
    tables: Vec<TableRows>,
    window_to: Option<UnixMillis>,
}

fn list(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------- submit

/// A host rollback resolved at submission: its idempotency key and the
/// deployment whose rollback point it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub key: String,
    pub deployment: Option<String>,
}

/// Why a submission is refused: a bad request, or something not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Bad(String),
    NotFound(String),
    /// The journal could not be read.
    Internal(String),
}

/// Deployment ids reach keys and SQL literals: a plain alphabet only.
fn check_deployment(d: &str) -> Result<(), String> {
    if !d.is_empty()
        && d.len() <= 128
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "deployment id {d:?} is not valid: use 1-128 letters, digits, '.', '-', '_' or ':'"
        ))
    }
}

/// Which rollback point a request means, and its key (module docs of
/// `golive_shared::protocol::rollback`):
///
/// - a named deployment: its point (refused when a later deployment is
///   still live, unless forced);
/// - none named: the app's newest point, when the app's newest activation
///   is that point's (or was attempted by it);
/// - no point: the plain previous release, code only, keyed by the
///   activation being undone: `rollback:APP:activation-SEQ:HOST`.
///
/// An explicit target other than the point's previous release needs
/// `force` and adds `:to:RELEASE` to the key.
pub fn resolve(
    config: &AgentConfig,
    journal: &Journal,
    req: &HostRollback,
) -> Result<Resolved, Refusal> {
    let host = &config.agent.name;
    let app = &req.app;
    let internal = |e: crate::journal::JournalError| Refusal::Internal(format!("journal: {e}"));
    if let Some(d) = &req.deployment {
        check_deployment(d).map_err(Refusal::Bad)?;
    }
    if let Some(to) = &req.to {
        golive_shared::names::check_release_id(to).map_err(Refusal::Bad)?;
    }
    let points = journal.rollback_points(app, 50).map_err(internal)?;
    let point = match &req.deployment {
        Some(d) => {
            let Some(p) = points
                .iter()
                .find(|p| &p.deployment == d)
                .cloned()
                .or(journal.rollback_point(app, d).map_err(internal)?)
            else {
                return Err(Refusal::NotFound(format!(
                    "agent {host} has no rollback point of deployment {d} for app {app}; it has {}",
                    if points.is_empty() {
                        "none".to_string()
                    } else {
                        points
                            .iter()
                            .take(5)
                            .map(|p| {
                                format!("{} ({}, {})", p.deployment, p.release, p.state.as_str())
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            };
            let later: Vec<&RollbackPoint> = points
                .iter()
                .filter(|q| {
                    q.recorded_at > p.recorded_at
                        && matches!(
                            q.state,
                            PointState::Pending | PointState::Live | PointState::Committed
                        )
                })
                .collect();
            if let Some(q) = later.first()
                && !req.force
            {
                return Err(Refusal::Bad(format!(
                    "deployment {} (release {}) activated on {host} after deployment {d} and is \
                     still {}; roll it back first, or pass --force to roll back to before {d} \
                     (its database step undoes only what {d} did)",
                    q.deployment,
                    q.release,
                    q.state.as_str()
                )));
            }
            Some(p)
        }
        None => {
            let last = journal.last_activate(app).map_err(internal)?;
            points.first().cloned().filter(|p| match &last {
                None => true,
                Some((_, release, at)) => release == &p.release || *at <= p.recorded_at,
            })
        }
    };
    match point {
        Some(p) => {
            let Some(previous) = &p.previous else {
                if req.to.is_none() {
                    // Nothing to roll back to (issue 14): `NotFound`.
                    return Err(Refusal::NotFound(format!(
                        "deployment {} was the first install of {app} on {host}: there is no earlier \
                         release to go back to; name one with --to RELEASE --force, or deploy a fixed release",
                        p.deployment
                    )));
                }
                if !req.force {
                    return Err(Refusal::Bad(format!(
                        "deployment {} was the first install of {app} on {host}; going to {} needs --force",
                        p.deployment,
                        req.to.as_deref().unwrap_or_default()
                    )));
                }
                return Ok(Resolved {
                    key: format!(
                        "rollback:{}:{host}:to:{}",
                        p.deployment,
                        req.to.as_deref().unwrap_or_default()
                    ),
                    deployment: Some(p.deployment),
                });
            };
            let key = match &req.to {
                Some(to) if to != previous => {
                    if !req.force {
                        return Err(Refusal::Bad(format!(
                            "the rollback point of deployment {} returns {app} to release {previous}, \
                             not {to}; pass --force to go to {to} (the database goes back only as far \
                             as before {})",
                            p.deployment, p.deployment
                        )));
                    }
                    format!("rollback:{}:{host}:to:{to}", p.deployment)
                }
                _ => format!("rollback:{}:{host}", p.deployment),
            };
            Ok(Resolved {
                key,
                deployment: Some(p.deployment),
            })
        }
        None => {
            let Some((seq, _, _)) = journal.last_activate(app).map_err(internal)? else {
                return Err(Refusal::NotFound(format!(
                    "app {app} was never activated on agent {host}: there is nothing to roll back"
                )));
            };
            Ok(Resolved {
                key: match &req.to {
                    Some(to) => format!("rollback:{app}:activation-{seq}:{host}:to:{to}"),
                    None => format!("rollback:{app}:activation-{seq}:{host}"),
                },
                deployment: None,
            })
        }
    }
}

// ---------------------------------------------------------------- the point

/// Records deployment `deployment`'s rollback point before its activation
/// of `release` switches `current` (state `pending`; [`point_live`] after
/// the switch). Reads the flags, the migrations ledger and the backups on
/// this host; what cannot be read is said in a warning and left out (the
/// rollback reads the ledger again).
pub fn record_point(
    config: &AgentConfig,
    journal: &Journal,
    activate: &ActivateRelease,
    deployment: &str,
    previous: Option<&str>,
    emit: &dyn Fn(EventKind),
) -> Result<(), String> {
    let (app_name, release) = (activate.app.as_str(), activate.release.as_str());
    let app = config
        .app(app_name)
        .ok_or_else(|| format!("no app {app_name:?} in the agent config"))?;
    let warn = |line: String| {
        emit(EventKind::Log {
            level: LogLevel::Warn,
            line,
        })
    };
    if journal
        .rollback_point(app_name, deployment)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let flags = match crate::flags::values(app) {
        Ok(f) => f,
        Err(e) => {
            warn(format!(
                "the rollback point of {deployment} keeps no flag values: {e}"
            ));
            None
        }
    };
    let (database, schema_before, migrations) = match migrations_db(app) {
        None => (None, None, Vec::new()),
        Some(db) => match crate::migrate::ledger(db) {
            Ok(rows) => {
                let (before, mine) = crate::migrate::applied_by(&rows, deployment);
                let list = mine
                    .iter()
                    .map(|a| PointMigration {
                        version: a.version,
                        name: a.name.clone(),
                        tag: crate::migrate::tag_text(a.tag),
                        has_down: a.down_sql.is_some(),
                    })
                    .collect();
                (Some(db.name().to_string()), Some(before), list)
            }
            Err(e) => {
                warn(format!(
                    "the rollback point of {deployment} could not read the migrations ledger of \
                     {}: {e}; a rollback reads it again",
                    db.name()
                ));
                (Some(db.name().to_string()), None, Vec::new())
            }
        },
    };
    let backup = journal
        .backups(app_name)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|b| {
            b.info.deployment.as_deref() == Some(deployment)
                && b.info.label == "pre-deploy"
                && b.info.state == "complete"
        })
        .map(|b| b.info.id);
    let migration_command = command_ran(journal, app_name, app, deployment);
    let now = now_millis();
    let point = RollbackPoint {
        app: app_name.to_string(),
        deployment: deployment.to_string(),
        release: release.to_string(),
        previous: previous.map(str::to_string),
        recorded_at: now,
        backup,
        database,
        schema_before,
        migrations,
        migration_command,
        flags,
        restore: activate.rollback.restore,
        maintenance: activate.rollback.maintenance,
        state: PointState::Pending,
        state_at: now,
        rollback_job: None,
        error: None,
    };
    journal
        .insert_rollback_point(&point)
        .map_err(|e| e.to_string())?;
    emit(EventKind::Log {
        level: LogLevel::Info,
        line: format!(
            "rollback point of deployment {deployment}: {}",
            summary(&point)
        ),
    });
    Ok(())
}

/// The switch of a recorded point happened: `pending` → `live`.
pub fn point_live(journal: &Journal, app: &str, deployment: &str) -> Result<(), String> {
    match journal.rollback_point(app, deployment) {
        Ok(Some(p)) if p.state == PointState::Pending => journal
            .point_live_deferred(app, deployment, now_millis())
            .map_err(|e| e.to_string()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// One line about a point, for events and the CLI.
pub fn summary(p: &RollbackPoint) -> String {
    let migrations = if p.migrations.is_empty() {
        "no migrations".to_string()
    } else {
        format!(
            "migrations {} (schema before: {})",
            p.migrations
                .iter()
                .map(|m| format!(
                    "{}{}{}",
                    m.version,
                    m.tag
                        .as_deref()
                        .map(|t| format!(" {t}"))
                        .unwrap_or_default(),
                    if m.has_down { "" } else { " no down" }
                ))
                .collect::<Vec<_>>()
                .join(", "),
            p.schema_before
                .map_or("unknown".to_string(), |v| v.to_string())
        )
    };
    format!(
        "{} -> {}, {migrations}{}, backup {}, {}, restore {}",
        p.previous.as_deref().unwrap_or("none"),
        p.release,
        if p.migration_command {
            ", the migration command ran"
        } else {
            ""
        },
        p.backup.as_deref().unwrap_or("none"),
        match &p.flags {
            None => "no flags".to_string(),
            Some(f) => format!("{} flag value(s)", f.len()),
        },
        p.restore.as_str()
    )
}

fn migrations_db(app: &AppConfig) -> Option<&DatabaseConfig> {
    let m = app.migrations.as_ref()?;
    app.databases.iter().find(|d| d.name() == m.database)
}

/// The app's migration command ran for `deployment` (a `migrate` job under
/// its lease): it has no down and no tags, so only a restore undoes it.
fn command_ran(journal: &Journal, app_name: &str, app: &AppConfig, deployment: &str) -> bool {
    app.migration_command.is_some()
        && journal
            .deployment_jobs(app_name, deployment, "migrate")
            .is_ok_and(|states| states.iter().any(|s| s != "queued"))
}

// ---------------------------------------------------------------- run

/// Runs (or resumes) the host rollback job `job`. `deployment`: the point's
/// deployment, as resolved at submission.
pub fn run(
    config: &AgentConfig,
    journal: &Journal,
    job: &Job,
    req: &HostRollback,
    deployment: Option<&str>,
    emit: &dyn Fn(EventKind),
) -> Result<HostRolledBack, JobError> {
    let m = Machine::new(config, journal, job, &req.app, emit)?;
    let plan = m.plan(deployment, || m.plan_full(req, deployment))?;
    Ok(m.walk(&plan)?)
}

/// Runs (or resumes) an older `Rollback` job: the same machine, code steps
/// only. Returns `(from, to, availability)`.
pub fn run_code_only(
    config: &AgentConfig,
    journal: &Journal,
    job: &Job,
    app: &str,
    to: Option<&str>,
    reason: &str,
    emit: &dyn Fn(EventKind),
) -> Result<(Option<String>, String, Option<Availability>), JobError> {
    let m = Machine::new(config, journal, job, app, emit)?;
    let plan = m.plan(None, || m.plan_code_only(to, reason))?;
    let out = m.walk(&plan)?;
    Ok((out.from, out.to, out.availability))
}

struct Machine<'a> {
    config: &'a AgentConfig,
    journal: &'a Journal,
    job: &'a Job<'a>,
    app_name: &'a str,
    app: &'a AppConfig,
    layout: AppLayout,
    emit: &'a dyn Fn(EventKind),
}

impl<'a> Machine<'a> {
    fn new(
        config: &'a AgentConfig,
        journal: &'a Journal,
        job: &'a Job<'a>,
        app_name: &'a str,
        emit: &'a dyn Fn(EventKind),
    ) -> Result<Machine<'a>, JobError> {
        let app = config
            .app(app_name)
            .ok_or_else(|| JobError::refused(format!("no app {app_name:?} in the agent config")))?;
        Ok(Machine {
            config,
            journal,
            job,
            app_name,
            app,
            layout: AppLayout::new(&app.root),
            emit,
        })
    }

    fn log(&self, level: LogLevel, line: String) {
        (self.emit)(EventKind::Log { level, line });
    }

    fn info(&self, line: String) {
        self.log(LogLevel::Info, line);
    }

    /// Who acts, for the maintenance and flag journals.
    fn by(&self) -> String {
        format!(
            "host rollback job {} ({})",
            self.job.id, self.job.submitted_by
        )
    }

    fn steps(&self) -> Result<BTreeMap<String, StepRow>, String> {
        Ok(self
            .journal
            .rollback_steps(self.job.id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| (r.step.clone(), r))
            .collect())
    }

    /// The journaled plan, or a new one from `make`, journaled before any
    /// step acts.
    fn plan(
        &self,
        deployment: Option<&str>,
        make: impl FnOnce() -> Result<Plan, JobError>,
    ) -> Result<Plan, JobError> {
        if let Some(row) = self.steps()?.remove(PLAN)
            && row.state == "done"
            && let Some(data) = &row.data
        {
            let plan: Plan = serde_json::from_str(data)
                .map_err(|e| format!("the journaled rollback plan is unreadable: {e}"))?;
            self.info(format!(
                "resuming the rollback of {} planned at {}: {} -> {}; database: {}",
                self.app_name,
                utc(row.started_at),
                plan.from.as_deref().unwrap_or("none"),
                plan.to,
                plan.choice.describe()
            ));
            return Ok(plan);
        }
        self.journal
            .step_started(self.job.id, PLAN, now_millis())
            .map_err(|e| e.to_string())?;
        let plan = match make() {
            Ok(p) => p,
            Err(JobError { code, message: e }) => {
                let _ =
                    self.journal
                        .step_finished(self.job.id, PLAN, "failed", &e, None, now_millis());
                if let Some(d) = deployment {
                    let _ = self.journal.set_rollback_point_state(
                        self.app_name,
                        d,
                        PointState::RollbackFailed,
                        Some(self.job.id),
                        Some(&e),
                        now_millis(),
                    );
                }
                // Its class kept (issue 14): nothing to roll back to is
                // `NotFound`, a journal that cannot be read `Internal`.
                return Err(JobError {
                    code,
                    message: format!(
                        "host rollback of {} on {} refused before any change: {e}",
                        self.app_name, self.config.agent.name
                    ),
                });
            }
        };
        let data = serde_json::to_string(&plan).map_err(|e| e.to_string())?;
        let detail = format!(
            "{} -> {}; database: {}",
            plan.from.as_deref().unwrap_or("none"),
            plan.to,
            plan.choice.name()
        );
        self.journal
            .step_finished(
                self.job.id,
                PLAN,
                "done",
                &detail,
                Some(&data),
                now_millis(),
            )
            .map_err(|e| e.to_string())?;
        if let Some(d) = &plan.deployment {
            let _ = self.journal.set_rollback_point_state(
                self.app_name,
                d,
                self.point_state(d),
                Some(self.job.id),
                None,
                now_millis(),
            );
        }
        self.info(format!(
            "host rollback of {}{} on {} requested by {} ({}): {}",
            self.app_name,
            plan.deployment
                .as_deref()
                .map(|d| format!(" (deployment {d})"))
                .unwrap_or_default(),
            self.config.agent.name,
            plan.requested_by,
            self.job.submitted_by,
            plan.reason
        ));
        // The choice is reported before anything acts (issue 13, part 3).
        let level = match plan.choice {
            Choice::Forbidden { .. } | Choice::Restore { .. } => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        self.log(
            level,
            format!(
                "database choice: {} -> {}: {}",
                plan.from.as_deref().unwrap_or("none"),
                plan.to,
                plan.choice.describe()
            ),
        );
        Ok(plan)
    }

    /// The point's state now (the plan does not change it).
    fn point_state(&self, d: &str) -> PointState {
        self.journal
            .rollback_point(self.app_name, d)
            .ok()
            .flatten()
            .map_or(PointState::Live, |p| p.state)
    }

    fn plan_code_only(&self, to: Option<&str>, reason: &str) -> Result<Plan, JobError> {
        let current = self.layout.current().map_err(|e| e.to_string())?;
        let to = match to {
            Some(t) => t.to_string(),
            None => self.previous_release(current.as_deref())?,
        };
        Ok(Plan {
            scope: Scope::CodeOnly,
            deployment: None,
            from: current,
            to,
            choice: Choice::CodeOnly {
                why: "a rollback job of the older protocol changes the code only".into(),
            },
            maintenance: Maintenance::Skip {
                why: "the code steps only (the controller handles maintenance)".into(),
            },
            snapshot_skip: Some("code-only: no data changes".into()),
            flags: None,
            reason: reason.to_string(),
            requested_by: "controller".into(),
        })
    }

    /// The release before `current`, or `NotFound`: nothing to roll back
    /// to (issue 14).
    fn previous_release(&self, current: Option<&str>) -> Result<String, JobError> {
        self.journal
            .rollback_target(self.app_name, current, |id| {
                self.layout.release_dir(id).is_dir()
            })
            .map_err(|e| e.to_string())?
            .ok_or_else(|| JobError {
                code: ErrorCode::NotFound,
                message: format!(
                    "app {} has no earlier release to roll back to (current: {})",
                    self.app_name,
                    current.unwrap_or("none")
                ),
            })
    }

    fn plan_full(&self, req: &HostRollback, deployment: Option<&str>) -> Result<Plan, JobError> {
        let current = self.layout.current().map_err(|e| e.to_string())?;
        let point = match deployment {
            Some(d) => Some(
                self.journal
                    .rollback_point(self.app_name, d)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| JobError {
                        code: ErrorCode::NotFound,
                        message: format!("the rollback point of deployment {d} is gone"),
                    })?,
            ),
            None => None,
        };
        let requested_by = req.requested_by.as_str().to_string();
        let Some(point) = point else {
            let to = match &req.to {
                Some(t) => t.clone(),
                None => self.previous_release(current.as_deref())?,
            };
            return Ok(Plan {
                scope: Scope::Full,
                deployment: None,
                from: current,
                to,
                choice: Choice::CodeOnly {
                    why: format!(
                        "app {} has no rollback point on this host (its release was activated \
                         without a deployment's lock, or before golive recorded them): only the \
                         code goes back",
                        self.app_name
                    ),
                },
                maintenance: Maintenance::Skip {
                    why: "a code-only switch is atomic".into(),
                },
                snapshot_skip: Some("code-only: no data changes".into()),
                flags: None,
                reason: req.reason.clone(),
                requested_by,
            });
        };
        let to = match (&req.to, &point.previous) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(JobError {
                    code: ErrorCode::NotFound,
                    message: format!(
                        "deployment {} was a first install: nothing to go back to",
                        point.deployment
                    ),
                });
            }
        };
        let choice = self.choose(&point, &to, req.restore)?;
        let changes_data = matches!(choice, Choice::Down { .. } | Choice::Restore { .. });
        let maintenance = match (
            &self.app.maintenance,
            self.journal.maintenance(self.app_name),
        ) {
            (None, _) => Maintenance::Skip {
                why: format!(
                    "app {} declares no maintenance mode{}",
                    self.app_name,
                    if changes_data {
                        " (the database changes while the app serves)"
                    } else {
                        ""
                    }
                ),
            },
            (Some(_), Ok(Some(s))) => Maintenance::AlreadyOn {
                since: s.on_since,
                by: s.by,
            },
            (Some(_), Err(e)) => return Err(JobError::failed(e.to_string())),
            (Some(_), Ok(None)) if changes_data => Maintenance::On {
                why: "the database step changes data".into(),
            },
            (Some(_), Ok(None)) if point.maintenance => Maintenance::On {
                why: format!(
                    "the plan of deployment {} asks for maintenance around switches",
                    point.deployment
                ),
            },
            (Some(_), Ok(None)) => Maintenance::Skip {
                why: "a code-only switch is atomic".into(),
            },
        };
        let nothing_to_save = self.app.databases.is_empty() && self.app.files.is_empty();
        let snapshot_skip = match &choice {
            Choice::CodeOnly { .. } => Some("code-only: no data changes".to_string()),
            Choice::Restore { .. } => {
                Some("the restore takes its own failed-state backup".to_string())
            }
            _ if nothing_to_save => Some(format!(
                "app {} declares no databases and no file sets",
                self.app_name
            )),
            _ => None,
        };
        Ok(Plan {
            scope: Scope::Full,
            deployment: Some(point.deployment.clone()),
            from: current,
            to,
            choice,
            maintenance,
            snapshot_skip,
            flags: point.flags.clone(),
            reason: req.reason.clone(),
            requested_by,
        })
    }

    /// The database choice for `point` (module docs). The ledger is read
    /// again: it is the truth about what the deployment applied.
    fn choose(
        &self,
        point: &RollbackPoint,
        to: &str,
        restore: Option<RestorePolicy>,
    ) -> Result<Choice, String> {
        let d = &point.deployment;
        let command = command_ran(self.journal, self.app_name, self.app, d);
        let (sql, before) = match migrations_db(self.app) {
            None => (Vec::new(), None),
            Some(db) => {
                let rows = crate::migrate::ledger(db).map_err(|e| {
                    format!(
                        "cannot read the migrations ledger of database {} to choose how it goes \
                         back: {e}; bring the database back, then ask again",
                        db.name()
                    )
                })?;
                let (before, mine) = crate::migrate::applied_by(&rows, d);
                let mine: Vec<crate::migrate::Applied> = mine.into_iter().cloned().collect();
                (mine, Some((db, before)))
            }
        };
        let versions: Vec<u32> = sql.iter().map(|a| a.version).collect();
        if sql.is_empty() && !command {
            return Ok(Choice::CodeOnly {
                why: format!("deployment {d} applied no migration"),
            });
        }
        if !command
            && sql
                .iter()
                .all(|a| a.tag == Some(crate::migrate::Tag::Expand))
        {
            return Ok(Choice::CodeOnly {
                why: format!(
                    "every migration deployment {d} applied is expand ({}): the old release runs \
                     on the new schema and no write is lost",
                    list(&versions)
                ),
            });
        }
        let no_down = if command {
            format!("the app's migration command ran for deployment {d}, and it has no down")
        } else {
            let (db, before) = before.expect("sql migrations have a database");
            let dir = self.layout.release_dir(to).join(
                &self
                    .app
                    .migrations
                    .as_ref()
                    .expect("sql migrations are declared")
                    .dir,
            );
            match crate::migrate::revert_plan(db, &dir, Some(to), before) {
                Ok(plan) if !plan.is_empty() => {
                    return Ok(Choice::Down {
                        database: db.name().to_string(),
                        to_version: before,
                        versions: plan.iter().map(|r| r.version).collect(),
                    });
                }
                Ok(_) => format!("no migration above version {before} is applied"),
                Err(e) => e.to_string(),
            }
        };
        let policy = restore.unwrap_or(point.restore);
        if policy == RestorePolicy::Forbid {
            return Ok(Choice::Forbidden {
                why: format!(
                    "a restore is needed ({no_down}) and restores are forbidden (restore = \"forbid\")"
                ),
                versions,
            });
        }
        let backup = point
            .backup
            .as_deref()
            .map(|id| self.journal.backup(id))
            .transpose()
            .map_err(|e| e.to_string())?
            .flatten()
            .filter(|b| b.info.state == "complete");
        match backup {
            Some(b) => Ok(Choice::Restore {
                backup: b.info.id,
                backup_at: b.info.created_at,
                why: no_down,
            }),
            None => Ok(Choice::Forbidden {
                why: format!(
                    "a restore is needed ({no_down}) and deployment {d} has no complete pre-deploy \
                     backup on this host{}",
                    point
                        .backup
                        .as_deref()
                        .map(|b| format!(" (backup {b} is gone)"))
                        .unwrap_or_default()
                ),
                versions,
            }),
        }
    }

    /// Walks the steps from the first unfinished one.
    fn walk(&self, plan: &Plan) -> Result<HostRolledBack, String> {
        let mut sampler = None;
        let mut availability = None;
        for (i, step) in STEPS.iter().enumerate() {
            let rows = self.steps()?;
            if let Some(row) = rows.get(*step)
                && (row.state == "done" || row.state == "skipped")
            {
                continue;
            }
            let n = format!("step {}/{} {step}", i + 1, STEPS.len());
            // Sampling what users see: from the switch through the hooks,
            // when nothing else keeps them away (maintenance).
            if *step == "reactivate"
                && plan.scope_samples()
                && plan.from.as_deref() != Some(&plan.to)
            {
                sampler = crate::availability::start(self.journal, self.app_name, self.app);
            }
            if let Some(skip) = self.skip(plan, step) {
                self.journal
                    .step_finished(self.job.id, step, "skipped", &skip, None, now_millis())
                    .map_err(|e| e.to_string())?;
                self.info(format!("{n}: skipped ({skip})"));
                if *step == "after-rollback"
                    && let Some(s) = sampler.take()
                {
                    availability = s.finish(true, self.emit);
                }
                continue;
            }
            let started = now_millis();
            if let Some(row) = rows.get(*step)
                && row.state == "started"
                && row.attempts >= MAX_ATTEMPTS
            {
                let e = format!(
                    "it was started {} times and the agent stopped during it each time",
                    row.attempts
                );
                if let Some(s) = sampler.take() {
                    s.finish(false, self.emit);
                }
                return Err(self.fail(plan, i, step, &e));
            }
            let attempt = self
                .journal
                .step_started(self.job.id, step, started)
                .map_err(|e| e.to_string())?;
            self.info(if attempt > 1 {
                format!("{n}: started again (attempt {attempt})")
            } else {
                format!("{n}: started")
            });
            match self.act(plan, step, rows.get(*step)) {
                Ok((detail, data)) => {
                    self.journal
                        .step_finished(
                            self.job.id,
                            step,
                            "done",
                            &detail,
                            data.as_deref(),
                            now_millis(),
                        )
                        .map_err(|e| e.to_string())?;
                    self.info(format!("{n}: done ({detail})"));
                }
                Err(e) => {
                    if let Some(s) = sampler.take() {
                        s.finish(false, self.emit);
                    }
                    return Err(self.fail(plan, i, step, &e));
                }
            }
            if *step == "after-rollback"
                && let Some(s) = sampler.take()
            {
                availability = s.finish(true, self.emit);
            }
        }
        if let Some(s) = sampler.take() {
            availability = s.finish(true, self.emit);
        }
        if let Some(d) = &plan.deployment {
            self.journal
                .set_rollback_point_state(
                    self.app_name,
                    d,
                    PointState::RolledBack,
                    Some(self.job.id),
                    None,
                    now_millis(),
                )
                .map_err(|e| e.to_string())?;
        }
        self.result(plan, availability)
    }

    /// Why `step` is not needed in this plan, or `None` to run it.
    fn skip(&self, plan: &Plan, step: &str) -> Option<String> {
        match step {
            "maintenance-on" => match &plan.maintenance {
                Maintenance::On { .. } => None,
                Maintenance::AlreadyOn { since, by } => Some(format!(
                    "maintenance is already on since {} (by {by}); it stays on after the rollback",
                    utc(*since)
                )),
                Maintenance::Skip { why } => Some(why.clone()),
            },
            "snapshot" => plan.snapshot_skip.clone(),
            "reactivate" => None,
            "database" => match &plan.choice {
                Choice::CodeOnly { why } => Some(format!("code only: {why}")),
                _ => None,
            },
            "flags" => match (&plan.flags, plan.scope) {
                (_, Scope::CodeOnly) => Some("the code steps only".into()),
                (None, _) if plan.deployment.is_none() => {
                    Some("no rollback point holds flag values".into())
                }
                (None, _) => Some(format!("app {} declares no flags", self.app_name)),
                (Some(_), _) => None,
            },
            "after-rollback" => {
                if self.app.hooks.after_rollback.is_empty() {
                    Some("no after_rollback hooks".into())
                } else if plan.scope == Scope::CodeOnly && plan.from.as_deref() == Some(&plan.to) {
                    Some(format!("{} was already current: nothing switched", plan.to))
                } else {
                    None
                }
            }
            "maintenance-off" => match &plan.maintenance {
                Maintenance::On { .. } => None,
                Maintenance::AlreadyOn { .. } => {
                    Some("maintenance was on before the rollback: it stays on".into())
                }
                Maintenance::Skip { .. }
                    if self.steps().is_ok_and(|rows| rows.contains_key(FAILSAFE)) =>
                {
                    None
                }
                Maintenance::Skip { .. } => Some("this rollback did not turn it on".into()),
            },
            "probe" if plan.scope == Scope::CodeOnly => {
                Some("the controller probes after a rollback job".into())
            }
            _ => None,
        }
    }

    /// Runs one step; returns its detail and the data it leaves.
    fn act(
        &self,
        plan: &Plan,
        step: &str,
        before: Option<&StepRow>,
    ) -> Result<(String, Option<String>), String> {
        match step {
            "maintenance-on" | "maintenance-off" => {
                let on = step == "maintenance-on";
                let reason = match &plan.maintenance {
                    Maintenance::On { why } => format!("host rollback job {}: {why}", self.job.id),
                    _ => format!("host rollback job {} (a step failed before)", self.job.id),
                };
                let done = crate::maintenance::set_by(
                    self.config,
                    self.journal,
                    &SetMaintenance {
                        app: self.app_name.to_string(),
                        on,
                        reason,
                    },
                    &self.by(),
                    self.emit,
                )
                .map_err(|e| e.message)?;
                // What users saw as maintenance went off (issue 12, part
                // 15) is kept as the step's data, for the job's figure.
                let measured = match done {
                    JobResult::Maintenance {
                        availability: Some(a),
                        ..
                    } => serde_json::to_string(&a).ok(),
                    _ => None,
                };
                Ok((if on { "on" } else { "off" }.to_string(), measured))
            }
            "snapshot" => self.snapshot(plan),
            "reactivate" => self.reactivate(plan),
            "database" => self.database(plan, before),
            "flags" => self.flags(plan),
            "after-rollback" => {
                let dir = self.layout.release_dir(&plan.to);
                crate::hooks::run_hooks(
                    self.config,
                    self.app_name,
                    "after_rollback",
                    &dir,
                    self.emit,
                )
                .map_err(|e| {
                    golive_shared::protocol::error_with(
                        &e.message,
                        &format!("; current already points to {}", plan.to),
                    )
                })?;
                Ok((
                    format!(
                        "{} hook(s) ran in {}",
                        self.app.hooks.after_rollback.len(),
                        plan.to
                    ),
                    None,
                ))
            }
            "probe" => {
                let results = probe_now(self.journal, self.app_name, self.app);
                let failed: Vec<String> = results
                    .iter()
                    .filter(|r| r.status.failed())
                    .map(|r| format!("{} {}", r.name, r.status.as_str()))
                    .collect();
                let passed = results
                    .iter()
                    .filter(|r| r.status == ProbeStatus::Pass)
                    .count();
                let detail = if results.is_empty() {
                    "the app declares no probes".to_string()
                } else if failed.is_empty() {
                    format!("{passed} of {} probe(s) pass", results.len())
                } else {
                    format!(
                        "{passed} of {} probe(s) pass; not passing: {}",
                        results.len(),
                        failed.join(", ")
                    )
                };
                for r in &results {
                    self.log(
                        if r.status.failed() {
                            LogLevel::Warn
                        } else {
                            LogLevel::Info
                        },
                        format!(
                            "probe {}: {}{} {}",
                            r.name,
                            r.status.as_str(),
                            r.value
                                .as_deref()
                                .map(|v| format!(" ({v})"))
                                .unwrap_or_default(),
                            r.message
                        ),
                    );
                }
                let data = serde_json::to_string(&results).map_err(|e| e.to_string())?;
                Ok((detail, Some(data)))
            }
            other => Err(format!("unknown rollback step {other:?}")),
        }
    }

    fn snapshot(&self, plan: &Plan) -> Result<(String, Option<String>), String> {
        let r = crate::backup::run::create(
            self.config,
            self.journal,
            &CreateBackup {
                app: self.app_name.to_string(),
                label: "failed-state".into(),
                only: vec![],
                deployment: plan.deployment.clone(),
                verify: true,
            },
            self.emit,
        )
        .map_err(|e| {
            format!("the failed-state snapshot could not be taken, so nothing was changed: {e}")
        })?;
        let JobResult::BackedUp { id, bytes, .. } = r else {
            return Err("unexpected result of the failed-state snapshot".into());
        };
        Ok((
            format!("failed-state backup {id} ({bytes} bytes, verified)"),
            Some(serde_json::json!({ "backup": id }).to_string()),
        ))
    }

    fn reactivate(&self, plan: &Plan) -> Result<(String, Option<String>), String> {
        let current = self.layout.current().map_err(|e| e.to_string())?;
        if current.as_deref() == Some(plan.to.as_str()) {
            return Ok((format!("{} is current", plan.to), None));
        }
        let dir = self.layout.release_dir(&plan.to);
        if !dir.is_dir() {
            return Err(format!(
                "release {} is not on this host ({} is missing); nothing was switched",
                plan.to,
                dir.display()
            ));
        }
        // Never switch back to a release that is broken itself (issue 12).
        crate::hooks::before_switch_back(self.app, &plan.to, &dir, current.as_deref(), self.emit)?;
        let log = |line: String| self.info(line);
        let from = crate::jobs::switch(
            self.journal,
            self.app_name,
            self.app,
            &self.layout,
            &plan.to,
            "rollback",
            &log,
        )
        .map_err(|e| e.message)?;
        Ok((
            format!(
                "current: {} -> {}",
                from.as_deref().unwrap_or("none"),
                plan.to
            ),
            None,
        ))
    }

    fn database(
        &self,
        plan: &Plan,
        before: Option<&StepRow>,
    ) -> Result<(String, Option<String>), String> {
        match &plan.choice {
            Choice::CodeOnly { why } => Ok((format!("code only: {why}"), None)),
            Choice::Forbidden { why, versions } => {
                self.log(
                    LogLevel::Warn,
                    format!(
                        "OPERATOR ACTION NEEDED: the schema of {} stays as deployment {} left it \
                         (migrations {} stay applied) while release {} runs: {why}",
                        self.app_name,
                        plan.deployment.as_deref().unwrap_or("?"),
                        list(versions),
                        plan.to
                    ),
                );
                Ok((format!("the schema stays: {why}"), None))
            }
            Choice::Down {
                database,
                to_version,
                ..
            } => {
                let db = self
                    .app
                    .databases
                    .iter()
                    .find(|d| d.name() == database)
                    .ok_or_else(|| format!("database {database} is no longer declared"))?;
                let mdir = self
                    .app
                    .migrations
                    .as_ref()
                    .map(|m| m.dir.clone())
                    .unwrap_or_else(|| PathBuf::from("migrations"));
                let dir = self.layout.release_dir(&plan.to).join(mdir);
                let reverts = crate::migrate::revert_plan(db, &dir, Some(&plan.to), *to_version)
                    .map_err(|e| e.to_string())?;
                let drops = crate::migrate::drops(db, &reverts);
                if !drops.is_empty() {
                    self.log(
                        LogLevel::Warn,
                        format!(
                            "the down migrations drop {}",
                            drops
                                .iter()
                                .map(DroppedObject::describe)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
                let log = |line: String| self.info(line);
                let reverted = crate::migrate::down_from(
                    db,
                    &dir,
                    Some(&plan.to),
                    *to_version,
                    crate::migrate::LOCK_WAIT,
                    &log,
                )
                .map_err(|e| e.to_string())?;
                let data = DbData {
                    reverted: reverted.clone(),
                    drops,
                    ..Default::default()
                };
                Ok((
                    if reverted.is_empty() {
                        format!("{database} is at version {to_version} (nothing left to revert)")
                    } else {
                        format!(
                            "reverted {} on {database}: now at version {to_version}",
                            list(&reverted)
                        )
                    },
                    Some(serde_json::to_string(&data).map_err(|e| e.to_string())?),
                ))
            }
            Choice::Restore { backup, .. } => {
                if let (Some(row), Some(d)) = (before, &plan.deployment)
                    && row.attempts > 0
                    && let Ok(earlier) =
                        self.journal
                            .backups_since(self.app_name, "failed-state", d, row.started_at)
                    && !earlier.is_empty()
                {
                    self.log(
                        LogLevel::Warn,
                        format!(
                            "the restore runs again; the state before its first attempt is in \
                             failed-state backup {}",
                            earlier.last().expect("not empty")
                        ),
                    );
                }
                let r = crate::backup::run::restore(
                    self.config,
                    self.journal,
                    &RestoreBackup {
                        app: self.app_name.to_string(),
                        id: backup.clone(),
                        deployment: plan.deployment.clone(),
                    },
                    self.emit,
                )?;
                let JobResult::Restored {
                    failed_state_backup,
                    tables,
                    ..
                } = r
                else {
                    return Err("unexpected result of the restore".into());
                };
                let lost: u64 = tables.iter().map(TableRows::lost).sum();
                let data = DbData {
                    failed_state_backup: Some(failed_state_backup.clone()),
                    tables,
                    window_to: Some(now_millis()),
                    ..Default::default()
                };
                Ok((
                    format!(
                        "restored {backup}; {lost} row(s) written since are only in failed-state \
                         backup {failed_state_backup}"
                    ),
                    Some(serde_json::to_string(&data).map_err(|e| e.to_string())?),
                ))
            }
        }
    }

    fn flags(&self, plan: &Plan) -> Result<(String, Option<String>), String> {
        let Some(want) = &plan.flags else {
            return Ok(("no flag values to restore".into(), None));
        };
        let now: BTreeMap<String, (bool, Option<u8>)> = crate::flags::values(self.app)?
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f.name, (f.on, f.percent)))
            .collect();
        let mut changed = Vec::new();
        for f in want {
            match now.get(&f.name) {
                None => self.log(
                    LogLevel::Warn,
                    format!(
                        "flag {} is no longer declared; its value at the deployment is not restored",
                        f.name
                    ),
                ),
                Some(v) if *v == (f.on, f.percent) => {}
                Some(_) => {
                    crate::flags::set_by(
                        self.config,
                        self.journal,
                        &SetFlag {
                            app: self.app_name.to_string(),
                            name: f.name.clone(),
                            on: f.on,
                            percent: f.percent,
                        },
                        &self.by(),
                        self.emit,
                    )
                    .map_err(|e| e.message)?;
                    changed.push(format!(
                        "{} -> {}{}",
                        f.name,
                        if f.on { "on" } else { "off" },
                        f.percent.map(|p| format!(" ({p}%)")).unwrap_or_default()
                    ));
                }
            }
        }
        Ok((
            if changed.is_empty() {
                "unchanged since the deployment".into()
            } else {
                format!("restored {}", changed.join(", "))
            },
            None,
        ))
    }

    /// A step failed: the host stays in (or goes into) maintenance, the
    /// point and the step say why; returns the job's error.
    fn fail(&self, plan: &Plan, i: usize, step: &str, e: &str) -> String {
        let now = now_millis();
        let _ = self
            .journal
            .step_finished(self.job.id, step, "failed", e, None, now);
        let maintenance = if plan.scope == Scope::CodeOnly {
            String::new()
        } else if self.app.maintenance.is_none() {
            format!(
                "; app {} declares no maintenance mode, so it serves what is live now",
                self.app_name
            )
        } else if matches!(self.journal.maintenance(self.app_name), Ok(Some(_))) {
            "; MAINTENANCE STAYS ON".to_string()
        } else {
            // Never serve a half-state.
            match crate::maintenance::set_by(
                self.config,
                self.journal,
                &SetMaintenance {
                    app: self.app_name.to_string(),
                    on: true,
                    reason: format!("host rollback job {} failed at {step}", self.job.id),
                },
                &self.by(),
                self.emit,
            ) {
                Ok(_) => {
                    let _ = self.journal.step_finished(
                        self.job.id,
                        FAILSAFE,
                        "done",
                        &format!("turned on when step {step} failed"),
                        None,
                        now_millis(),
                    );
                    "; MAINTENANCE IS NOW ON (never serve a half-state)".to_string()
                }
                Err(m) => format!("; maintenance could NOT be turned on: {m}"),
            }
        };
        let again = if plan.scope == Scope::Full {
            format!(
                ". Fix the cause and ask again (`golive-agent rollback {}`, or the same \
                 request): the steps that finished are not repeated",
                self.app_name
            )
        } else {
            String::new()
        };
        let message = format!(
            "host rollback of {} on {} failed at step {}/{} ({step}): {e}{maintenance}{again}",
            self.app_name,
            self.config.agent.name,
            i + 1,
            STEPS.len(),
        );
        if let Some(d) = &plan.deployment {
            let _ = self.journal.set_rollback_point_state(
                self.app_name,
                d,
                PointState::RollbackFailed,
                Some(self.job.id),
                Some(golive_shared::protocol::error_headline(&message)),
                now,
            );
        }
        tracing::warn!(
            job = self.job.id,
            app = %self.app_name,
            step = %step,
            "job {}: {}",
            self.job.id,
            golive_shared::protocol::error_headline(&message)
        );
        message
    }

    fn result(
        &self,
        plan: &Plan,
        availability: Option<Availability>,
    ) -> Result<HostRolledBack, String> {
        let rows = self.steps()?;
        let data = |step: &str| rows.get(step).and_then(|r| r.data.clone());
        let db: DbData = data("database")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default();
        let snapshot = data("snapshot")
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            .and_then(|v| v["backup"].as_str().map(str::to_string));
        let mut operator_action = None;
        let database = match &plan.choice {
            Choice::CodeOnly { why } => DatabaseChoice::CodeOnly { why: why.clone() },
            Choice::Down { to_version, .. } => DatabaseChoice::DownMigrations {
                to_version: *to_version,
                reverted: db.reverted,
                snapshot,
                drops: db.drops,
            },
            Choice::Restore {
                backup, backup_at, ..
            } => DatabaseChoice::Restore {
                backup: backup.clone(),
                window_from: *backup_at,
                window_to: db.window_to.unwrap_or_else(now_millis),
                failed_state_backup: db.failed_state_backup.unwrap_or_default(),
                tables: db.tables,
            },
            Choice::Forbidden { why, versions } => {
                operator_action = Some(format!(
                    "the schema stays ahead of release {}: migrations {} stay applied ({why}); \
                     restore the pre-deploy backup by hand (golivectl backup restore) or deploy \
                     a release that runs on this schema",
                    plan.to,
                    list(versions)
                ));
                DatabaseChoice::RestoreForbidden {
                    why: why.clone(),
                    migrations: versions.clone(),
                    snapshot,
                }
            }
        };
        let steps = STEPS
            .iter()
            .filter_map(|s| rows.get(*s))
            .map(|r| RollbackStepReport {
                step: r.step.clone(),
                state: if r.state == "done" {
                    StepState::Done
                } else {
                    StepState::Skipped
                },
                detail: r.detail.clone(),
                attempts: r.attempts,
            })
            .collect();
        let probes: Vec<ProbeResult> = data("probe")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default();
        // A switch behind maintenance was not sampled: what users saw is
        // what the maintenance off measured (issue 12, part 15).
        let after_off: Option<Availability> =
            data("maintenance-off").and_then(|d| serde_json::from_str(&d).ok());
        let availability = match (availability, after_off) {
            (None, off) => off,
            (Some(a), Some(off)) if a.in_maintenance => Some(off),
            (Some(a), Some(off)) => Some(Availability {
                samples: a.samples + off.samples,
                failed: a.failed + off.failed,
                unavailable_ms: a.unavailable_ms + off.unavailable_ms,
                longest_ms: a.longest_ms.max(off.longest_ms),
                recovered: off.recovered,
                ..a
            }),
            (a, None) => a,
        };
        if let Some(a) = &operator_action {
            self.log(LogLevel::Warn, format!("OPERATOR ACTION NEEDED: {a}"));
        }
        Ok(HostRolledBack {
            deployment: plan.deployment.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            database,
            steps,
            availability,
            probes,
            operator_action,
        })
    }
}

impl Plan {
    /// Whether users are sampled through the switch: not behind
    /// maintenance (the sampler itself notices maintenance too).
    fn scope_samples(&self) -> bool {
        !matches!(
            self.maintenance,
            Maintenance::On { .. } | Maintenance::AlreadyOn { .. }
        )
    }
}

/// The app's probes, now, from a thread of their own (the job runs on the
/// blocking pool, or in the local CLI without a server runtime).
fn probe_now(journal: &Journal, app_name: &str, app: &AppConfig) -> Vec<ProbeResult> {
    let spans = crate::maintenance::excluded_spans(
        journal,
        app_name,
        now_millis(),
        std::time::Duration::from_secs(crate::accesslog::MAX_WINDOW_SECS),
    )
    .unwrap_or_default();
    let (name, app) = (app_name.to_string(), app.clone());
    std::thread::Builder::new()
        .name("rollback-probes".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(crate::probe::run_app(&name, &app, &[], spans))
                        .results
                })
                .unwrap_or_default()
        })
        .ok()
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use golive_shared::protocol::RollbackRequester;

    fn config() -> AgentConfig {
        toml::from_str(
            "[agent]\nname = \"a1\"\nlisten = \"127.0.0.1:7443\"\nstate_dir = \"/tmp/x\"\n\
             [tls]\nca = \"/x\"\ncert = \"/x\"\nkey = \"/x\"\n\
             [apps.shop]\nroot = \"/srv/shop\"\n",
        )
        .unwrap()
    }

    fn point(deployment: &str, release: &str, previous: &str, at: i64) -> RollbackPoint {
        RollbackPoint {
            app: "shop".into(),
            deployment: deployment.into(),
            release: release.into(),
            previous: Some(previous.into()),
            recorded_at: at,
            backup: None,
            database: None,
            schema_before: None,
            migrations: vec![],
            migration_command: false,
            flags: None,
            restore: RestorePolicy::Allow,
            maintenance: false,
            state: PointState::Live,
            state_at: at,
            rollback_job: None,
            error: None,
        }
    }

    fn req(deployment: Option<&str>, to: Option<&str>, force: bool) -> HostRollback {
        HostRollback {
            app: "shop".into(),
            deployment: deployment.map(str::to_string),
            to: to.map(str::to_string),
            reason: "test".into(),
            requested_by: RollbackRequester::Watchdog,
            force,
            restore: None,
        }
    }

    fn bad(r: Result<Resolved, Refusal>) -> String {
        match r {
            Err(Refusal::Bad(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    /// Issue 14: nothing to roll back to refuses the rollback job before
    /// any change, `NotFound` (exit 2), the words as before.
    #[test]
    fn issue14_nothing_to_roll_back_to_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let mut c = config();
        c.apps.get_mut("shop").unwrap().root = dir.path().join("shop");
        let spec =
            golive_shared::protocol::JobSpec::Rollback(golive_shared::protocol::RollbackRelease {
                app: "shop".into(),
                to: None,
                reason: "test".into(),
            });
        let (info, _) = j.insert_job("k1", &spec, "alice", 1).unwrap();
        let job = Job {
            id: info.id,
            submitted_by: "alice",
        };
        let e = run_code_only(&c, &j, &job, "shop", None, "test", &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "{e}");
        assert_eq!(
            e.message,
            "host rollback of shop on a1 refused before any change: app shop has no earlier \
             release to roll back to (current: none)"
        );
        let e = run_code_only(&c, &j, &job, "web", None, "test", &|_| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
    }

    /// One key per deployment and host, whoever asks; another target needs
    /// force and has its own key; an older deployment waits for the newer.
    #[test]
    fn issue13_keys_are_per_deployment_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let c = config();
        j.record_activation("shop", "v1", None, "activate", 10)
            .unwrap();
        j.insert_rollback_point(&point("d1", "v2", "v1", 20))
            .unwrap();
        j.record_activation("shop", "v2", Some("v1"), "activate", 21)
            .unwrap();
        let r = resolve(&c, &j, &req(None, None, false)).unwrap();
        assert_eq!(
            r,
            Resolved {
                key: "rollback:d1:a1".into(),
                deployment: Some("d1".into())
            }
        );
        assert_eq!(
            resolve(&c, &j, &req(Some("d1"), Some("v1"), false)).unwrap(),
            r
        );
        assert!(bad(resolve(&c, &j, &req(Some("d1"), Some("v0"), false))).contains("--force"));
        assert_eq!(
            resolve(&c, &j, &req(Some("d1"), Some("v0"), true))
                .unwrap()
                .key,
            "rollback:d1:a1:to:v0"
        );
        assert!(matches!(
            resolve(&c, &j, &req(Some("d9"), None, false)),
            Err(Refusal::NotFound(m)) if m.contains("d1 (v2, live)")
        ));
        assert!(bad(resolve(&c, &j, &req(Some("d 1"), None, false))).contains("not valid"));

        // A later deployment is live: d1 only with force.
        j.insert_rollback_point(&point("d2", "v3", "v2", 30))
            .unwrap();
        j.record_activation("shop", "v3", Some("v2"), "activate", 31)
            .unwrap();
        assert_eq!(
            resolve(&c, &j, &req(None, None, false)).unwrap().key,
            "rollback:d2:a1"
        );
        assert!(bad(resolve(&c, &j, &req(Some("d1"), None, false))).contains("d2"));
        assert_eq!(
            resolve(&c, &j, &req(Some("d1"), None, true)).unwrap().key,
            "rollback:d1:a1"
        );
    }

    /// Without a point for the live release, the key names the activation
    /// being undone, which a rollback does not change.
    #[test]
    fn issue13_without_a_point_the_key_names_the_activation_undone() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let c = config();
        assert!(matches!(
            resolve(&c, &j, &req(None, None, false)),
            Err(Refusal::NotFound(m)) if m.contains("never activated")
        ));
        j.insert_rollback_point(&point("d1", "v2", "v1", 5))
            .unwrap();
        j.record_activation("shop", "v1", None, "activate", 10)
            .unwrap();
        j.record_activation("shop", "v2", Some("v1"), "activate", 11)
            .unwrap();
        // v3 went live without a deployment's lease, after d1's point.
        j.record_activation("shop", "v3", Some("v2"), "activate", 12)
            .unwrap();
        let r = resolve(&c, &j, &req(None, None, false)).unwrap();
        assert_eq!(r.deployment, None);
        let seq = j.last_activate("shop").unwrap().unwrap().0;
        assert_eq!(r.key, format!("rollback:shop:activation-{seq}:a1"));
        j.record_activation("shop", "v2", Some("v3"), "rollback", 13)
            .unwrap();
        assert_eq!(resolve(&c, &j, &req(None, None, false)).unwrap(), r);
        assert_eq!(
            resolve(&c, &j, &req(None, Some("v1"), false)).unwrap().key,
            format!("rollback:shop:activation-{seq}:a1:to:v1")
        );
    }
}
