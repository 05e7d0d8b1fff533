//! Message family `release`: stage, activate and roll back releases.

use serde::{Deserialize, Serialize};

/// Unpack an uploaded artifact into `ROOT/releases/<release>` and link the
/// app's shared paths in. Does not touch `ROOT/current`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRelease {
    pub app: String,
    pub release: String,
    pub artifact_sha256: String,
}

/// Fetch `git_ref` from the git repository the app's agent config declares
/// (`[apps.APP.git]`) and check it out into `ROOT/releases/<release>`, then
/// prepare it like an unpacked artifact. The controller names only the ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageGitRelease {
    pub app: String,
    pub release: String,
    /// A branch, tag or commit id.
    pub git_ref: String,
    /// The plan's `[preflight]` scan, run by the agent on the exported tree
    /// before it is staged (issue 12; protocol 4). Defaulted when a journal
    /// row written before it is read back.
    #[serde(default)]
    pub scan: ScanConfig,
}

/// The forbidden-text scan of a release (`[preflight]` in the plan): plain
/// patterns, searched in the files an include glob matches and no exclude
/// glob matches (`golive_agent::scan`). No patterns: no scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanConfig {
    pub forbidden: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// Switch `ROOT/current` to a staged release atomically. Under a
/// deployment's lease the agent first records the deployment's rollback
/// point (issue 13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateRelease {
    pub app: String,
    pub release: String,
    /// The plan's rollback policy, kept in the rollback point so that a
    /// rollback the host starts alone honours it (issue 13). Defaulted
    /// when a journal row written before it is read back.
    #[serde(default)]
    pub rollback: super::RollbackPolicy,
}

/// Switch `ROOT/current` back: to `to` when given, else to the release that
/// was active before the current one. Kept for controllers of protocol 4
/// before issue 13: the agent runs it as the code steps of a host rollback
/// (switch back, `after_rollback` hooks) and never touches the database or
/// the flags; [`super::HostRollback`] is the whole rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRelease {
    pub app: String,
    pub to: Option<String>,
    pub reason: String,
}

/// Remove release `release` from disk when it never went live (issue 12): a
/// deployment that failed or was refused after staging gives its id back.
/// The agent refuses a release that is current, is the rollback target, ever
/// went live, is unknown to its journal, or was staged by another deployment
/// than the one whose lease the job runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardRelease {
    pub app: String,
    pub release: String,
    /// Why, for the job's log (e.g. "deployment d… failed: …").
    pub reason: String,
}
