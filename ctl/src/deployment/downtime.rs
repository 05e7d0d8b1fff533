//! Downtime accounting: the time in maintenance (`Downtime`) and the time
//! the app did not answer outside it, measured by the agents through each
//! switch (`Unavailable`), and their report.

use golive_shared::protocol::{Availability, JobInfo, JobResult, JobState};
use serde_json::json;

use crate::client::ClientError;
use crate::output::Out;
use crate::plan::Plan;

/// Time in maintenance during a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Downtime {
    /// No maintenance: a zero-downtime switch.
    None,
    /// Maintenance on then off: the longest time any host spent in it.
    Measured(u64),
    /// Maintenance is still on somewhere (its `off` failed): not over yet.
    StillOn,
}

impl Downtime {
    /// `downtime_ms` of the result event: 0 without maintenance, null while
    /// it is still on somewhere.
    pub(crate) fn ms(self) -> Option<u64> {
        match self {
            Downtime::None => Some(0),
            Downtime::Measured(ms) => Some(ms),
            Downtime::StillOn => None,
        }
    }

    pub(crate) fn json(self) -> &'static str {
        match self {
            Downtime::None => "none",
            Downtime::Measured(_) => "off",
            Downtime::StillOn => "still_on",
        }
    }
}

pub(crate) fn in_maintenance_names(plan: &Plan, on: &[usize]) -> Vec<String> {
    on.iter().map(|&i| plan.hosts[i].name.clone()).collect()
}

pub(crate) fn downtime_of(used: bool, longest: Option<u64>, still: &[String]) -> Downtime {
    if !still.is_empty() {
        Downtime::StillOn
    } else if !used {
        Downtime::None
    } else {
        Downtime::Measured(longest.unwrap_or(0))
    }
}

/// "; MAINTENANCE STILL ON: ..." for an outcome message, or nothing.
pub(crate) fn still_on(still: &[String]) -> String {
    if still.is_empty() {
        String::new()
    } else {
        format!(
            "; MAINTENANCE STILL ON: {}; fix it and run `golivectl maintenance off PLAN`",
            still.join("; ")
        )
    }
}

/// Downtime as users see it (issue 12, part 15): what each host's agent
/// measured with the app's http probe through its switches (activate and
/// switch-back) and as its maintenance went off. Time in maintenance is
/// counted by [`Downtime`], not here.
#[derive(Debug, Default)]
pub(crate) struct Unavailable {
    /// (host, figures), one per switch that was sampled.
    pub(crate) hosts: Vec<(String, Availability)>,
}

impl Unavailable {
    /// Keeps the figures of a finished activate or rollback job.
    pub(crate) fn add(&mut self, host: &str, r: &Result<JobInfo, ClientError>) {
        if let Some(a) = availability_of(r) {
            self.hosts.push((host.to_string(), a));
        }
    }

    /// Keeps the figures a host's `maintenance off` measured (issue 12,
    /// part 15): the app not answering once the page was gone.
    pub(crate) fn add_maintenance_off(&mut self, host: &str, s: &crate::jobs::Switched) {
        if let Some(a) = &s.availability {
            self.hosts.push((host.to_string(), a.clone()));
        }
    }

    /// The longest time one host did not answer (hosts are reached in
    /// parallel by users; a stretch on one host is what they saw), or
    /// `None` when no switch was sampled.
    pub(crate) fn ms(&self) -> Option<u64> {
        let per_host = self.per_host();
        (!per_host.is_empty()).then(|| per_host.iter().map(|h| h.1).max().unwrap_or(0))
    }

    /// Each host's total over its switches, in the order first sampled.
    pub(crate) fn per_host(&self) -> Vec<(String, u64, bool)> {
        let mut out: Vec<(String, u64, bool)> = Vec::new();
        for (host, a) in &self.hosts {
            match out.iter_mut().find(|h| &h.0 == host) {
                Some(h) => {
                    h.1 += a.unavailable_ms;
                    h.2 &= a.recovered;
                }
                None => out.push((host.clone(), a.unavailable_ms, a.recovered)),
            }
        }
        out
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.per_host()
                .into_iter()
                .map(|(host, ms, recovered)| {
                    json!({"host": host, "unavailable_ms": ms, "recovered": recovered})
                })
                .collect(),
        )
    }
}

/// The availability a finished activate or rollback job measured.
pub(crate) fn availability_of(r: &Result<JobInfo, ClientError>) -> Option<Availability> {
    match r {
        Ok(JobInfo {
            state: JobState::Succeeded,
            result:
                Some(
                    JobResult::Activated { availability, .. }
                    | JobResult::RolledBack { availability, .. },
                ),
            ..
        }) => availability.clone(),
        Ok(JobInfo {
            state: JobState::Succeeded,
            result: Some(JobResult::HostRolledBack(r)),
            ..
        }) => r.availability.clone(),
        _ => None,
    }
}

/// Prints the downtime of a deployment as users saw it and as maintenance
/// took it, per host and overall, and adds it to the outcome message.
pub(crate) fn report_downtime(
    out: Out,
    downtime: Downtime,
    unavailable: &Unavailable,
    message: &mut String,
) {
    for (host, ms, recovered) in unavailable.per_host() {
        out.line(format!(
            "[{host}] not answering: {ms} ms (as users see it){}",
            if recovered {
                ""
            } else {
                ", and still not answering when sampling ended"
            }
        ));
    }
    let users = unavailable
        .ms()
        .map(|ms| format!("{ms} ms not answering (as users see it)"));
    let maintenance = match downtime {
        Downtime::None => Some("0 ms in maintenance".to_string()),
        Downtime::Measured(ms) => Some(format!("{ms} ms in maintenance")),
        Downtime::StillOn => None,
    };
    match (users, maintenance) {
        (Some(u), Some(m)) => {
            out.line(format!("downtime: {u}, {m}"));
            message.push_str(&format!("; downtime {u}, {m}"));
        }
        (None, Some(m)) if downtime != Downtime::None => {
            out.line(format!("downtime: {m}"));
            message.push_str(&format!("; downtime {m}"));
        }
        (Some(u), None) => {
            out.line(format!("downtime: {u}; maintenance is still ON"));
            message.push_str(&format!("; downtime {u}"));
        }
        (None, None) => out.line("downtime: maintenance is still ON"),
        (None, Some(_)) => {}
    }
}
