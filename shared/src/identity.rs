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
use x509_parser::prelude::*;

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

#[derive(Debug, thiserror::Error)]
#[error("cannot read the peer certificate: {0}")]
pub struct IdentityError(String);

impl PeerIdentity {
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError(e.to_string()))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string();
        let mut role = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for gn in &san.value.general_names {
                if let GeneralName::URI(uri) = gn
                    && let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX)
                {
                    role = Role::parse(r);
                }
            }
        }
        Ok(PeerIdentity {
            name,
            role,
            serial: normalize_serial(&cert.raw_serial_as_string()),
            fingerprint: hex::encode(Sha256::digest(der)),
            not_after: cert.validity().not_after.timestamp(),
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

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("01:A2"), "1a2");
        assert_eq!(normalize_serial("0x1A2"), "1a2");
        assert_eq!(normalize_serial(" 1a2\n"), "1a2");
    }
}
