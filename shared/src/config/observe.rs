//! `[log]` and `[metrics]` (issue 16, parts 5 and 6): how the agent writes
//! its log and whether it also serves its metrics on a plain loopback port.
//!
//! Both are read at start (the subscriber and the listener are set up
//! once); a reload reports a change as waiting for the next restart.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

/// `[log]`; `--log-format` and `--log-level` on the command line win.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    pub level: LogLevel,
}

/// How a log event is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event: time (left out under journald, which stamps
    /// lines itself), level, message, then `key=value` fields.
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `message` and the
    /// event's fields as keys.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{s:?} is not a log format; use \"human\" or \"json\""
            )),
        }
    }
}

/// The least severe level written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "{s:?} is not a log level; use error, warn, info, debug or trace"
            )),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// A loopback `IP:PORT` where `GET /metrics` is also served in plain
    /// HTTP, for a scraper on this host (node_exporter's neighbour). Off
    /// when absent; the mutual-TLS port serves metrics either way.
    pub listen: Option<String>,
}

impl MetricsSection {
    /// The plain port's address, once validated.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }
}

/// `metrics.listen` must be a loopback `IP:PORT`: the plain port has no TLS
/// and no client certificate, so only this host may reach it.
pub fn validate_metrics(m: &MetricsSection, bad: &mut dyn FnMut(String, String)) {
    let Some(listen) = &m.listen else { return };
    match listen.parse::<SocketAddr>() {
        Err(_) => bad(
            "metrics.listen".into(),
            format!("{listen:?} is not an IP:PORT address; write e.g. \"127.0.0.1:9102\""),
        ),
        Ok(addr) if !addr.ip().is_loopback() => bad(
            "metrics.listen".into(),
            format!(
                "{listen:?} is not a loopback address: the plain metrics port has no TLS and no \
                 authentication, so it may only listen on 127.0.0.1 or [::1] (e.g. \
                 \"127.0.0.1:9102\"); a scraper on another host reads GET /metrics on the \
                 agent's mutual-TLS port with a viewer certificate"
            ),
        ),
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        validate_metrics(
            &MetricsSection {
                listen: Some(listen.into()),
            },
            &mut |k, m| out.push((k, m)),
        );
        out
    }

    #[test]
    fn issue16_the_plain_metrics_port_is_loopback_only() {
        assert!(check("127.0.0.1:9102").is_empty());
        assert!(check("[::1]:9102").is_empty());
        assert!(check("127.3.4.5:9102").is_empty());
        for wrong in ["0.0.0.0:9102", "192.0.2.7:9102", "[::]:9102"] {
            let issues = check(wrong);
            assert_eq!(issues.len(), 1, "{wrong}");
            assert_eq!(issues[0].0, "metrics.listen");
            assert!(issues[0].1.contains("loopback"), "{:?}", issues[0]);
            assert!(issues[0].1.contains("127.0.0.1:9102"), "{:?}", issues[0]);
        }
        assert!(check("localhost:9102")[0].1.contains("not an IP:PORT"));
    }

    #[test]
    fn issue16_log_format_and_level_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().unwrap_err().contains("human"));
        assert_eq!("debug".parse::<LogLevel>(), Ok(LogLevel::Debug));
        assert!(LogLevel::Warn < LogLevel::Info);
    }
}
