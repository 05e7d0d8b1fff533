//! Message family `agent`: version handshake and status.

use serde::{Deserialize, Serialize};

use super::{LockInfo, MaintenanceInfo, RollbackPoint, UnixMillis, WatchdogInfo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRequest {
    pub client_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResponse {
    pub agent_name: String,
    pub agent_version: String,
    pub protocol: u16,
    /// The caller as the agent sees it (certificate name and role).
    pub peer_name: String,
    pub peer_role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Only these apps; all declared apps when empty.
    pub apps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub agent_name: String,
    pub agent_version: String,
    pub protocol: u16,
    pub started_at: UnixMillis,
    pub apps: Vec<AppStatus>,
    /// The certificate deny list, when the config names one (`tls.revoked`).
    pub revocation: Option<RevocationInfo>,
    /// Connections refused before any request was read, since the agent
    /// started: failed or stalled handshakes, connections shed past the
    /// limits, certificates that may never be admitted.
    pub refused_connections: u64,
}

/// The deny list as the agent holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationInfo {
    pub path: String,
    /// Serials in the list in force.
    pub serials: u64,
    /// When the list in force was read.
    pub loaded_at: UnixMillis,
    /// Set while the file cannot be used (missing, malformed, incomplete):
    /// the last good list stays in force.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub root: String,
    /// The release `ROOT/current` points at, read from the filesystem.
    pub current: Option<String>,
    /// The release a rollback would return to.
    pub previous: Option<String>,
    /// Releases on disk, newest first.
    pub releases: Vec<ReleaseSummary>,
    pub lock: Option<LockInfo>,
    /// Set while the app is in maintenance mode.
    pub maintenance: Option<MaintenanceInfo>,
    /// The newest rollback point the host recorded (issue 13).
    pub rollback_point: Option<RollbackPoint>,
    /// The app's latest watchdog (issue 13), without its events; `None`
    /// when it was never armed.
    pub watchdog: Option<WatchdogInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSummary {
    pub id: String,
    pub artifact_sha256: Option<String>,
    pub staged_at: Option<UnixMillis>,
    pub activated_at: Option<UnixMillis>,
    /// The git commit the release was checked out at (git-sourced releases).
    pub commit: Option<String>,
}
