//! Message family `migration`: the SQL migrations a release ships, applied
//! to a database the agent's config declares.

use serde::{Deserialize, Serialize};

use super::UnixMillis;

/// Status of a release's migrations (default: the current release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStatusRequest {
    pub app: String,
    pub release: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStatus {
    pub app: String,
    pub release: String,
    /// The declared database the migrations apply to.
    pub database: String,
    pub applied: Vec<AppliedMigration>,
    pub pending: Vec<PendingMigration>,
    /// The app's migration command, when it declares one: it runs on every
    /// deployment (the agent cannot know whether it has work to do).
    pub command: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMigration {
    pub version: u32,
    pub name: String,
    pub applied_at: UnixMillis,
    pub duration_ms: u64,
    pub deployment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMigration {
    pub version: u32,
    pub name: String,
    /// `expand` or `contract`, from the file's header comment.
    pub tag: Option<String>,
    pub has_down: bool,
}

/// Apply a release's pending migrations (`down_to: None`), or revert applied
/// ones above a version with their down files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMigrations {
    pub app: String,
    pub release: Option<String>,
    pub down_to: Option<u32>,
}
