//! Message family `rollback` (issue 13): the one way a host is changed back
//! (`JobSpec::HostRollback`), its outcome, and the rollback point each host
//! records when a deployment activates.
//!
//! The idempotency key of a host rollback is the agent's own, derived from
//! what is rolled back: `rollback:DEPLOYMENT:HOST` (`rollback:DEPLOYMENT:HOST:to:RELEASE`
//! for a forced other target), so the controller, the local CLI and the
//! watchdog asking for the same rollback get the same job. See the README,
//! "Rolling back a host".

use serde::{Deserialize, Serialize};

use super::{Availability, DroppedObject, ProbeResult, TableRows, UnixMillis};

/// Roll this host's app back to before a deployment: code, database (the
/// gentlest correct way), feature flags, hooks; journaled step by step and
/// resumed after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRollback {
    pub app: String,
    /// The deployment whose rollback point to use; `None`: the app's newest
    /// rollback point, or the plain previous release when it has none.
    pub deployment: Option<String>,
    /// An explicit target release: only the point's previous release, or
    /// any release with `force`.
    pub to: Option<String>,
    /// Why, for the journal and the events.
    pub reason: String,
    pub requested_by: RollbackRequester,
    /// Allows a target other than the point's previous release, and a
    /// rollback of a deployment that is not the newest.
    pub force: bool,
    /// Overrides the point's restore policy; `None`: the point's (which the
    /// controller's plan set at activation).
    pub restore: Option<RestorePolicy>,
}

/// Who asked for a host rollback. Over mutual TLS only `Controller` is
/// accepted; the other two are the agent's own submissions (its watchdog,
/// its local socket or in-process CLI), which do not need the app lock's
/// lease: a host must be able to roll itself back while a dead controller's
/// lock has not expired yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RollbackRequester {
    Controller,
    LocalCli,
    Watchdog,
}

impl RollbackRequester {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackRequester::Controller => "controller",
            RollbackRequester::LocalCli => "local CLI",
            RollbackRequester::Watchdog => "watchdog",
        }
    }
}

/// What a deployment's plan says about its rollback, sent with the
/// activation and kept in the rollback point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackPolicy {
    pub restore: RestorePolicy,
    /// The plan asks for maintenance around the switch (`[deploy]
    /// maintenance = true`): the rollback's switch gets it too.
    pub maintenance: bool,
}

/// Whether a rollback may restore the pre-deploy backup (plan: `restore =
/// "forbid"`): a restore discards the writes made since the backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestorePolicy {
    #[default]
    Allow,
    Forbid,
}

impl RestorePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestorePolicy::Allow => "allow",
            RestorePolicy::Forbid => "forbid",
        }
    }

    pub fn parse(s: &str) -> Option<RestorePolicy> {
        match s {
            "allow" => Some(RestorePolicy::Allow),
            "forbid" => Some(RestorePolicy::Forbid),
            _ => None,
        }
    }
}

/// How the database went back, with its figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatabaseChoice {
    /// Nothing to undo in the database: the deployment applied no migration,
    /// or only `expand` ones (the old release runs on the new schema and no
    /// write is lost).
    CodeOnly { why: String },
    /// Every migration the deployment applied has a down: reverted to the
    /// schema version before the deployment.
    DownMigrations {
        to_version: u32,
        reverted: Vec<u32>,
        /// The verified failed-state snapshot taken before the downs.
        snapshot: Option<String>,
        drops: Vec<DroppedObject>,
    },
    /// The deployment's pre-deploy backup restored: the writes between the
    /// backup and the restore are discarded (kept in the failed-state backup).
    Restore {
        backup: String,
        /// The discarded-writes window: from the backup's time ...
        window_from: UnixMillis,
        /// ... to the restore.
        window_to: UnixMillis,
        failed_state_backup: String,
        /// Rows per table now and in the backup, counted before the restore.
        tables: Vec<TableRows>,
    },
    /// A restore was needed and is forbidden (or impossible: no pre-deploy
    /// backup): the code went back, the schema stays as the deployment left
    /// it, and an operator must act.
    RestoreForbidden {
        why: String,
        /// The migrations that stay applied.
        migrations: Vec<u32>,
        /// The failed-state snapshot taken for the operator.
        snapshot: Option<String>,
    },
}

impl DatabaseChoice {
    /// `code-only`, `down-migrations`, `restore`, `restore-forbidden`.
    pub fn name(&self) -> &'static str {
        match self {
            DatabaseChoice::CodeOnly { .. } => "code-only",
            DatabaseChoice::DownMigrations { .. } => "down-migrations",
            DatabaseChoice::Restore { .. } => "restore",
            DatabaseChoice::RestoreForbidden { .. } => "restore-forbidden",
        }
    }
}

/// One step of a host rollback, as it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackStepReport {
    /// `maintenance-on`, `snapshot`, `reactivate`, `database`, `flags`,
    /// `after-rollback`, `maintenance-off`, `probe`.
    pub step: String,
    pub state: StepState,
    pub detail: String,
    /// How many times it was started (more than 1: resumed after a crash
    /// or a failure).
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    Done,
    /// Not needed for this rollback (e.g. no maintenance for a code-only
    /// switch), with why in the detail.
    Skipped,
}

/// A host's record of a deployment that activated there: what a rollback of
/// it needs, read on the host alone (the watchdog has no controller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackPoint {
    pub app: String,
    pub deployment: String,
    /// The release the deployment activated.
    pub release: String,
    /// The release that was live before it (`None`: a first install).
    pub previous: Option<String>,
    pub recorded_at: UnixMillis,
    /// The deployment's pre-deploy backup, when one was taken.
    pub backup: Option<String>,
    /// The declared database the SQL migrations apply to.
    pub database: Option<String>,
    /// The schema version before the deployment's migrations.
    pub schema_before: Option<u32>,
    /// The migrations this deployment applied.
    pub migrations: Vec<PointMigration>,
    /// The app's migration command ran for this deployment (it has no down
    /// and no tags: only a restore undoes it).
    pub migration_command: bool,
    /// The feature flags as they were (`None`: the app declares none).
    pub flags: Option<Vec<FlagValue>>,
    pub restore: RestorePolicy,
    /// The deployment's plan asks for maintenance around switches: its
    /// rollback turns it on even for a code-only switch.
    pub maintenance: bool,
    pub state: PointState,
    pub state_at: UnixMillis,
    /// The host rollback job that used it.
    pub rollback_job: Option<u64>,
    /// Why its rollback failed, while it is `RollbackFailed`.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointMigration {
    pub version: u32,
    pub name: String,
    /// `expand` or `contract`.
    pub tag: Option<String>,
    pub has_down: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagValue {
    pub name: String,
    pub on: bool,
    pub percent: Option<u8>,
}

/// Where a rollback point stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PointState {
    /// Recorded before the switch; the switch has not been confirmed.
    Pending,
    /// The deployment's release went live.
    Live,
    /// The release was committed (watch window over, or `go`).
    Committed,
    RolledBack,
    /// A rollback of it failed at a step: the host stays in maintenance.
    RollbackFailed,
}

impl PointState {
    pub fn as_str(self) -> &'static str {
        match self {
            PointState::Pending => "pending",
            PointState::Live => "live",
            PointState::Committed => "committed",
            PointState::RolledBack => "rolled_back",
            PointState::RollbackFailed => "rollback_failed",
        }
    }

    pub fn parse(s: &str) -> Option<PointState> {
        Some(match s {
            "pending" => PointState::Pending,
            "live" => PointState::Live,
            "committed" => PointState::Committed,
            "rolled_back" => PointState::RolledBack,
            "rollback_failed" => PointState::RollbackFailed,
            _ => return None,
        })
    }
}

/// The outcome of a host rollback (`JobResult::HostRolledBack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRolledBack {
    pub deployment: Option<String>,
    pub from: Option<String>,
    pub to: String,
    pub database: DatabaseChoice,
    pub steps: Vec<RollbackStepReport>,
    /// What users saw through the switch back and its hooks, when sampled
    /// (not in maintenance, not resumed across a crash).
    pub availability: Option<Availability>,
    /// The app's probes after the rollback (reported, never failing it).
    pub probes: Vec<ProbeResult>,
    /// Set when an operator must act (a forbidden restore: the schema
    /// stayed ahead of the code).
    pub operator_action: Option<String>,
}
