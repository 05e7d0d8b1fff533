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
