//! The watchdog's own webhook (issue 13, part 6): when it fires, rolls back,
//! fails or commits, the agent POSTs Slack-compatible JSON (`{"text": ...}`
//! plus fields) to the URL its config declares, so people learn of it with
//! no controller running.
//!
//! Each notice is its own task: it never blocks or delays the rollback.
//! Every attempt is bounded (`timeout_secs`, connection to answer), with
//! `attempts` in all and 1 s, 2 s, 4 s ... between them; a 4xx other than
//! 408/429 is not retried (the receiver refuses the notice itself). The URL
//! is a secret: the log, the journal and status only ever show
//! [`golive_shared::config::NotifyConfig::redacted_url`], and errors are
//! scrubbed of it. The delivery itself is [`golive_shared::notify::deliver`].

use std::sync::Arc;

use golive_shared::protocol::{UnixMillis, WatchdogState};
use golive_shared::timefmt::utc;

// The delivery (bounds, retries, scrubbing) is golive-shared's: golivectl's
// webhooks go out through the same code.
pub use golive_shared::notify::deliver;

use crate::state::Agent;

/// What happened, for the webhook.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The watchdog's journal row (the delivery outcome is journaled
    /// there); `None` for a host rollback the watchdog did not start (the
    /// outcome is logged).
    pub watchdog: Option<i64>,
    /// `fired`, `rolled_back`, `rollback_failed`, `committed`, `commit_failed`.
    pub event: WatchdogState,
    pub app: String,
    pub deployment: String,
    pub release: String,
    pub rollback_to: Option<String>,
    /// Why it fired, or why it commits.
    pub reason: String,
    /// What happened then ("rolled back from v2 to v1 (job 7)").
    pub detail: Option<String>,
    pub at: UnixMillis,
}

/// The body posted: Slack reads `text`; the fields are for other receivers.
pub fn body(host: &str, n: &Notice) -> serde_json::Value {
    let what = match n.event {
        WatchdogState::Fired => format!(
            "watchdog fired: rolling {} back from {} to {}",
            n.app,
            n.release,
            n.rollback_to.as_deref().unwrap_or("(no earlier release)")
        ),
        WatchdogState::RolledBack => format!(
            "rolled back {} from {} to {}",
            n.app,
            n.release,
            n.rollback_to.as_deref().unwrap_or("?")
        ),
        WatchdogState::RollbackFailed => format!(
            "ROLLBACK FAILED for {} (release {}): the host needs a human",
            n.app, n.release
        ),
        WatchdogState::Committed => format!("committed {} release {}", n.app, n.release),
        WatchdogState::CommitFailed => format!(
            "commit of {} release {} FAILED (it stays live)",
            n.app, n.release
        ),
        other => format!("watchdog of {} is {}", n.app, other.as_str()),
    };
    serde_json::json!({
        "text": format!(
            "golive on {host}: {what} (deployment {}): {}",
            n.deployment, n.reason
        ),
        "event": n.event.as_str(),
        "app": n.app,
        "host": host,
        "deployment": n.deployment,
        "release": n.release,
        "rollback_to": n.rollback_to,
        "reason": n.reason,
        "detail": n.detail,
        "time": utc(n.at),
    })
}

/// Posts `notice` on its own task, when the app has a webhook.
pub fn send(agent: &Arc<Agent>, notice: Notice) {
    let Some(cfg) = agent.config().notify_for(&notice.app).cloned() else {
        return;
    };
    let agent = Arc::clone(agent);
    tokio::spawn(async move {
        let host = agent.config().agent.name.clone();
        let json = body(&host, &notice).to_string().into_bytes();
        let (line, ok) = deliver(&cfg, json).await;
        let line = format!(
            "webhook {} ({}): {line}",
            cfg.redacted_url(),
            notice.event.as_str()
        );
        if ok {
            tracing::info!(app = %notice.app, "{line}");
        } else {
            tracing::warn!(app = %notice.app, "{line}");
        }
        if let Some(w) = notice.watchdog {
            let _ = agent.journal.watchdog_event(
                w,
                golive_shared::protocol::now_millis(),
                "notify",
                &line,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue13_the_webhook_body_is_slack_compatible_with_fields() {
        let n = Notice {
            watchdog: Some(1),
            event: WatchdogState::RolledBack,
            app: "shop".into(),
            deployment: "d1".into(),
            release: "v2".into(),
            rollback_to: Some("v1".into()),
            reason: "trigger health held".into(),
            detail: Some("rolled back from v2 to v1 (job 7)".into()),
            at: 1_795_412_882_000,
        };
        let b = body("web1", &n);
        assert_eq!(
            b["text"],
            "golive on web1: rolled back shop from v2 to v1 (deployment d1): trigger health held"
        );
        for (k, v) in [
            ("event", "rolled_back"),
            ("app", "shop"),
            ("host", "web1"),
            ("deployment", "d1"),
            ("release", "v2"),
            ("rollback_to", "v1"),
            ("reason", "trigger health held"),
            ("detail", "rolled back from v2 to v1 (job 7)"),
        ] {
            assert_eq!(b[k], v, "{k}");
        }
        assert!(b["time"].as_str().unwrap().ends_with('Z'));
    }
}
