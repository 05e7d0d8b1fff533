//! What the server counts in memory (accepted connections, reads answered)
//! and the audit rows of reads, written later in one batch (issue 14).
//!
//! A read (a request the viewer role may send: status, probes, job events,
//! ...) changes nothing, yet its audit row cost an fsync of the journal:
//! two per `golivectl status`, one per probe round and per long-poll of a
//! deployment, and on 500 hosts those flushes were most of the time. So a
//! read's row is kept here and written with the next audit row of a write
//! (one transaction, one flush), or by a flush at most [`READ_AUDIT_DELAY`]
//! after the first pending read, or at the stop. Every request still
//! reaches the audit table; a crash loses at most the last seconds of
//! reads, never a write's row (written at once, before the answer) nor a
//! refusal's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::journal::AuditRecord;
use crate::state::Agent;

/// The longest a read's audit row waits to be written.
pub const READ_AUDIT_DELAY: Duration = Duration::from_secs(10);
/// Pending rows that force a write at once (a burst of reads).
const MAX_PENDING: usize = 1000;

#[derive(Default)]
pub struct Traffic {
    accepted: AtomicU64,
    /// Operation → reads answered successfully.
    reads: Mutex<BTreeMap<String, u64>>,
    /// Audit rows of reads not written yet, in arrival order.
    pending: Mutex<Vec<AuditRecord>>,
}

impl Traffic {
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Read counts by operation, for the metrics.
    pub fn reads(&self) -> BTreeMap<String, u64> {
        lock(&self.reads).clone()
    }

    /// The pending rows, taken.
    fn take(&self) -> Vec<AuditRecord> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A read answered: counted, and its audit row kept for later. The first
/// pending row schedules the flush (no timer runs while nothing waits).
pub fn read(agent: &Arc<Agent>, rec: AuditRecord) {
    let t = &agent.traffic;
    *lock(&t.reads).entry(rec.operation.clone()).or_insert(0) += 1;
    let n = {
        let mut pending = lock(&t.pending);
        pending.push(rec);
        pending.len()
    };
    if n >= MAX_PENDING {
        flush(agent);
    } else if n == 1 {
        let agent = Arc::clone(agent);
        tokio::spawn(async move {
            tokio::time::sleep(READ_AUDIT_DELAY).await;
            flush(&agent);
        });
    }
}

/// A write's (or a refusal's) audit row, now, with the pending reads
/// before it in the same transaction.
pub fn write(agent: &Agent, rec: AuditRecord) {
    let mut rows = agent.traffic.take();
    rows.push(rec);
    store(agent, &rows);
}

/// Writes the pending rows, if any (the flush timer, the stop).
pub fn flush(agent: &Agent) {
    let rows = agent.traffic.take();
    if !rows.is_empty() {
        store(agent, &rows);
    }
}

fn store(agent: &Agent, rows: &[AuditRecord]) {
    if let Err(e) = agent.journal.audit_all(rows) {
        let ops: Vec<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
        tracing::warn!(
            "cannot write the audit record(s) for {}: {e}",
            ops.join(", ")
        );
    }
}
