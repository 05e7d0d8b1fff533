//! The local socket (issue 13): `STATE_DIR/agent.sock`, through which
//! `golive-agent rollback` asks the running agent for a host rollback and
//! follows its events, so that the rollback is the agent's own journaled
//! job whoever asks.
//!
//! It is a new way in, so it takes as little as possible:
//! - the socket is 0600 in the 0700 state directory, created at start
//!   (a stale one left by a crash is replaced: the state lock is held) and
//!   removed at stop;
//! - the peer's credentials (`SO_PEERCRED`) must be the agent's own uid or
//!   root, else the connection gets one refusal and is closed;
//! - the frames are the wire codec's (`GOLV` + version + bincode) behind a
//!   4-byte big-endian length, at most [`MAX_REQUEST`] bytes;
//! - only two requests are served: `SubmitJob` of a `HostRollback` with
//!   `requested_by = LocalCli`, and `JobEvents` of a host rollback job.
//!   Everything else is refused (and audited); the rest of the protocol is
//!   for certificates over mutual TLS;
//! - at most [`MAX_CONNECTIONS`] at once, each idle at most [`IDLE`].
//!
//! Every request is written to the audit table as `local:USER (uid N)`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use golive_shared::codec;
use golive_shared::protocol::{
    ErrorBody, ErrorCode, JobSpec, Request, Response, RollbackRequester, SubmitJob, now_millis,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::jobs::{self, Via};
use crate::journal::AuditRecord;
use crate::state::Agent;

/// The socket's name in the state directory.
pub const SOCKET_FILE: &str = "agent.sock";
/// The largest request frame the agent reads.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The largest answer the CLI reads (a page of events).
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 4;
/// How long a connection may wait between requests (and a request take to
/// arrive).
pub const IDLE: Duration = Duration::from_secs(60);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// Binds `STATE_DIR/agent.sock`, owner-only. The caller holds the state
/// lock, so a socket file already there is a dead agent's and is replaced.
pub fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    // The state directory (0700) already keeps others out; the mode says so
    // on the socket itself.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Serves the socket until `shutdown` turns true, then removes the file.
pub async fn serve(
    agent: Arc<Agent>,
    listener: UnixListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "local socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            connection(agent, stream).await;
            drop(place);
        });
    }
    let _ = std::fs::remove_file(socket_path(&agent.config().agent.state_dir));
}

/// `local:NAME (uid N)`.
pub fn describe_uid(uid: u32) -> String {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "?".into());
    format!("local:{name} (uid {uid})")
}

async fn connection(agent: Arc<Agent>, mut stream: UnixStream) {
    let me = nix::unistd::geteuid().as_raw();
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!("local socket: cannot read the peer's credentials: {e}");
            return;
        }
    };
    let who = describe_uid(uid);
    if uid != me && uid != 0 {
        let refusal = ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "the local socket of agent {} takes requests from its own user (uid {me}) or root \
                 only, not from {who}; run `golive-agent rollback` as that user or as root",
                agent.config().agent.name
            ),
        );
        audit(&agent, &who, uid, "local.connect", &Err(refusal.clone()));
        close_with(stream, &codec::encode(&Response::Error(refusal))).await;
        return;
    }
    loop {
        let frame = match tokio::time::timeout(IDLE, read_frame(&mut stream)).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                let answer = Response::Error(ErrorBody::new(ErrorCode::TooLarge, e));
                close_with(stream, &codec::encode(&answer)).await;
                return;
            }
        };
        let req: Request = match codec::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                close_with(stream, &codec::encode_plain_error(&e.to_string())).await;
                return;
            }
        };
        let operation = format!("local.{}", req.operation());
        let result = handle(&agent, &who, req).await;
        audit(&agent, &who, uid, &operation, &result);
        let body = codec::encode(&match result {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        });
        if write_frame(&mut stream, &body).await.is_err() {
            return;
        }
    }
}

async fn handle(agent: &Arc<Agent>, who: &str, req: Request) -> Result<Response, ErrorBody> {
    match req {
        Request::SubmitJob(SubmitJob {
            spec: JobSpec::HostRollback(r),
            ..
        }) => {
            if r.requested_by != RollbackRequester::LocalCli {
                return Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    "a rollback asked through the local socket is requested by the local CLI",
                ));
            }
            jobs::submit_rollback(agent, who, Via::Internal, r).map(Response::Job)
        }
        Request::JobEvents(e) => {
            let kind = agent
                .journal
                .job(e.job_id)
                .map_err(crate::state::internal)?
                .map(|j| j.spec.kind());
            if kind != Some("host.rollback") {
                return Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the local socket follows host rollback jobs only; job {} is {}",
                        e.job_id,
                        kind.unwrap_or("not there")
                    ),
                ));
            }
            jobs::events(agent, e).await.map(Response::Events)
        }
        other => Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "the local socket takes only a host rollback and its events, not {}; everything \
                 else goes over mutual TLS with a certificate (golivectl)",
                other.operation()
            ),
        )),
    }
}

fn audit(agent: &Agent, who: &str, uid: u32, operation: &str, r: &Result<Response, ErrorBody>) {
    let outcome = match r {
        Ok(_) => "ok".to_string(),
        Err(e) => {
            let mut m = format!("{:?}: {}", e.code, e.message);
            if m.len() > 500 {
                let mut end = 500;
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                m.truncate(end);
            }
            m
        }
    };
    let rec = AuditRecord {
        at: now_millis(),
        peer_name: who.to_string(),
        role: "local".into(),
        fingerprint: "-".into(),
        serial: format!("uid {uid}"),
        operation: operation.into(),
        outcome,
    };
    if let Err(e) = agent.journal.audit(&rec) {
        tracing::warn!(
            role = "local",
            operation,
            "cannot write the audit record for {operation}: {e}"
        );
    }
}

async fn read_frame(stream: &mut UnixStream) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(format!(
            "a request of {len} bytes is larger than the local socket takes ({MAX_REQUEST})"
        ));
    }
    let mut buf = vec![0u8; len];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("the request ended early: {e}"))?;
    Ok(Some(buf))
}

/// A last answer, then the connection closed gracefully: what the peer
/// sent and we did not read is drained (bounded) first, so the close is not
/// a reset that could take the answer with it.
async fn close_with(mut stream: UnixStream, body: &[u8]) {
    if write_frame(&mut stream, body).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 8192];
    let mut left = MAX_REQUEST + 4;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn write_frame(stream: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

/// The CLI's side: one connection to a running agent's socket.
pub struct Client {
    stream: std::os::unix::net::UnixStream,
    path: PathBuf,
}

impl Client {
    pub fn connect(state_dir: &Path) -> Result<Client, String> {
        let path = socket_path(state_dir);
        let stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
            format!(
                "the agent runs (it holds {}) but its local socket {} does not answer: {e}; \
                 an agent older than issue 13 has none: use `golivectl rollback`, or stop the \
                 agent and run this again",
                state_dir.join("agent.lock").display(),
                path.display()
            )
        })?;
        // Long-polls wait up to the agent's poll cap; this bounds a dead agent.
        let _ = stream.set_read_timeout(Some(IDLE + Duration::from_secs(30)));
        let _ = stream.set_write_timeout(Some(IDLE));
        Ok(Client { stream, path })
    }

    /// Sends one request and reads its answer.
    pub fn call(&mut self, req: &Request) -> Result<Response, String> {
        let body = codec::encode(req);
        let at = |e: std::io::Error| format!("local socket {}: {e}", self.path.display());
        self.stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .map_err(at)?;
        self.stream.write_all(&body).map_err(at)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(at)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_ANSWER {
            return Err(format!(
                "local socket {}: an answer of {len} bytes is too large",
                self.path.display()
            ));
        }
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).map_err(at)?;
        codec::decode(&buf).map_err(|e| format!("local socket {}: {e}", self.path.display()))
    }
}
