//! The transport: TLS 1.3 accept loop, HTTP/1.1 routing, audit.
//!
//! Layers, bottom-up (mini-redis style): TCP accept under a connection
//! semaphore → TLS handshake in its own task under a timeout (never on the
//! accept loop) → peer identity from the verified client certificate →
//! hyper HTTP/1.1 → `route` → size-capped decode → [`crate::handlers`].
//! Shutdown stops accepting, then waits (bounded) for every connection
//! permit to come back, so the process knows in-flight requests finished.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use golive_shared::codec::{self, CodecError};
use golive_shared::identity::{PeerIdentity, Role};
use golive_shared::protocol::{
    ARTIFACT_PATH, ErrorBody, ErrorCode, RPC_PATH, Response, now_millis,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::handlers;
use crate::journal::AuditRecord;
use crate::log;
use crate::state::Agent;

type HttpResponse = hyper::Response<Full<Bytes>>;

/// Serves until `shutdown` resolves, then drains connections (up to 10 s).
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let max = agent.config.limits.max_connections;
    let permits = Arc::new(Semaphore::new(max as usize));
    let acceptor = TlsAcceptor::from(tls);
    let handshake_timeout = Duration::from_secs(agent.config.limits.handshake_timeout_secs);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn(&format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let agent = Arc::clone(&agent);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            connection(agent, acceptor, tcp, addr, handshake_timeout).await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(max)).await;
}

async fn connection(
    agent: Arc<Agent>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    handshake_timeout: Duration,
) {
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            log::warn(&format!("TLS handshake from {addr} refused: {e}"));
            return;
        }
        Err(_) => {
            log::warn(&format!(
                "TLS handshake from {addr} did not finish within {}s",
                handshake_timeout.as_secs()
            ));
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
            log::warn(&format!("{addr}: {e}"));
            return;
        }
    };
    let service = hyper::service::service_fn(move |req| {
        let agent = Arc::clone(&agent);
        let peer = Arc::clone(&peer);
        async move { Ok::<_, Infallible>(route(&agent, &peer, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served
        && !e.is_incomplete_message()
    {
        log::warn(&format!("connection from {addr}: {e}"));
    }
}

async fn route(
    agent: &Arc<Agent>,
    peer: &PeerIdentity,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
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
        audit(agent, peer, &format!("{operation}:{sha}"), &result);
        return respond(result);
    }
    let err = ErrorBody::new(
        ErrorCode::NotFound,
        format!(
            "no endpoint {} {path}; golive-agent serves POST {RPC_PATH} and PUT {ARTIFACT_PATH}<sha256>",
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
    let max = agent.config.limits.max_request_bytes;
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
    let body = if declared.is_some_and(|n| n > max) {
        Err(too_large())
    } else {
        match Limited::new(req.into_body(), max as usize).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("cannot read the request body: {e}"),
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
        Err(e) => {
            let err = ErrorBody::new(ErrorCode::BadRequest, e.to_string());
            audit(agent, peer, "invalid-request", &Err(err.clone()));
            return respond(Err(err));
        }
    };
    let operation = request.operation();
    let result = match handlers::admit(agent, peer, &operation, handlers::required_role(&request)) {
        Ok(()) => handlers::dispatch(agent, peer, request).await,
        Err(e) => Err(e),
    };
    audit(agent, peer, &operation, &result);
    respond(result)
}

fn audit(
    agent: &Agent,
    peer: &PeerIdentity,
    operation: &str,
    result: &Result<Response, ErrorBody>,
) {
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(e) => {
            let mut m = format!("{:?}: {}", e.code, e.message);
            m.truncate(500);
            m
        }
    };
    let rec = AuditRecord {
        at: now_millis(),
        peer_name: peer.name.clone(),
        role: peer.role_str().into(),
        fingerprint: peer.fingerprint.clone(),
        serial: peer.serial.clone(),
        operation: operation.into(),
        outcome,
    };
    if let Err(e) = agent.journal.audit(&rec) {
        log::warn(&format!(
            "cannot write the audit record for {operation}: {e}"
        ));
    }
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
