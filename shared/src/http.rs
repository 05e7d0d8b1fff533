//! The HTTP/1.1 client both binaries use outside their mTLS link: the
//! agent's http(s) probes (GET) and the webhooks of the watchdog and of
//! golivectl (POST, [`crate::notify`]). hyper over TCP, or over rustls for
//! https; one request per connection; at most [`MAX_BODY`] of a body read.
//!
//! Transport trouble comes back as a message (`Err(String)`) that says what
//! failed and, for a certificate problem, the usual fix; judging the answer
//! is the caller's.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::ProbeUrl;

/// Bodies beyond this are not read.
pub const MAX_BODY: usize = 1024 * 1024;

/// What a server answered.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body was longer than [`MAX_BODY`].
    pub truncated: bool,
}

/// POSTs `json` to `url` and reads the answer's status (the webhooks,
/// [`crate::notify`]: trusting the system roots or `ca_file`).
pub async fn post_json(
    url: &ProbeUrl,
    ca_file: Option<&Path>,
    json: Vec<u8>,
) -> Result<u16, String> {
    let tls = if url.https {
        Some(tls_config(true, ca_file.map(Path::to_path_buf)).await?)
    } else {
        None
    };
    let req = hyper::Request::post(url.path.as_str())
        .header(header::HOST, url.host_header())
        .header(header::USER_AGENT, "golive webhook")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, json.len())
        .body(Full::new(Bytes::from(json)).boxed())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    send(url, tls, req).await.map(|a| a.status)
}

/// A request body: empty (GET) or whole (POST), one type for both so the
/// HTTP client is compiled once.
pub type ReqBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// Connects to `url` (TLS when https), sends `req`, reads the answer.
pub async fn send(
    url: &ProbeUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: hyper::Request<ReqBody>,
) -> Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", url.host_header()))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(config) if url.https => {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| format!("{:?} cannot be a TLS server name: {e}", url.host))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| handshake_error(&e))?;
            exchange(Box::new(stream), req).await
        }
        _ => exchange(Box::new(tcp), req).await,
    }
}

/// A byte stream to talk HTTP over: plain TCP or TLS. Boxed, so the HTTP
/// client is compiled once, not once per stream type (the agent's size is
/// its idle memory).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// A TLS failure, with the usual fix when the certificate is the problem.
fn handshake_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("certificate") {
        format!(
            "TLS handshake failed: {text}; for a private CA set ca_file, \
             or tls_verify = false to check the answer without trusting the certificate"
        )
    } else {
        format!("TLS handshake failed: {text}")
    }
}

/// Aborts the connection task when the exchange ends, however it ends.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange(io: Box<dyn Stream>, req: hyper::Request<ReqBody>) -> Result<Answer, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let _driver = Driver(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let (parts, mut body) = resp.into_parts();
    let mut buf: Vec<u8> = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the body broke off: {e}"))?;
        if let Ok(data) = frame.into_data() {
            let room = MAX_BODY - buf.len();
            if data.len() > room {
                buf.extend_from_slice(&data[..room]);
                truncated = true;
                break;
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Bytes::from(buf),
        truncated,
    })
}

/// A client config for http(s): TLS 1.2 and 1.3 (a probed site may not
/// speak 1.3 yet), ALPN http/1.1, trusting `ca_file`, else the system
/// roots, or any certificate when `verify` is false.
pub async fn tls_config(
    verify: bool,
    ca_file: Option<std::path::PathBuf>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = crate::pem::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = if verify {
        // Reading the system store is file I/O.
        let roots = tokio::task::spawn_blocking(move || roots(ca_file.as_deref()))
            .await
            .map_err(|e| format!("loading CA certificates stopped: {e}"))??;
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The probe's CA file, else the system's roots (read on every run, so an
/// updated system store needs no agent restart).
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    if let Some(f) = ca_file {
        return crate::pem::read_roots(f).map_err(|e| e.to_string());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no system CA certificates found{why}; install the ca-certificates package, \
             or set ca_file"
        ));
    }
    Ok(roots)
}

/// Accepts any server certificate (handshake signatures are still checked).
/// For the tls probe, which measures expiry rather than trust, and for
/// https probes with `tls_verify = false`.
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
