//! One executor for every host-changing step (issue 14): journal the intent
//! (idempotency key and request), send, journal the outcome. No request is
//! sent without its intent on disk, and a journal write that fails stops
//! the deployment ([`StepError`]): every later step refuses.
//!
//! On a resumed deployment a step whose success is journaled is not sent
//! again (its journaled outcome is returned), and a step with an intent but
//! no success is resubmitted with its stored request under its stored key:
//! the agent answers with the job it already has, followed to its end.
//!
//! Test-only fault injection: `GOLIVECTL_CRASH_AFTER_STEPS=N` aborts the
//! process right after the Nth journal write of the executor (intent or
//! outcome), so the integration tests can stop a controller at each step
//! boundary (see ARCHITECTURE.md).

use std::cell::Cell;
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
         journal: {source}; the deployment stops here, hosts stay as they are (the agents' leases \
         expire, their watchdogs still protect them). Fix the controller's state directory (disk \
         space, permissions), then `golivectl deploy PLAN --resume {id}`"
    )]
    Journal {
        id: String,
        host: String,
        step: String,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "cannot fsync the intent of step {step} on {host} of deployment {id} to the controller \
         journal: {source}; it was not sent and the deployment stops here, hosts stay as they are \
         (the agents' leases expire, their watchdogs still protect them). Fix the controller's \
         state directory (disk errors, space), then `golivectl deploy PLAN --resume {id}`"
    )]
    Sync {
        id: String,
        host: String,
        step: String,
        source: std::io::Error,
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
        "deployment {id} has no compiled step {step} for {host} (a golivectl bug); nothing was sent"
    )]
    NotCompiled {
        id: String,
        host: String,
        step: String,
    },
}

/// Runs the host-changing steps of one deployment.
pub struct Executor<'a> {
    journal: &'a Journal,
    deployment: &'a Deployment,
    /// A journal write failed: nothing more is sent.
    stopped: Cell<bool>,
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
        }
    }

    pub fn deployment(&self) -> &Deployment {
        self.deployment
    }

    /// Whether a journal write failed (the deployment stops).
    pub fn stopped(&self) -> bool {
        self.stopped.get()
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
        let err = |what: &'static str, source: rusqlite::Error| {
            self.stopped.set(true);
            StepError::Journal {
                id: id.clone(),
                host: host.into(),
                step: name.into(),
                what,
                source,
            }
        };
        if self.stopped.get() {
            return Err(StepError::Stopped {
                id: id.clone(),
                host: host.into(),
                step: name.into(),
            });
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
            None => request.unwrap_or(compiled_request),
        };
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
}
