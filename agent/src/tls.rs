//! The agent's TLS server configuration: TLS 1.3 only, client certificate
//! required and chained to the deployment's CA, ALPN `http/1.1`.
//!
//! The deny list is checked here, inside the handshake ([`DenyListVerifier`]):
//! a revoked certificate never gets a request read, decoded or audited
//! (issue 11). Roles are enforced above this layer, from the verified peer
//! certificate (see `golive_shared::identity`).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::revocation::DenyList;

/// A TLS file (CA, certificate, key) that cannot be used, naming the file and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {} is not valid PEM: {reason}", path.display())]
    BadPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{what} {} contains no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)",
        path.display()
    )]
    NoCert { what: &'static str, path: PathBuf },
    #[error(
        "private key {} contains no PEM private key (expected -----BEGIN PRIVATE KEY-----)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error(
        "private key {} is readable by group or others (mode {mode:03o}); run `chmod 600 {}`",
        path.display(), path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("CA certificate {} was rejected: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("{host:?} is neither an IP address nor a valid DNS name")]
    BadServerName { host: String },
    #[error(
        "certificate {} and key {} cannot be used together: {source}",
        cert.display(), key.display()
    )]
    CertKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The only crypto provider golive uses, passed explicitly so nothing depends
/// on a process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

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
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()).ok()?;
    Some(golive_shared::identity::normalize_serial(
        &cert.raw_serial_as_string(),
    ))
}

/// All certificates in a PEM file; at least one. `what` names the file's role
/// in messages ("CA certificate", "certificate").
pub fn read_pem_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCert {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The CA certificate(s) as a root store.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in read_pem_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| TlsFileError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The private key from a PEM file, refusing a key that group or others can
/// read: a readable key is a leaked key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let meta = fs::metadata(path).map_err(|source| TlsFileError::Read {
        what: "private key",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsFileError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsFileError::NoKey {
            path: path.to_path_buf(),
        },
        e => pem_error("private key", path, e),
    })
}

fn pem_error(what: &'static str, path: &Path, e: pem::Error) -> TlsFileError {
    match e {
        pem::Error::Io(source) => TlsFileError::Read {
            what,
            path: path.to_path_buf(),
            source,
        },
        e => TlsFileError::BadPem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}
