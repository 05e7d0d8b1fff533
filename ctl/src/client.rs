//! The transport to one agent: mutual TLS, HTTP/1.1, framed requests and
//! streamed uploads. It knows nothing of plans or waves; every error names
//! the host, the address and the cause.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

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
    #[error("agent {host}: {body}")]
    Agent { host: String, body: ErrorBody },
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

/// A client for one agent. Cheap to clone; each call opens a connection (the
/// controller makes few calls, and a fresh connection survives agent restarts).
#[derive(Clone)]
pub struct AgentClient {
    pub host: String,
    pub addr: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

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
        })
    }

    fn err_connect(&self, detail: impl Into<String>) -> ClientError {
        ClientError::Connect {
            host: self.host.clone(),
            addr: self.addr.clone(),
            detail: detail.into(),
        }
    }

    async fn sender(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<BoxBody<Bytes, std::io::Error>>, ClientError>
    {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                self.err_connect(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))
            })?
            .map_err(|e| self.err_connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(Arc::clone(&self.tls)).connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| self.tls_error("the handshake did not finish in time".into()))?
        .map_err(|e| self.tls_error(describe_tls(&e)))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.classify_hyper(e))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn tls_error(&self, detail: String) -> ClientError {
        ClientError::Tls {
            host: self.host.clone(),
            addr: self.addr.clone(),
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
            addr: self.addr.clone(),
            detail: e.to_string(),
        }
    }

    async fn send(
        &self,
        req: hyper::Request<BoxBody<Bytes, std::io::Error>>,
    ) -> Result<Response, ClientError> {
        let mut sender = self.sender().await?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| ClientError::Transport {
                host: self.host.clone(),
                addr: self.addr.clone(),
                detail: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            })?
            .map_err(|e| self.classify_hyper(e))?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.classify_hyper(e))?
            .to_bytes();
        match codec::decode::<Response>(&body) {
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
                addr: self.addr.clone(),
                source,
            }),
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
        let body = Full::new(Bytes::from(codec::encode(req)))
            .map_err(|never| match never {})
            .boxed();
        let req = self
            .request("POST", RPC_PATH)
            .body(body)
            .expect("static request parts");
        self.send(req).await
    }

    /// Streams a file to the agent's content-addressed artifact store.
    pub async fn upload(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<ArtifactInfo, ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Transport {
                host: self.host.clone(),
                addr: self.addr.clone(),
                detail: format!("cannot open {}: {e}", path.display()),
            })?;
        let body = FileBody {
            file,
            remaining: size,
        }
        .boxed();
        let req = self
            .request("PUT", &format!("{ARTIFACT_PATH}{sha256}"))
            .header(SIZE_HEADER, size.to_string())
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header(hyper::header::CONTENT_LENGTH, size.to_string())
            .body(body)
            .expect("static request parts");
        match self.send(req).await? {
            Response::Artifact(info) => Ok(info),
            other => Err(self.unexpected(&other)),
        }
    }

    pub fn unexpected(&self, resp: &Response) -> ClientError {
        ClientError::Transport {
            host: self.host.clone(),
            addr: self.addr.clone(),
            detail: format!("unexpected answer {resp:?}"),
        }
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

/// A request body that streams a file in 64 KiB frames: the controller never
/// holds an artifact in memory.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
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
    #[test]
    fn host_part() {
        assert_eq!(super::host_part("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(super::host_part("[::1]:7443"), "::1");
        assert_eq!(super::host_part("web1.example:7443"), "web1.example");
    }
}
