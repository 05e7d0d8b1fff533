//! Message family `job`: long work submitted with an idempotency key and
//! followed by long-poll.

use serde::{Deserialize, Serialize};

use super::{
    ActivateRelease, CreateBackup, DiscardRelease, HostRollback, HostRolledBack, RestoreBackup,
    RollbackRelease, RunCommand, RunMigrations, SetFlag, SetMaintenance, StageGitRelease,
    StageRelease, UnixMillis, VerifyBackup,
};

/// Submit a job. Submitting the same key again returns the existing job and
/// never runs it twice; the same key with a different spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitJob {
    pub idempotency_key: String,
    /// The lease token of the app lock, when the caller holds it. Jobs on a
    /// locked app are refused unless they carry the lock's token.
    pub lease: Option<String>,
    pub spec: JobSpec,
}

/// What a job does. Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobSpec {
    Stage(StageRelease),
    Activate(ActivateRelease),
    Rollback(RollbackRelease),
    Backup(CreateBackup),
    VerifyBackup(VerifyBackup),
    Restore(RestoreBackup),
    Maintenance(SetMaintenance),
    RunCommand(RunCommand),
    Migrate(RunMigrations),
    SetFlag(SetFlag),
    StageGit(StageGitRelease),
    DiscardRelease(DiscardRelease),
    /// The one way a host is changed back (issue 13).
    HostRollback(HostRollback),
}

impl JobSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Stage(_) => "stage",
            JobSpec::Activate(_) => "activate",
            JobSpec::Rollback(_) => "rollback",
            JobSpec::Backup(_) => "backup",
            JobSpec::VerifyBackup(_) => "backup.verify",
            JobSpec::Restore(_) => "backup.restore",
            JobSpec::Maintenance(_) => "maintenance",
            JobSpec::RunCommand(_) => "command",
            JobSpec::Migrate(_) => "migrate",
            JobSpec::SetFlag(_) => "flag",
            JobSpec::StageGit(_) => "stage.git",
            JobSpec::DiscardRelease(_) => "release.discard",
            JobSpec::HostRollback(_) => "host.rollback",
        }
    }

    pub fn app(&self) -> &str {
        match self {
            JobSpec::Stage(s) => &s.app,
            JobSpec::Activate(a) => &a.app,
            JobSpec::Rollback(r) => &r.app,
            JobSpec::Backup(b) => &b.app,
            JobSpec::VerifyBackup(v) => &v.app,
            JobSpec::Restore(r) => &r.app,
            JobSpec::Maintenance(m) => &m.app,
            JobSpec::RunCommand(c) => &c.app,
            JobSpec::Migrate(m) => &m.app,
            JobSpec::SetFlag(f) => &f.app,
            JobSpec::StageGit(s) => &s.app,
            JobSpec::DiscardRelease(d) => &d.app,
            JobSpec::HostRollback(r) => &r.app,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// The agent stopped (crash, kill, restart) while the job ran. Never taken
    /// as done: the controller must look and decide.
    Interrupted,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Interrupted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "interrupted" => JobState::Interrupted,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: u64,
    pub idempotency_key: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub submitted_by: String,
    pub submitted_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    /// Set when the job succeeded.
    pub result: Option<JobResult>,
    /// Set when the job failed or was interrupted.
    pub error: Option<String>,
    /// True when this submission found an existing job with the same key.
    pub deduplicated: bool,
    /// Why a failed job failed, as a class (issue 14): a refusal that
    /// changed nothing (`BadRequest`, `NotDeclared`, `Conflict`) or a
    /// failure (`Internal`). The controller derives its exit code from it,
    /// never from `error`'s text. `None` for a job that did not fail, and
    /// for one an older agent journaled without a code (taken as a failure).
    pub error_code: Option<super::ErrorCode>,
}

/// What a finished job produced. Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobResult {
    Staged {
        release: String,
        path: String,
        files: u64,
        bytes: u64,
        /// The commit a git-sourced release was checked out at.
        commit: Option<String>,
    },
    Activated {
        release: String,
        previous: Option<String>,
        /// What users saw through the switch and its hooks (issue 12);
        /// `None` when nothing was sampled (no http probe, nothing live).
        #[serde(default)]
        availability: Option<Availability>,
    },
    RolledBack {
        from: Option<String>,
        to: String,
        /// As for `Activated`, through the switch back and its hooks.
        #[serde(default)]
        availability: Option<Availability>,
    },
    BackedUp {
        id: String,
        bytes: u64,
        parts: u32,
        verified: Option<bool>,
    },
    Verified {
        id: String,
        ok: bool,
        detail: String,
    },
    Restored {
        id: String,
        /// The backup of what was there before the restore overwrote it.
        failed_state_backup: String,
        duration_ms: u64,
        /// Rows per table of each database part, now and in the backup,
        /// counted before the restore replaced them (issue 12).
        tables: Vec<super::TableRows>,
    },
    Maintenance {
        on: bool,
        /// False when it already was in the requested state.
        changed: bool,
        /// When turned off: how long it was on (the downtime).
        downtime_ms: Option<u64>,
        /// When turned off and the app has an http probe: how long it did
        /// not answer once the maintenance page was gone (issue 12, part
        /// 15), sampled as through a switch.
        availability: Option<Availability>,
    },
    Command {
        name: String,
        exit_code: i32,
        duration_ms: u64,
    },
    Migrated {
        applied: Vec<u32>,
        reverted: Vec<u32>,
        /// The verified backup taken before a down (issue 12).
        backup: Option<String>,
        /// What the down migrations dropped.
        drops: Vec<super::DroppedObject>,
    },
    FlagSet {
        name: String,
        on: bool,
        percent: Option<u8>,
        previous_on: bool,
        previous_percent: Option<u8>,
    },
    /// A staged release that never went live was removed from disk.
    Discarded { release: String },
    /// A host rollback finished (issue 13).
    HostRolledBack(HostRolledBack),
}

/// Downtime as users see it (issue 12, part 15): the app's http probe,
/// sampled about every 100 ms on the agent from before a switch (and its
/// hooks) until it answers again after them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// The http probe sampled.
    pub probe: String,
    pub samples: u32,
    /// Samples that did not answer as the probe expects.
    pub failed: u32,
    /// Time the app did not answer, all stretches together, in ms.
    pub unavailable_ms: u64,
    /// The longest of those stretches, in ms.
    pub longest_ms: u64,
    /// The first sample, before anything changed, answered.
    pub answering_at_start: bool,
    /// It answered again before sampling ended; when false,
    /// `unavailable_ms` is a lower bound.
    pub recovered: bool,
    /// The app was in golive's maintenance: nothing was sampled, the time
    /// counts as maintenance (not twice).
    pub in_maintenance: bool,
}

/// Long-poll for events after `after_seq`, waiting up to `wait_ms` for new ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEventsRequest {
    pub job_id: u64,
    pub after_seq: u64,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEventsResponse {
    pub job: JobInfo,
    pub events: Vec<JobEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub seq: u64,
    pub at: UnixMillis,
    pub kind: EventKind,
}

/// Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Log { level: LogLevel, line: String },
    Progress { step: String, done: u64, total: u64 },
    Finished { state: JobState },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListJobsRequest {
    /// At most this many, newest first.
    pub limit: u32,
}
