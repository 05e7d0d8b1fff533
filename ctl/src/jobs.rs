//! The job helpers every command shares: submit a job and follow it to its
//! end (reattaching through lost connections, bounded by a deadline), a
//! finished job's summary or failure and its exit code, a step's line and
//! event, and the small lookups several commands make (a deployment by id,
//! a reused release id, an agent's status).

use std::path::Path;
use std::time::Duration;

use golive_shared::protocol::{
    Availability, EventKind, JobEventsRequest, JobInfo, JobResult, JobSpec, JobState, Request,
    Response, SubmitJob, error_headline,
};
use golive_shared::protocol::{DatabaseChoice, HostRolledBack, StepState};
use golive_shared::protocol::{StatusRequest, StatusResponse};
use golive_shared::timefmt::utc;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::client::ClientError;
use crate::deployment::DeployError;
use crate::deployment::events::Event;
use crate::journal::Journal;
use crate::output::{Out, usage};
use crate::plan::Plan;
use crate::transport::Link;

/// How often a long-poll may fail in a row before the controller gives up
/// following a job (the job itself keeps running on the agent).
pub(crate) const MAX_REATTACH: u32 = 30;
/// The pause between two attempts to reattach.
pub(crate) const REATTACH_EVERY: Duration = Duration::from_secs(2);
/// How long a job is followed through an unreachable agent by default: the
/// [`MAX_REATTACH`] attempts' worth.
pub(crate) const LOST_FOR: Duration = Duration::from_secs(2 * MAX_REATTACH as u64);

/// How long a host may stay silent before it counts as unreachable, and
/// the limit's name for the message (issue 14). Every call to a host in a
/// wave is bounded by it, so a host that hangs (a stopped agent accepts
/// connections and never answers) fails within it instead of hanging the
/// wave.
#[derive(Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) after: Duration,
    pub(crate) name: &'static str,
}

/// Following a job outside a deployment (`golivectl follow`, the other
/// commands' jobs).
pub(crate) const LOST: Deadline = Deadline {
    after: LOST_FOR,
    name: "golivectl's limit for a lost agent",
};

impl Deadline {
    /// `[deploy] host_timeout_secs`.
    pub(crate) fn of(plan: &Plan) -> Deadline {
        Deadline {
            after: plan.host_timeout,
            name: "deadline host_timeout_secs",
        }
    }

    /// "agent HOST at ADDR: HOST unreachable for N s (deadline host_timeout_secs)".
    pub(crate) fn unreachable(self, client: &Link) -> ClientError {
        ClientError::Transport {
            host: client.host.clone(),
            addr: client.addr.clone(),
            detail: format!(
                "{} unreachable for {} s ({})",
                client.host,
                self.after.as_secs(),
                self.name
            ),
        }
    }

    /// Whether the host does not answer at all now (a `hello` within the
    /// deadline): an agent that answers, even with a refusal, is not lost.
    pub(crate) async fn lost(self, client: &Link) -> bool {
        let hello = Request::Hello(golive_shared::protocol::HelloRequest {
            client_version: env!("CARGO_PKG_VERSION").into(),
        });
        let r = self
            .bound(client, Duration::ZERO, client.call(&hello))
            .await;
        matches!(r, Err(e) if !matches!(e, ClientError::Agent { .. }))
    }

    /// `call`, or [`Deadline::unreachable`] once `extra` plus the deadline
    /// passed without its answer (`extra`: how long the agent was asked to
    /// hold the answer, a long-poll's wait).
    pub(crate) async fn bound<T>(
        self,
        client: &Link,
        extra: Duration,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.after + extra, call).await {
            Ok(r) => r,
            Err(_) => Err(self.unreachable(client)),
        }
    }
}

/// sha256 and size of a file, streamed.
pub async fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// An error without the program output the agent appended to it: on a
/// terminal that output was just streamed line by line, so repeating it in
/// every line that mentions the failure printed it four times (issue 12).
/// The step's JSON event and its record keep the whole text; outcome
/// messages are built from [`error_headline`] only.
pub fn headline(error: &str) -> std::borrow::Cow<'_, str> {
    let head = error_headline(error);
    if head.len() < error.len() {
        format!("{head} (its output is above)").into()
    } else {
        error.into()
    }
}

/// Reports one step on both outputs.
pub(crate) fn step(out: Out, host: &str, name: &str, state: &str, detail: &str) {
    out.line(format!(
        "[{host}] {name}: {state}{}",
        if detail.is_empty() {
            String::new()
        } else {
            format!(" — {}", headline(detail))
        }
    ));
    out.emit(Event::step(host, name, state, detail));
}

/// Submits a job (idempotently) and follows it to its end.
pub async fn run_job(
    out: Out,
    client: &Link,
    key: String,
    lease: Option<String>,
    spec: JobSpec,
) -> Result<JobInfo, ClientError> {
    run_job_within(out, client, key, lease, spec, LOST).await
}

/// [`run_job`], giving up on a host that stays unreachable for `lost_for`
/// (`[deploy] host_timeout_secs`, issue 14): the submission must be
/// answered within it, and the job's events while it is followed.
pub(crate) async fn run_job_within(
    out: Out,
    client: &Link,
    key: String,
    lease: Option<String>,
    spec: JobSpec,
    lost_for: Deadline,
) -> Result<JobInfo, ClientError> {
    let submit = Request::SubmitJob(SubmitJob {
        idempotency_key: key,
        lease,
        spec,
    });
    let job = match lost_for
        .bound(client, Duration::ZERO, client.call(&submit))
        .await?
    {
        Response::Job(j) => j,
        other => return Err(client.unexpected(&other)),
    };
    if job.deduplicated {
        out.line(format!(
            "[{}] job {} already submitted with this key: following it, not running it again",
            client.host, job.id
        ));
    }
    follow_within(out, client, job.id, lost_for).await
}

/// Follows a job's events by long-poll until it ends; reattaches after
/// connection failures (the job keeps running on the agent meanwhile).
pub async fn follow(out: Out, client: &Link, job_id: u64) -> Result<JobInfo, ClientError> {
    follow_within(out, client, job_id, LOST).await
}

/// [`follow`], giving up once the agent has been unreachable for `lost_for`:
/// refusing connections that long, or silent that long beyond the
/// long-poll's wait (a stopped agent accepts connections and never answers).
pub(crate) async fn follow_within(
    out: Out,
    client: &Link,
    job_id: u64,
    lost_for: Deadline,
) -> Result<JobInfo, ClientError> {
    // The agent holds a long-poll up to `wait`: at most half the deadline,
    // so a silent agent is told from a waiting one within 1.5 × the deadline.
    let wait = (lost_for.after / 2).clamp(Duration::from_millis(500), Duration::from_secs(20));
    let lost_for_secs = lost_for.after;
    let mut after = 0;
    let mut failures = 0;
    // Since when the agent has not answered (reset by an answer).
    let mut lost_since: Option<std::time::Instant> = None;
    let tty = !out.json() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    // (started, on a progress line) for the live progress display.
    let mut progress: Option<(std::time::Instant, bool)> = None;
    loop {
        let req = Request::JobEvents(JobEventsRequest {
            job_id,
            after_seq: after,
            wait_ms: wait.as_millis() as u64,
        });
        let left = lost_for
            .after
            .saturating_sub(lost_since.map_or(Duration::ZERO, |s| s.elapsed()));
        let answer = tokio::time::timeout(wait + left, client.call(&req)).await;
        let Ok(answer) = answer else {
            return Err(lost_for.unreachable(client));
        };
        match answer {
            Ok(Response::Events(ev)) => {
                failures = 0;
                lost_since = None;
                for e in &ev.events {
                    after = after.max(e.seq);
                    match &e.kind {
                        EventKind::Log { line, .. } => {
                            if let Some((_, on_line @ true)) = progress.as_mut() {
                                println!();
                                *on_line = false;
                            }
                            out.line(format!("[{}]   {line}", client.host));
                            out.emit(Event::Log {
                                host: client.host.clone(),
                                job: job_id,
                                line: line.clone(),
                            });
                        }
                        EventKind::Progress { step, done, total } => {
                            out.emit(Event::Progress {
                                host: client.host.clone(),
                                job: job_id,
                                step: step.clone(),
                                done: *done,
                                total: *total,
                            });
                            if tty {
                                let (since, on_line) =
                                    progress.get_or_insert((std::time::Instant::now(), false));
                                let secs = since.elapsed().as_secs_f64().max(0.001);
                                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                                print!(
                                    "\r[{}]   {step}: {:.1} MiB of ~{:.1} MiB ({:.1} MiB/s)   ",
                                    client.host,
                                    mib(*done),
                                    mib(*total),
                                    mib(*done) / secs
                                );
                                let _ = std::io::Write::flush(&mut std::io::stdout());
                                *on_line = true;
                            }
                        }
                        EventKind::Finished { .. } => {}
                    }
                }
                if followed_to_the_end(&ev) {
                    return Ok(ev.job);
                }
            }
            Ok(other) => return Err(client.unexpected(&other)),
            Err(e @ ClientError::Agent { .. }) => return Err(e),
            Err(e) => {
                failures += 1;
                let lost = lost_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed();
                if failures > MAX_REATTACH || lost >= lost_for_secs {
                    return Err(e);
                }
                let wait = REATTACH_EVERY.min(lost_for_secs - lost);
                out.line(format!(
                    "[{}] lost the agent while following job {job_id} ({e}); reattaching in {:.1}s ({failures}/{MAX_REATTACH}, gives up after {}s)",
                    client.host,
                    wait.as_secs_f64(),
                    lost_for_secs.as_secs()
                ));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether a long-poll's answer ends the follow: the job is final and no
/// event of it is left unread. The agent writes a job's `Finished` event
/// last, after its final state, so an answer that carries it has them all:
/// the follow ends there instead of asking once more for an empty page (a
/// round trip per job, two per host in a deployment; issue 14, speed).
pub(crate) fn followed_to_the_end(ev: &golive_shared::protocol::JobEventsResponse) -> bool {
    ev.job.state.is_final()
        && (ev.events.is_empty()
            || matches!(
                ev.events.last().map(|e| &e.kind),
                Some(EventKind::Finished { .. })
            ))
}

/// Phase 1's look at a release id a host already has (issue 12): refused
/// when that release went live there (or is current, or golive does not
/// know it); a note when it is only staged and never went live, since
/// staging replaces such a release.
pub(crate) fn reused_id(
    host: &str,
    app_name: &str,
    app: &golive_shared::protocol::AppStatus,
    id: &str,
) -> Result<Option<String>, String> {
    let Some(r) = app.releases.iter().find(|r| r.id == id) else {
        return Ok(None);
    };
    let fix = "give this release a new id ([release] id = ...)";
    if app.current.as_deref() == Some(id) || r.activated_at.is_some() {
        return Err(format!(
            "host {host} already has release {id} of {app_name}, and it went live there{}; {fix}",
            r.activated_at
                .map(|at| format!(" (last at {})", utc(at)))
                .unwrap_or_default()
        ));
    }
    let Some(staged_at) = r.staged_at else {
        return Err(format!(
            "host {host} has a directory releases/{id} of {app_name} that golive did not stage; \
             move it aside on the host, or {fix}"
        ));
    };
    Ok(Some(format!(
        "host {host} has release {id} staged at {} but it never went live (a refused or failed \
         deployment left it): staging replaces it",
        utc(staged_at)
    )))
}

/// A length in seconds as [`crate::output::span`] writes it: "30 min",
/// "90 s".
pub fn human_secs(secs: u64) -> String {
    crate::output::span(secs.saturating_mul(1000))
}

/// "; not answering 1020 ms (longest 1020 ms, probe health)" for a step's
/// detail, or nothing when the switch was not sampled.
pub(crate) fn availability_detail(a: Option<&Availability>) -> String {
    match a {
        None => String::new(),
        Some(a) if a.in_maintenance => "; in maintenance (not sampled)".into(),
        Some(a) => format!(
            "; not answering {} ms (longest {} ms, {} of {} samples of probe {}{})",
            a.unavailable_ms,
            a.longest_ms,
            a.failed,
            a.samples,
            a.probe,
            if a.recovered {
                ""
            } else {
                "; still not answering when sampling ended"
            }
        ),
    }
}

/// A finished job as `Ok(summary)` or `Err` with what failed.
pub(crate) fn job_ok(r: Result<JobInfo, ClientError>) -> Result<String, DeployError> {
    match r {
        Err(e) => Err(DeployError::Agent(e)),
        Ok(job) if job.state == JobState::Succeeded => Ok(match job.result {
            Some(JobResult::Staged {
                files,
                bytes,
                commit,
                ..
            }) => match commit {
                Some(c) => format!("commit {c}, {files} files, {bytes} bytes"),
                None => format!("{files} files, {bytes} bytes"),
            },
            Some(JobResult::Activated {
                release,
                previous,
                availability,
            }) => format!(
                "{} -> {release}{}",
                previous.as_deref().unwrap_or("none"),
                availability_detail(availability.as_ref())
            ),
            Some(JobResult::RolledBack {
                from,
                to,
                availability,
            }) => format!(
                "{} -> {to}{}",
                from.as_deref().unwrap_or("none"),
                availability_detail(availability.as_ref())
            ),
            Some(JobResult::BackedUp { id, bytes, .. }) => format!("backup {id}, {bytes} bytes"),
            Some(JobResult::Verified { id, detail, .. }) => format!("backup {id}: {detail}"),
            Some(JobResult::Maintenance {
                on,
                downtime_ms,
                availability,
                ..
            }) => format!(
                "maintenance {}{}{}",
                if on { "on" } else { "off" },
                downtime_ms
                    .map(|ms| format!("; downtime {ms} ms"))
                    .unwrap_or_default(),
                availability_detail(availability.as_ref())
            ),
            Some(JobResult::FlagSet {
                name,
                on,
                percent,
                previous_on,
                previous_percent,
            }) => {
                format!("flag {name}: {previous_on} ({previous_percent:?}%) -> {on} ({percent:?}%)")
            }
            Some(JobResult::Migrated {
                applied, reverted, ..
            }) => {
                format!("applied {applied:?}, reverted {reverted:?}")
            }
            Some(JobResult::Command {
                name,
                exit_code,
                duration_ms,
            }) => format!("{name}: exit {exit_code} in {duration_ms} ms"),
            Some(JobResult::Restored {
                id,
                failed_state_backup,
                duration_ms,
                ..
            }) => format!(
                "restored {id} in {duration_ms} ms (what was there is saved as {failed_state_backup})"
            ),
            Some(JobResult::Discarded { release }) => format!("removed release {release}"),
            Some(JobResult::HostRolledBack(r)) => rollback_summary(&r),
            None => String::new(),
        }),
        Ok(job) => Err(DeployError::job(job)),
    }
}

/// One line for a finished host rollback: the switch, how the database went
/// back and what that cost, the flags, what an operator must do.
pub fn rollback_summary(r: &HostRolledBack) -> String {
    let database = match &r.database {
        DatabaseChoice::CodeOnly { why } => format!("code only ({why})"),
        DatabaseChoice::DownMigrations {
            to_version,
            reverted,
            snapshot,
            ..
        } => format!(
            "down migrations {reverted:?} to version {to_version}{}",
            snapshot
                .as_ref()
                .map(|s| format!(", snapshot {s}"))
                .unwrap_or_default()
        ),
        DatabaseChoice::Restore {
            backup,
            window_from,
            window_to,
            failed_state_backup,
            tables,
        } => {
            let lost: u64 = tables.iter().map(|t| t.lost()).sum();
            format!(
                "restored {backup}: writes from {} to {} discarded ({lost} row(s) only in \
                 failed-state backup {failed_state_backup})",
                utc(*window_from),
                utc(*window_to)
            )
        }
        DatabaseChoice::RestoreForbidden { why, .. } => format!("schema stays ({why})"),
    };
    let flags = r
        .steps
        .iter()
        .find(|s| s.step == "flags" && s.state == StepState::Done)
        .map(|s| format!("; flags: {}", s.detail))
        .unwrap_or_default();
    format!(
        "{} -> {}; database: {database}{flags}{}{}",
        r.from.as_deref().unwrap_or("none"),
        r.to,
        r.operator_action
            .as_ref()
            .map(|a| format!("; OPERATOR ACTION: {a}"))
            .unwrap_or_default(),
        availability_detail(r.availability.as_ref())
    )
}

pub(crate) fn finish<T: ToString, E: ToString>(
    journal: &Journal,
    seq: Option<i64>,
    r: &Result<T, E>,
) {
    if let Some(seq) = seq {
        let _ = match r {
            Ok(d) => journal.finish_step(seq, "ok", Some(&d.to_string())),
            Err(e) => journal.finish_step(seq, "failed", Some(&e.to_string())),
        };
    }
}

/// The deployment `id` of the journal at `state`, or a usage error that
/// names the most recent ones.
pub(crate) fn known_deployment(
    journal: &Journal,
    state: &Path,
    id: &str,
) -> anyhow::Result<crate::journal::Deployment> {
    match journal.deployment(id)? {
        Some(d) => Ok(d),
        None => {
            let recent = journal.deployment_ids(5)?;
            Err(usage(format!(
                "no deployment {id:?} in {}; recent: {}",
                state.display(),
                if recent.is_empty() {
                    "(none)".into()
                } else {
                    recent.join(", ")
                }
            )))
        }
    }
}

/// The agent's status, in one request on one connection (issue 14: a
/// hello before it cost a second connection and told nothing more: every
/// frame carries the protocol version, and an agent of another version
/// answers any request, this one too, with the same plain-error frame).
pub async fn agent_status(client: &Link) -> Result<StatusResponse, ClientError> {
    match client
        .call(&Request::Status(StatusRequest { apps: vec![] }))
        .await?
    {
        Response::Status(s) => Ok(s),
        other => Err(client.unexpected(&other)),
    }
}

/// The interrupted deployments of `app` (issue 14): a controller that died
/// mid-deployment leaves its hosts locked until the leases expire, and the
/// deployment waits for `deploy --resume`. For `golivectl status`.
pub fn interrupted(state: &Path, app: &str) -> Vec<(String, String)> {
    // Never creates a state directory: no journal, nothing interrupted.
    if !state.join("golivectl.db").is_file() {
        return Vec::new();
    }
    let Ok(journal) = Journal::open(state) else {
        return Vec::new();
    };
    journal
        .deployment_ids_of(Some(app), 20)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| journal.deployment(&id).ok().flatten())
        .filter_map(|d| Some((d.id, d.resume?)))
        .collect()
}

/// What a maintenance job did on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// False when the host already was in the requested state.
    pub changed: bool,
    /// After `off`: how long it was on.
    pub downtime_ms: Option<u64>,
    /// After `off`, when the app has an http probe: how long it did not
    /// answer once the page was gone (issue 12, part 15).
    pub availability: Option<golive_shared::protocol::Availability>,
}

impl Switched {
    /// "turned on", "was already off", "turned off; downtime 1234 ms".
    pub fn describe(&self, on: bool) -> String {
        let state = if on { "on" } else { "off" };
        let mut s = if self.changed {
            format!("turned {state}")
        } else {
            format!("was already {state}")
        };
        if let Some(ms) = self.downtime_ms {
            s.push_str(&format!("; downtime {ms} ms"));
        }
        s.push_str(&availability_detail(self.availability.as_ref()));
        s
    }
}

/// What a followed maintenance job did, or what failed (also the
/// deployment's maintenance steps).
pub fn switched(
    job: Result<golive_shared::protocol::JobInfo, crate::client::ClientError>,
) -> Result<Switched, DeployError> {
    match job {
        Ok(job) if job.state == JobState::Succeeded => match job.result {
            Some(JobResult::Maintenance {
                changed,
                downtime_ms,
                availability,
                ..
            }) => Ok(Switched {
                changed,
                downtime_ms,
                availability,
            }),
            other => Err(DeployError::UnexpectedResult {
                id: job.id,
                result: format!("{other:?}"),
            }),
        },
        Ok(job) => Err(DeployError::Maintenance {
            id: job.id,
            state: job.state,
            code: job.error_code,
            message: job.error.unwrap_or_else(|| "no message".into()),
        }),
        Err(e) => Err(DeployError::Agent(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golive_shared::protocol::{ActivateRelease, JobEvent, JobEventsResponse, LogLevel};

    fn answer(state: JobState, kinds: Vec<EventKind>) -> JobEventsResponse {
        JobEventsResponse {
            job: JobInfo {
                id: 7,
                idempotency_key: "k".into(),
                spec: JobSpec::Activate(ActivateRelease {
                    app: "shop".into(),
                    release: "v2".into(),
                    rollback: Default::default(),
                }),
                state,
                submitted_by: "alice".into(),
                submitted_at: 1,
                finished_at: None,
                result: None,
                error: None,
                deduplicated: false,
                error_code: None,
            },
            events: kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| JobEvent {
                    seq: i as u64 + 1,
                    at: 1,
                    kind,
                })
                .collect(),
        }
    }

    /// Issue 14 (speed): an answer that carries the job's `Finished` event
    /// ends the follow; it no longer asks once more for an empty page.
    #[test]
    fn issue14_a_follow_ends_with_the_answer_that_carries_finished() {
        let log = || EventKind::Log {
            level: LogLevel::Info,
            line: "staged".into(),
        };
        let finished = EventKind::Finished {
            state: JobState::Succeeded,
        };
        assert!(followed_to_the_end(&answer(
            JobState::Succeeded,
            vec![log(), finished.clone()]
        )));
        assert!(followed_to_the_end(&answer(JobState::Succeeded, vec![])));
        // Final, but its Finished event not read yet: one more poll.
        assert!(!followed_to_the_end(&answer(
            JobState::Succeeded,
            vec![log()]
        )));
        // Still running: events are a page of a job that goes on.
        assert!(!followed_to_the_end(&answer(
            JobState::Running,
            vec![log()]
        )));
        assert!(!followed_to_the_end(&answer(JobState::Running, vec![])));
    }
}
