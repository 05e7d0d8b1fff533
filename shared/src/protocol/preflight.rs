//! Message family `preflight`: the checks an agent runs before a deployment,
//! and the catalog of the app's declared probes. Nothing changes on the host.

use serde::{Deserialize, Serialize};

use super::{ProbeStatus, Severity};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightRequest {
    pub app: String,
    /// The plan takes a pre-deploy backup: check room and tools for it.
    pub backup: bool,
    /// Only list the app's declared probes (`golivectl probe` needs their
    /// tags); run no check.
    pub probes_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightReport {
    pub app: String,
    pub checks: Vec<PreflightCheck>,
    /// The app's declared probes, in config order.
    pub probes: Vec<DeclaredProbe>,
}

/// One check: what was looked at, the outcome and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightCheck {
    pub name: String,
    pub status: ProbeStatus,
    pub severity: Severity,
    pub message: String,
}

/// A probe as the agent's config declares it (what `RunProbes` would run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredProbe {
    pub name: String,
    pub kind: String,
    pub severity: Severity,
    pub tags: Vec<String>,
}
