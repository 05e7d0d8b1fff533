//! The request/response protocol, by message family.
//!
//! Every HTTP body is one [`Request`] or one [`Response`] framed by
//! [`crate::codec`]. With bincode the *order* of enum variants and struct
//! fields is the format: append new variants at the end, never reorder, and
//! bump [`PROTOCOL_VERSION`] for any other change. The golden fixtures in
//! `shared/tests/data/` fail when an encoding changes by accident.
//!
//! Artifact uploads are the one exception to "one framed body": they stream
//! as raw bytes to `PUT /v1/artifacts/<sha256>` (see [`artifact`]) so that
//! neither side holds an artifact in memory.

pub mod agent;
pub mod artifact;
pub mod backup;
pub mod flag;
pub mod job;
pub mod lock;
pub mod maintenance;
pub mod migration;
pub mod preflight;
pub mod probe;
pub mod release;
pub mod rollback;
pub mod watchdog;

pub use agent::*;
pub use artifact::*;
pub use backup::*;
pub use flag::*;
pub use job::*;
pub use lock::*;
pub use maintenance::*;
pub use migration::*;
pub use preflight::*;
pub use probe::*;
pub use release::*;
pub use rollback::*;
pub use watchdog::*;

use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of the encoded types.
pub const PROTOCOL_VERSION: u16 = 4;

/// HTTP path of the framed request/response endpoint.
pub const RPC_PATH: &str = "/v1/rpc";
/// HTTP path prefix for streamed artifact uploads: `PUT /v1/artifacts/<sha256>`.
pub const ARTIFACT_PATH: &str = "/v1/artifacts/";
/// Header carrying the declared artifact size on upload.
pub const SIZE_HEADER: &str = "x-golive-size";
/// Header carrying the client's protocol version on upload (raw bodies have no frame).
pub const PROTOCOL_HEADER: &str = "x-golive-protocol";

/// Everything a controller can ask an agent. Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Hello(HelloRequest),
    Status(StatusRequest),
    SubmitJob(SubmitJob),
    JobEvents(JobEventsRequest),
    ListJobs(ListJobsRequest),
    Lock(LockRequest),
    RunProbes(RunProbesRequest),
    HasArtifact(HasArtifactRequest),
    ListBackups(ListBackupsRequest),
    MigrationStatus(MigrationStatusRequest),
    ListFlags(ListFlagsRequest),
    Preflight(PreflightRequest),
    ArmWatchdog(ArmWatchdog),
    ConfirmWatchdog(ConfirmWatchdog),
    DisarmWatchdog(DisarmWatchdog),
    WatchdogStatus(WatchdogStatusRequest),
}

impl Request {
    /// A short operation name for the audit table and error messages.
    pub fn operation(&self) -> String {
        match self {
            Request::Hello(_) => "hello".into(),
            Request::Status(_) => "status".into(),
            Request::SubmitJob(s) => format!("job.submit:{}", s.spec.kind()),
            Request::JobEvents(_) => "job.events".into(),
            Request::ListJobs(_) => "job.list".into(),
            Request::Lock(l) => format!("lock.{}", l.verb()),
            Request::RunProbes(_) => "probe.run".into(),
            Request::HasArtifact(_) => "artifact.has".into(),
            Request::ListBackups(_) => "backup.list".into(),
            Request::MigrationStatus(_) => "migration.status".into(),
            Request::ListFlags(_) => "flag.list".into(),
            Request::Preflight(p) if p.probes_only => "preflight.probes".into(),
            Request::Preflight(_) => "preflight".into(),
            Request::ArmWatchdog(_) => "watchdog.arm".into(),
            Request::ConfirmWatchdog(_) => "watchdog.confirm".into(),
            Request::DisarmWatchdog(_) => "watchdog.disarm".into(),
            Request::WatchdogStatus(_) => "watchdog.status".into(),
        }
    }
}

/// Everything an agent answers. Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Error(ErrorBody),
    Hello(HelloResponse),
    Status(StatusResponse),
    Job(JobInfo),
    Events(JobEventsResponse),
    Jobs(Vec<JobInfo>),
    Lock(LockResponse),
    Probes(ProbeReport),
    Artifact(ArtifactInfo),
    Backups(Vec<BackupInfo>),
    MigrationStatus(MigrationStatus),
    Flags(Vec<FlagState>),
    Preflight(PreflightReport),
    /// Answer to arming, confirming and disarming.
    Watchdog(WatchdogInfo),
    /// Answer to `WatchdogStatus`: `None` when the app was never armed.
    WatchdogStatus(Option<WatchdogInfo>),
}

/// A refusal or failure, with a message that names the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Error classes. Each maps to one HTTP status and one controller exit code.
/// Append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed or names something invalid (exit 2).
    BadRequest,
    /// The certificate's role does not allow the operation (exit 2).
    Forbidden,
    /// The named app, job, release or artifact does not exist (exit 2).
    NotFound,
    /// The app is locked by another deployment (exit 2).
    Locked,
    /// A body or artifact exceeds a configured limit (exit 2).
    TooLarge,
    /// The peers speak different protocol versions (exit 2).
    VersionMismatch,
    /// The idempotency key was already used for a different request (exit 2).
    Conflict,
    /// The agent failed while doing something it should be able to do (exit 1).
    Internal,
    /// The certificate serial is on the agent's deny list (exit 2).
    Revoked,
    /// The request did not arrive within the agent's deadline (exit 2).
    Timeout,
    /// The app's config does not declare the feature asked about (feature
    /// flags, migrations): nothing to act on, and nothing changed (exit 2).
    /// The controller tells "declares none" from other refusals by this
    /// code, never by the message's text.
    NotDeclared,
}

impl ErrorCode {
    /// The controller's SPEC §7 exit code for this class: 1 when the agent
    /// failed at something it should be able to do (something may have
    /// changed), 2 for every refusal (nothing changed; the fix is the
    /// operator's).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorCode::Internal => 1,
            _ => 2,
        }
    }

    /// The HTTP status the agent answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Forbidden | ErrorCode::Revoked => 403,
            ErrorCode::NotFound | ErrorCode::NotDeclared => 404,
            ErrorCode::Locked | ErrorCode::Conflict => 409,
            ErrorCode::Timeout => 408,
            ErrorCode::TooLarge => 413,
            ErrorCode::VersionMismatch => 426,
            ErrorCode::Internal => 500,
        }
    }
}

/// Milliseconds since the Unix epoch, the only time type on the wire.
pub type UnixMillis = i64;

/// Now, in [`UnixMillis`].
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What separates a failing program's error from the last lines of its
/// output in a job's error text (hooks, commands, the migration command):
/// the controller streams that output as log lines already, and shows only
/// the part before this on a terminal.
pub const OUTPUT_TAIL_MARKER: &str = "; last output:\n";

/// `error` without the program output appended after
/// [`OUTPUT_TAIL_MARKER`].
pub fn error_headline(error: &str) -> &str {
    error
        .split_once(OUTPUT_TAIL_MARKER)
        .map_or(error, |(head, _)| head)
}

/// `error` with `more` (e.g. "; nothing was switched") added to its
/// message, before the output tail when there is one, so that cutting the
/// tail off never cuts what happened next.
pub fn error_with(error: &str, more: &str) -> String {
    match error.split_once(OUTPUT_TAIL_MARKER) {
        Some((head, tail)) => format!("{head}{more}{OUTPUT_TAIL_MARKER}{tail}"),
        None => format!("{error}{more}"),
    }
}

#[cfg(test)]
mod error_text_tests {
    use super::*;

    #[test]
    fn issue12_the_output_tail_stays_last() {
        let e = "hook x failed: exit 7; last output:\nboom\nbang";
        let e = error_with(e, "; nothing was switched");
        assert_eq!(
            e,
            "hook x failed: exit 7; nothing was switched; last output:\nboom\nbang"
        );
        assert_eq!(
            error_headline(&e),
            "hook x failed: exit 7; nothing was switched"
        );
        assert_eq!(error_with("plain", "; more"), "plain; more");
        assert_eq!(error_headline("plain"), "plain");
    }
}
