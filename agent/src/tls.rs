//! The agent's TLS server configuration: TLS 1.3 only, client certificate
//! required and chained to the deployment's CA, ALPN `http/1.1`.
//!
//! The deny list is checked here, inside the handshake ([`DenyListVerifier`]):
//! a revoked certificate never gets a request read, decoded or audited
//! (issue 11). Roles are enforced above this layer, from the verified peer
//! certificate (see `golive_shared::identity`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName};

use crate::revocation::DenyList;

// The TLS file helpers and their error are golive-shared's (the controller
// reads the same kinds of files): re-exported, so both binaries report file
// problems the same way.
pub use golive_shared::pem::{TlsFileError, provider, read_key, read_pem_certs, read_roots};

/// Server config for the agent: TLS 1.3 only, client certificate required,
/// chained to `ca` and not on `deny`.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    deny: Arc<DenyList>,
) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    let provider = provider();
    let roots = Arc::new(read_roots(ca)?);
    let chain_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsFileError::BadCa {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    let verifier = Arc::new(DenyListVerifier {
        inner: chain_verifier,
        deny,
    });
    let chain = read_pem_certs(cert, "certificate")?;
    let key_der = read_key(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|source| TlsFileError::CertKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA chain check, then the deny list: a revoked certificate fails the
/// handshake with the `certificate_revoked` alert, which golivectl turns
/// into "on the agent's revocation list".
#[derive(Debug)]
pub struct DenyListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    deny: Arc<DenyList>,
}

impl ClientCertVerifier for DenyListVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain first: a stranger's certificate gets the usual refusal
        // and costs no parsing here.
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !self.deny.is_empty() {
            let serial = serial_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ))?;
            if self.deny.contains(&serial) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate's serial in the deny list's form.
fn serial_of(der: &CertificateDer<'_>) -> Option<String> {
    let cert = golive_shared::x509::read(der.as_ref()).ok()?;
    Some(golive_shared::identity::normalize_serial(&cert.serial_hex))
}
