//! Message family `preflight`: the checks an agent runs before a deployment.
//! Nothing changes on the host.

use serde::{Deserialize, Serialize};

use super::{ProbeStatus, Severity};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightRequest {
    pub app: String,
    /// The plan takes a pre-deploy backup: check room and tools for it.
    pub backup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightReport {
    pub app: String,
    pub checks: Vec<PreflightCheck>,
}

/// One check: what was looked at, the outcome and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightCheck {
    pub name: String,
    pub status: ProbeStatus,
    pub severity: Severity,
    pub message: String,
}
