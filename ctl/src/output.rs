//! Output: a human view on the terminal, or `--output json` (one JSON object,
//! or NDJSON events for long-running commands), and the SPEC §7 exit codes.

use std::process::ExitCode;

use serde::Serialize;

/// SPEC §7 exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// 0: done.
    Done,
    /// 1: failed.
    Failed,
    /// 2: bad usage, config or input; nothing changed.
    Usage,
    /// 3: rolled back.
    RolledBack,
    /// 4: paused awaiting a decision.
    Paused,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::RolledBack => 3,
            Exit::Paused => 4,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// A usage error: printed as is, exit 2, nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Where command output goes. Quiet mode (the demo's inner commands) prints
/// only human lines the caller asks for.
#[derive(Clone, Copy)]
pub struct Out {
    pub format: Format,
}

impl Out {
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// A human line (skipped in JSON mode); above the live progress lines
    /// when they are drawn (`crate::progress`).
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.json() {
            crate::progress::line(text.as_ref());
        }
    }

    /// A deployment event: an NDJSON line in JSON mode, the live lines'
    /// update on a terminal (its human text is the caller's `line`).
    pub fn emit(&self, event: crate::deployment::events::Event) {
        crate::progress::emit(*self, event);
    }

    /// [`Out::emit`], returning a journal subscriber's failure to record
    /// it (`crate::progress::emit_recorded`).
    pub fn emit_recorded(&self, event: crate::deployment::events::Event) -> rusqlite::Result<()> {
        crate::progress::emit_recorded(*self, event)
    }

    /// One JSON value on its own line (skipped in human mode).
    pub fn event<T: Serialize>(&self, value: &T) {
        if self.json()
            && let Ok(line) = serde_json::to_string(value)
        {
            crate::progress::print_line(&line);
        }
    }
}

/// A configured length of time, exactly, in the largest unit that divides
/// it: "0 s", "90 s", "10 min", "2 h", "1 d", "1500 ms" (a bound in a
/// message, a soak, a watchdog window, a timeline's tick).
pub fn span(ms: u64) -> String {
    match ms {
        0 => "0 s".into(),
        ms if ms % 86_400_000 == 0 => format!("{} d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_exact_in_its_largest_unit() {
        assert_eq!(span(0), "0 s");
        assert_eq!(span(90_000), "90 s");
        assert_eq!(span(600_000), "10 min");
        assert_eq!(span(3_720_000), "62 min");
        assert_eq!(span(7_200_000), "2 h");
        assert_eq!(span(86_400_000), "1 d");
        assert_eq!(span(1500), "1500 ms");
    }
}
