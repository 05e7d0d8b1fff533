//! The controller's TLS client configuration: TLS 1.3 only, the agent must
//! present a certificate chained to the deployment's CA and valid for the
//! address dialled, and the controller presents its operator certificate.
//!
//! The PEM/key helpers and [`TlsFileError`] are [`golive_shared::pem`]'s,
//! re-exported, so both binaries report file problems the same way.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

// The file helpers and the error type are golive-shared's: both binaries
// read the same kinds of files and report problems the same way.
pub use golive_shared::pem::{TlsFileError, provider, read_key, read_pem_certs, read_roots};

/// The controller's TLS state: one client config shared by every connection.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTls, TlsFileError> {
        Ok(ClientTls {
            config: client_config(ca, cert, key)?,
        })
    }

    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the private key: never print it.
        f.write_str("ClientTls { .. }")
    }
}

/// Client config for the controller: TLS 1.3 only, the CA as the only root,
/// client auth with `cert` + `key`.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>, TlsFileError> {
    let roots = read_roots(ca)?;
    let chain = read_pem_certs(cert, "certificate")?;
    let key_der = read_key(key)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|source| TlsFileError::CertKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The name the agent's certificate must be valid for: an IP SAN when `host`
/// is an address, else a DNS SAN.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsFileError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|_| TlsFileError::BadServerName {
        host: host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use golive_shared::identity::{PeerIdentity, Role};
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::{fs, io};
    use time::{Duration, OffsetDateTime};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct Pki {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        server: Arc<rustls::ServerConfig>,
    }

    /// A CA with an agent certificate for 127.0.0.1 and its server config.
    fn pki() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        pki::ca_init(&dir, 30).unwrap();
        let agent = pki::issue_agent(&dir, "agent1", &["127.0.0.1".into()], 10).unwrap();
        let server = golive_agent::tls::server_config(
            &dir.join(pki::CA_CERT),
            &agent.cert_path,
            &agent.key_path,
            Arc::new(golive_agent::revocation::DenyList::none()),
        )
        .unwrap();
        Pki {
            _tmp: tmp,
            dir,
            server,
        }
    }

    fn client(ca_dir: &Path, issued: &pki::Issued) -> Arc<rustls::ClientConfig> {
        client_config(
            &ca_dir.join(pki::CA_CERT),
            &issued.cert_path,
            &issued.key_path,
        )
        .unwrap()
    }

    /// Runs one handshake plus a one-byte exchange each way. Returns the
    /// server's view (the verified peer) and the client's outcome.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> (Result<PeerIdentity, io::Error>, Result<(), io::Error>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            tls.write_all(&byte).await?;
            tls.shutdown().await?;
            PeerIdentity::from_der(&peer).map_err(io::Error::other)
        });
        let client_side = async {
            let tcp = TcpStream::connect(addr).await?;
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            tls.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            Ok(())
        };
        let limit = std::time::Duration::from_secs(10);
        let client_result = tokio::time::timeout(limit, client_side)
            .await
            .expect("client side timed out");
        let server_result = tokio::time::timeout(limit, server_side)
            .await
            .expect("server side timed out")
            .unwrap();
        (server_result, client_result)
    }

    fn localhost() -> ServerName<'static> {
        ServerName::IpAddress(Ipv4Addr::LOCALHOST.into())
    }

    #[tokio::test]
    async fn handshake_succeeds_with_operator_certificate() {
        let pki = pki();
        let alice = pki::issue_operator(&pki.dir, "alice", Role::Operator, 5).unwrap();
        let (server, client_result) =
            handshake(pki.server.clone(), client(&pki.dir, &alice), localhost()).await;
        client_result.unwrap();
        let peer = server.unwrap();
        assert_eq!(peer.name, "alice");
        assert_eq!(peer.role, Some(Role::Operator));
        assert_eq!(peer.serial, alice.serial);
    }

    #[tokio::test]
    async fn handshake_fails_with_certificate_from_another_ca() {
        let pki = pki();
        let other = tempfile::tempdir().unwrap();
        pki::ca_init(other.path(), 30).unwrap();
        let mallory = pki::issue_operator(other.path(), "mallory", Role::Admin, 5).unwrap();
        // Trusts the right CA for the agent, but presents a foreign client cert.
        let config = client_config(
            &pki.dir.join(pki::CA_CERT),
            &mallory.cert_path,
            &mallory.key_path,
        )
        .unwrap();
        let (server, client_result) = handshake(pki.server.clone(), config, localhost()).await;
        let err = server.unwrap_err().to_string();
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(client_result.is_err());
    }

    #[tokio::test]
    async fn handshake_fails_with_expired_certificate() {
        let pki = pki();
        let now = OffsetDateTime::now_utc();
        let old = pki::issue_operator_with_validity(
            &pki.dir,
            "old",
            Role::Operator,
            now - Duration::days(10),
            now - Duration::days(1),
        )
        .unwrap();
        let (server, client_result) =
            handshake(pki.server.clone(), client(&pki.dir, &old), localhost()).await;
        let err = server.unwrap_err().to_string();
        assert!(err.contains("certificate expired"), "{err}");
        assert!(client_result.is_err());
    }

    #[tokio::test]
    async fn client_verifies_the_agent_ip_san() {
        let pki = pki();
        let alice = pki::issue_operator(&pki.dir, "alice", Role::Viewer, 5).unwrap();
        // The agent certificate is for 127.0.0.1 only.
        let wrong = ServerName::IpAddress(Ipv4Addr::new(127, 0, 0, 2).into());
        let (_, client_result) =
            handshake(pki.server.clone(), client(&pki.dir, &alice), wrong).await;
        let err = client_result.unwrap_err().to_string();
        assert!(err.contains("not valid for name \"127.0.0.2\""), "{err}");
    }

    #[test]
    fn server_name_prefers_ip_addresses() {
        assert!(matches!(
            server_name("10.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("db1.example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad host").is_err());
    }

    #[test]
    fn unusable_files_are_named() {
        let pki = pki();
        let alice = pki::issue_operator(&pki.dir, "alice", Role::Viewer, 5).unwrap();
        let ca = pki.dir.join(pki::CA_CERT);

        let missing = pki.dir.join("nope.crt");
        let err = client_config(&missing, &alice.cert_path, &alice.key_path).unwrap_err();
        assert!(matches!(err, TlsFileError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope.crt"), "{err}");

        // A key where the certificate should be, and vice versa.
        let err = client_config(&ca, &alice.key_path, &alice.key_path).unwrap_err();
        assert!(matches!(err, TlsFileError::NoCert { .. }), "{err}");
        let copy = pki.dir.join("cert-as-key.pem");
        fs::copy(&alice.cert_path, &copy).unwrap();
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).unwrap();
        let err = client_config(&ca, &alice.cert_path, &copy).unwrap_err();
        assert!(matches!(err, TlsFileError::NoKey { .. }), "{err}");

        fs::set_permissions(&alice.key_path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = client_config(&ca, &alice.cert_path, &alice.key_path).unwrap_err();
        assert!(
            matches!(err, TlsFileError::KeyPermissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
