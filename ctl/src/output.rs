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

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}
