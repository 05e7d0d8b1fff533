//! One executor for every host-changing step (issue 14): journal the intent
//! (idempotency key and request), send, journal the outcome. No request is
//! sent without its intent on disk, and a journal write that fails stops
//! the deployment ([`StepError`]): every later step refuses.
//!
//! Every other compiled step goes through it too: a record step (a read or
//! a verdict, [`Executor::record`]) or a live one ([`Executor::live`]),
//! each journaled under its key with its outcome and no request. So does a
//! host-changing step the record decides rather than the compiled
//! deployment: a `rollback` of `golivectl rollback ID` or a `no-go`
//! ([`Executor::run_planned`], under the agent's own key
//! `rollback:DEPLOYMENT:HOST`).
//!
//! A host known lost in a run ([`Executor::lose`]: its switch-back timed
//! out, then not even a hello came back) has every later step skipped at
//! once, journaled `skipped` ([`StepError::Lost`]), instead of followed up
//! to its deadline; its lock is left to expire.
//!
//! A resume is a replay of recorded outcomes, by one rule per kind of step
//! ([`on_resume`]):
//! - [`OnResume::Resend`], host-changing steps: a step whose success is
//!   journaled is not sent again (its journaled outcome is returned); one
//!   with an intent but no success is resubmitted with its stored request
//!   under its stored key: the agent answers with the job it already has,
//!   followed to its end.
//! - [`OnResume::Replay`], record steps (read flags, probe-before, the
//!   pending-migrations read, probe, gate, a pause's decision, a wave's
//!   soak): a finished one's recorded value is read back, not redone: the
//!   figures before a switch cannot be taken again after it, the
//!   migrations decision and a recorded gate verdict or go / no-go stand.
//!   One with no value (a read that failed, or cut short, a pause that got
//!   no decision) runs again; a soak then runs only what remains of its
//!   window (`waves_run::soak_step`).
//! - [`OnResume::Redo`], live steps (lock, unlock) and a wave's own row
//!   (`wave`, journaled as `wave-N`: its outcome, a summary of its hosts'
//!   steps, which replay by their own rules): taken again on every run (a
//!   lease renews only while a controller runs).
//!
//! Test-only fault injection: `GOLIVECTL_CRASH_AFTER_STEPS=N` aborts the
//! process right after the Nth journal write of the executor for a
//! host-changing step (intent or outcome; record and live steps do not
//! count), so the integration tests can stop a controller at each step
//! boundary (see ARCHITECTURE.md).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Deployment, StepRequest};
use crate::journal::Journal;
use crate::output::Out;

/// A step could not be run as the journal requires: nothing was sent (or,
/// for an outcome, the request was sent and its outcome is not on disk).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(
        "cannot journal the {what} of step {step} on {host} of deployment {id} in the controller \
         journal: {source}; nothing more is sent, hosts stay as they are (the agents' leases \
         expire, their watchdogs still protect them). Fix the controller's state directory (disk \
         space, permissions), then `{then}`"
    )]
    Journal {
        id: String,
        host: String,
        step: String,
        what: &'static str,
        source: rusqlite::Error,
        /// The command that carries on (`golivectl deploy PLAN --resume ID`,
        /// or `golivectl rollback ID`: [`Executor::for_rollback`]).
        then: String,
    },
    #[error(
        "cannot fsync the intent of step {step} on {host} of deployment {id} to the controller \
         journal: {source}; it was not sent and nothing more is, hosts stay as they are (the \
         agents' leases expire, their watchdogs still protect them). Fix the controller's state \
         directory (disk errors, space), then `{then}`"
    )]
    Sync {
        id: String,
        host: String,
        step: String,
        source: std::io::Error,
        then: String,
    },
    #[error(
        "step {step} on {host} of deployment {id} was not sent: an earlier journal write failed, \
         so the deployment stopped"
    )]
    Stopped {
        id: String,
        host: String,
        step: String,
    },
    #[error(
        "deployment {id} cannot be run by this golivectl: its compiled step {step}: {why} (a \
         golivectl bug, or a deployment recorded by another version); nothing was sent"
    )]
    NotRunnable {
        id: String,
        step: String,
        why: String,
    },
    #[error(
        "deployment {id} has no compiled step {step} for {host} (a golivectl bug); nothing was sent"
    )]
    NotCompiled {
        id: String,
        host: String,
        step: String,
    },
    /// The host was lost earlier in this deployment ([`Executor::lose`]):
    /// the step is skipped at once (journaled `skipped`), not followed
    /// for a minute. It does not stop the deployment.
    #[error(
        "step {step} on {host} skipped: {host} was lost earlier in deployment {id} ({why}); its \
         lock is left to expire, its watchdog (when armed) covers it; check `golivectl status` \
         once it answers"
    )]
    Lost {
        id: String,
        host: String,
        step: String,
        why: String,
    },
}

/// Runs the host-changing steps of one deployment.
pub struct Executor<'a> {
    journal: &'a Journal,
    deployment: &'a Deployment,
    /// A journal write failed: nothing more is sent.
    stopped: Cell<bool>,
    /// The command that carries on after a journal write failed.
    then: String,
    /// Hosts known lost in this run (host, why), in the order lost.
    lost: RefCell<Vec<(String, String)>>,
}

/// The fault-injection point: `GOLIVECTL_CRASH_AFTER_STEPS`, read once.
fn crash_after() -> Option<u32> {
    static N: OnceLock<Option<u32>> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("GOLIVECTL_CRASH_AFTER_STEPS")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// Counts one executor journal write; aborts after the Nth (test only).
fn wrote() {
    static WRITES: AtomicU32 = AtomicU32::new(0);
    let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    if crash_after() == Some(n) {
        eprintln!("golivectl: GOLIVECTL_CRASH_AFTER_STEPS={n}: aborting after journal write {n}");
        std::process::abort();
    }
}

/// What a resumed deployment does with one kind of step (issue 14): the
/// rule, per compiled step name, that `--resume` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnResume {
    /// A host-changing step: not sent again when its success is
    /// journaled; sent again under its stored key (the agent answers with
    /// the job it already has) when only its intent is.
    Resend,
    /// A read or a verdict (flags read, probes before and after, the
    /// gate, a soak): its recorded outcome is read back, not redone. A
    /// re-read would be wrong by then: the probes before a switch cannot
    /// be taken again after it.
    Replay,
    /// Live state (an app lock and its lease): taken again on every run;
    /// its outcome is journaled each time.
    Redo,
}

/// The resume rule of compiled step `name`; `None` for a name compile
/// never emits (see the sequencer's handler table, which has one handler
/// for each of these).
pub fn on_resume(name: &str) -> Option<OnResume> {
    Some(match name {
        "lock" | "unlock" | "wave" => OnResume::Redo,
        "read flags" | "probe-before" | "migrations" | "probe" | "gate" | "decision" | "soak" => {
            OnResume::Replay
        }
        "upload"
        | "stage"
        | "maintenance-on"
        | "backup"
        | "migrate"
        | "activate"
        | "maintenance-off"
        | "watchdog-arm"
        | "commit-migrate"
        | "switch-back"
        | "maintenance-off-after-switch-back"
        | "discard"
        // Not compiled: the rollback plan, from the record, decides it
        // ([`Executor::run_planned`]).
        | "rollback" => OnResume::Resend,
        _ => return None,
    })
}

/// Where a record step belongs: one host's, or one wave's (its soak).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'s> {
    Host(&'s str),
    /// 0-based index into [`Deployment::waves`].
    Wave(usize),
}

/// A record step's outcome: read back from the journal, or run now.
#[derive(Debug)]
pub enum Recorded<T, E> {
    /// Finished before an interruption: its journaled value.
    Before(T),
    Now(Result<T, E>),
}

impl<'a> Executor<'a> {
    /// Puts the journal in group commit (the deployment is stored by
    /// now): each intent is fsync'd before its request goes out, sharing
    /// the fsync with the intents of the other hosts written meanwhile
    /// (issue 14, speed). If the mode cannot be set, every commit stays
    /// fsync'd on its own, which is slower and as safe.
    pub fn new(journal: &'a Journal, deployment: &'a Deployment) -> Executor<'a> {
        let _ = journal.group_commit();
        Executor {
            journal,
            deployment,
            stopped: Cell::new(false),
            then: format!("golivectl deploy PLAN --resume {}", deployment.id),
            lost: RefCell::new(Vec::new()),
        }
    }

    /// The executor of `golivectl rollback ID` (and a `no-go`'s rollback)
    /// on deployment `deployment`: the same rules; what carries it on
    /// after a failed journal write is the rollback run again.
    pub fn for_rollback(journal: &'a Journal, deployment: &'a Deployment) -> Executor<'a> {
        Executor {
            then: format!("golivectl rollback {}", deployment.id),
            ..Executor::new(journal, deployment)
        }
    }

    pub fn deployment(&self) -> &Deployment {
        self.deployment
    }

    /// Whether a journal write failed (the deployment stops).
    pub fn stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Host `host` is known lost (it did not answer within its deadline,
    /// then not even a hello): every later step of it in this run is
    /// skipped at once ([`StepError::Lost`]). A resumed run asks it again.
    pub fn lose(&self, host: &str, why: &str) {
        let mut lost = self.lost.borrow_mut();
        if !lost.iter().any(|(h, _)| h == host) {
            lost.push((host.to_string(), why.to_string()));
        }
    }

    /// Why `host` is lost, if it is.
    pub fn lost(&self, host: &str) -> Option<String> {
        self.lost
            .borrow()
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, why)| why.clone())
    }

    /// The hosts lost in this run, and why, in the order lost.
    pub fn lost_hosts(&self) -> Vec<(String, String)> {
        self.lost.borrow().clone()
    }

    /// The error step `name` on `host` is refused with once a journal
    /// write failed (nothing more is sent), or `None`.
    fn stopped_error(&self, host: &str, name: &str) -> Option<StepError> {
        self.stopped.get().then(|| StepError::Stopped {
            id: self.deployment.id.clone(),
            host: host.into(),
            step: name.into(),
        })
    }

    /// A step of a lost host: journaled `skipped` (under `key`, with no
    /// request: a resumed run sends it again); the error it is refused
    /// with. `None`: the host is not lost.
    fn skip_lost(&self, host: &str, column: &str, name: &str, key: &str) -> Option<StepError> {
        let why = self.lost(host)?;
        let id = &self.deployment.id;
        let lost = StepError::Lost {
            id: id.clone(),
            host: host.into(),
            step: name.into(),
            why,
        };
        let written = self
            .journal
            .record_step(id, column, name, key)
            .and_then(|seq| {
                self.journal
                    .outcome(seq, "skipped", &lost.to_string(), None)
            });
        Some(match written {
            Ok(()) => lost,
            Err(e) => self.failed(host, name, "skip", e),
        })
    }

    /// Runs step `name` on `host`: the compiled request (or `request`,
    /// which replaces it when the sequencer knows better, e.g. a backup
    /// made verified by pending migrations), under the compiled key.
    /// `send(key, request)` sends it; `judge` says whether what came back
    /// is a success and with what detail, for the journal. A success's
    /// value is journaled (JSON) and returned as it is on a resume.
    pub async fn run<T, E, Fut>(
        &self,
        out: Out,
        host: &str,
        name: &str,
        request: Option<StepRequest>,
        send: impl FnOnce(String, StepRequest) -> Fut,
        judge: impl Fn(&Result<T, E>) -> Result<String, String>,
    ) -> Result<Result<T, E>, StepError>
    where
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
    {
        let id = &self.deployment.id;
        if let Some(e) = self.stopped_error(host, name) {
            return Err(e);
        }
        let compiled = self
            .deployment
            .step(host, name)
            .and_then(|s| Some((s.key.clone()?, s.request.clone()?)))
            .ok_or_else(|| StepError::NotCompiled {
                id: id.clone(),
                host: host.into(),
                step: name.into(),
            })?;
        let (key, compiled_request) = compiled;
        if let Some(e) = self.skip_lost(host, host, name, &key) {
            return Err(e);
        }
        self.send(
            out,
            host,
            name,
            key,
            request.unwrap_or(compiled_request),
            send,
            judge,
        )
        .await
    }

    /// Runs host-changing step `name` on `host` that the compiled
    /// deployment does not list because the deployment's record decides
    /// it: a `rollback` (`golivectl rollback ID`, a `no-go`), from the
    /// rollback plan ([`super::rollback::plan`]), with its key and
    /// request. The same rule as [`Executor::run`]: the intent journaled
    /// (and fsync'd) before the send, the outcome after; a journaled
    /// success is not sent again; an intent without one is resent with
    /// its stored request under its stored key.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_planned<T, E, Fut>(
        &self,
        out: Out,
        host: &str,
        name: &str,
        key: &str,
        request: StepRequest,
        send: impl FnOnce(String, StepRequest) -> Fut,
        judge: impl Fn(&Result<T, E>) -> Result<String, String>,
    ) -> Result<Result<T, E>, StepError>
    where
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
    {
        let id = &self.deployment.id;
        if let Some(e) = self.stopped_error(host, name) {
            return Err(e);
        }
        if on_resume(name) != Some(OnResume::Resend) || self.deployment.step(host, name).is_some() {
            return Err(StepError::NotRunnable {
                id: id.clone(),
                step: name.into(),
                why: "not a planned host-changing step".into(),
            });
        }
        if let Some(e) = self.skip_lost(host, host, name, key) {
            return Err(e);
        }
        self.send(out, host, name, key.to_string(), request, send, judge)
            .await
    }

    /// [`Executor::run`]'s rule for the step under `key`: `request` unless
    /// a request was journaled under the key before.
    #[allow(clippy::too_many_arguments)]
    async fn send<T, E, Fut>(
        &self,
        out: Out,
        host: &str,
        name: &str,
        key: String,
        request: StepRequest,
        send: impl FnOnce(String, StepRequest) -> Fut,
        judge: impl Fn(&Result<T, E>) -> Result<String, String>,
    ) -> Result<Result<T, E>, StepError>
    where
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
    {
        let id = &self.deployment.id;
        let err = |what: &'static str, source: rusqlite::Error| {
            self.stopped.set(true);
            StepError::Journal {
                id: id.clone(),
                host: host.into(),
                step: name.into(),
                what,
                source,
                then: self.then.clone(),
            }
        };
        let prior = self
            .journal
            .step_by_key(id, &key)
            .map_err(|e| err("earlier record", e))?;
        // Done before an interruption: its journaled outcome, not sent again.
        if let Some(p) = &prior
            && p.state == "ok"
            && let Some(value) = p
                .outcome
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok())
        {
            out.line(format!(
                "[{host}] {name}: done before the interruption (key {key}); not sent again"
            ));
            return Ok(Ok(value));
        }
        // Sent before (the outcome lost or a failure): the same request
        // under the same key, so the agent answers with the job it has.
        let request = match prior
            .as_ref()
            .and_then(|p| p.request.as_deref())
            .and_then(|r| serde_json::from_str::<StepRequest>(r).ok())
        {
            Some(stored) => stored,
            None => request,
        };
        // An intent a killed run left without outcome (a rollback's: a
        // resumed deployment marked its own at the start) is closed as
        // interrupted, so the record shows no step still running.
        if let Some(p) = prior.as_ref().filter(|p| p.state == "running") {
            self.journal
                .outcome(
                    p.seq,
                    "interrupted",
                    "the controller stopped before its outcome; sent again under its key",
                    None,
                )
                .map_err(|e| err("earlier record", e))?;
        }
        let text = serde_json::to_string(&request).unwrap_or_default();
        let seq = self
            .journal
            .intent(id, host, name, &key, &text)
            .map_err(|e| err("intent", e))?;
        // Its event is recorded with the intent (the deployment's journal
        // subscriber): one that cannot be is a journal write that failed.
        out.emit_recorded(super::events::Event::StepStarted {
            host: host.into(),
            step: name.into(),
        })
        .map_err(|e| err("step_started event", e))?;
        // On disk before it is sent, whatever else is in flight.
        if let Err(source) = self.journal.durable().await {
            self.stopped.set(true);
            return Err(StepError::Sync {
                id: id.clone(),
                host: host.into(),
                step: name.into(),
                source,
                then: self.then.clone(),
            });
        }
        wrote();
        let r = send(key, request).await;
        let (state, detail, value) = match judge(&r) {
            Ok(detail) => (
                "ok",
                detail,
                r.as_ref().ok().and_then(|v| serde_json::to_string(v).ok()),
            ),
            Err(detail) => ("failed", detail, None),
        };
        self.journal
            .outcome(seq, state, &detail, value.as_deref())
            .map_err(|e| err("outcome", e))?;
        wrote();
        Ok(r)
    }

    /// A journal write of step `name` on `label` failed: the deployment
    /// stops.
    fn failed(
        &self,
        label: &str,
        name: &str,
        what: &'static str,
        source: rusqlite::Error,
    ) -> StepError {
        self.stopped.set(true);
        StepError::Journal {
            id: self.deployment.id.clone(),
            host: label.into(),
            step: name.into(),
            what,
            source,
            then: self.then.clone(),
        }
    }

    /// Where record step `name` of `scope` is journaled, and under which
    /// rule it may run: `(host column, key's host part, step column,
    /// rule)`, the rule `None` when the compiled deployment does not list
    /// the step (a soak: its wave has none) or it is not a record step. A
    /// wave's `wave` step is the `wave-N` row. In a deployment compiled
    /// before `migrations`, `decision` and `wave` were compiled steps
    /// ([`Deployment::older`]), those run as [`OnResume::Redo`].
    fn listed(&self, scope: Scope<'_>, name: &str) -> (String, String, String, Option<OnResume>) {
        let d = self.deployment;
        let (host, label) = match scope {
            Scope::Host(h) => (h.to_string(), h.to_string()),
            Scope::Wave(w) => (
                d.waves
                    .get(w)
                    .map(|wave| wave.hosts.join(","))
                    .unwrap_or_default(),
                format!("wave-{}", w + 1),
            ),
        };
        let older = || d.older() && matches!(name, "migrations" | "decision" | "wave");
        let (listed, older) = match scope {
            Scope::Host(h) => (
                d.step(h, name).is_some(),
                older() && d.hosts.iter().any(|x| x.host == h),
            ),
            Scope::Wave(w) => match d.waves.get(w) {
                Some(wave) if !wave.steps.is_empty() => {
                    (wave.steps.iter().any(|s| s.name == name), false)
                }
                Some(wave) => (name == "soak" && wave.soak_secs.is_some(), older()),
                None => (false, false),
            },
        };
        let step = match scope {
            Scope::Wave(_) if name == "wave" => label.clone(),
            _ => name.to_string(),
        };
        let rule = if older {
            Some(OnResume::Redo)
        } else {
            on_resume(name).filter(|r| listed && matches!(r, OnResume::Replay | OnResume::Redo))
        };
        (host, label, step, rule)
    }

    /// Why a record step cannot run: the deployment stopped, or the step
    /// is not compiled.
    fn refuse(&self, label: String, name: &str) -> StepError {
        let (id, step) = (self.deployment.id.clone(), name.to_string());
        if self.stopped.get() {
            StepError::Stopped {
                id,
                host: label,
                step,
            }
        } else {
            StepError::NotCompiled {
                id,
                host: label,
                step,
            }
        }
    }

    /// Runs live step `name` on `host` (a lock taken or released:
    /// [`OnResume::Redo`]), journaling its start and outcome, no request
    /// and no value: it runs again on every resume.
    pub async fn live<T, E, Fut>(
        &self,
        host: &str,
        name: &str,
        run: impl FnOnce() -> Fut,
        judge: impl Fn(&Result<T, E>) -> (&'static str, String),
    ) -> Result<Result<T, E>, StepError>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let id = &self.deployment.id;
        let (host, label, _, rule) = self.listed(Scope::Host(host), name);
        if self.stopped.get() || rule != Some(OnResume::Redo) {
            return Err(self.refuse(label, name));
        }
        let key = super::key(id, &label, name);
        if let Some(e) = self.skip_lost(&label, &host, name, &key) {
            return Err(e);
        }
        let seq = self
            .journal
            .record_step(id, &host, name, &key)
            .map_err(|e| self.failed(&label, name, "start", e))?;
        let r = run().await;
        let (state, detail) = judge(&r);
        self.journal
            .outcome(seq, state, &detail, None)
            .map_err(|e| self.failed(&label, name, "outcome", e))?;
        Ok(r)
    }

    /// Runs record step `name` (a read or a verdict: it changes nothing on
    /// the host; key `DEPLOYMENT:HOST:STEP`, or `DEPLOYMENT:wave-N:soak`),
    /// journaling its outcome and no request. Under [`OnResume::Replay`],
    /// a step that finished before (a state other than running or
    /// interrupted, and a value) is not run again: its value is returned as
    /// [`Recorded::Before`]. Under [`OnResume::Redo`] it always runs. `run`
    /// gives the value; `judge` the journal's state ("ok", "failed", the
    /// gate's "warn", ...) and detail; an `Ok` value is journaled (JSON),
    /// an `Err` is not, so it runs again on a resume. A step the compiled
    /// deployment does not list runs nothing ([`StepError::NotCompiled`]).
    /// Whether record step `name` of `scope` has an outcome that
    /// [`record`](Self::record) would read back instead of running it: a
    /// caller that takes a read early (the probes before, beside staging)
    /// asks first, so a resumed deployment reads nothing it would not use.
    pub fn replays(&self, scope: Scope<'_>, name: &str) -> bool {
        let (_, label, _, rule) = self.listed(scope, name);
        let key = super::key(&self.deployment.id, &label, name);
        rule == Some(OnResume::Replay)
            && matches!(self.replayed::<serde_json::Value>(&key), Ok(Some(_)))
    }

    /// The recorded outcome under `key` of a record step that finished.
    fn replayed<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, rusqlite::Error> {
        let prior = self.journal.step_by_key(&self.deployment.id, key)?;
        Ok(prior
            .filter(|p| p.state != "running" && p.state != "interrupted")
            .and_then(|p| p.outcome.and_then(|o| serde_json::from_str(&o).ok())))
    }

    pub async fn record<T, E, Fut>(
        &self,
        scope: Scope<'_>,
        name: &str,
        run: impl FnOnce() -> Fut,
        judge: impl Fn(&Result<T, E>) -> (&'static str, String),
    ) -> Result<Recorded<T, E>, StepError>
    where
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
    {
        let id = &self.deployment.id;
        let (host, label, step, rule) = self.listed(scope, name);
        let rule = match rule {
            Some(rule) if !self.stopped.get() => rule,
            _ => return Err(self.refuse(label, name)),
        };
        let err =
            |what: &'static str, source: rusqlite::Error| self.failed(&label, name, what, source);
        let key = super::key(id, &label, name);
        if let Scope::Host(h) = scope
            && let Some(e) = self.skip_lost(h, &host, &step, &key)
        {
            return Err(e);
        }
        if rule == OnResume::Replay
            && let Some(value) = self.replayed(&key).map_err(|e| err("earlier record", e))?
        {
            return Ok(Recorded::Before(value));
        }
        let seq = self
            .journal
            .record_step(id, &host, &step, &key)
            .map_err(|e| err("start", e))?;
        let r = run().await;
        let (state, detail) = judge(&r);
        let value = r.as_ref().ok().and_then(|v| serde_json::to_string(v).ok());
        self.journal
            .outcome(seq, state, &detail, value.as_deref())
            .map_err(|e| err("outcome", e))?;
        Ok(Recorded::Now(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{HostInput, Input, SourceInput, compile};
    use crate::output::Format;
    use crate::plan::PreDeployBackup;
    use std::cell::RefCell;

    fn deployment() -> Deployment {
        compile(&Input {
            id: "d1",
            app: "shop",
            release: "v2",
            source: SourceInput::Artifact {
                sha256: "ab".repeat(32),
                bytes: 10,
            },
            plan_sha256: "cd",
            hosts: vec![HostInput {
                name: "web1".into(),
                address: "127.0.0.1:7443".into(),
                previous: Some("v1".into()),
            }],
            waves: &[],
            parallel: 1,
            maintenance: false,
            backup: PreDeployBackup::None,
            contract_at_commit: false,
            restore_allowed: false,
            watchdog: None,
        })
    }

    fn out() -> Out {
        Out {
            format: Format::Json,
        }
    }

    fn judge(r: &Result<String, String>) -> Result<String, String> {
        r.clone()
    }

    /// The intent is on disk before the request goes out; a resumed run
    /// returns a journaled success without sending it again, and resends
    /// a step with an intent but no outcome under its stored key.
    #[tokio::test]
    async fn issue14_intent_before_send_and_a_resume_skips_what_succeeded() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        journal
            .create_deployment("d1", "golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        let d = deployment();
        let exec = Executor::new(&journal, &d);
        let sent = RefCell::new(Vec::new());
        let r = exec
            .run(
                out(),
                "web1",
                "activate",
                None,
                |key, request| {
                    // Sent only after the intent was journaled.
                    let row = journal.step_by_key("d1", &key).unwrap().unwrap();
                    assert_eq!(row.state, "running");
                    assert!(row.request.unwrap().contains("Activate"));
                    // ... and fsync'd: in group commit (issue 14, speed), a
                    // round of the journal's fsync ran after the intent.
                    assert_eq!(journal.sync_rounds(), 1, "the intent was not fsync'd");
                    sent.borrow_mut().push(key.clone());
                    let _ = request;
                    async move { Ok::<_, String>(format!("ran {key}")) }
                },
                judge,
            )
            .await
            .unwrap();
        assert_eq!(r.unwrap(), "ran d1:web1:activate");
        // A stage whose outcome never came (the controller died).
        let seq = journal
            .intent("d1", "web1", "stage", "d1:web1:stage", "{\"job\":{}}")
            .unwrap();
        let _ = seq;

        // The resume: a new executor on the same journal.
        let exec = Executor::new(&journal, &d);
        let again = exec
            .run(
                out(),
                "web1",
                "activate",
                None,
                |key, _| {
                    sent.borrow_mut().push(key);
                    async { Ok::<_, String>("sent twice".to_string()) }
                },
                judge,
            )
            .await
            .unwrap();
        assert_eq!(
            again.unwrap(),
            "ran d1:web1:activate",
            "the journaled value"
        );
        let stage = exec
            .run(
                out(),
                "web1",
                "stage",
                None,
                |key, _| {
                    sent.borrow_mut().push(key);
                    async { Ok::<_, String>("staged".to_string()) }
                },
                judge,
            )
            .await
            .unwrap();
        assert_eq!(stage.unwrap(), "staged");
        assert_eq!(
            sent.borrow().as_slice(),
            ["d1:web1:activate", "d1:web1:stage"],
            "activate was sent once; the stage was resent under its key"
        );
    }

    /// A step's `step_started` event goes to the deployment's journal with
    /// its intent (issue 14): one the journal cannot take stops the
    /// deployment before the send, as a failed intent does.
    #[tokio::test]
    async fn issue14_a_step_started_event_that_cannot_be_journaled_stops_the_deployment() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        journal
            .create_deployment("d1", "golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        let _readers = crate::deployment::subscribers::attach(tmp.path(), None, "d1")
            .unwrap()
            .expect("the first subscription of d1 in this thread");
        rusqlite::Connection::open(tmp.path().join("golivectl.db"))
            .unwrap()
            .execute_batch("DROP TABLE events;")
            .unwrap();
        let d = deployment();
        let exec = Executor::new(&journal, &d);
        let sent = Cell::new(0);
        let send = |_: String, _: StepRequest| {
            sent.set(sent.get() + 1);
            async { Ok::<_, String>(String::new()) }
        };
        let err = exec
            .run(out(), "web1", "stage", None, send, judge)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StepError::Journal {
                    what: "step_started event",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(sent.get(), 0, "nothing was sent");
        assert!(exec.stopped());
    }

    /// A journal that cannot be written stops the deployment: nothing is
    /// sent, the error is typed, and every later step refuses.
    #[tokio::test]
    async fn issue14_a_failed_journal_write_stops_the_deployment() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        // Another connection takes the steps table away.
        rusqlite::Connection::open(tmp.path().join("golivectl.db"))
            .unwrap()
            .execute_batch("DROP TABLE steps;")
            .unwrap();
        let d = deployment();
        let exec = Executor::new(&journal, &d);
        let sent = Cell::new(0);
        let send = |_: String, _: StepRequest| {
            sent.set(sent.get() + 1);
            async { Ok::<_, String>(String::new()) }
        };
        let err = exec
            .run(out(), "web1", "stage", None, send, judge)
            .await
            .unwrap_err();
        assert!(matches!(err, StepError::Journal { .. }), "{err}");
        assert!(err.to_string().contains("--resume d1"), "{err}");
        let send = |_: String, _: StepRequest| {
            sent.set(sent.get() + 1);
            async { Ok::<_, String>(String::new()) }
        };
        let err = exec
            .run(out(), "web1", "activate", None, send, judge)
            .await
            .unwrap_err();
        assert!(matches!(err, StepError::Stopped { .. }), "{err}");
        assert_eq!(sent.get(), 0, "nothing was sent");
        assert!(exec.stopped());
    }

    /// A record step's outcome is read back on a resume, not run again; a
    /// failure (an `Err`, no value) runs again; a live step runs every
    /// time; a step the compiled deployment does not list (or a
    /// host-changing one) runs nothing.
    #[tokio::test]
    async fn issue14_record_steps_replay_their_outcome_and_live_steps_run_again() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        journal
            .create_deployment("d1", "golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        let d = deployment();
        let ran = Cell::new(0);
        let judge = |r: &Result<u32, String>| match r {
            Ok(v) => ("ok", v.to_string()),
            Err(e) => ("failed", e.clone()),
        };
        let probe = |v: u32| {
            ran.set(ran.get() + 1);
            async move { Ok::<u32, String>(v) }
        };
        let exec = Executor::new(&journal, &d);
        let first = exec
            .record(Scope::Host("web1"), "probe-before", || probe(7), judge)
            .await
            .unwrap();
        assert!(matches!(first, Recorded::Now(Ok(7))), "{first:?}");
        let failed = exec
            .record(
                Scope::Host("web1"),
                "probe",
                || async { Err::<u32, String>("unreachable".into()) },
                judge,
            )
            .await
            .unwrap();
        assert!(matches!(failed, Recorded::Now(Err(_))));
        for _ in 0..2 {
            exec.live("web1", "lock", || probe(0), judge)
                .await
                .unwrap()
                .unwrap();
        }

        // The resume: a new executor on the same journal.
        let exec = Executor::new(&journal, &d);
        let again = exec
            .record(Scope::Host("web1"), "probe-before", || probe(8), judge)
            .await
            .unwrap();
        assert!(matches!(again, Recorded::Before(7)), "{again:?}");
        let retried = exec
            .record(Scope::Host("web1"), "probe", || probe(9), judge)
            .await
            .unwrap();
        assert!(matches!(retried, Recorded::Now(Ok(9))), "{retried:?}");
        exec.live("web1", "lock", || probe(0), judge)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ran.get(), 1 + 2 + 1 + 1, "probe-before ran once");
        let row = journal
            .step_by_key("d1", "d1:web1:probe-before")
            .unwrap()
            .unwrap();
        assert_eq!((row.request, row.outcome.as_deref()), (None, Some("7")));

        for (scope, name) in [
            (Scope::Host("web1"), "activate"),
            (Scope::Host("web1"), "no such step"),
            (Scope::Host("web9"), "probe"),
            (Scope::Wave(0), "soak"),
        ] {
            let err = exec
                .record(scope, name, || probe(1), judge)
                .await
                .unwrap_err();
            assert!(matches!(err, StepError::NotCompiled { .. }), "{err}");
        }
        assert_eq!(ran.get(), 5, "nothing ran that is not compiled");
    }

    /// A deployment compiled before the migrations read, a pause's
    /// decision and the wave's row were compiled steps (an older record,
    /// resumed) runs them journaled as before, again on every run; a
    /// current one replays them.
    #[tokio::test]
    async fn issue14_an_older_compiled_deployment_runs_its_uncompiled_decisions_again() {
        let mut older = deployment();
        for h in &mut older.hosts {
            h.steps
                .retain(|s| s.name != "migrations" && s.name != "decision");
        }
        assert!(older.older() && !deployment().older());
        let ran = Cell::new(0);
        let judge = |r: &Result<u32, String>| ("ok", format!("{r:?}"));
        for (d, runs) in [(&older, 2), (&deployment(), 1)] {
            let tmp = tempfile::tempdir().unwrap();
            let journal = Journal::open(tmp.path()).unwrap();
            journal
                .create_deployment("d1", "golive.toml", "shop", "v2", "ab", "alice")
                .unwrap();
            ran.set(0);
            for _ in 0..2 {
                let exec = Executor::new(&journal, d);
                let read = || async {
                    ran.set(ran.get() + 1);
                    Ok::<u32, String>(1)
                };
                exec.record(Scope::Host("web1"), "migrations", read, judge)
                    .await
                    .unwrap();
            }
            assert_eq!(ran.get(), runs);
        }
    }

    /// A rollback step (planned from the record, not compiled) follows the
    /// executor's rule: intent before the send, a journaled success not
    /// sent again, an intent without outcome resent with its stored
    /// request under its stored key; a compiled step name is refused.
    #[tokio::test]
    async fn issue14_a_planned_rollback_step_is_sent_once_across_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        journal
            .create_deployment("d1", "golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        let d = deployment();
        let request = StepRequest::Upload {
            sha256: "ab".into(),
            bytes: 1,
        };
        let sent = RefCell::new(Vec::new());
        let send = |key: String, _: StepRequest| {
            let row = journal.step_by_key("d1", &key).unwrap().unwrap();
            assert_eq!(row.state, "running", "the intent is on disk first");
            sent.borrow_mut().push(key.clone());
            async move { Ok::<_, String>(key) }
        };
        // A run killed after the intent of web9's rollback.
        journal
            .intent(
                "d1",
                "web9",
                "rollback",
                "rollback:d1:web9",
                &serde_json::to_string(&request).unwrap(),
            )
            .unwrap();
        for _ in 0..2 {
            let exec = Executor::for_rollback(&journal, &d);
            for host in ["web1", "web9"] {
                let key = format!("rollback:d1:{host}");
                let r = exec
                    .run_planned(out(), host, "rollback", &key, request.clone(), send, judge)
                    .await
                    .unwrap();
                assert_eq!(r.unwrap(), key);
            }
        }
        assert_eq!(
            sent.borrow().as_slice(),
            ["rollback:d1:web1", "rollback:d1:web9"],
            "each sent once: web9's intent resent, then both read back"
        );
        let exec = Executor::for_rollback(&journal, &d);
        let err = exec
            .run_planned(out(), "web1", "activate", "k", request, send, judge)
            .await
            .unwrap_err();
        assert!(matches!(err, StepError::NotRunnable { .. }), "{err}");
    }

    /// Every step compile can emit has a resume rule.
    #[test]
    fn issue14_every_compiled_step_has_a_resume_rule() {
        for h in &deployment().hosts {
            for s in &h.steps {
                let rule = on_resume(&s.name)
                    .unwrap_or_else(|| panic!("step {} has no resume rule", s.name));
                // A step with a request is resent; one without is not.
                assert_eq!(rule == OnResume::Resend, s.request.is_some(), "{}", s.name);
            }
        }
    }
}
