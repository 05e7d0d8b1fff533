//! Who a peer is: the name and role carried in its certificate.
//!
//! The CA signs the role into every certificate as a URI subject alternative
//! name `urn:golive:role:<role>`; the name is the subject common name. Since
//! the CA signs both, a client cannot pick its own role. The agent authorises
//! every request by this role; an agent certificate (role `agent`) is never
//! accepted as an operator.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of the URI SAN that carries the role.
pub const ROLE_URI_PREFIX: &str = "urn:golive:role:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// status, probes, history
    Viewer,
    /// + deploy, maintenance, backup, rollback, commands
    Operator,
    /// + restore of arbitrary backups, revocation reload, breaking locks
    Admin,
    /// An agent's own certificate: serves, never operates.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            "agent" => Role::Agent,
            _ => return None,
        })
    }

    fn rank(self) -> u8 {
        match self {
            Role::Agent => 0,
            Role::Viewer => 1,
            Role::Operator => 2,
            Role::Admin => 3,
        }
    }

    /// True when a peer with this role may do what `required` allows.
    /// `Agent` satisfies nothing: agent certificates only serve.
    pub fn allows(self, required: Role) -> bool {
        self != Role::Agent && required != Role::Agent && self.rank() >= required.rank()
    }

    /// The URI SAN value for this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified peer, read from its (already chain-verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub name: String,
    /// `None` when the certificate carries no golive role: such a peer may do nothing.
    pub role: Option<Role>,
    /// Serial number, lowercase hex without separators (the deny-list format).
    pub serial: String,
    /// sha256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Why a certificate gives no identity. The agent refuses the connection and
/// logs this text, so it names the certificate and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the peer certificate: {0}")]
    Unreadable(String),
    /// More than one role SAN (issue 11): whichever one a reader picked, it
    /// would be guessing what the CA meant.
    #[error(
        "certificate {name:?} (serial {serial}) is refused: it carries {} role SANs ({}), so its \
         role is ambiguous; a golive certificate carries exactly one. Revoke it and issue a new \
         one with `golivectl cert`",
        roles.len(),
        roles.iter().map(|r| format!("{ROLE_URI_PREFIX}{r}")).collect::<Vec<_>>().join(", ")
    )]
    AmbiguousRole {
        name: String,
        serial: String,
        /// The role values in certificate order (what follows the prefix).
        roles: Vec<String>,
    },
    /// A role SAN whose value is no role this version knows: refused rather
    /// than read as "no role", so the log says why the peer gets nothing.
    #[error(
        "certificate {name:?} (serial {serial}) is refused: its role SAN {ROLE_URI_PREFIX}{value} \
         names no known role (viewer, operator, admin, agent); issue a new certificate with \
         `golivectl cert`"
    )]
    UnknownRole {
        name: String,
        serial: String,
        value: String,
    },
}

impl PeerIdentity {
    /// Reads name, role, serial and expiry from a certificate. A certificate
    /// with more than one `urn:golive:role:` URI SAN, or with one naming an
    /// unknown role, is refused; one without any has no role (a CA, say).
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let cert = crate::x509::read(der).map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let name = cert.common_name.unwrap_or_default();
        let serial = normalize_serial(&cert.serial_hex);
        let roles: Vec<String> = cert
            .uri_sans
            .iter()
            .filter_map(|uri| uri.strip_prefix(ROLE_URI_PREFIX))
            .map(str::to_string)
            .collect();
        let role = match roles.as_slice() {
            [] => None,
            [one] => Some(Role::parse(one).ok_or_else(|| IdentityError::UnknownRole {
                name: name.clone(),
                serial: serial.clone(),
                value: one.clone(),
            })?),
            _ => {
                return Err(IdentityError::AmbiguousRole {
                    name,
                    serial,
                    roles,
                });
            }
        };
        Ok(PeerIdentity {
            name,
            role,
            serial,
            fingerprint: hex::encode(Sha256::digest(der)),
            not_after: cert.not_after,
        })
    }

    pub fn role_str(&self) -> &'static str {
        self.role.map(Role::as_str).unwrap_or("none")
    }
}

/// Serials are compared as lowercase hex without separators or leading zeros,
/// so `01:A2`, `0x1a2` and `1a2` all name the same certificate.
pub fn normalize_serial(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ladder() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Agent.allows(Role::Viewer));
        assert!(!Role::Admin.allows(Role::Agent));
    }

    /// A self-signed certificate named `cn` with these URI SANs.
    fn cert_with_uris(cn: &str, uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI(u.to_string().try_into().unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn one_role_san_is_read() {
        let der = cert_with_uris(
            "alice",
            &["https://example.com/", "urn:golive:role:operator"],
        );
        let peer = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(peer.name, "alice");
        assert_eq!(peer.role, Some(Role::Operator));
        let none = PeerIdentity::from_der(&cert_with_uris("ca", &[])).unwrap();
        assert_eq!(none.role, None);
    }

    #[test]
    fn issue11_two_role_sans_are_refused_naming_both() {
        let der = cert_with_uris(
            "mallory",
            &["urn:golive:role:viewer", "urn:golive:role:admin"],
        );
        let err = PeerIdentity::from_der(&der).unwrap_err();
        let IdentityError::AmbiguousRole {
            name,
            serial,
            roles,
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(name, "mallory");
        assert!(!serial.is_empty());
        assert_eq!(roles, &["viewer", "admin"]);
        let text = err.to_string();
        for want in [
            "mallory",
            "urn:golive:role:viewer",
            "urn:golive:role:admin",
            "golivectl cert",
        ] {
            assert!(text.contains(want), "{want:?} missing: {text}");
        }
        // The same role twice is just as ambiguous about what the CA meant.
        let der = cert_with_uris("bob", &["urn:golive:role:admin", "urn:golive:role:admin"]);
        let err = PeerIdentity::from_der(&der).unwrap_err();
        assert!(
            matches!(&err, IdentityError::AmbiguousRole { roles, .. } if roles == &["admin", "admin"]),
            "{err}"
        );
    }

    #[test]
    fn issue11_unknown_role_value_is_refused() {
        let der = cert_with_uris("eve", &["urn:golive:role:superuser"]);
        let err = PeerIdentity::from_der(&der).unwrap_err();
        assert!(
            matches!(&err, IdentityError::UnknownRole { value, .. } if value == "superuser"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("eve") && text.contains("urn:golive:role:superuser"),
            "{text}"
        );
        assert!(text.contains("viewer, operator, admin"), "{text}");
        // An unknown role next to a known one is two role SANs: ambiguous.
        let der = cert_with_uris("eve", &["urn:golive:role:operator", "urn:golive:role:root"]);
        let err = PeerIdentity::from_der(&der).unwrap_err();
        assert!(matches!(err, IdentityError::AmbiguousRole { .. }), "{err}");
    }

    #[test]
    fn garbage_is_unreadable() {
        let err = PeerIdentity::from_der(b"not a certificate").unwrap_err();
        assert!(matches!(err, IdentityError::Unreadable(_)), "{err}");
        assert!(
            err.to_string().contains("cannot read the peer certificate"),
            "{err}"
        );
    }

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("01:A2"), "1a2");
        assert_eq!(normalize_serial("0x1A2"), "1a2");
        assert_eq!(normalize_serial(" 1a2\n"), "1a2");
    }
}
