//! Webhook delivery, the same for the agent's watchdog (issue 13) and
//! golivectl's deployment notices (issue 14): Slack-compatible JSON POSTed
//! to the configured URL with [`crate::http`].
//!
//! Every attempt is bounded (`timeout_secs`, connection to answer), with
//! `attempts` in all and 1 s, 2 s, 4 s ... between them; a 4xx other than
//! 408/429 is not retried (the receiver refuses the notice itself). The URL
//! is a secret: errors are scrubbed of it ([`NotifyConfig::scrub`]).

use std::time::Duration;

use crate::config::{NotifyConfig, ProbeUrl};

/// Attempts the POST; returns what happened (scrubbed) and whether it was
/// delivered.
pub async fn deliver(cfg: &NotifyConfig, json: Vec<u8>) -> (String, bool) {
    let url = match ProbeUrl::parse(&cfg.webhook) {
        Ok(u) => u,
        // Validated with the config; kept for a config built elsewhere.
        Err(e) => return (format!("not sent: {}", cfg.scrub(&e)), false),
    };
    let limit = Duration::from_secs(cfg.timeout_secs);
    let mut last = String::new();
    for attempt in 1..=cfg.attempts {
        if attempt > 1 {
            let pause = Duration::from_secs(1 << (attempt - 2).min(5));
            tokio::time::sleep(pause).await;
        }
        let outcome = tokio::time::timeout(
            limit,
            crate::http::post_json(&url, cfg.ca_file.as_deref(), json.clone()),
        )
        .await;
        match outcome {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                return (
                    format!("delivered (HTTP {status}, attempt {attempt})"),
                    true,
                );
            }
            Ok(Ok(status)) if status >= 500 || status == 408 || status == 429 => {
                last = format!("answered HTTP {status}");
            }
            Ok(Ok(status)) => {
                return (
                    format!("refused with HTTP {status} (attempt {attempt}); not retried"),
                    false,
                );
            }
            Ok(Err(e)) => last = cfg.scrub(&e),
            Err(_) => last = format!("no answer within {} s", cfg.timeout_secs),
        }
    }
    (
        format!("not delivered after {} attempt(s): {last}", cfg.attempts),
        false,
    )
}
