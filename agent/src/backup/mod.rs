//! Backups an operator can bet the database on (issue 3): SQLite (online
//! backup API), PostgreSQL (`pg_dump -Fc`), MariaDB (`mariadb-dump
//! --single-transaction`) and file trees (tar + zstd), each streamed through
//! sha256 into a backup directory with a manifest, verified, restored.
//!
//! - [`stream`]: hashing/zstd output, ENOSPC mapping.
//! - [`sqlite`], [`postgres`], [`mariadb`], [`files`]: one engine each:
//!   `estimate`, `dump`, `verify`, `restore`.
//! - [`rows`]: row counts per table in dump streams (what a restore discards).
//! - [`tools`]: running client tools with secrets in the environment or an
//!   option file, bounded stderr capture.

pub mod files;
pub mod mariadb;
pub mod offsite;
pub mod postgres;
pub mod rows;
pub mod run;
pub mod sqlite;
pub mod stream;
pub mod tools;

use std::path::PathBuf;

/// Progress callback: bytes written so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the disk filled up while writing {} ({written} bytes written); the partial backup was removed. \
         Free space on that filesystem, or set apps.APP.backup.dir to a larger one",
        path.display()
    )]
    DiskFull { path: PathBuf, written: u64 },
    #[error(
        "not enough free space in {}: the backup needs about {needed} bytes (estimate {estimate} + margin), \
         {available} are available; nothing was written. Free space, or set apps.APP.backup.dir",
        dir.display()
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        estimate: u64,
        available: u64,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("sqlite {}: {detail}", path.display())]
    Sqlite { path: PathBuf, detail: String },
    #[error("checksum mismatch for {}: the manifest says {expected}, the file hashes to {actual}; the backup is corrupt", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl BackupError {
    /// Records how much was written before a full disk stopped the write.
    pub fn with_written(self, written: u64) -> BackupError {
        match self {
            BackupError::DiskFull { path, .. } => BackupError::DiskFull { path, written },
            other => other,
        }
    }
}
