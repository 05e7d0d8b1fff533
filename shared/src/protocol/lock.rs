//! Message family `lock`: one deployment at a time per app, as a lease.
//!
//! A lease expires unless renewed, so a controller that dies leaves no lock
//! stuck forever (a top complaint about Deployer and Kamal). Breaking a lock
//! by hand is possible and audited.

use serde::{Deserialize, Serialize};

use super::UnixMillis;

/// Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockRequest {
    Acquire {
        app: String,
        /// The deployment id the lock is taken for.
        deployment: String,
        ttl_secs: u32,
    },
    Renew {
        app: String,
        token: String,
        ttl_secs: u32,
    },
    Release {
        app: String,
        token: String,
    },
    Break {
        app: String,
        reason: String,
    },
}

impl LockRequest {
    pub fn verb(&self) -> &'static str {
        match self {
            LockRequest::Acquire { .. } => "acquire",
            LockRequest::Renew { .. } => "renew",
            LockRequest::Release { .. } => "release",
            LockRequest::Break { .. } => "break",
        }
    }

    pub fn app(&self) -> &str {
        match self {
            LockRequest::Acquire { app, .. }
            | LockRequest::Renew { app, .. }
            | LockRequest::Release { app, .. }
            | LockRequest::Break { app, .. } => app,
        }
    }
}

/// Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockResponse {
    Held { token: String, info: LockInfo },
    Released,
    Broken { previous: Option<LockInfo> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub app: String,
    pub deployment: String,
    /// Certificate name of the holder.
    pub holder: String,
    pub since: UnixMillis,
    pub expires_at: UnixMillis,
}
