//! The transport: TLS 1.3 accept loop, HTTP/1.1 routing, audit.
//!
//! Layers, bottom-up (mini-redis style): TCP accept, which never waits →
//! a handshake place from [`gate`] (globally and per source; none free →
//! closed at once) → TLS handshake in its own task under
//! `limits.handshake_timeout_secs`, the deny list checked by the certificate
//! verifier → peer identity from the verified client certificate → an
//! authenticated-connection place (globally and per certificate) → hyper
//! HTTP/1.1 (headers and idle keep-alive under `limits.idle_timeout_secs`)
//! → `route`: a peer that may never be admitted is refused before its body
//! is read → size-capped body under `limits.request_timeout_secs` →
//! decode → [`crate::handlers`]. Refusals before a request are counted and
//! logged in summary ([`noise`]), never one line each.
//! Shutdown stops accepting, then waits (bounded) for every authenticated
//! connection to end, so the process knows in-flight requests finished.

pub mod gate;
pub mod noise;
pub mod traffic;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use golive_shared::codec::{self, CodecError};
use golive_shared::identity::{PeerIdentity, Role};
use golive_shared::protocol::{
    ARTIFACT_PATH, ErrorBody, ErrorCode, RPC_PATH, Response, now_millis,
};
use http_body_util::{BodyExt, Full, Limited};

/// Where the agent serves its Prometheus metrics on the mutual-TLS port.
pub const METRICS_PATH: &str = "/metrics";
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::handlers;
use crate::journal::AuditRecord;
use crate::state::Agent;
use gate::{Gate, HandshakeSlot};
use noise::Refusal;

type HttpResponse = hyper::Response<Full<Bytes>>;

/// Serves until `shutdown` resolves, then drains connections (up to 10 s).
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let gate = Arc::new(Gate::new(&agent.config().limits));
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            r = accept(&listener) => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        agent.traffic.accepted();
        let source = gate::source_key(addr.ip());
        let slot = match gate.handshake(source) {
            Ok(slot) => slot,
            Err(reason) => {
                // Closed at once with a reset: no state kept, no wait.
                let _ = tcp.set_zero_linger();
                drop(tcp);
                agent.refusals.record(source, Refusal::Limit, reason);
                continue;
            }
        };
        let agent = Arc::clone(&agent);
        let acceptor = acceptor.clone();
        let gate = Arc::clone(&gate);
        tokio::spawn(async move {
            connection(agent, acceptor, gate, slot, tcp, source).await;
        });
    }
    gate.drain(Duration::from_secs(10)).await;
    traffic::flush(&agent);
}

/// The next connection, with Nagle's algorithm off: requests and answers
/// are small frames, and Nagle against the controller's delayed ACK cost
/// 40 ms a round trip (issue 14: a deploy to 10 hosts took 4.4 s, not 0.44).
async fn accept(listener: &TcpListener) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    let (tcp, addr) = listener.accept().await?;
    let _ = tcp.set_nodelay(true);
    Ok((tcp, addr))
}

async fn connection(
    agent: Arc<Agent>,
    acceptor: TlsAcceptor,
    gate: Arc<Gate>,
    slot: HandshakeSlot,
    tcp: tokio::net::TcpStream,
    source: IpAddr,
) {
    let limits = &agent.config().limits;
    let deadline = Duration::from_secs(limits.handshake_timeout_secs);
    let handshake = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
    drop(slot);
    let tls = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let revoked = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
                == Some(&rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Revoked,
                ));
            let reason = if revoked {
                "TLS handshake refused: the client certificate is on the revocation list".into()
            } else {
                format!("TLS handshake refused: {e}")
            };
            agent.refusals.record(source, Refusal::Handshake, &reason);
            return;
        }
        Err(_) => {
            agent.refusals.record(
                source,
                Refusal::HandshakeTimeout,
                &format!(
                    "TLS handshake did not finish within {}s (limits.handshake_timeout_secs)",
                    deadline.as_secs()
                ),
            );
            return;
        }
    };
    // The verifier requires a client certificate, so one is always present.
    let Some(der) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
    else {
        return;
    };
    let peer = match PeerIdentity::from_der(&der) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            agent
                .refusals
                .record(source, Refusal::Certificate, &e.to_string());
            return;
        }
    };
    let _slot = match gate.connection(&peer.fingerprint, deadline).await {
        Ok(slot) => slot,
        Err(reason) => {
            agent.refusals.record(source, Refusal::Limit, reason);
            return;
        }
    };
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let service = hyper::service::service_fn(move |req| {
        let agent = Arc::clone(&agent);
        let peer = Arc::clone(&peer);
        async move { Ok::<_, Infallible>(route(&agent, &peer, source, req).await) }
    });
    // hyper's header timeout also runs while a kept-alive connection waits
    // for its next request, so it is the idle timeout too.
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served
        && !e.is_incomplete_message()
        && !e.is_timeout()
    {
        tracing::warn!(peer_addr = %source, "connection failed: {e}");
    }
}

async fn route(
    agent: &Arc<Agent>,
    peer: &PeerIdentity,
    source: IpAddr,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
    // Revoked since the connection opened, no role, an agent's certificate:
    // refused before the body is read or decoded, and not audited (a peer
    // that is never admitted must not be able to fill the audit table).
    if let Err(e) = handlers::admissible(agent, peer) {
        agent.refusals.record(
            source,
            Refusal::Certificate,
            &format!("certificate {:?} refused: {:?}", peer.name, e.code),
        );
        let mut resp = respond(Err(e));
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return resp;
    }
    let path = req.uri().path().to_string();
    if req.method() == Method::POST && path == RPC_PATH {
        return rpc(agent, peer, req).await;
    }
    if req.method() == Method::PUT
        && let Some(sha) = path.strip_prefix(ARTIFACT_PATH)
    {
        let operation = "artifact.upload";
        let result = match handlers::admit(agent, peer, operation, Role::Operator) {
            Ok(()) => {
                let (parts, body) = req.into_parts();
                handlers::artifact::upload(agent, peer, sha, &parts.headers, body)
                    .await
                    .map(Response::Artifact)
            }
            Err(e) => Err(e),
        };
        let rec = record(peer, &format!("{operation}:{sha}"), &result);
        return respond(audited(agent, rec, result).await);
    }
    if req.method() == Method::GET && path == METRICS_PATH {
        // A read: any admitted certificate (viewer and up). Not audited: a
        // scraper every 15 s would fill the audit table with reads.
        return match handlers::admit(agent, peer, "metrics", Role::Viewer).and_then(|()| {
            crate::metrics::render(agent).map_err(|e| ErrorBody::new(ErrorCode::Internal, e))
        }) {
            Ok(text) => hyper::Response::builder()
                .status(StatusCode::OK)
                .header(hyper::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
                .body(Full::new(Bytes::from(text)))
                .expect("static response parts"),
            Err(e) => respond(Err(e)),
        };
    }
    let err = ErrorBody::new(
        ErrorCode::NotFound,
        format!(
            "no endpoint {} {path}; golive-agent serves POST {RPC_PATH}, PUT {ARTIFACT_PATH}<sha256> \
             and GET {METRICS_PATH}",
            req.method()
        ),
    );
    audit(agent, peer, "unknown-endpoint", &Err(err.clone()));
    respond(Err(err))
}

async fn rpc(
    agent: &Arc<Agent>,
    peer: &PeerIdentity,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
    let max = agent.config().limits.max_request_bytes;
    let too_large = || {
        ErrorBody::new(
            ErrorCode::TooLarge,
            format!(
                "request body exceeds this agent's limit of {max} bytes (limits.max_request_bytes)"
            ),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    let deadline = Duration::from_secs(agent.config().limits.request_timeout_secs);
    let body = if declared.is_some_and(|n| n > max) {
        Err(too_large())
    } else {
        let read = Limited::new(req.into_body(), max as usize).collect();
        match tokio::time::timeout(deadline, read).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("cannot read the request body: {e}"),
            )),
            Err(_) => Err(ErrorBody::new(
                ErrorCode::Timeout,
                format!(
                    "the request body did not arrive within {}s (limits.request_timeout_secs)",
                    deadline.as_secs()
                ),
            )),
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            audit(agent, peer, "invalid-request", &Err(e.clone()));
            return respond(Err(e));
        }
    };
    let request = match codec::decode::<golive_shared::protocol::Request>(&body) {
        Ok(r) => r,
        Err(CodecError::VersionMismatch { .. }) => {
            let msg = CodecError::VersionMismatch {
                ours: golive_shared::protocol::PROTOCOL_VERSION,
                theirs: codec::peek_version(&body).unwrap_or(0),
            }
            .to_string()
            .replace("the peer speaks", "golivectl speaks")
            .replace("this side speaks", "this agent speaks");
            audit(
                agent,
                peer,
                "invalid-request",
                &Err(ErrorBody::new(ErrorCode::VersionMismatch, msg.clone())),
            );
            // A plain frame: the other version can read it whatever it is.
            return http(
                ErrorCode::VersionMismatch.http_status(),
                codec::encode_plain_error(&msg),
            );
        }
        // A plain-error frame is an answer, never a request: its text is
        // the client's, and is neither echoed nor stored.
        Err(CodecError::Peer(_)) => {
            let err = ErrorBody::new(
                ErrorCode::BadRequest,
                "the body is a plain-error frame, which only answers carry; send a golive request",
            );
            audit(agent, peer, "invalid-request", &Err(err.clone()));
            return respond(Err(err));
        }
        Err(e) => {
            let err = ErrorBody::new(ErrorCode::BadRequest, e.to_string());
            audit(agent, peer, "invalid-request", &Err(err.clone()));
            return respond(Err(err));
        }
    };
    let operation = request.operation();
    let role = handlers::required_role(&request);
    let result = match handlers::admit(agent, peer, &operation, role) {
        Ok(()) => handlers::dispatch(agent, peer, request).await,
        Err(e) => Err(e),
    };
    // A read that was answered is audited later, in a batch (issue 14,
    // `traffic`): a viewer's request changes nothing, and an audit row is
    // an fsync. What changes a host, every refusal and every failed read
    // are audited at once.
    if role == Role::Viewer && result.is_ok() {
        traffic::read(agent, record(peer, &operation, &result));
        respond(result)
    } else {
        let rec = record(peer, &operation, &result);
        respond(audited(agent, rec, result).await)
    }
}

/// A write's answer once its audit row `rec` is written and what the
/// request committed is on disk ([`durable`]). The write and its fsync run
/// on the blocking pool (issue 14, speed): on the agent's one runtime
/// thread they held up every other request and job while the disk
/// flushed.
async fn audited(
    agent: &Arc<Agent>,
    rec: AuditRecord,
    result: Result<Response, ErrorBody>,
) -> Result<Response, ErrorBody> {
    let agent = Arc::clone(agent);
    let name = agent.config().agent.name.clone();
    tokio::task::spawn_blocking(move || {
        traffic::write(&agent, rec);
        durable(&agent, result)
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!("a request's audit row and fsync did not finish: {e}");
        Err(ErrorBody::new(
            ErrorCode::Internal,
            format!(
                "agent {name}: the request's audit row and fsync did not finish ({e}); \
                 retry it (with the same idempotency key)"
            ),
        ))
    })
}

/// The barrier before a write's answer (issue 14, speed): what the request
/// committed is on disk before the client hears of it. A request's own
/// commits may be deferred (a job's submission, a lock, an upload's
/// outcome); the fsync of its audit row covers them, and this is then
/// free. When that row could not be written, this is the fsync; when the
/// fsync fails, the client is told the request is not durable.
fn durable(agent: &Agent, result: Result<Response, ErrorBody>) -> Result<Response, ErrorBody> {
    match agent.journal.sync() {
        Ok(()) => result,
        Err(e) => {
            tracing::error!("a request's journal rows are not on disk: {e}");
            Err(ErrorBody::new(
                ErrorCode::Internal,
                format!(
                    "agent {}: the request was journaled but may not survive a crash: {e}; \
                     retry it (with the same idempotency key) once the disk is fixed",
                    agent.config().agent.name
                ),
            ))
        }
    }
}

fn audit(
    agent: &Agent,
    peer: &PeerIdentity,
    operation: &str,
    result: &Result<Response, ErrorBody>,
) {
    traffic::write(agent, record(peer, operation, result));
}

fn record(
    peer: &PeerIdentity,
    operation: &str,
    result: &Result<Response, ErrorBody>,
) -> AuditRecord {
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(e) => truncate_at_char(format!("{:?}: {}", e.code, e.message), 500),
    };
    tracing::debug!(
        peer = %peer.name,
        role = %peer.role_str(),
        operation,
        outcome = %outcome,
        "request"
    );
    AuditRecord {
        at: now_millis(),
        peer_name: peer.name.clone(),
        role: peer.role_str().into(),
        fingerprint: peer.fingerprint.clone(),
        serial: peer.serial.clone(),
        operation: operation.into(),
        outcome,
    }
}

/// `s` cut to at most `max` bytes, on a character boundary: error messages
/// can carry request text, and a cut inside a multi-byte character panicked
/// the task before its audit row was written (issue 11).
fn truncate_at_char(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn respond(result: Result<Response, ErrorBody>) -> HttpResponse {
    match result {
        Ok(r) => http(200, codec::encode(&r)),
        Err(e) => http(e.code.http_status(), codec::encode(&Response::Error(e))),
    }
}

fn http(status: u16, body: Vec<u8>) -> HttpResponse {
    hyper::Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(hyper::header::CONTENT_TYPE, codec::CONTENT_TYPE)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

#[cfg(test)]
mod tests {
    /// Every accepted socket has TCP_NODELAY set (issue 14).
    #[tokio::test]
    async fn issue14_accepted_sockets_have_nodelay() {
        let listener = super::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = super::accept(&listener).await.unwrap();
        assert!(tcp.nodelay().unwrap());
    }

    #[test]
    fn issue11_an_audit_outcome_is_cut_on_a_character_boundary() {
        let s = format!("{}é{}", "a".repeat(499), "b".repeat(10));
        let cut = super::truncate_at_char(s, 500);
        assert_eq!(cut.len(), 499);
        assert!(cut.chars().all(|c| c == 'a'));
        assert_eq!(super::truncate_at_char("short".into(), 500), "short");
    }
}
