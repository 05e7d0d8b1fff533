//! `[agent.notify]` and `[apps.APP.notify]` (issue 13, part 6): the webhook
//! the agent posts to itself when its watchdog fires, rolls back, fails or
//! commits, so people learn of it with no controller running.
//!
//! The URL is a secret (a Slack or Mattermost incoming webhook carries its
//! token in the path): it has a hand-written `Debug`, and every message
//! that mentions it shows [`NotifyConfig::redacted_url`] instead.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::ProbeUrl;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `https://hooks.slack.com/services/...` (or `http://` on a trusted
    /// network); receives Slack-compatible JSON (`{"text": ...}` and fields).
    pub webhook: String,
    /// Each attempt's limit, connection to answer.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Attempts in all (1: no retry); between them 1 s, 2 s, 4 s, ...
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// A private CA for an https webhook; default: the system's roots.
    pub ca_file: Option<PathBuf>,
}

fn default_timeout() -> u64 {
    5
}

fn default_attempts() -> u32 {
    3
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("webhook", &self.redacted_url())
            .field("timeout_secs", &self.timeout_secs)
            .field("attempts", &self.attempts)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl NotifyConfig {
    /// The URL as it may be shown: scheme and host only,
    /// `https://hooks.slack.com/***`.
    pub fn redacted_url(&self) -> String {
        redact(&self.webhook)
    }

    /// `text` with the URL, its path and any credentials in it replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.webhook, &self.redacted_url());
        if let Ok(u) = ProbeUrl::parse(&self.webhook)
            && u.path.len() > 1
        {
            out = out.replace(&u.path, "/***");
        }
        out
    }
}

/// `scheme://host[:port]/***` of a URL, or `***` when it has no such shape.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // user:password@host: only the host is shown.
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || scheme.len() > 5 {
        return "***".into();
    }
    format!("{scheme}://{host}/***")
}

/// Checks one notify table; `key` is its dotted path.
pub fn validate(key: &str, n: &NotifyConfig, bad: &mut dyn FnMut(String, String)) {
    if let Err(e) = ProbeUrl::parse(&n.webhook) {
        // The parser quotes the URL; the message must not.
        let why = e.replace(&n.webhook, &n.redacted_url());
        bad(
            format!("{key}.webhook"),
            format!("{why} (the URL is a secret and is never shown whole)"),
        );
    } else if n.webhook.contains('@') {
        bad(
            format!("{key}.webhook"),
            "credentials in the URL (user:password@) are not accepted; a webhook carries its \
             token in the path"
                .into(),
        );
    }
    if !(1..=60).contains(&n.timeout_secs) {
        bad(
            format!("{key}.timeout_secs"),
            "use 1 to 60 seconds for one attempt".into(),
        );
    }
    if !(1..=10).contains(&n.attempts) {
        bad(
            format!("{key}.attempts"),
            "use 1 to 10 attempts in all".into(),
        );
    }
    if let Some(ca) = &n.ca_file
        && !ca.is_file()
    {
        bad(
            format!("{key}.ca_file"),
            format!("{} does not exist or is not a file", ca.display()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(url: &str) -> NotifyConfig {
        NotifyConfig {
            webhook: url.into(),
            timeout_secs: 5,
            attempts: 3,
            ca_file: None,
        }
    }

    #[test]
    fn issue13_the_webhook_url_is_never_shown_whole() {
        let n = notify("https://hooks.slack.com/services/T000/B000/XXXXSECRET");
        assert_eq!(n.redacted_url(), "https://hooks.slack.com/***");
        let debug = format!("{n:?}");
        assert!(!debug.contains("XXXXSECRET"), "{debug}");
        let scrubbed = n.scrub(
            "POST https://hooks.slack.com/services/T000/B000/XXXXSECRET failed; \
             path /services/T000/B000/XXXXSECRET",
        );
        assert!(!scrubbed.contains("XXXXSECRET"), "{scrubbed}");
        assert_eq!(redact("not a url"), "***");
        assert_eq!(redact("http://u:p@host:8080/x"), "http://host:8080/***");

        let mut issues = Vec::new();
        let bad = notify("ftp://hooks.example.com/SECRETPATH");
        validate("agent.notify", &bad, &mut |k, m| issues.push((k, m)));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].0, "agent.notify.webhook");
        assert!(!issues[0].1.contains("SECRETPATH"), "{issues:?}");
    }
}
