//! Message family `flag`: feature flags declared per app in the agent's
//! config (`[apps.APP.flags]`), kept in the app's flag file. The controller
//! only *names* what the agent's config declares.

use serde::{Deserialize, Serialize};

use super::UnixMillis;

/// The app's declared flags and their values in the flag file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFlagsRequest {
    pub app: String,
}

/// One declared flag as the flag file has it, with its last journaled change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagState {
    pub name: String,
    pub on: bool,
    /// Rollout percentage, when set.
    pub percent: Option<u8>,
    pub changed_by: Option<String>,
    pub changed_at: Option<UnixMillis>,
}

/// Turn a declared flag on or off, optionally with a rollout percentage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFlag {
    pub app: String,
    pub name: String,
    pub on: bool,
    pub percent: Option<u8>,
}
