//! The TLS files both binaries read: PEM certificates (a chain, a CA as a
//! root store) and the private key, refused when group or others can read
//! it. Every problem is a [`TlsFileError`] naming the file, its role and the
//! fix, so the agent and golivectl report them the same way.
//!
//! The TLS configs themselves stay with their binary: the agent's server
//! (with its deny list) in `golive_agent::tls`, the controller's client in
//! `golivectl::tls`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: the PEM helpers live in golive-shared and name each
    /// problem (missing file, no certificate, no key, a readable key).
    #[test]
    fn issue14_pem_files_are_read_and_problems_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let crt = dir.join("ca.crt");
        let k = dir.join("ca.key");
        fs::write(&crt, cert.pem()).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        fs::set_permissions(&k, fs::Permissions::from_mode(0o600)).unwrap();

        assert_eq!(read_pem_certs(&crt, "certificate").unwrap().len(), 1);
        assert_eq!(read_roots(&crt).unwrap().len(), 1);
        read_key(&k).unwrap();

        let err = read_pem_certs(&dir.join("nope.crt"), "certificate").unwrap_err();
        assert!(matches!(err, TlsFileError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope.crt"), "{err}");
        let err = read_pem_certs(&k, "certificate").unwrap_err();
        assert!(matches!(err, TlsFileError::NoCert { .. }), "{err}");
        let as_key = dir.join("cert-as-key.pem");
        fs::copy(&crt, &as_key).unwrap();
        fs::set_permissions(&as_key, fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_key(&as_key).unwrap_err();
        assert!(matches!(err, TlsFileError::NoKey { .. }), "{err}");
        fs::set_permissions(&k, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_key(&k).unwrap_err();
        assert!(
            matches!(err, TlsFileError::KeyPermissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
