//! The rollback plan of a deployment (issue 14): a pure function from the
//! deployment's recorded outcomes (its hosts and its journaled steps) to
//! the hosts to roll back, newest activation first, each with the host
//! rollback job and the key it is submitted under.
//!
//! One plan for every way back: a failure during the deployment
//! (`switch-back`), `golivectl rollback ID [--hosts ...]` and `no-go`
//! (`rollback`). Each host goes back through the agent's single host
//! rollback job, which the agent keys per deployment and host, so the
//! three ways and the host's own watchdog meet on the same job.

use golive_shared::protocol::{HostRollback, JobSpec, RollbackRequester};

use crate::journal::{DeploymentHost, Step};

/// One host to roll back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBack {
    pub host: String,
    pub address: String,
    /// The release it ran before the deployment.
    pub to: String,
    /// The idempotency key (`DEPLOYMENT:HOST:STEP`).
    pub key: String,
    /// The agent's single host rollback job.
    pub request: JobSpec,
}

/// What rolling a deployment back means, from its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackPlan {
    /// Newest activation first.
    pub hosts: Vec<HostBack>,
    /// Activated (or maybe activated) hosts that had no release before:
    /// nothing to go back to.
    pub first_install: Vec<String>,
    /// Hosts already rolled back (a switch-back or rollback that succeeded).
    pub already: Vec<String>,
    /// Hosts never switched: the deployment did not change what runs there.
    pub untouched: Vec<String>,
}

/// Builds the rollback plan of deployment `id` of `app` from its hosts and
/// its steps (in journal order). A host is rolled back when its activate
/// step has any record: succeeded, failed (a failed switch may or may not
/// have happened) or an intent without outcome (the controller died
/// mid-request); or when the journal shows it active. A host whose
/// `switch-back` or `rollback` succeeded, or whose state is `rolled_back`,
/// is not rolled back again. `step` names the step the plan runs
/// (`switch-back` after a failure, `rollback` from the command or a
/// no-go) and so its key (`rollback`: the agent's own,
/// [`super::rollback_key`]); `reason` goes to the agent's job.
pub fn plan(
    id: &str,
    app: &str,
    hosts: &[DeploymentHost],
    steps: &[Step],
    step: &str,
    reason: &str,
) -> RollbackPlan {
    let mut p = RollbackPlan::default();
    // (last activate record's position, host): newest first below.
    let mut back: Vec<(usize, &DeploymentHost)> = Vec::new();
    for h in hosts {
        let mine = || steps.iter().enumerate().filter(|(_, s)| s.host == h.host);
        let rolled_back = h.state == "rolled_back"
            || mine()
                .any(|(_, s)| (s.step == "switch-back" || s.step == "rollback") && s.state == "ok");
        let activated = mine()
            .filter(|(_, s)| s.step == "activate")
            .map(|(i, _)| i)
            .next_back();
        let activated = match activated {
            Some(i) => Some(i),
            // Recorded active without an activate step (an older record):
            // after every step, so it goes back first.
            None if h.state == "active" => Some(steps.len()),
            None => None,
        };
        match (rolled_back, activated) {
            (true, _) => p.already.push(h.host.clone()),
            (false, None) => p.untouched.push(h.host.clone()),
            (false, Some(_)) if h.previous_release.is_none() => {
                p.first_install.push(h.host.clone())
            }
            (false, Some(i)) => back.push((i, h)),
        }
    }
    // Stable: hosts recorded at the same position keep their order, reversed.
    back.reverse();
    back.sort_by_key(|b| std::cmp::Reverse(b.0));
    p.hosts = back
        .into_iter()
        .map(|(_, h)| HostBack {
            host: h.host.clone(),
            address: h.address.clone(),
            to: h.previous_release.clone().unwrap_or_default(),
            key: if step == "rollback" {
                super::rollback_key(id, &h.host)
            } else {
                super::key(id, &h.host, step)
            },
            request: JobSpec::HostRollback(HostRollback {
                app: app.into(),
                deployment: Some(id.into()),
                to: None,
                reason: reason.into(),
                requested_by: RollbackRequester::Controller,
                force: false,
                restore: None,
            }),
        })
        .collect();
    p
}

impl RollbackPlan {
    /// The plan restricted to `only` (host names), in the plan's order.
    pub fn only(mut self, only: &[String]) -> RollbackPlan {
        let keep = |h: &String| only.contains(h);
        self.hosts.retain(|h| keep(&h.host));
        self.first_install.retain(keep);
        self.already.retain(keep);
        self.untouched.retain(keep);
        self
    }

    /// The host names to roll back, newest first.
    pub fn names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.host.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, previous: Option<&str>, state: &str) -> DeploymentHost {
        DeploymentHost {
            host: name.into(),
            address: format!("{name}:7443"),
            previous_release: previous.map(Into::into),
            state: state.into(),
        }
    }

    fn step(host: &str, name: &str, state: &str) -> Step {
        Step {
            host: host.into(),
            step: name.into(),
            started_at: 0,
            finished_at: (state != "running").then_some(1),
            state: state.into(),
            detail: None,
        }
    }

    #[test]
    fn issue14_rollback_plan_partial_activation_newest_first() {
        let hosts = [
            host("a", Some("v1"), "active"),
            host("b", Some("v1"), "active"),
            host("c", Some("v1"), "staged"),
        ];
        let steps = [
            step("a", "stage", "ok"),
            step("b", "stage", "ok"),
            step("c", "stage", "ok"),
            step("a", "activate", "ok"),
            step("b", "activate", "failed"),
        ];
        let p = plan("d1", "shop", &hosts, &steps, "switch-back", "probe failed");
        assert_eq!(p.names(), ["b", "a"], "newest activation first");
        assert_eq!(p.untouched, ["c"]);
        assert!(p.first_install.is_empty() && p.already.is_empty());
        assert_eq!(p.hosts[0].key, "d1:b:switch-back");
        assert_eq!(p.hosts[1].to, "v1");
        let JobSpec::HostRollback(job) = &p.hosts[0].request else {
            panic!("{:?}", p.hosts[0].request);
        };
        assert_eq!(job.deployment.as_deref(), Some("d1"));
        assert_eq!(
            (job.app.as_str(), job.reason.as_str()),
            ("shop", "probe failed")
        );
        assert_eq!(p.clone().only(&["a".into()]).names(), ["a"]);
    }

    #[test]
    fn issue14_rollback_plan_first_install_has_nothing_to_go_back_to() {
        let hosts = [host("a", None, "active"), host("b", Some("v1"), "active")];
        let steps = [step("a", "activate", "ok"), step("b", "activate", "ok")];
        let p = plan("d1", "shop", &hosts, &steps, "rollback", "r");
        assert_eq!(p.first_install, ["a"]);
        assert_eq!(p.names(), ["b"]);
        assert_eq!(p.hosts[0].key, "rollback:d1:b", "the agent's own key");
    }

    #[test]
    fn issue14_rollback_plan_intent_without_outcome_goes_back() {
        // The controller died between the activate intent and its outcome:
        // the switch may have happened.
        let hosts = [
            host("a", Some("v1"), "staged"),
            host("b", Some("v1"), "staged"),
        ];
        let steps = [
            step("a", "activate", "ok"),
            step("b", "activate", "running"),
        ];
        let p = plan("d1", "shop", &hosts, &steps, "rollback", "r");
        assert_eq!(p.names(), ["b", "a"]);
        let interrupted = [step("b", "activate", "interrupted")];
        let p = plan("d1", "shop", &hosts[1..], &interrupted, "rollback", "r");
        assert_eq!(p.names(), ["b"]);
    }

    #[test]
    fn issue14_rollback_plan_skips_hosts_already_rolled_back() {
        let hosts = [
            host("a", Some("v1"), "active"),
            host("b", Some("v1"), "rolled_back"),
            host("c", Some("v1"), "active"),
        ];
        let steps = [
            step("a", "activate", "ok"),
            step("b", "activate", "ok"),
            step("c", "activate", "ok"),
            step("c", "switch-back", "ok"),
            step("a", "rollback", "failed"),
        ];
        let p = plan("d1", "shop", &hosts, &steps, "rollback", "r");
        assert_eq!(p.already, ["b", "c"]);
        assert_eq!(p.names(), ["a"], "a failed rollback is tried again");
    }
}
