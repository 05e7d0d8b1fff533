//! A recorded deployment's readers of its event stream besides the view
//! (issue 14): the controller journal's `events` table ([`JournalSink`])
//! and the plan's `[[notify]]` notices ([`crate::notify::Notifier`]).
//! [`attach`] subscribes both for one deployment while a command runs it
//! (deploy, `--resume`, rollback, go / no-go).
//!
//! They share one connection of their own to the journal (the events come
//! from concurrent tasks and the upload's progress callback, where the
//! command's own connection cannot go). It is in group commit like the
//! executor's: the executor's fsync before each host-changing request
//! covers the events written before it (one WAL), and the rest are synced
//! when the subscription ends.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::events::Event;
use crate::journal::Journal;
use crate::plan::Plan;
use crate::progress::{Subscriber, Subscription};

/// Records each event of one deployment in the journal, as printed.
pub struct JournalSink {
    deployment: String,
    journal: Arc<Mutex<Journal>>,
    /// A write failed once: said once on stderr.
    warned: AtomicBool,
}

impl Subscriber for JournalSink {
    fn event(&self, event: &Event, line: &str) -> rusqlite::Result<()> {
        let r = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_event(&self.deployment, event.kind(), line)
            .map(drop);
        if let Err(e) = &r
            && !self.warned.swap(true, Ordering::SeqCst)
        {
            eprintln!(
                "golivectl: cannot record the events of deployment {} in the controller journal: \
                 {e}; its record (`golivectl show {}`) lacks them from here, and no host-changing \
                 step is sent without its event on disk. Fix the controller's state directory \
                 (disk space, permissions)",
                self.deployment, self.deployment
            );
        }
        r
    }
}

/// Subscribes the journal and `plan`'s notices (without a plan: the
/// journal only) to deployment `id`'s events until the returned
/// subscription is dropped (`None`: they already are, by the command that
/// runs this one).
pub fn attach(state: &Path, plan: Option<&Plan>, id: &str) -> anyhow::Result<Option<Subscription>> {
    let journal = Journal::open(state)?;
    journal.group_commit()?;
    let journal = Arc::new(Mutex::new(journal));
    let mut subscribers: Vec<Arc<dyn Subscriber>> = vec![Arc::new(JournalSink {
        deployment: id.to_string(),
        journal: Arc::clone(&journal),
        warned: AtomicBool::new(false),
    })];
    if let Some(plan) = plan.filter(|p| !p.notify.is_empty()) {
        subscribers.push(Arc::new(crate::notify::Notifier {
            deployment: id.to_string(),
            list: plan.notify.clone(),
            zone: plan.window.as_ref().map(|w| w.tz().clone()),
            journal,
        }));
    }
    Ok(crate::progress::subscribe(id, subscribers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, Out};

    /// While attached, every event of the deployment is journaled as the
    /// NDJSON line the view prints, in order, and upload progress as
    /// thinned as that view; once detached, nothing more.
    #[test]
    fn issue14_the_journal_gets_the_printed_events() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        journal
            .create_deployment("d9", "golive.toml", "shop", "v2", "ab", "alice")
            .unwrap();
        let journal = Arc::new(Mutex::new(journal));
        let sink: Arc<dyn Subscriber> = Arc::new(JournalSink {
            deployment: "d9".into(),
            journal: Arc::clone(&journal),
            warned: AtomicBool::new(false),
        });
        let out = Out {
            format: Format::Human,
        };
        let sub = crate::progress::subscribe("d9", vec![sink]).expect("first");
        assert!(
            crate::progress::subscribe("d9", Vec::new()).is_none(),
            "one subscription per deployment"
        );
        crate::progress::emit(
            out,
            Event::StepStarted {
                host: "web1".into(),
                step: "stage".into(),
            },
        );
        crate::progress::emit(out, Event::step("web1", "stage", "ok", "staged v2"));
        drop(sub);
        crate::progress::emit(out, Event::step("web1", "activate", "ok", ""));
        let rows = journal.lock().unwrap().events("d9").unwrap();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["step_started", "step"]);
        assert_eq!(rows[1].event["detail"], "staged v2");
        assert!(rows[1].event["elapsed_ms"].is_u64(), "stamped before");
        assert!(rows[0].seq < rows[1].seq);
    }

    /// A journal that cannot take the event: the emitter that asks is told.
    #[test]
    fn issue14_a_failed_event_write_is_returned() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::open(tmp.path()).unwrap();
        rusqlite::Connection::open(tmp.path().join("golivectl.db"))
            .unwrap()
            .execute_batch("DROP TABLE events;")
            .unwrap();
        let sink: Arc<dyn Subscriber> = Arc::new(JournalSink {
            deployment: "d10".into(),
            journal: Arc::new(Mutex::new(journal)),
            warned: AtomicBool::new(false),
        });
        let _sub = crate::progress::subscribe("d10", vec![sink]).expect("first");
        let out = Out {
            format: Format::Human,
        };
        let r = crate::progress::emit_recorded(
            out,
            Event::StepStarted {
                host: "web1".into(),
                step: "activate".into(),
            },
        );
        assert!(r.is_err(), "{r:?}");
    }
}
