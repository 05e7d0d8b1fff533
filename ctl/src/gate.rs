//! The go/no-go gate: the plan's policy maps each probe severity to an
//! action, and every evaluation is the same pure function of the probe
//! results, recorded with its reasons (which probe, which value, which
//! threshold) so `golivectl show` can say why.
//!
//! A probe that was not applicable (`n/a`: the app had nothing live yet) is
//! neither a pass nor a failure: the gate judges only what exists (issue 12).
//!
//! Defaults follow seed 000's matrix: critical → rollback, high → pause
//! (wait for a human decision), medium → continue with a warning, low →
//! continue.

use golive_shared::protocol::{ProbeReport, ProbeResult, ProbeStatus, Severity};
use serde::Serialize;

/// What the gate does about a probe that did not pass. Ordered from the
/// mildest to the strongest: the strongest action among the failures wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Go on; the failure is recorded.
    Continue,
    /// Go on, and say so loudly (output, record, final message).
    Warn,
    /// Stop and wait for `golivectl go` / `golivectl no-go`.
    Pause,
    /// Switch every activated host back (exit 3).
    Rollback,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Continue => "continue",
            Action::Warn => "warn",
            Action::Pause => "pause",
            Action::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "continue" => Action::Continue,
            "warn" => Action::Warn,
            "pause" => Action::Pause,
            "rollback" => Action::Rollback,
            _ => return None,
        })
    }
}

/// The plan's `[gate]` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub critical: Action,
    pub high: Action,
    pub medium: Action,
    pub low: Action,
    /// How long a paused deployment waits for a decision before the
    /// controller stops waiting (exit 4, the deployment stays paused).
    pub pause_timeout_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            critical: Action::Rollback,
            high: Action::Pause,
            medium: Action::Warn,
            low: Action::Continue,
            pause_timeout_secs: 30 * 60,
        }
    }
}

impl Policy {
    pub fn action(&self, severity: Severity) -> Action {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
        }
    }
}

/// One probe that did not pass, and what the policy says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub probe: String,
    pub kind: String,
    pub severity: &'static str,
    pub status: &'static str,
    pub value: Option<String>,
    pub threshold: Option<String>,
    pub message: String,
    pub action: Action,
    /// The same probe did not pass before the deployment either.
    pub failing_before: bool,
}

impl Reason {
    /// `home (high, fail): status 503, expected status in [200] → pause`
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {}): {}{}{} → {}",
            self.probe,
            self.severity,
            self.status,
            self.value.as_deref().unwrap_or("no value"),
            self.threshold
                .as_ref()
                .map(|t| format!(", expected {t}"))
                .unwrap_or_default(),
            if self.failing_before {
                ", already failing before the deployment"
            } else {
                ""
            },
            self.action.as_str()
        )
    }
}

/// The gate's verdict on one host's probe results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    pub host: String,
    pub action: Action,
    pub passed: usize,
    /// Probes judged: a probe that was not applicable is not counted.
    pub total: usize,
    pub reasons: Vec<Reason>,
}

impl Evaluation {
    /// The reasons that drove the action (those with the strongest action).
    pub fn summary(&self) -> String {
        if self.reasons.is_empty() {
            return format!("{}/{} probes passed", self.passed, self.total);
        }
        self.reasons
            .iter()
            .filter(|r| r.action == self.action)
            .map(Reason::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Evaluates `report` under `policy`; `before` holds the same host's results
/// from before the deployment, to mark failures that are not new.
pub fn evaluate(
    policy: &Policy,
    host: &str,
    report: &ProbeReport,
    before: &[ProbeResult],
) -> Evaluation {
    let mut reasons: Vec<Reason> = report
        .failures()
        .into_iter()
        .map(|r| Reason {
            probe: r.name.clone(),
            kind: r.kind.clone(),
            severity: r.severity.as_str(),
            status: r.status.as_str(),
            value: r.value.clone(),
            threshold: r.threshold.clone(),
            message: r.message.clone(),
            action: policy.action(r.severity),
            failing_before: before.iter().any(|b| b.name == r.name && b.status.failed()),
        })
        .collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.action));
    let action = reasons
        .iter()
        .map(|r| r.action)
        .max()
        .unwrap_or(Action::Continue);
    Evaluation {
        host: host.to_string(),
        action,
        passed: report
            .results
            .iter()
            .filter(|r| r.status == ProbeStatus::Pass)
            .count(),
        total: report
            .results
            .iter()
            .filter(|r| r.status != ProbeStatus::NotApplicable)
            .count(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, severity: Severity, status: ProbeStatus) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            kind: "http".into(),
            severity,
            status,
            value: Some("status 503".into()),
            threshold: Some("status in [200]".into()),
            duration_ms: 3,
            message: "GET / answered 503".into(),
        }
    }

    fn report(results: Vec<ProbeResult>) -> ProbeReport {
        ProbeReport {
            app: "shop".into(),
            results,
        }
    }

    #[test]
    fn all_passing_continues() {
        let r = report(vec![result("home", Severity::Critical, ProbeStatus::Pass)]);
        let e = evaluate(&Policy::default(), "web1", &r, &[]);
        assert_eq!(e.action, Action::Continue);
        assert_eq!((e.passed, e.total), (1, 1));
        assert_eq!(e.summary(), "1/1 probes passed");
    }

    #[test]
    fn defaults_follow_the_seed_matrix() {
        let p = Policy::default();
        let one = |s: Severity| {
            evaluate(
                &p,
                "h",
                &report(vec![result("x", s, ProbeStatus::Fail)]),
                &[],
            )
            .action
        };
        assert_eq!(one(Severity::Critical), Action::Rollback);
        assert_eq!(one(Severity::High), Action::Pause);
        assert_eq!(one(Severity::Medium), Action::Warn);
        assert_eq!(one(Severity::Low), Action::Continue);
    }

    #[test]
    fn the_strongest_action_wins_and_errors_count_as_failures() {
        let r = report(vec![
            result("latency", Severity::Medium, ProbeStatus::Fail),
            result("db", Severity::Critical, ProbeStatus::Error),
            result("home", Severity::High, ProbeStatus::Fail),
        ]);
        let e = evaluate(&Policy::default(), "web1", &r, &[]);
        assert_eq!(e.action, Action::Rollback);
        assert_eq!(e.reasons[0].probe, "db");
        assert_eq!(e.reasons.len(), 3);
        assert!(
            e.summary().starts_with("db (critical, error)"),
            "{}",
            e.summary()
        );
        assert!(!e.summary().contains("latency"), "{}", e.summary());
    }

    #[test]
    fn the_policy_can_soften_or_harden_a_severity() {
        let p = Policy {
            critical: Action::Pause,
            medium: Action::Rollback,
            ..Policy::default()
        };
        let r = report(vec![result("x", Severity::Medium, ProbeStatus::Fail)]);
        assert_eq!(evaluate(&p, "h", &r, &[]).action, Action::Rollback);
        let r = report(vec![result("x", Severity::Critical, ProbeStatus::Fail)]);
        assert_eq!(evaluate(&p, "h", &r, &[]).action, Action::Pause);
    }

    #[test]
    fn a_failure_that_predates_the_deployment_is_marked() {
        let before = vec![result("home", Severity::High, ProbeStatus::Fail)];
        let r = report(vec![result("home", Severity::High, ProbeStatus::Fail)]);
        let e = evaluate(&Policy::default(), "h", &r, &before);
        assert!(e.reasons[0].failing_before);
        assert!(
            e.summary()
                .contains("already failing before the deployment")
        );
        assert!(e.summary().contains("status 503, expected status in [200]"));
    }

    /// Issue 12, first install: the probes before were n/a (nothing live);
    /// the gate judges the new release's results, and a failure after is not
    /// "already failing before".
    #[test]
    fn issue12_not_applicable_is_neither_pass_nor_failure() {
        let before = vec![result(
            "home",
            Severity::Critical,
            ProbeStatus::NotApplicable,
        )];
        let r = report(vec![result("home", Severity::Critical, ProbeStatus::Fail)]);
        let e = evaluate(&Policy::default(), "h", &r, &before);
        assert_eq!(e.action, Action::Rollback);
        assert!(!e.reasons[0].failing_before, "{:?}", e.reasons);
        let r = report(vec![
            result("home", Severity::Critical, ProbeStatus::Pass),
            result("cron", Severity::Critical, ProbeStatus::NotApplicable),
        ]);
        let e = evaluate(&Policy::default(), "h", &r, &[]);
        assert_eq!(e.action, Action::Continue);
        assert_eq!((e.passed, e.total), (1, 1));
        assert!(r.failures().is_empty());
    }
}
