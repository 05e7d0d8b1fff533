//! Network probes: `tcp` (a connection opens), `tls` (days left on the
//! certificate a server presents, read even when it is not trusted) and
//! `dns` (the system resolver's answer for a name).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use golive_shared::config::{DnsProbe, TcpProbe, TlsProbe, parse_host_port};
use rustls::pki_types::ServerName;

use super::{Check, ms};

pub(super) async fn tcp(p: &TcpProbe) -> Check {
    let (host, port) = match parse_host_port(&p.address) {
        Ok(a) => a,
        Err(e) => return Check::error(e),
    };
    let started = Instant::now();
    match tokio::net::TcpStream::connect((host.as_str(), port)).await {
        Ok(_) => {
            let took = ms(started.elapsed());
            Check::pass(
                format!("connected, {took}"),
                format!("{} accepts connections ({took})", p.address),
            )
        }
        Err(e) => Check::fail(
            "not connected",
            format!("cannot connect to {}: {e}", p.address),
        ),
    }
}

pub(super) async fn tls(p: &TlsProbe) -> Check {
    let (host, port) = match parse_host_port(&p.address) {
        Ok(a) => a,
        Err(e) => return Check::error(e),
    };
    let sni = p.server_name.clone().unwrap_or_else(|| host.clone());
    let name = match ServerName::try_from(sni.clone()) {
        Ok(n) => n,
        Err(e) => return Check::error(format!("{sni:?} cannot be a TLS server name: {e}")),
    };
    let provider = crate::tls::provider();
    let config = match rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(golive_shared::http::AnyCertificate(
                provider,
            )))
            .with_no_client_auth(),
        Err(e) => return Check::error(format!("TLS setup: {e}")),
    };
    let tcp = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => return Check::error(format!("cannot connect to {}: {e}", p.address)),
    };
    let stream = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return Check::error(format!(
                "TLS handshake with {} (name {sni}) failed: {e}",
                p.address
            ));
        }
    };
    let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return Check::error(format!("{} presented no certificate", p.address));
    };
    let cert = match golive_shared::x509::read(leaf.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            return Check::error(format!(
                "the certificate of {} cannot be read: {e}",
                p.address
            ));
        }
    };
    let not_after = cert.not_after;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let left = not_after - now;
    let days = left.div_euclid(86_400);
    let subject = cert
        .common_name
        .map(|cn| format!("CN={cn}"))
        .unwrap_or_else(|| "no common name".into());
    let expires = golive_shared::timefmt::utc(not_after.saturating_mul(1000));
    if left < 0 {
        return Check::fail(
            format!("expired {} days ago", -days),
            format!(
                "the certificate of {} ({subject}) expired at {expires}",
                p.address
            ),
        );
    }
    Check::judge(
        days >= i64::from(p.min_days),
        format!("{days} days"),
        format!(
            "the certificate of {} ({subject}) expires at {expires}: {days} days left, \
             {} wanted",
            p.address, p.min_days
        ),
    )
}

pub(super) async fn dns(p: &DnsProbe) -> Check {
    let started = Instant::now();
    let found: BTreeSet<IpAddr> = match tokio::net::lookup_host((p.host.as_str(), 0)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            return Check::fail("no answer", format!("{} does not resolve: {e}", p.host));
        }
    };
    let took = ms(started.elapsed());
    let list = found
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if found.is_empty() {
        return Check::fail("no addresses", format!("{} resolves to no address", p.host));
    }
    let expected: BTreeSet<IpAddr> = p.expect.iter().filter_map(|a| a.parse().ok()).collect();
    let unexpected: Vec<String> = found
        .iter()
        .filter(|a| !expected.is_empty() && !expected.contains(a))
        .map(IpAddr::to_string)
        .collect();
    if unexpected.is_empty() {
        let message = format!("{} resolves to {list} ({took})", p.host);
        Check::pass(list, message)
    } else {
        Check::fail(
            list.clone(),
            format!(
                "{} resolves to {list}; not expected: {}",
                p.host,
                unexpected.join(", ")
            ),
        )
    }
}
