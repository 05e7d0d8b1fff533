//! The deployment as data (issue 14): what `golivectl deploy` will do,
//! compiled from the validated plan before anything changes, stored in the
//! controller journal, printed by `--dry-run`, and read back by
//! `deploy --resume`.
//!
//! - [`mod@compile`]: the pure function plan + hosts + options → [`Deployment`].
//! - [`executor`]: runs one step: a host-changing one's intent journaled
//!   (key and request), request sent, outcome journaled; a record step's
//!   (probes, gate, soak) or live step's (locks) outcome journaled. A
//!   resumed deployment replays: it skips what finished (a record step's
//!   value read back), resubmits under its stored key what did not, and
//!   takes its locks again.
//! - [`events`]: the typed event stream (step started/progress/finished,
//!   waves, the gate, decisions, the result) that `crate::progress` shows
//!   as NDJSON, plain lines or live per-host lines.
//! - [`rollback`]: the rollback plan, from the deployment's recorded
//!   outcomes; the one a failure, `golivectl rollback ID [--hosts ...]` and
//!   `no-go` run, each host through the agent's single host rollback job.
//! - [`stages`]: a staged deployment (seed 002): several apps in order,
//!   each its own deployment verified before the next starts; a failed
//!   stage rolls back the stages before it, newest first.
//! - [`sequencer`]: interprets a recorded deployment phase by phase
//!   (`run_deployment`), each compiled step dispatched to its handler, with [`leases`] (app locks, the controller's
//!   heartbeat), [`verify`] (probes, the gate, waiting for a decision,
//!   watchdog arming), [`waves_run`] (waves, soak, max-fail, switch-back)
//!   and [`downtime`] (time in maintenance and not answering).
//!
//! - [`start`]: the deploy entry (`deploy_with_id`): phase 1 checks, the
//!   dry run, the deployment recorded before anything changes, the resume
//!   checks, the sequencer under a heartbeat, the outcome recorded.
//!
//! Every host-changing request the sequencer sends goes through the
//! executor with the key and request compiled here. `cmd/deploy.rs` keeps
//! the command's entry and its exit code.

pub mod compile;
pub mod downtime;
pub mod error;
pub mod events;
pub mod executor;
#[cfg(test)]
mod fake_agent;
pub mod leases;
pub mod rollback;
pub mod rollback_run;
pub mod sequencer;
#[cfg(test)]
mod sequencer_tests;
pub mod stages;
pub mod start;
pub mod subscribers;
pub mod verify;
pub mod waves_run;

use golive_shared::protocol::{ArmWatchdog, JobSpec};
use serde::{Deserialize, Serialize};

pub use compile::{HostInput, Input, SourceInput, StageInput, compile, compile_stages};
pub use error::{DeployError, job_exit};
pub use executor::{Executor, StepError};

/// A compiled deployment: its hosts and their steps in the order the
/// sequencer runs them, and its waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub app: String,
    pub release: String,
    /// "artifact sha256 HEX, N bytes" or "git ref REF".
    pub source: String,
    /// sha256 of the plan file: `--resume` refuses a plan that changed.
    pub plan_sha256: String,
    /// `[deploy] parallel`.
    pub parallel: usize,
    /// `[[waves]]`; empty: host by host, in plan order.
    pub waves: Vec<Wave>,
    pub hosts: Vec<HostSteps>,
}

/// A compiled staged deployment (issue 14, seed 002): the stage dimension
/// above waves × hosts × steps. Each stage is one app's deployment with
/// its own id, compiled (waves, hosts, steps, keys) and stored under that
/// id when the stage starts, since its hosts' live releases are read then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub id: String,
    /// sha256 of the stages file: `--resume` refuses one that changed.
    pub stages_sha256: String,
    pub stages: Vec<StageRef>,
}

/// One stage of a staged deployment, in run order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRef {
    /// 1-based.
    pub position: u32,
    /// "stage 2/5 (auth)".
    pub label: String,
    pub name: String,
    pub app: String,
    pub release: String,
    pub plan: String,
    /// The stage's own deployment id (its steps' keys start with it).
    pub deployment: String,
    pub hosts: Vec<String>,
}

/// One wave of a compiled deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// "wave 1/3 (canary)".
    pub label: String,
    pub name: Option<String>,
    pub hosts: Vec<String>,
    pub max_fail: u32,
    pub allowed_failures: usize,
    pub soak_secs: Option<u64>,
    /// The wave's own record steps, journaled under
    /// `DEPLOYMENT:wave-N:STEP`: `wave` (its outcome, the `wave-N` row),
    /// then `soak` when it has one. Empty in a deployment compiled before
    /// they were (its soak is then listed by `soak_secs`).
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One host's steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSteps {
    pub host: String,
    pub address: String,
    /// The release live there when the deployment was compiled.
    pub previous: Option<String>,
    /// In order; the steps run only after a failure come last.
    pub steps: Vec<Step>,
}

/// One step on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Stable within the host: "stage", "activate", "maintenance-off", ...
    pub name: String,
    /// As the dry run words it ("stage v2", "backup (verified)").
    pub label: String,
    pub when: When,
    /// The idempotency key the agent job gets (`DEPLOYMENT:HOST:STEP`);
    /// `None` for a step that changes nothing on the host.
    pub key: Option<String>,
    /// What is sent; `None` for a read-only step.
    pub request: Option<StepRequest>,
}

/// When a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Always,
    /// Only when the staged release has pending migrations.
    PendingMigrations,
    /// Only when migrations were kept for the release's commit.
    AtCommit,
    /// Only after a failure (switch-back, discard, maintenance off again).
    OnFailure,
    /// Not run, and why.
    Skipped(String),
    /// Only when the host's gate says pause (a decision waited for).
    GatePauses,
}

impl When {
    /// The dry run's wording after the label.
    pub fn suffix(&self) -> String {
        match self {
            When::Always | When::OnFailure => String::new(),
            When::PendingMigrations => " if the staged release has pending migrations".into(),
            When::AtCommit => " if migrations were kept for the commit".into(),
            When::Skipped(why) => format!(" skipped ({why})"),
            When::GatePauses => " if the gate pauses".into(),
        }
    }
}

/// The request a host-changing step sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRequest {
    /// The artifact, content-addressed (skipped when the agent has it).
    Upload {
        sha256: String,
        bytes: u64,
    },
    /// An agent job, submitted under the step's key.
    Job(JobSpec),
    ArmWatchdog(ArmWatchdog),
}

/// The one place an idempotency key is formatted: `DEPLOYMENT:HOST:STEP`.
pub fn key(deployment: &str, host: &str, step: &str) -> String {
    format!("{deployment}:{host}:{step}")
}

/// The key of deployment `deployment`'s host rollback job on `host` as
/// the agent keys it (`rollback:DEPLOYMENT:HOST`, `golive_agent::rollback::
/// resolve`), whoever asks for it: the key a `rollback` step (`golivectl
/// rollback ID`, a `no-go`) is journaled and submitted under, so one
/// journaled as done is the agent's one job, done.
pub fn rollback_key(deployment: &str, host: &str) -> String {
    format!("rollback:{deployment}:{host}")
}

impl Deployment {
    /// Whether this deployment was compiled before the pending-migrations
    /// read, a pause's decision and the wave's row were compiled steps
    /// (an older record, resumed): those then run journaled as before,
    /// again on every run.
    pub fn older(&self) -> bool {
        !self
            .hosts
            .iter()
            .any(|h| h.steps.iter().any(|s| s.name == "migrations"))
    }

    /// The compiled step `name` of `host`.
    pub fn step(&self, host: &str, name: &str) -> Option<&Step> {
        self.hosts
            .iter()
            .find(|h| h.host == host)?
            .steps
            .iter()
            .find(|s| s.name == name)
    }

    /// A host's steps as the dry run lists them: those of a normal run
    /// (`on_failure` false) or those run only after a failure.
    pub fn labels(&self, host: &HostSteps, on_failure: bool) -> Vec<String> {
        host.steps
            .iter()
            .filter(|s| (s.when == When::OnFailure) == on_failure)
            .map(|s| format!("{}{}", s.label, s.when.suffix()))
            .collect()
    }
}
