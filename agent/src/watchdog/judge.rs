//! One trigger's judgement, sample by sample: pure functions of the samples
//! and their times, so the rules read in one place and test without a clock.
//!
//! - A sample's [`Outcome`] is the condition true, false, unknown (the probe
//!   could not measure), or not judged (too few requests, nothing live).
//! - The trigger *holds* when its condition has been true in every sample
//!   for `for_secs`: `true_since` is set by the first true sample and
//!   cleared by the first false or unjudged one, so one bad sample never
//!   fires it.
//! - An unknown sample is not a pass and not yet a failure: it leaves
//!   `true_since` as it is, until `error_limit` unknowns in a row; then the
//!   condition counts as true since the first of them ("unresponsive").

use golive_shared::protocol::{
    Condition, ProbeResult, ProbeStatus, Trigger, TriggerState, UnixMillis,
};

use crate::accesslog::WindowStats;

/// What one sample says about a trigger's condition, with the words shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    True(String),
    False(String),
    /// The probe could not measure.
    Unknown(String),
    /// Nothing to judge by: too few requests, nothing live, maintenance.
    NotJudged(String),
}

/// A change worth journaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    BecameTrue,
    Cleared,
    /// `error_limit` unknowns in a row: counted as true from the first.
    ErrorsCount(u32),
}

/// A trigger and what its samples said so far.
#[derive(Debug, Clone)]
pub struct TriggerWatch {
    pub trigger: Trigger,
    pub true_since: Option<UnixMillis>,
    pub errors: u32,
    /// The first unknown of the current run.
    error_since: Option<UnixMillis>,
    pub last_value: Option<String>,
    pub last_at: Option<UnixMillis>,
    /// The last sample showed the condition (true, or an error at or past
    /// the limit): only such a sample may fire the trigger.
    pub supporting: bool,
}

impl TriggerWatch {
    pub fn new(trigger: Trigger) -> TriggerWatch {
        TriggerWatch {
            trigger,
            true_since: None,
            errors: 0,
            error_since: None,
            last_value: None,
            last_at: None,
            supporting: false,
        }
    }

    /// Takes a sample taken at `at`; returns the transition, if any.
    pub fn observe(
        &mut self,
        at: UnixMillis,
        outcome: Outcome,
        error_limit: u32,
    ) -> Option<Transition> {
        self.last_at = Some(at);
        self.supporting = matches!(outcome, Outcome::True(_));
        match outcome {
            Outcome::True(v) => {
                self.last_value = Some(v);
                self.errors = 0;
                self.error_since = None;
                if self.true_since.is_none() {
                    self.true_since = Some(at);
                    return Some(Transition::BecameTrue);
                }
                None
            }
            Outcome::False(v) | Outcome::NotJudged(v) => {
                self.last_value = Some(v);
                self.errors = 0;
                self.error_since = None;
                self.true_since.take().map(|_| Transition::Cleared)
            }
            Outcome::Unknown(e) => {
                self.last_value = Some(format!("error: {e}"));
                self.errors += 1;
                self.supporting = self.errors >= error_limit;
                let first = *self.error_since.get_or_insert(at);
                if self.errors == error_limit && self.true_since.is_none() {
                    self.true_since = Some(first);
                    return Some(Transition::ErrorsCount(self.errors));
                }
                None
            }
        }
    }

    /// The sample at `at` showed the condition, and it has held for the
    /// trigger's whole duration.
    pub fn holds(&self, at: UnixMillis) -> bool {
        self.supporting
            && self
                .true_since
                .is_some_and(|since| at - since >= self.trigger.for_secs as i64 * 1000)
    }

    /// When it will hold if the condition stays true (for the timer).
    pub fn due(&self) -> Option<UnixMillis> {
        self.true_since
            .map(|since| since + self.trigger.for_secs as i64 * 1000)
    }

    /// "error-rate (5xx above 5.0 % on probe errors for 120 s)".
    pub fn title(&self) -> String {
        let t = &self.trigger;
        format!(
            "{} ({} on probe {} for {} s)",
            t.name,
            t.condition.describe(),
            t.probe,
            t.for_secs
        )
    }

    pub fn state(&self) -> TriggerState {
        TriggerState {
            trigger: self.trigger.clone(),
            true_since: self.true_since,
            last_value: self.last_value.clone(),
            last_at: self.last_at,
            consecutive_errors: self.errors,
        }
    }
}

/// A probe's result judged by a verdict condition (unresponsive, failing).
pub fn of_probe(condition: &Condition, r: &ProbeResult) -> Outcome {
    let value = r.value.clone().unwrap_or_else(|| r.message.clone());
    match (condition, r.status) {
        (_, ProbeStatus::NotApplicable) => Outcome::NotJudged(r.message.clone()),
        (Condition::Unresponsive, ProbeStatus::Error) => Outcome::True(r.message.clone()),
        (Condition::Unresponsive, _) => Outcome::False(value),
        (_, ProbeStatus::Error) => Outcome::Unknown(r.message.clone()),
        (_, ProbeStatus::Fail) => Outcome::True(format!("{value}: {}", r.message)),
        (_, ProbeStatus::Pass) => Outcome::False(value),
    }
}

/// Access-log figures judged by a log condition (error rate, p95), with
/// the probe's `min_requests`. An unreadable log is `Unknown`, except for
/// `Unresponsive`, where it is the condition itself.
pub fn of_log(
    condition: &Condition,
    stats: &Result<WindowStats, String>,
    min_requests: u64,
) -> Outcome {
    let st = match stats {
        Ok(st) => st,
        Err(e) if *condition == Condition::Unresponsive => return Outcome::True(e.clone()),
        Err(e) => return Outcome::Unknown(e.clone()),
    };
    let rate = st.error_rate * 100.0;
    let value = format!(
        "{rate:.2} % 5xx of {} requests{} over {} s",
        st.requests,
        st.p95_ms
            .map(|ms| format!(", p95 {ms:.0} ms"))
            .unwrap_or_default(),
        st.window_secs
    );
    if st.requests < min_requests {
        return Outcome::NotJudged(format!(
            "{value}: fewer than min_requests = {min_requests}, too few to judge"
        ));
    }
    match condition {
        Condition::ErrorRateAbove { per_mille } => {
            if st.error_rate * 1000.0 > *per_mille as f64 {
                Outcome::True(value)
            } else {
                Outcome::False(value)
            }
        }
        Condition::P95Above { ms } => match st.p95_ms {
            Some(p95) if p95 > *ms as f64 => Outcome::True(value),
            Some(_) => Outcome::False(value),
            None => Outcome::Unknown(format!("{value}: no latency was logged")),
        },
        Condition::Unresponsive | Condition::Failing => Outcome::False(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(for_secs: u64) -> TriggerWatch {
        TriggerWatch::new(Trigger {
            name: "t".into(),
            probe: "p".into(),
            condition: Condition::Failing,
            for_secs,
        })
    }

    fn t(s: &str) -> Outcome {
        Outcome::True(s.into())
    }
    fn f(s: &str) -> Outcome {
        Outcome::False(s.into())
    }
    fn e(s: &str) -> Outcome {
        Outcome::Unknown(s.into())
    }

    #[test]
    fn issue13_one_bad_sample_does_not_hold_a_sustained_one_does() {
        let mut w = watch(3);
        assert_eq!(w.observe(0, f("ok"), 3), None);
        assert_eq!(w.observe(1000, t("500"), 3), Some(Transition::BecameTrue));
        assert!(!w.holds(1000));
        assert_eq!(w.observe(2000, f("ok"), 3), Some(Transition::Cleared));
        assert!(!w.holds(4000));
        assert_eq!(w.observe(3000, t("500"), 3), Some(Transition::BecameTrue));
        for at in [4000, 5000] {
            assert_eq!(w.observe(at, t("500"), 3), None);
            assert!(!w.holds(at));
        }
        w.observe(6000, t("500"), 3);
        assert!(w.holds(6000));
        assert_eq!(w.due(), Some(6000));
        // Unjudged (too few requests) clears as a pass does: no evidence.
        assert_eq!(
            w.observe(7000, Outcome::NotJudged("quiet".into()), 3),
            Some(Transition::Cleared)
        );
    }

    #[test]
    fn issue13_errors_count_only_past_the_limit_and_from_the_first() {
        let mut w = watch(2);
        w.observe(0, e("timeout"), 3);
        w.observe(1000, e("timeout"), 3);
        assert_eq!(w.true_since, None);
        assert_eq!(w.errors, 2);
        // A pass in between starts the count again.
        w.observe(2000, f("ok"), 3);
        assert_eq!(w.errors, 0);
        w.observe(3000, e("timeout"), 3);
        w.observe(4000, e("timeout"), 3);
        assert_eq!(
            w.observe(5000, e("timeout"), 3),
            Some(Transition::ErrorsCount(3))
        );
        assert_eq!(w.true_since, Some(3000));
        assert!(w.holds(5000));
        // Below the limit, errors leave a true condition as it is, but only
        // a sample that shows the condition fires it.
        let mut w = watch(1);
        w.observe(0, t("500"), 3);
        w.observe(1000, e("timeout"), 3);
        assert_eq!(w.true_since, Some(0));
        assert!(!w.holds(1000));
        w.observe(2000, t("500"), 3);
        assert!(w.holds(2000));
    }

    #[test]
    fn issue13_conditions_read_probe_results_and_log_figures() {
        let result = |status, message: &str| ProbeResult {
            name: "p".into(),
            kind: "http".into(),
            severity: golive_shared::protocol::Severity::Critical,
            status,
            value: Some("status 500, 3 ms".into()),
            threshold: None,
            duration_ms: 3,
            message: message.into(),
        };
        let refused = result(ProbeStatus::Error, "connection refused");
        let failed = result(ProbeStatus::Fail, "answered 500");
        let passed = result(ProbeStatus::Pass, "answered 200");
        assert!(matches!(
            of_probe(&Condition::Unresponsive, &refused),
            Outcome::True(_)
        ));
        assert!(matches!(
            of_probe(&Condition::Unresponsive, &failed),
            Outcome::False(_)
        ));
        assert!(matches!(
            of_probe(&Condition::Failing, &refused),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            of_probe(&Condition::Failing, &failed),
            Outcome::True(_)
        ));
        assert!(matches!(
            of_probe(&Condition::Failing, &passed),
            Outcome::False(_)
        ));
        let stats = |requests, errors: u64, p95| {
            Ok(WindowStats {
                requests,
                errors_5xx: errors,
                error_rate: if requests == 0 {
                    0.0
                } else {
                    errors as f64 / requests as f64
                },
                p95_ms: p95,
                window_secs: 60,
                unparsed_lines: 0,
                since_start_secs: 60,
                excluded_requests: 0,
                excluded_5xx: 0,
            })
        };
        let rate = Condition::ErrorRateAbove { per_mille: 50 };
        assert!(matches!(
            of_log(&rate, &stats(100, 6, None), 20),
            Outcome::True(_)
        ));
        assert!(matches!(
            of_log(&rate, &stats(100, 5, None), 20),
            Outcome::False(_)
        ));
        assert!(matches!(
            of_log(&rate, &stats(10, 10, None), 20),
            Outcome::NotJudged(_)
        ));
        let p95 = Condition::P95Above { ms: 5000 };
        assert!(matches!(
            of_log(&p95, &stats(100, 0, Some(6000.0)), 20),
            Outcome::True(_)
        ));
        assert!(matches!(
            of_log(&p95, &stats(100, 0, None), 20),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            of_log(&rate, &Err("gone".into()), 20),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            of_log(&Condition::Unresponsive, &Err("gone".into()), 20),
            Outcome::True(_)
        ));
    }
}
