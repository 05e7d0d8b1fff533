//! Message family `probe`: run an app's declared health probes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProbesRequest {
    pub app: String,
    /// Only probes carrying one of these tags; all probes when empty.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub app: String,
    pub results: Vec<ProbeResult>,
}

impl ProbeReport {
    /// Probes that did not pass, most severe first (a probe that was not
    /// applicable did not fail).
    pub fn failures(&self) -> Vec<&ProbeResult> {
        let mut out: Vec<_> = self.results.iter().filter(|r| r.status.failed()).collect();
        out.sort_by_key(|r| r.severity);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub name: String,
    pub kind: String,
    pub severity: Severity,
    pub status: ProbeStatus,
    /// What was measured, e.g. `status 503` or `120 ms`.
    pub value: Option<String>,
    /// What was expected, e.g. `status in [200]`.
    pub threshold: Option<String>,
    pub duration_ms: u64,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeStatus {
    Pass,
    Fail,
    /// The probe could not run (timeout, connection refused, bad target).
    Error,
    /// Not run: what it looks at does not exist yet (the app has no live
    /// release before its first deployment, issue 12). Never a failure.
    NotApplicable,
}

impl ProbeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStatus::Pass => "pass",
            ProbeStatus::Fail => "fail",
            ProbeStatus::Error => "error",
            ProbeStatus::NotApplicable => "n/a",
        }
    }

    /// Fail or error: what a gate judges.
    pub fn failed(self) -> bool {
        matches!(self, ProbeStatus::Fail | ProbeStatus::Error)
    }
}

/// Ordered most severe first. Append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}
