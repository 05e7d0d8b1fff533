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
    /// `expand` or `contract`, as recorded when it was applied.
    pub tag: Option<String>,
    /// The release whose migrations directory it came from (`None`: applied
    /// by a golive that did not record it).
    pub release: Option<String>,
    /// Applied by a later release: the release asked about ships no file for
    /// it (after a code-only rollback). A normal state, not an error.
    pub ahead: bool,
    /// A down migration is at hand: the release's down file, or the down
    /// text the ledger stored when it was applied.
    pub has_down: bool,
    /// What its down migration drops (rows not counted here).
    pub down_drops: Vec<DroppedObject>,
}

/// A table or column a down migration drops, found in its SQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedObject {
    /// The migration whose down SQL drops it.
    pub version: u32,
    pub table: String,
    /// `None`: the whole table.
    pub column: Option<String>,
    /// The table's rows when counted (before the down ran).
    pub rows: Option<u64>,
}

impl DroppedObject {
    /// `table orders (87 rows)`, `column orders.note (87 rows)`.
    pub fn describe(&self) -> String {
        let rows = match self.rows {
            Some(1) => " (1 row)".to_string(),
            Some(n) => format!(" ({n} rows)"),
            None => String::new(),
        };
        match &self.column {
            None => format!("table {}{rows}", self.table),
            Some(c) => format!("column {}.{c}{rows}", self.table),
        }
    }
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
    /// `up` only: stop before the first pending `contract` migration; it and
    /// the later ones run when the release is committed (issue 13).
    #[serde(default)]
    pub stop_before_contract: bool,
    /// `up` only, the commit of a release (issue 13): when anything is
    /// pending, a verified backup of the database (label `pre-contract`)
    /// first; refused, changing nothing, when it cannot be taken.
    #[serde(default)]
    pub backup_first: bool,
}
