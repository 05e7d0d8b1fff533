//! Message family `maintenance`: maintenance mode and allow-listed commands.
//! The controller only *names* what the agent's config declares.

use serde::{Deserialize, Serialize};

use super::UnixMillis;

/// Turn an app's maintenance mode on or off (flag file and/or commands, as
/// the agent's config declares), verified when a check URL is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMaintenance {
    pub app: String,
    pub on: bool,
    pub reason: String,
}

/// Run a command the app declares under `[apps.APP.commands.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCommand {
    pub app: String,
    pub name: String,
}

/// An app's maintenance state as the agent journaled it when it went on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceInfo {
    pub on_since: UnixMillis,
    pub reason: String,
    pub by: String,
}
