//! Message family `watchdog` (issue 13, part 5): after a release goes live,
//! the agent watches the app for a window and rolls its own host back when a
//! trigger holds, with no controller needed; a window that ends quietly (or
//! a `golivectl go`) commits the release, which is when its `contract`
//! migrations run.
//!
//! Arming, confirming and disarming need the operator role; the status is a
//! read (viewer).

use serde::{Deserialize, Serialize};

use super::UnixMillis;

/// Seed 003's watch window: 30 minutes.
pub const DEFAULT_WINDOW_SECS: u64 = 30 * 60;
/// How often an armed watchdog samples its triggers' probes.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Consecutive probe errors (could not measure) that count as the
/// trigger's condition holding (Argo Rollouts' `consecutiveErrorLimit` is 4).
pub const DEFAULT_ERROR_LIMIT: u32 = 3;
/// Seed 003: error rate above 5 % for 2 minutes.
pub const DEFAULT_ERROR_RATE_PER_MILLE: u32 = 50;
pub const DEFAULT_ERROR_RATE_FOR_SECS: u64 = 120;
/// Seed 003: p95 above 5 s for 3 minutes.
pub const DEFAULT_P95_MS: u64 = 5000;
pub const DEFAULT_P95_FOR_SECS: u64 = 180;
/// Seed 003: service unresponsive for 1 minute.
pub const DEFAULT_UNRESPONSIVE_FOR_SECS: u64 = 60;

/// Bounds the agent enforces on a spec from the wire.
pub const MAX_WINDOW_SECS: u64 = 7 * 24 * 3600;
pub const MIN_INTERVAL_MS: u64 = 200;
pub const MAX_INTERVAL_MS: u64 = 600_000;
pub const MAX_ERROR_LIMIT: u32 = 100;
pub const MAX_TRIGGERS: usize = 16;
pub const MAX_P95_MS: u64 = 600_000;

/// What to watch, for how long, and what counts as failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogSpec {
    /// The watch window from arming; when it ends without a trigger the
    /// release is committed (unless a dead-man waits for a `go`).
    pub window_secs: u64,
    /// Time between two samples of the triggers' probes.
    pub interval_ms: u64,
    /// Empty: the host's defaults from seed 003, built from the probes the
    /// host declares (the agent fills them in and reports them).
    pub triggers: Vec<Trigger>,
    /// Consecutive probe errors after which a trigger's condition counts
    /// as holding (a probe that cannot measure is not a pass).
    pub error_limit: u32,
    /// Dead-man: unless a `ConfirmWatchdog` arrives within this many
    /// seconds of arming, the host rolls back.
    pub confirm_within_secs: Option<u64>,
    /// Whether the host rollback may restore the pre-deploy backup (issue 13,
    /// part 3). Carried and reported; the rollback reads it.
    pub restore_allowed: bool,
}

impl WatchdogSpec {
    /// Seed 003's window and interval, the host's default triggers.
    pub fn defaults() -> WatchdogSpec {
        WatchdogSpec {
            window_secs: DEFAULT_WINDOW_SECS,
            interval_ms: DEFAULT_INTERVAL_MS,
            triggers: Vec::new(),
            error_limit: DEFAULT_ERROR_LIMIT,
            confirm_within_secs: None,
            restore_allowed: true,
        }
    }
}

/// One condition on one probe the host declares, and how long it must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// Shown in status and in the reason of a rollback.
    pub name: String,
    /// The name of a probe of the app in the host's config.
    pub probe: String,
    pub condition: Condition,
    /// The condition must be true in every sample for this long (0: one
    /// sample), so one bad sample does not fire it.
    pub for_secs: u64,
}

/// Append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The share of 5xx answers in an access-log probe's window is above
    /// this, in tenths of a percent (50 = 5 %).
    ErrorRateAbove { per_mille: u32 },
    /// The p95 latency in an access-log probe's window is above this.
    P95Above { ms: u64 },
    /// The probe gets no answer (its result is an error: refused, timed
    /// out, unreadable).
    Unresponsive,
    /// The probe does not pass by its own thresholds.
    Failing,
}

impl Condition {
    /// "5xx above 5.0 %", "p95 above 5000 ms", "unresponsive", "failing".
    pub fn describe(&self) -> String {
        match self {
            Condition::ErrorRateAbove { per_mille } => {
                format!("5xx above {}.{} %", per_mille / 10, per_mille % 10)
            }
            Condition::P95Above { ms } => format!("p95 above {ms} ms"),
            Condition::Unresponsive => "unresponsive".into(),
            Condition::Failing => "failing".into(),
        }
    }

    /// Read from an access log (error rate, p95) rather than a probe's verdict.
    pub fn reads_log(&self) -> bool {
        matches!(
            self,
            Condition::ErrorRateAbove { .. } | Condition::P95Above { .. }
        )
    }
}

/// Arm the watchdog of `app` for `deployment`, watching the live release.
/// Arming another deployment of the app replaces the armed one; arming the
/// same deployment again with the same spec answers the armed watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmWatchdog {
    pub app: String,
    pub deployment: String,
    pub spec: WatchdogSpec,
}

/// `golivectl go`: the release is good. Disarms the dead-man and commits
/// now (pending `contract` migrations run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmWatchdog {
    pub app: String,
    pub deployment: String,
    /// Who decided (recorded beside the certificate's name).
    pub by: String,
}

/// Stops watching without rolling back and without committing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisarmWatchdog {
    pub app: String,
    pub deployment: String,
    pub reason: String,
}

/// The app's latest watchdog, or the one of `deployment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogStatusRequest {
    pub app: String,
    pub deployment: Option<String>,
}

/// Append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchdogState {
    /// Watching.
    Armed,
    /// A trigger held (or the dead-man's deadline passed): the rollback runs.
    Fired,
    RolledBack,
    /// The rollback failed: loud, and the host needs a human.
    RollbackFailed,
    /// The window ended or a `go` arrived: pending migrations run.
    Committing,
    Committed,
    /// The commit's migrations failed: the release stays live.
    CommitFailed,
    /// Stopped without rollback or commit (disarmed, replaced by another
    /// deployment, or the watched release is no longer live).
    Disarmed,
}

impl WatchdogState {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchdogState::Armed => "armed",
            WatchdogState::Fired => "fired",
            WatchdogState::RolledBack => "rolled_back",
            WatchdogState::RollbackFailed => "rollback_failed",
            WatchdogState::Committing => "committing",
            WatchdogState::Committed => "committed",
            WatchdogState::CommitFailed => "commit_failed",
            WatchdogState::Disarmed => "disarmed",
        }
    }

    pub fn parse(s: &str) -> Option<WatchdogState> {
        Some(match s {
            "armed" => WatchdogState::Armed,
            "fired" => WatchdogState::Fired,
            "rolled_back" => WatchdogState::RolledBack,
            "rollback_failed" => WatchdogState::RollbackFailed,
            "committing" => WatchdogState::Committing,
            "committed" => WatchdogState::Committed,
            "commit_failed" => WatchdogState::CommitFailed,
            "disarmed" => WatchdogState::Disarmed,
            _ => return None,
        })
    }

    /// Nothing more happens in this state.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            WatchdogState::Armed | WatchdogState::Fired | WatchdogState::Committing
        )
    }
}

/// A watchdog as the agent holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogInfo {
    pub app: String,
    pub deployment: String,
    /// The release watched (live when armed).
    pub release: String,
    /// The release a rollback returns to (chosen when it fires).
    pub rollback_to: Option<String>,
    pub state: WatchdogState,
    /// As armed, with the host's default triggers filled in.
    pub spec: WatchdogSpec,
    pub armed_by: String,
    pub armed_at: UnixMillis,
    /// End of the window.
    pub until: UnixMillis,
    /// The dead-man's deadline.
    pub confirm_by: Option<UnixMillis>,
    /// Live trigger states while armed (empty once it ended).
    pub triggers: Vec<TriggerState>,
    /// Why it fired, was disarmed, or failed.
    pub reason: Option<String>,
    pub fired_at: Option<UnixMillis>,
    pub rollback_job: Option<u64>,
    /// The `migrate` job the commit ran (none when nothing was pending).
    pub commit_job: Option<u64>,
    pub committed_at: Option<UnixMillis>,
    pub ended_at: Option<UnixMillis>,
    /// Its journaled events, oldest first (the newest 200; none in the
    /// status summary).
    pub events: Vec<WatchdogEvent>,
}

/// One trigger while armed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerState {
    pub trigger: Trigger,
    /// The condition has held in every sample since then.
    pub true_since: Option<UnixMillis>,
    /// The last sample, in the probe's words ("7.50 % 5xx of 40 requests").
    pub last_value: Option<String>,
    pub last_at: Option<UnixMillis>,
    /// Probe errors in a row (could not measure).
    pub consecutive_errors: u32,
}

/// A journaled moment of a watchdog: armed, a trigger's transition, a
/// sample summary, fired, rolled back, committed, a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogEvent {
    pub at: UnixMillis,
    pub kind: String,
    pub line: String,
}
