//! The deployment's own certificate authority: `golivectl ca init`, `cert agent`,
//! `cert operator` and `revoke`.
//!
//! Layout of a CA directory:
//!
//! ```text
//! DIR/ca.crt  ca.key            the CA (key 0600, directory 0700)
//! DIR/agents/NAME.crt .key      role agent, serverAuth + clientAuth, DNS/IP SANs
//! DIR/operators/NAME.crt .key   role viewer|operator|admin, clientAuth
//! DIR/revoked.txt               deny list: one serial per line, `#` comments
//! ```
//!
//! The role travels as a URI SAN (`urn:golive:role:<role>`, see
//! [`golive_shared::identity`]); the name is the subject CN. Nothing here ever
//! overwrites a key or certificate: issuing the same name twice is refused.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use golive_shared::identity::{
    IdentityError, PeerIdentity, ROLE_URI_PREFIX, Role, normalize_serial,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Certificates start this far in the past so a host whose clock lags a little
/// still accepts a freshly issued certificate.
const CLOCK_SKEW: Duration = Duration::minutes(5);
/// Upper bound for `--days` (100 years): beyond it the date arithmetic and the
/// X.509 time encoding stop being meaningful.
const MAX_DAYS: u32 = 36_500;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const REVOKED: &str = "revoked.txt";
pub const AGENTS_DIR: &str = "agents";
pub const OPERATORS_DIR: &str = "operators";

/// A certificate that was just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Lowercase hex, normalised like [`normalize_serial`] (the deny-list format).
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{} already exists; {hint}", path.display())]
    AlreadyExists { path: PathBuf, hint: String },
    #[error(
        "invalid name {name:?}: {reason}; use 1-64 characters from A-Z a-z 0-9 . _ - \
         (not starting with '.'), it becomes a file name"
    )]
    BadName { name: String, reason: &'static str },
    #[error(
        "role {role} cannot be given to an operator certificate; use viewer, operator or admin \
         (agent certificates come from `golivectl cert agent`)"
    )]
    BadRole { role: Role },
    #[error(
        "agent certificate {name:?} needs at least one --san: the host name or IP address \
         the controller connects to"
    )]
    NoSan { name: String },
    #[error("invalid --san {san:?}: {reason}")]
    BadSan { san: String, reason: String },
    #[error("invalid validity: {0}")]
    BadValidity(String),
    #[error(
        "no CA in {}: {} is missing; run `golivectl ca init` for this directory first",
        dir.display(), missing.display()
    )]
    NoCa { dir: PathBuf, missing: PathBuf },
    #[error("cannot revoke {input:?}: {reason}")]
    BadRevokeTarget { input: String, reason: String },
    #[error("{} is not usable: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

impl PkiError {
    /// True for bad usage or input (exit code 2); false for I/O and crypto
    /// failures, which are the environment's fault rather than the caller's.
    pub fn is_usage_error(&self) -> bool {
        match self {
            PkiError::AlreadyExists { .. }
            | PkiError::BadName { .. }
            | PkiError::BadRole { .. }
            | PkiError::NoSan { .. }
            | PkiError::BadSan { .. }
            | PkiError::BadValidity(_)
            | PkiError::NoCa { .. }
            | PkiError::BadRevokeTarget { .. }
            | PkiError::BadFile { .. } => true,
            PkiError::Io { .. } | PkiError::Generate { .. } => false,
        }
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PkiError + use<> {
    let path = path.to_path_buf();
    move |source| PkiError::Io {
        action,
        path,
        source,
    }
}

fn gen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Generate { what, source }
}

/// Creates the CA in `dir` (made 0700 if missing). Refuses if either CA file exists.
pub fn ca_init(dir: &Path, days: u32) -> Result<Issued, PkiError> {
    let (not_before, not_after) = validity_for_days(days)?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(PkiError::AlreadyExists {
                path: path.clone(),
                hint: "a CA already lives in this directory; use another directory, \
                       or move the old CA away if you really mean to replace it \
                       (every certificate it issued stops working)"
                    .into(),
            });
        }
    }
    ensure_private_dir(dir)?;

    let base = fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "golive".into());
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("golive CA {base}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_after;
    let serial = random_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let key = KeyPair::generate().map_err(gen_err("the CA key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(gen_err("the CA certificate"))?;
    write_pair(&cert_path, &cert.pem(), &key_path, &key.serialize_pem())?;
    // An empty deny list that agents can load as it is: an agent refuses to
    // start on a missing or empty list (it fails closed, issue 11).
    let revoked = dir.join(REVOKED);
    if !revoked.exists() {
        write_atomic(dir, &revoked, REVOKED_HEADER.as_bytes())?;
    }
    Ok(Issued {
        cert_path,
        key_path,
        serial: normalize_serial(&hex::encode(serial)),
        not_after: rfc3339(not_after),
    })
}

/// The first lines of every deny list golivectl writes.
pub const REVOKED_HEADER: &str = "# golive revocation list: one certificate serial (hex) per line.\n\
# Agents refuse these certificates in the TLS handshake. Edit with\n\
# `golivectl cert revoke`, or write a new file and rename it into place.\n";

/// Issues `DIR/agents/NAME.crt/.key` (role agent) valid for the given host names
/// and IP addresses.
pub fn issue_agent(dir: &Path, name: &str, sans: &[String], days: u32) -> Result<Issued, PkiError> {
    validate_name(name)?;
    let mut san_types = Vec::new();
    for san in sans {
        let san_type = parse_san(san)?;
        if !san_types.contains(&san_type) {
            san_types.push(san_type);
        }
    }
    if san_types.is_empty() {
        return Err(PkiError::NoSan { name: name.into() });
    }
    let (not_before, not_after) = validity_for_days(days)?;
    issue_leaf(Leaf {
        dir,
        subdir: AGENTS_DIR,
        name,
        role: Role::Agent,
        sans: san_types,
        ekus: vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        not_before,
        not_after,
    })
}

/// Issues `DIR/operators/NAME.crt/.key` for a viewer, operator or admin.
pub fn issue_operator(dir: &Path, name: &str, role: Role, days: u32) -> Result<Issued, PkiError> {
    let (not_before, not_after) = validity_for_days(days)?;
    issue_operator_with_validity(dir, name, role, not_before, not_after)
}

/// [`issue_operator`] with an explicit validity window; tests use it to craft
/// expired or not-yet-valid certificates.
pub fn issue_operator_with_validity(
    dir: &Path,
    name: &str,
    role: Role,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, PkiError> {
    validate_name(name)?;
    if role == Role::Agent {
        return Err(PkiError::BadRole { role });
    }
    if not_after <= not_before {
        return Err(PkiError::BadValidity(format!(
            "not_after {} is not after not_before {}",
            rfc3339(not_after),
            rfc3339(not_before)
        )));
    }
    issue_leaf(Leaf {
        dir,
        subdir: OPERATORS_DIR,
        name,
        role,
        sans: Vec::new(),
        ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
        not_before,
        not_after,
    })
}

/// Adds a certificate's serial to `DIR/revoked.txt`. `cert_or_serial` is the
/// path of a certificate file or a hex serial (`01:A2`, `0x1a2`, `1a2`).
/// Returns the normalised serial; revoking twice changes nothing.
pub fn revoke(dir: &Path, cert_or_serial: &str) -> Result<String, PkiError> {
    let input = cert_or_serial.trim();
    let as_path = Path::new(input);
    let (serial, name) = if as_path.is_file() {
        read_serial_and_name(as_path)?
    } else if looks_like_serial(input) {
        let serial = normalize_serial(input);
        let name = find_issued_name(dir, &serial).unwrap_or_else(|| "unknown".into());
        (serial, name)
    } else {
        let reason = if input.contains('/') || input.contains('.') {
            "no such certificate file".to_string()
        } else {
            "neither a certificate file nor a hex serial number; give the path of a .crt \
             file or its serial"
                .to_string()
        };
        return Err(PkiError::BadRevokeTarget {
            input: cert_or_serial.into(),
            reason,
        });
    };

    if !dir.is_dir() {
        return Err(PkiError::Io {
            action: "open CA directory",
            path: dir.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
    }
    let path = dir.join(REVOKED);
    let existing = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => REVOKED_HEADER.to_string(),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let already = existing
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .any(|l| normalize_serial(l) == serial);
    if already {
        return Ok(serial);
    }

    let mut contents = existing;
    if !contents.is_empty() && !contents.ends_with('\n') {
        contents.push('\n');
    }
    // The name comes from a certificate CN: keep it to one printable line.
    let name: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    contents.push_str(&format!(
        "# {name} revoked {}\n{serial}\n",
        rfc3339(OffsetDateTime::now_utc())
    ));
    write_atomic(dir, &path, contents.as_bytes())?;
    Ok(serial)
}

/// The CA as loaded from disk: an rcgen issuer plus its expiry, so leaves can
/// be kept from outliving it.
pub(crate) struct Ca {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) not_after: OffsetDateTime,
}

/// Re-creates the rcgen issuer from `DIR/ca.crt` + `DIR/ca.key`.
pub(crate) fn load_ca(dir: &Path) -> Result<Ca, PkiError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for path in [&cert_path, &key_path] {
        if !path.exists() {
            return Err(PkiError::NoCa {
                dir: dir.to_path_buf(),
                missing: path.clone(),
            });
        }
    }
    let cert_pem = fs::read_to_string(&cert_path).map_err(io_err("read", &cert_path))?;
    let key_pem = fs::read_to_string(&key_path).map_err(io_err("read", &key_path))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadFile {
        path: key_path.clone(),
        reason: format!("not a PEM private key ({e})"),
    })?;
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| PkiError::BadFile {
            path: cert_path.clone(),
            reason: format!("no PEM certificate in it ({e})"),
        })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::BadFile {
        path: cert_path.clone(),
        reason: format!("not an X.509 certificate ({e})"),
    })?;
    let not_after = parsed.validity().not_after.to_datetime();
    let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| PkiError::BadFile {
        path: cert_path.clone(),
        reason: format!("cannot be used as an issuer ({e})"),
    })?;
    Ok(Ca { issuer, not_after })
}

struct Leaf<'a> {
    dir: &'a Path,
    subdir: &'static str,
    name: &'a str,
    role: Role,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

fn issue_leaf(leaf: Leaf<'_>) -> Result<Issued, PkiError> {
    let ca = load_ca(leaf.dir)?;
    if leaf.not_after > ca.not_after {
        return Err(PkiError::BadValidity(format!(
            "the certificate would expire {} but the CA in {} expires {}; \
             choose fewer --days (the chain stops verifying when the CA expires)",
            rfc3339(leaf.not_after),
            leaf.dir.display(),
            rfc3339(ca.not_after)
        )));
    }
    let out_dir = leaf.dir.join(leaf.subdir);
    let cert_path = out_dir.join(format!("{}.crt", leaf.name));
    let key_path = out_dir.join(format!("{}.key", leaf.name));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(PkiError::AlreadyExists {
                path: path.clone(),
                hint: format!(
                    "a certificate named {:?} was already issued; pick another name, \
                     or revoke it and delete {} and {} first",
                    leaf.name,
                    cert_path.display(),
                    key_path.display()
                ),
            });
        }
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, leaf.name);
    let role_uri = leaf
        .role
        .uri()
        .try_into()
        .map_err(gen_err("the role SAN"))?;
    params.subject_alt_names = leaf.sans;
    params.subject_alt_names.push(SanType::URI(role_uri));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = leaf.ekus;
    params.use_authority_key_identifier_extension = true;
    params.not_before = leaf.not_before;
    params.not_after = leaf.not_after;
    let serial = random_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let key = KeyPair::generate().map_err(gen_err(format!("a key for {:?}", leaf.name)))?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(gen_err(format!("the certificate for {:?}", leaf.name)))?;
    ensure_private_dir(&out_dir)?;
    write_pair(&cert_path, &cert.pem(), &key_path, &key.serialize_pem())?;
    Ok(Issued {
        cert_path,
        key_path,
        serial: normalize_serial(&hex::encode(serial)),
        not_after: rfc3339(leaf.not_after),
    })
}

fn validate_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 64 {
        "it is longer than 64 characters"
    } else if name.starts_with('.') {
        "it starts with '.'"
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        "it contains a character other than A-Z a-z 0-9 . _ -"
    } else {
        return Ok(());
    };
    Err(PkiError::BadName {
        name: name.into(),
        reason,
    })
}

/// An IP address if it parses as one, else a DNS host name (checked, since a
/// typo here only shows up later as a handshake failure).
fn parse_san(san: &str) -> Result<SanType, PkiError> {
    let s = san.trim();
    // The role SAN is ours to write, exactly once (issue 11: a second one
    // makes the certificate ambiguous, and the agent refuses it).
    if s.to_ascii_lowercase().starts_with(ROLE_URI_PREFIX) {
        return Err(PkiError::BadSan {
            san: san.into(),
            reason: "a role is not given as a SAN: an agent certificate always carries role \
                     agent, and operator certificates take --role; give host names or IP \
                     addresses"
                .into(),
        });
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = |reason: &str| PkiError::BadSan {
        san: san.into(),
        reason: format!("{reason}; give a host name like db1.example.com or an IP address"),
    };
    let host = s.strip_suffix('.').unwrap_or(s);
    if host.is_empty() {
        return Err(bad("it is empty"));
    }
    if host.len() > 253 {
        return Err(bad("a host name is at most 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated label must be 1-63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("a host name may contain only A-Z a-z 0-9 - and dots"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label may not start or end with '-'"));
        }
    }
    let ia5 = host
        .to_ascii_lowercase()
        .try_into()
        .map_err(|e: rcgen::Error| bad(&e.to_string()))?;
    Ok(SanType::DnsName(ia5))
}

fn validity_for_days(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    if days == 0 || days > MAX_DAYS {
        return Err(PkiError::BadValidity(format!(
            "--days {days} is out of range; use 1 to {MAX_DAYS}"
        )));
    }
    // Certificates carry whole seconds; comparing sub-second instants against
    // a parsed CA expiry would refuse a leaf that expires in the same second.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    Ok((now - CLOCK_SKEW, now + Duration::days(i64::from(days))))
}

/// 16 random bytes with the top bit cleared (DER integers are signed; a
/// positive serial must not look negative) and the next bit set, so every
/// serial encodes to exactly 16 bytes.
fn random_serial() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    bytes
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))
}

/// Writes the key (0600, created with that mode so it is never briefly
/// readable by others) and then the certificate (0644). Neither may exist. On
/// failure the key is removed again so a retry with the same name works.
fn write_pair(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(), PkiError> {
    write_new(key_path, key_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(cert_path, cert_pem.as_bytes(), 0o644) {
        let _ = fs::remove_file(key_path);
        return Err(e);
    }
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                PkiError::AlreadyExists {
                    path: path.to_path_buf(),
                    hint: "it appeared while issuing; pick another name or delete it".into(),
                }
            } else {
                io_err("create", path)(e)
            }
        })?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(io_err("write", path)(e));
    }
    Ok(())
}

/// Temp file in the same directory + fsync + rename + fsync of the directory:
/// a reader (the agent's deny-list watcher) sees the old list or the new one.
fn write_atomic(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".revoked.txt.")
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file in", dir))?;
    tmp.write_all(contents)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("write", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| io_err("replace", path)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn read_identity(path: &Path) -> Result<PeerIdentity, PkiError> {
    PeerIdentity::from_der(&read_der(path)?).map_err(|e| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: format!("not a certificate ({e})"),
    })
}

/// A certificate file's DER: PEM is what we write; DER is accepted too.
fn read_der(path: &Path) -> Result<Vec<u8>, PkiError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    Ok(match CertificateDer::from_pem_slice(&bytes) {
        Ok(der) => der.to_vec(),
        Err(_) => bytes,
    })
}

/// Serial and name of a certificate file, also of one the agent refuses for
/// its role SANs: that is exactly a certificate one wants to revoke.
fn read_serial_and_name(path: &Path) -> Result<(String, String), PkiError> {
    match PeerIdentity::from_der(&read_der(path)?) {
        Ok(ident) => Ok((ident.serial, ident.name)),
        Err(
            IdentityError::AmbiguousRole { serial, name, .. }
            | IdentityError::UnknownRole { serial, name, .. },
        ) => Ok((serial, name)),
        Err(e) => Err(PkiError::BadFile {
            path: path.to_path_buf(),
            reason: format!("not a certificate ({e})"),
        }),
    }
}

/// Hex digits, optionally with a `0x` prefix and `:` separators, at most 20
/// bytes (RFC 5280's limit).
fn looks_like_serial(s: &str) -> bool {
    let body = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let digits = body.chars().filter(|c| *c != ':').count();
    !body.is_empty()
        && digits > 0
        && digits <= 40
        && body.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
}

/// The name of a certificate we issued with this serial, for the comment line.
fn find_issued_name(dir: &Path, serial: &str) -> Option<String> {
    [AGENTS_DIR, OPERATORS_DIR]
        .iter()
        .filter_map(|sub| fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .filter_map(|p| read_identity(&p).ok())
        .find(|ident| ident.serial == serial)
        .map(|ident| ident.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn identity(path: &Path) -> PeerIdentity {
        read_identity(path).unwrap()
    }

    fn ca() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        ca_init(&dir, 365).unwrap();
        (tmp, dir)
    }

    #[test]
    fn ca_init_writes_private_key_and_refuses_second_init() {
        let (_tmp, dir) = ca();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
        assert_eq!(mode(&dir.join(CA_CERT)), 0o644);
        let ident = identity(&dir.join(CA_CERT));
        assert_eq!(ident.name, "golive CA pki");
        assert_eq!(ident.role, None);

        let before = fs::read(dir.join(CA_KEY)).unwrap();
        let err = ca_init(&dir, 365).unwrap_err();
        assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err}");
        assert!(err.is_usage_error());
        assert!(err.to_string().contains("ca.crt"), "{err}");
        assert_eq!(fs::read(dir.join(CA_KEY)).unwrap(), before);
    }

    #[test]
    fn ca_init_refuses_when_only_the_key_exists() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(CA_KEY), "x").unwrap();
        let err = ca_init(tmp.path(), 365).unwrap_err();
        assert!(err.to_string().contains("ca.key"), "{err}");
        assert!(!tmp.path().join(CA_CERT).exists());
    }

    #[test]
    fn agent_certificate_carries_name_role_serial_and_sans() {
        let (_tmp, dir) = ca();
        let sans = vec!["10.0.0.7".to_string(), "db1.example.com".to_string()];
        let issued = issue_agent(&dir, "db1", &sans, 30).unwrap();
        assert_eq!(issued.cert_path, dir.join("agents/db1.crt"));
        assert_eq!(mode(&issued.key_path), 0o600);
        assert_eq!(mode(&issued.cert_path), 0o644);
        let ident = identity(&issued.cert_path);
        assert_eq!(ident.name, "db1");
        assert_eq!(ident.role, Some(Role::Agent));
        assert_eq!(ident.serial, issued.serial);
        assert_eq!(issued.serial.len(), 32);

        let der = fs::read(&issued.cert_path).unwrap();
        let der = CertificateDer::from_pem_slice(&der).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("0a:00:00:07")), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("db1.example.com")),
            "{names:?}"
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!cert.is_ca());
    }

    #[test]
    fn agent_needs_a_valid_san() {
        let (_tmp, dir) = ca();
        let err = issue_agent(&dir, "db1", &[], 30).unwrap_err();
        assert!(matches!(err, PkiError::NoSan { .. }) && err.is_usage_error());
        let err = issue_agent(&dir, "db1", &["bad host!".into()], 30).unwrap_err();
        assert!(matches!(err, PkiError::BadSan { .. }), "{err}");
        assert!(!dir.join("agents/db1.key").exists());
    }

    #[test]
    fn operator_certificate_carries_role_and_refuses_agent_role() {
        let (_tmp, dir) = ca();
        let issued = issue_operator(&dir, "alice", Role::Admin, 30).unwrap();
        assert_eq!(issued.key_path, dir.join("operators/alice.key"));
        assert_eq!(mode(&issued.key_path), 0o600);
        let ident = identity(&issued.cert_path);
        assert_eq!(ident.name, "alice");
        assert_eq!(ident.role, Some(Role::Admin));
        assert_eq!(ident.serial, issued.serial);

        let err = issue_operator(&dir, "bob", Role::Agent, 30).unwrap_err();
        assert!(matches!(err, PkiError::BadRole { .. }) && err.is_usage_error());
    }

    #[test]
    fn issuing_twice_refuses_and_keeps_the_old_key() {
        let (_tmp, dir) = ca();
        let first = issue_operator(&dir, "alice", Role::Viewer, 30).unwrap();
        let key = fs::read(&first.key_path).unwrap();
        let err = issue_operator(&dir, "alice", Role::Admin, 30).unwrap_err();
        assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("pick another name"), "{err}");
        assert_eq!(fs::read(&first.key_path).unwrap(), key);
    }

    #[test]
    fn names_are_validated() {
        let (_tmp, dir) = ca();
        for bad in ["", ".hidden", "../x", "a/b", "sp ace", &"x".repeat(65)] {
            let err = issue_operator(&dir, bad, Role::Viewer, 30).unwrap_err();
            assert!(matches!(err, PkiError::BadName { .. }), "{bad:?}: {err}");
        }
        for good in ["a", "web-1.prod_eu", &"x".repeat(64)] {
            issue_operator(&dir, good, Role::Viewer, 30).unwrap();
        }
    }

    #[test]
    fn issuing_without_a_ca_or_beyond_it_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = issue_operator(tmp.path(), "alice", Role::Viewer, 30).unwrap_err();
        assert!(matches!(err, PkiError::NoCa { .. }) && err.is_usage_error());

        let (_tmp, dir) = ca();
        let err = issue_operator(&dir, "alice", Role::Viewer, 400).unwrap_err();
        assert!(matches!(err, PkiError::BadValidity(_)), "{err}");
        let err = issue_operator(&dir, "alice", Role::Viewer, 0).unwrap_err();
        assert!(matches!(err, PkiError::BadValidity(_)), "{err}");
    }

    #[test]
    fn expired_certificate_can_be_crafted() {
        let (_tmp, dir) = ca();
        let now = OffsetDateTime::now_utc();
        let issued = issue_operator_with_validity(
            &dir,
            "old",
            Role::Operator,
            now - Duration::days(10),
            now - Duration::days(1),
        )
        .unwrap();
        assert!(identity(&issued.cert_path).not_after < now.unix_timestamp());
    }

    #[test]
    fn revoke_appends_and_is_idempotent() {
        let (_tmp, dir) = ca();
        let alice = issue_operator(&dir, "alice", Role::Operator, 30).unwrap();
        let bob = issue_operator(&dir, "bob", Role::Viewer, 30).unwrap();

        let serial = revoke(&dir, alice.cert_path.to_str().unwrap()).unwrap();
        assert_eq!(serial, alice.serial);
        let list = fs::read_to_string(dir.join(REVOKED)).unwrap();
        let body = list
            .strip_prefix(REVOKED_HEADER)
            .expect("ca init wrote the header");
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2, "{list}");
        assert!(lines[0].starts_with("# alice revoked 20"), "{list}");
        assert_eq!(lines[1], alice.serial);
        assert_eq!(mode(&dir.join(REVOKED)), 0o644);

        // Same certificate again, by serial in another spelling: no change.
        let upper = format!("0x{}", alice.serial.to_uppercase());
        assert_eq!(revoke(&dir, &upper).unwrap(), alice.serial);
        assert_eq!(fs::read_to_string(dir.join(REVOKED)).unwrap(), list);

        // By serial: the name is found among the issued certificates.
        assert_eq!(revoke(&dir, &bob.serial).unwrap(), bob.serial);
        let list = fs::read_to_string(dir.join(REVOKED)).unwrap();
        assert!(
            list.starts_with(&format!("{REVOKED_HEADER}{}", lines.join("\n"))),
            "{list}"
        );
        assert!(list.contains("# bob revoked "), "{list}");
        assert!(list.ends_with(&format!("{}\n", bob.serial)), "{list}");

        // No temporary files left behind.
        let stray: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".revoked"))
            .collect();
        assert!(stray.is_empty());
    }

    /// The URI SANs of a certificate file that carry a golive role.
    fn role_sans(path: &Path) -> Vec<String> {
        let der = read_der(path).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let Some(san) = cert.subject_alternative_name().unwrap() else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::URI(u) if u.starts_with(ROLE_URI_PREFIX) => {
                    Some(u.to_string())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn issued_certificates_carry_exactly_one_role_san() {
        let (_tmp, dir) = ca();
        let sans: Vec<String> = ["web1.example.com", "10.0.0.5", "WEB1.example.com", "::1"]
            .map(String::from)
            .to_vec();
        let agent = issue_agent(&dir, "web1", &sans, 30).unwrap();
        assert_eq!(role_sans(&agent.cert_path), ["urn:golive:role:agent"]);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            let name = format!("op-{role}");
            let issued = issue_operator(&dir, &name, role, 30).unwrap();
            assert_eq!(role_sans(&issued.cert_path), [role.uri()]);
            assert_eq!(identity(&issued.cert_path).role, Some(role));
        }
        assert!(role_sans(&dir.join(CA_CERT)).is_empty());
    }

    #[test]
    fn issue11_a_role_cannot_be_smuggled_in_as_a_san() {
        let (_tmp, dir) = ca();
        for san in ["urn:golive:role:admin", " URN:golive:role:operator"] {
            let sans = vec!["web1.example.com".to_string(), san.to_string()];
            let err = issue_agent(&dir, "web1", &sans, 30).unwrap_err();
            assert!(matches!(err, PkiError::BadSan { .. }) && err.is_usage_error());
            let text = err.to_string();
            assert!(text.contains("a role is not given as a SAN"), "{text}");
            assert!(!dir.join("agents/web1.key").exists());
            assert!(!dir.join("agents/web1.crt").exists());
        }
    }

    #[test]
    fn a_two_role_certificate_can_still_be_revoked_by_file() {
        let (_tmp, dir) = ca();
        let ca = load_ca(&dir).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "mallory");
        params.subject_alt_names = ["urn:golive:role:viewer", "urn:golive:role:admin"]
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
            .collect();
        params.serial_number = Some(SerialNumber::from_slice(&[0x42, 0x01]));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let path = dir.join("mallory.crt");
        fs::write(&path, cert.pem()).unwrap();
        let err = read_identity(&path).unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{err}");

        assert_eq!(revoke(&dir, path.to_str().unwrap()).unwrap(), "4201");
        let list = fs::read_to_string(dir.join(REVOKED)).unwrap();
        assert!(list.contains("# mallory revoked "), "{list}");
        assert!(list.ends_with("4201\n"), "{list}");
    }

    #[test]
    fn revoke_rejects_garbage() {
        let (_tmp, dir) = ca();
        let before = fs::read_to_string(dir.join(REVOKED)).unwrap();
        assert_eq!(before, REVOKED_HEADER, "ca init writes an empty list");
        for bad in ["not-a-serial", "./missing.crt", ""] {
            let err = revoke(&dir, bad).unwrap_err();
            assert!(
                matches!(err, PkiError::BadRevokeTarget { .. }),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(fs::read_to_string(dir.join(REVOKED)).unwrap(), before);
    }
}
