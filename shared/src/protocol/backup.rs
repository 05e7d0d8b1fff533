//! Message family `backup`: create, list, verify and restore backups.
//!
//! One backup covers an app's declared databases and file sets (or a chosen
//! subset) and is stored as a directory of part files plus a manifest, under
//! an id like `shop-20261123T052802Z-pre-deploy`.

use serde::{Deserialize, Serialize};

use super::UnixMillis;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBackup {
    pub app: String,
    /// Free text kept in the id, e.g. `pre-deploy` or `manual`.
    pub label: String,
    /// Database and file-set names to include; all when empty.
    pub only: Vec<String>,
    /// The deployment this backup is the rollback point of, if any.
    pub deployment: Option<String>,
    /// Verify right after taking it.
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyBackup {
    pub app: String,
    pub id: String,
}

/// Restore a backup. Admins may restore any backup; operators only the
/// rollback point of a deployment they name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreBackup {
    pub app: String,
    pub id: String,
    pub deployment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListBackupsRequest {
    pub app: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub id: String,
    pub app: String,
    pub label: String,
    pub created_at: UnixMillis,
    /// `running`, `complete`, `failed` or `interrupted`.
    pub state: String,
    /// The release that was current when the backup was taken.
    pub release: Option<String>,
    pub deployment: Option<String>,
    /// `None` until verified; then whether verification passed.
    pub verified: Option<bool>,
    pub verified_at: Option<UnixMillis>,
    pub verify_detail: Option<String>,
    pub parts: Vec<BackupPart>,
    pub total_bytes: u64,
    /// Where the offsite copy went, when one was made.
    pub offsite: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPart {
    /// The database or file-set name from the agent config.
    pub name: String,
    /// `sqlite`, `postgres`, `mariadb` or `files`.
    pub kind: String,
    /// File name inside the backup directory.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// One table's rows before a restore: in the database as it was, and in
/// the backup that replaced it. `None`: the table is not there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// The database name from the agent config.
    pub database: String,
    pub table: String,
    pub now: Option<u64>,
    pub backup: Option<u64>,
}

impl TableRows {
    /// Rows that were there and are not in the backup.
    pub fn lost(&self) -> u64 {
        self.now
            .unwrap_or(0)
            .saturating_sub(self.backup.unwrap_or(0))
    }

    /// `orders: 87 rows now, 16 in the backup: 71 rows are only in
    /// failed-state backup X`.
    pub fn describe(&self, failed_state: &str) -> String {
        let rows = |n: u64| {
            if n == 1 {
                "1 row".to_string()
            } else {
                format!("{n} rows")
            }
        };
        let t = &self.table;
        match (self.now, self.backup) {
            (Some(now), Some(b)) if now > b => format!(
                "{t}: {} now, {b} in the backup: {} only in failed-state backup {failed_state}",
                rows(now),
                if now - b == 1 {
                    "1 row is".to_string()
                } else {
                    format!("{} rows are", now - b)
                }
            ),
            (Some(now), Some(b)) if now < b => format!(
                "{t}: {} now, {b} in the backup: the restore brings back {}",
                rows(now),
                rows(b - now)
            ),
            (Some(now), Some(_)) => format!("{t}: {} now and in the backup", rows(now)),
            (Some(now), None) => format!(
                "{t}: {} now, not in the backup: the table is only in failed-state backup {failed_state}",
                rows(now)
            ),
            (None, Some(b)) => format!("{t}: not there now, {} in the backup", rows(b)),
            (None, None) => format!("{t}: not counted"),
        }
    }
}
