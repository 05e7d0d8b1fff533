//! The transport to one agent: mutual TLS, HTTP/1.1, framed requests and
//! streamed uploads. It knows nothing of plans or waves; every error names
//! the host, the address and the cause.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use golive_shared::codec::{self, CodecError};
use golive_shared::protocol::{
    ARTIFACT_PATH, ArtifactInfo, ErrorBody, ErrorCode, PROTOCOL_HEADER, PROTOCOL_VERSION, RPC_PATH,
    Request, Response, SIZE_HEADER,
};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than the agent's longest long-poll (`limits.max_poll_secs`, 30 s).
/// The whole answer, head and body, must arrive within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// An upload may take [`REQUEST_TIMEOUT`] plus its size at this rate, the
/// agent's default `limits.min_upload_bytes_per_sec` (issue 11).
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 64 * 1024;
/// Far above any answer an agent gives (the largest, a page of 500 job
/// events with lines of up to 8 KiB, is about 4 MiB): a bigger body is a
/// broken or hostile agent, and is not read into memory (issue 11).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach agent {host} at {addr}: {detail}")]
    Connect {
        host: String,
        addr: String,
        detail: String,
    },
    #[error("TLS with agent {host} at {addr} failed: {detail}")]
    Tls {
        host: String,
        addr: String,
        detail: String,
    },
    #[error("agent {host} at {addr}: {detail}")]
    Transport {
        host: String,
        addr: String,
        detail: String,
    },
    #[error("agent {host} at {addr}: {source}")]
    Protocol {
        host: String,
        addr: String,
        source: CodecError,
    },
    #[error("agent {host}: {}", unprefixed(host, &body.message))]
    Agent { host: String, body: ErrorBody },
}

/// An agent's message without a leading "agent HOST: " of its own, so the
/// controller's prefix is not doubled ("agent web1: agent web1: ...").
fn unprefixed<'m>(host: &str, message: &'m str) -> &'m str {
    message
        .strip_prefix("agent ")
        .and_then(|rest| rest.strip_prefix(host))
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message)
}

impl ClientError {
    /// SPEC §7 exit code: refusals and unreachable agents are 2 (nothing
    /// changed), failures inside the agent are 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Agent { body, .. } if body.code == ErrorCode::Internal => 1,
            ClientError::Transport { .. } => 1,
            _ => 2,
        }
    }

    pub fn agent_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Agent { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

/// A client for one agent. Cheap to clone; the clones share its idle
/// connections: a call takes one that finished its last answer less than
/// `REUSE_IDLE` (500 ms) ago, else opens a new one, and gives it back once
/// answered (issue 14: a deployment made a dozen calls per host, each a
/// TCP and mutual-TLS handshake on both sides).
#[derive(Clone)]
pub struct AgentClient {
    pub host: String,
    pub addr: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    /// [`REQUEST_TIMEOUT`], but for tests.
    timeout: Duration,
    /// Through the system ssh instead of a TCP connection (issue 15); the
    /// TLS session inside is the same.
    ssh: Option<Arc<crate::ssh::Route>>,
    /// Kept-alive connections waiting for the next call, with the time
    /// their last answer ended.
    idle: Arc<std::sync::Mutex<Vec<(Sender, std::time::Instant)>>>,
}

/// How long an idle connection is reused. Well under the agent's idle
/// timeout (`limits.idle_timeout_secs`, at least 1 s, 15 by default), so a
/// request is never written into a connection the agent is closing; the
/// steps of a deployment follow each other within milliseconds. A request
/// that a closed connection could not take goes out on a new one.
const REUSE_IDLE: Duration = Duration::from_millis(500);
/// At most this many idle connections kept per agent.
const MAX_IDLE: usize = 4;

impl AgentClient {
    /// `server_name` is checked against the agent certificate's SANs; by
    /// default the host part of `addr`.
    pub fn new(
        host: &str,
        addr: &str,
        server_name: Option<&str>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<AgentClient, String> {
        let name = match server_name {
            Some(n) => n.to_string(),
            None => host_part(addr).to_string(),
        };
        let server_name =
            crate::tls::server_name(&name).map_err(|e| format!("host {host}: {e}"))?;
        Ok(AgentClient {
            host: host.into(),
            addr: addr.into(),
            server_name,
            tls,
            timeout: REQUEST_TIMEOUT,
            ssh: None,
            idle: Arc::default(),
        })
    }

    /// The same client, reaching `addr` through ssh: a stdio forward to it,
    /// or the remote `golive-agent bridge` (issue 15).
    pub fn via_ssh(mut self, route: Arc<crate::ssh::Route>) -> AgentClient {
        self.ssh = Some(route);
        self
    }

    /// The address, and the ssh route when there is one, for messages.
    pub fn shown_addr(&self) -> String {
        match &self.ssh {
            None => self.addr.clone(),
            Some(route) => format!("{} {}", self.addr, route.describe()),
        }
    }

    /// The same client with another request deadline (tests).
    #[cfg(test)]
    fn with_timeout(mut self, timeout: Duration) -> AgentClient {
        self.timeout = timeout;
        self
    }

    fn err_connect(&self, detail: impl Into<String>) -> ClientError {
        ClientError::Connect {
            host: self.host.clone(),
            addr: self.shown_addr(),
            detail: detail.into(),
        }
    }

    async fn sender(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<BoxBody<Bytes, std::io::Error>>, ClientError>
    {
        if let Some(route) = &self.ssh {
            return self.sender_via_ssh(route).await;
        }
        let tcp = self.tcp().await?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(Arc::clone(&self.tls)).connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| self.tls_error("the handshake did not finish in time".into()))?
        .map_err(|e| self.tls_error(describe_tls(&e)))?;
        self.http(tls).await
    }

    async fn http<IO>(
        &self,
        tls: tokio_rustls::client::TlsStream<IO>,
    ) -> Result<hyper::client::conn::http1::SendRequest<BoxBody<Bytes, std::io::Error>>, ClientError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.classify_hyper(e))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// The connection through ssh: ssh's standard input and output carry
    /// the same TLS session as a TCP connection would, with the same
    /// certificate and server-name checks, so the SSH account proves
    /// nothing by itself. ssh gets [`CONNECT_TIMEOUT`] (or the call's
    /// shorter deadline) to reach the server, and twice that for the SSH
    /// and TLS handshakes together; when it fails, its own words are the
    /// error ("Permission denied (publickey)", "administratively
    /// prohibited", ...).
    async fn sender_via_ssh(
        &self,
        route: &crate::ssh::Route,
    ) -> Result<hyper::client::conn::http1::SendRequest<BoxBody<Bytes, std::io::Error>>, ClientError>
    {
        let connect = CONNECT_TIMEOUT.min(self.timeout);
        let (stream, mut diag) = route.spawn(&self.addr, connect).map_err(|e| {
            self.err_connect(format!(
                "cannot run ssh: {e}; install the OpenSSH client (ssh) on this machine"
            ))
        })?;
        let setup = 2 * connect;
        let handshake = tokio::time::timeout(
            setup,
            TlsConnector::from(Arc::clone(&self.tls)).connect(self.server_name.clone(), stream),
        )
        .await;
        match handshake {
            Ok(Ok(tls)) => self.http(tls).await,
            Ok(Err(e)) => match diag.failure(Duration::from_secs(3)).await {
                Some(ssh) => Err(self.err_connect(ssh)),
                None => Err(self.tls_error(describe_tls(&e))),
            },
            Err(_) => match diag.failure(Duration::ZERO).await {
                Some(ssh) => Err(self.err_connect(ssh)),
                None => Err(self.err_connect(diag.timed_out(setup))),
            },
        }
    }

    /// A TCP connection to the agent, with Nagle's algorithm off: requests
    /// and answers are small frames, and Nagle against the agent's delayed
    /// ACK cost 40 ms a round trip (issue 14).
    async fn tcp(&self) -> Result<tokio::net::TcpStream, ClientError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                self.err_connect(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))
            })?
            .map_err(|e| self.err_connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    fn tls_error(&self, detail: String) -> ClientError {
        ClientError::Tls {
            host: self.host.clone(),
            addr: self.shown_addr(),
            detail,
        }
    }

    /// In TLS 1.3 the server checks our certificate after our side of the
    /// handshake finished, so its refusal arrives as an alert on the first
    /// read. Find it in the error chain and say which side refused what.
    fn classify_hyper(&self, e: hyper::Error) -> ClientError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if let Some(inner) = io.get_ref()
                    && let Some(tls) = inner.downcast_ref::<rustls::Error>()
                {
                    return self.tls_error(describe_rustls(tls));
                }
                if io.kind() == std::io::ErrorKind::ConnectionReset {
                    return self.tls_error(
                        "the agent closed the connection; it may have refused our certificate"
                            .into(),
                    );
                }
            }
            source = s.source();
        }
        ClientError::Transport {
            host: self.host.clone(),
            addr: self.shown_addr(),
            detail: e.to_string(),
        }
    }

    async fn send(
        &self,
        req: hyper::Request<BoxBody<Bytes, std::io::Error>>,
    ) -> Result<Response, ClientError> {
        self.send_within(req, self.timeout).await
    }

    async fn send_within(
        &self,
        mut req: hyper::Request<BoxBody<Bytes, std::io::Error>>,
        deadline: Duration,
    ) -> Result<Response, ClientError> {
        // A kept-alive connection first: a request it could not take (the
        // agent closed it meanwhile) was not sent and goes on the next.
        while let Some(mut sender) = self.take_idle().await {
            match self.exchange_kept(&mut sender, req, deadline).await {
                Ok(r) => {
                    self.give_back(sender, &r);
                    return r;
                }
                Err(unsent) => req = unsent,
            }
        }
        let mut sender = self.sender().await?;
        let r = self.exchange(&mut sender, req, deadline).await;
        self.give_back(sender, &r);
        r
    }

    /// An idle connection young enough to reuse ([`REUSE_IDLE`]).
    async fn take_idle(&self) -> Option<Sender> {
        loop {
            let (mut sender, since) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if since.elapsed() >= REUSE_IDLE || sender.is_closed() {
                continue;
            }
            // Ready once the connection has seen the end of the last answer.
            if let Ok(Ok(())) = tokio::time::timeout(REUSE_IDLE, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Keeps a connection whose exchange ended with an answer (an agent's
    /// refusal is one) for the next call; one that failed is closed.
    fn give_back(&self, sender: Sender, r: &Result<Response, ClientError>) {
        if matches!(r, Ok(_) | Err(ClientError::Agent { .. })) && !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|(s, since)| since.elapsed() < REUSE_IDLE && !s.is_closed());
            if idle.len() < MAX_IDLE {
                idle.push((sender, std::time::Instant::now()));
            }
        }
    }

    /// [`Self::exchange`] on a kept-alive connection: `Err(request)` when
    /// the connection could not take it (closed before it was written), so
    /// it was not sent at all.
    async fn exchange_kept(
        &self,
        sender: &mut Sender,
        req: hyper::Request<BoxBody<Bytes, std::io::Error>>,
        deadline: Duration,
    ) -> Result<Result<Response, ClientError>, hyper::Request<BoxBody<Bytes, std::io::Error>>> {
        // One deadline for the head and the whole body, as on a new one.
        let answer = async {
            match sender.try_send_request(req).await {
                Ok(resp) => Ok(self.read_body(resp.into_body()).await),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => Err(unsent),
                    None => Ok(Err(self.classify_hyper(e.into_error()))),
                },
            }
        };
        match tokio::time::timeout(deadline, answer).await {
            Err(_) => Ok(Err(self.late(deadline))),
            Ok(Err(unsent)) => Err(unsent),
            Ok(Ok(Err(e))) => Ok(Err(e)),
            Ok(Ok(Ok(body))) => Ok(self.decode(&body)),
        }
    }

    /// One request on an open connection and its decoded answer.
    async fn exchange(
        &self,
        sender: &mut Sender,
        req: hyper::Request<BoxBody<Bytes, std::io::Error>>,
        deadline: Duration,
    ) -> Result<Response, ClientError> {
        // One deadline for the head and the whole body: an agent that
        // trickles its answer cannot hold the controller.
        let answer = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| self.classify_hyper(e))?;
            self.read_body(resp.into_body()).await
        };
        let body = tokio::time::timeout(deadline, answer)
            .await
            .map_err(|_| self.late(deadline))??;
        self.decode(&body)
    }

    /// No whole answer within `deadline`.
    fn late(&self, deadline: Duration) -> ClientError {
        self.transport(format!(
            "its answer did not finish within {}; is the agent overloaded, or is that \
                 address not a golive agent?",
            golive_shared::timefmt::seconds(deadline)
        ))
    }

    /// An answer's body decoded; an agent's refusal is `Err(Agent)`.
    fn decode(&self, body: &[u8]) -> Result<Response, ClientError> {
        match codec::decode::<Response>(body) {
            Ok(Response::Error(body)) => Err(ClientError::Agent {
                host: self.host.clone(),
                body,
            }),
            Ok(r) => Ok(r),
            Err(CodecError::Peer(msg)) => Err(ClientError::Agent {
                host: self.host.clone(),
                body: ErrorBody::new(ErrorCode::VersionMismatch, msg),
            }),
            Err(source) => Err(ClientError::Protocol {
                host: self.host.clone(),
                addr: self.shown_addr(),
                source,
            }),
        }
    }

    fn transport(&self, detail: String) -> ClientError {
        ClientError::Transport {
            host: self.host.clone(),
            addr: self.shown_addr(),
            detail,
        }
    }

    /// The body, at most [`MAX_RESPONSE_BYTES`]: a larger declared length is
    /// refused before reading, a longer stream as soon as it passes the cap.
    async fn read_body(&self, body: hyper::body::Incoming) -> Result<Bytes, ClientError> {
        let too_large = || {
            self.transport(format!(
                "its answer is larger than {} MiB, far more than any agent sends; it was not \
                 read (is that address a golive agent?)",
                MAX_RESPONSE_BYTES >> 20
            ))
        };
        if body.size_hint().lower() > MAX_RESPONSE_BYTES as u64 {
            return Err(too_large());
        }
        match http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => match e.downcast::<hyper::Error>() {
                Ok(e) => Err(self.classify_hyper(*e)),
                Err(e) => Err(self.transport(e.to_string())),
            },
        }
    }

    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host_part(&self.addr))
            .header(hyper::header::CONTENT_TYPE, codec::CONTENT_TYPE)
            .header(
                hyper::header::USER_AGENT,
                concat!("golivectl/", env!("CARGO_PKG_VERSION")),
            )
    }

    /// One framed request and its answer; an agent refusal is `Err(Agent)`.
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        self.send(self.rpc(req)).await
    }

    fn rpc(&self, req: &Request) -> hyper::Request<BoxBody<Bytes, std::io::Error>> {
        let body = Full::new(Bytes::from(codec::encode(req)))
            .map_err(|never| match never {})
            .boxed();
        self.request("POST", RPC_PATH)
            .body(body)
            .expect("static request parts")
    }

    /// A session: several reads on one kept-alive connection (issue 14:
    /// `golivectl probe` asks for the catalog, then runs the probes, and a
    /// TLS handshake per request was most of its cost on many hosts).
    pub fn session(&self) -> Session {
        Session {
            client: self.clone(),
            sender: None,
        }
    }

    /// Streams a file to the agent's content-addressed artifact store.
    pub async fn upload(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<ArtifactInfo, ClientError> {
        self.upload_with(path, sha256, size, None).await
    }

    /// [`upload`](Self::upload), telling `progress` the bytes handed to the
    /// connection so far: at most every [`PROGRESS_EVERY`], and once when
    /// the whole file is sent.
    pub async fn upload_with(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
        progress: Option<UploadProgress>,
    ) -> Result<ArtifactInfo, ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Transport {
                host: self.host.clone(),
                addr: self.shown_addr(),
                detail: format!("cannot open {}: {e}", path.display()),
            })?;
        let body = FileBody {
            file,
            remaining: size,
            sent: 0,
            progress: progress.map(|p| (p, Instant::now())),
        }
        .boxed();
        let req = self
            .request("PUT", &format!("{ARTIFACT_PATH}{sha256}"))
            .header(SIZE_HEADER, size.to_string())
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header(hyper::header::CONTENT_LENGTH, size.to_string())
            .body(body)
            .expect("static request parts");
        // A big artifact on a slow link needs longer than one request.
        let deadline = self.timeout + Duration::from_secs(size / MIN_UPLOAD_BYTES_PER_SEC);
        match self.send_within(req, deadline).await? {
            Response::Artifact(info) => Ok(info),
            other => Err(self.unexpected(&other)),
        }
    }

    pub fn unexpected(&self, resp: &Response) -> ClientError {
        ClientError::Transport {
            host: self.host.clone(),
            addr: self.shown_addr(),
            detail: format!("unexpected answer {resp:?}"),
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<BoxBody<Bytes, std::io::Error>>;

/// Calls to one agent over one connection, opened at the first call and
/// kept while the agent keeps it: when the agent closed it meanwhile (its
/// idle timeout, a restart), the next call opens a new one.
pub struct Session {
    client: AgentClient,
    sender: Option<Sender>,
}

impl Session {
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// [`AgentClient::call`] on the session's connection.
    pub async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let c = &self.client;
        if let Some(mut sender) = self.sender.take()
            && sender.ready().await.is_ok()
        {
            let r = c.exchange(&mut sender, c.rpc(req), c.timeout).await;
            self.sender = Some(sender);
            return r;
        }
        let mut sender = c.sender().await?;
        let r = c.exchange(&mut sender, c.rpc(req), c.timeout).await;
        self.sender = Some(sender);
        r
    }
}

/// The host part of `HOST:PORT` or `[V6]:PORT`.
pub fn host_part(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr)
}

fn describe_tls(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => describe_rustls(tls),
        None => e.to_string(),
    }
}

fn describe_rustls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked) => {
            "the agent refused our client certificate: its serial is on the agent's revocation \
             list (TLS alert CertificateRevoked); issue a new certificate with golivectl cert \
             operator and point the plan's tls.cert and tls.key at it"
                .into()
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the agent refused our client certificate (TLS alert {alert:?}); check that it is issued by \
             this deployment's CA, not expired and not revoked"
        ),
        rustls::Error::InvalidCertificate(why) => format!(
            "golivectl refused the agent's certificate ({why:?}); check the plan's tls.ca and the host's \
             address or server_name against the agent certificate's SANs"
        ),
        other => other.to_string(),
    }
}

/// Told the bytes of an upload sent so far (issue 14: the live progress
/// lines and `step_progress` events).
pub type UploadProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Upload progress is reported at most this often: a clock read per 64 KiB
/// frame, no allocation, and the callback ten times a second at most.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A request body that streams a file in 64 KiB frames: the controller never
/// holds an artifact in memory.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    sent: u64,
    /// The callback and when it was last called.
    progress: Option<(UploadProgress, Instant)>,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = self.remaining.min(64 * 1024) as usize;
        let mut buf = vec![0u8; want];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut self.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the artifact file shrank while it was uploaded",
                    ))));
                }
                self.remaining -= n as u64;
                self.sent += n as u64;
                let (sent, done) = (self.sent, self.remaining == 0);
                if let Some((report, last)) = &mut self.progress {
                    let now = Instant::now();
                    if done || now.duration_since(*last) >= PROGRESS_EVERY {
                        *last = now;
                        report(sent);
                    }
                }
                buf.truncate(n);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use golive_shared::identity::Role;
    use golive_shared::protocol::HelloRequest;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn issue12_the_agent_prefix_is_not_doubled() {
        let e = |m: &str| ClientError::Agent {
            host: "finca1".into(),
            body: ErrorBody::new(ErrorCode::BadRequest, m.to_string()),
        };
        assert_eq!(
            e("agent finca1: flag x is not declared").to_string(),
            "agent finca1: flag x is not declared"
        );
        assert_eq!(
            e("app shop on agent finca1 declares no command").to_string(),
            "agent finca1: app shop on agent finca1 declares no command"
        );
        assert_eq!(
            e("agent finca10: other").to_string(),
            "agent finca1: agent finca10: other"
        );
    }

    #[test]
    fn host_part() {
        assert_eq!(super::host_part("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(super::host_part("[::1]:7443"), "::1");
        assert_eq!(super::host_part("web1.example:7443"), "web1.example");
    }

    /// The controller's connections have TCP_NODELAY set (issue 14).
    #[tokio::test]
    async fn issue14_connections_have_nodelay() {
        let (_tmp, client, _) = hostile(Hostile::Trickle).await;
        let tcp = client.tcp().await.unwrap();
        assert!(tcp.nodelay().unwrap());
    }

    /// What the hostile agent does once it has read the request head.
    #[derive(Clone, Copy)]
    enum Hostile {
        /// A chunked body, one byte every 100 ms, forever.
        Trickle,
        /// A chunked body as fast as it goes, up to 64 MiB, then silence.
        Flood,
        /// A Content-Length of 1 GiB (and nothing after it).
        HugeLength,
    }

    /// A TLS server on loopback with a real agent certificate from a test
    /// CA that answers every request the hostile way; a client for it (the
    /// operator alice) and a counter of the body bytes the server got out.
    async fn hostile(how: Hostile) -> (tempfile::TempDir, AgentClient, Arc<AtomicU64>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        pki::ca_init(&dir, 30).unwrap();
        let agent = pki::issue_agent(&dir, "evil", &["127.0.0.1".into()], 10).unwrap();
        let alice = pki::issue_operator(&dir, "alice", Role::Operator, 5).unwrap();
        let server = golive_agent::tls::server_config(
            &dir.join(pki::CA_CERT),
            &agent.cert_path,
            &agent.key_path,
            Arc::new(golive_agent::revocation::DenyList::none()),
        )
        .unwrap();
        let tls =
            crate::tls::client_config(&dir.join(pki::CA_CERT), &alice.cert_path, &alice.key_path)
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(server);
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // The request head (the small body follows; unread).
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                        if tls.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-golive\r\n";
                    match how {
                        Hostile::HugeLength => {
                            let _ = tls
                                .write_all(
                                    format!("{ok}content-length: 1073741824\r\n\r\n").as_bytes(),
                                )
                                .await;
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        Hostile::Trickle | Hostile::Flood => {
                            let chunked = format!("{ok}transfer-encoding: chunked\r\n\r\n");
                            if tls.write_all(chunked.as_bytes()).await.is_err() {
                                return;
                            }
                            let piece = match how {
                                Hostile::Trickle => 1,
                                _ => 1 << 20,
                            };
                            let mut chunk = format!("{piece:x}\r\n").into_bytes();
                            chunk.extend(std::iter::repeat_n(b'G', piece));
                            chunk.extend_from_slice(b"\r\n");
                            for _ in 0..64 {
                                if tls.write_all(&chunk).await.is_err() {
                                    return;
                                }
                                counter.fetch_add(piece as u64, Ordering::Relaxed);
                                if let Hostile::Trickle = how {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                            }
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                    }
                });
            }
        });
        let client = AgentClient::new("evil", &addr, None, tls)
            .unwrap()
            .with_timeout(Duration::from_millis(1500));
        (tmp, client, sent)
    }

    /// Calls `hello` under an outer bound much longer than the client's own
    /// deadline: the client must give up by itself, with an error.
    async fn hello(client: &AgentClient) -> (ClientError, Duration) {
        let started = std::time::Instant::now();
        let req = Request::Hello(HelloRequest {
            client_version: "test".into(),
        });
        let result = tokio::time::timeout(Duration::from_secs(20), client.call(&req))
            .await
            .expect("golivectl waited past its own deadline for the agent's answer");
        (
            result.expect_err("a hostile answer is an error"),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn issue11_an_answer_that_trickles_is_cut_at_the_request_deadline() {
        let (_tmp, client, _) = hostile(Hostile::Trickle).await;
        let (err, took) = hello(&client).await;
        assert!(took < Duration::from_secs(5), "{took:?}");
        let text = err.to_string();
        assert!(text.contains("agent evil at 127.0.0.1:"), "{text}");
        assert!(text.contains("did not finish within 1.5 s"), "{text}");
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn issue11_an_endless_answer_is_cut_at_the_size_cap() {
        let (_tmp, client, sent) = hostile(Hostile::Flood).await;
        let (err, took) = hello(&client).await;
        assert!(took < Duration::from_secs(5), "{took:?}");
        let text = err.to_string();
        assert!(text.contains("agent evil at 127.0.0.1:"), "{text}");
        assert!(text.contains("larger than 16 MiB"), "{text}");
        // The client stopped reading at the cap: the server could not get
        // much more than that out (TLS and socket buffers aside).
        let out = sent.load(Ordering::Relaxed);
        assert!(
            out < (MAX_RESPONSE_BYTES + (8 << 20)) as u64,
            "{out} bytes went out"
        );

        let (_tmp, client, _) = hostile(Hostile::HugeLength).await;
        let (err, took) = hello(&client).await;
        assert!(
            took < Duration::from_secs(1),
            "refused at the header: {took:?}"
        );
        assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
    }
}
