//! golive-shared: everything the agent and the controller must agree on.
//!
//! # Layout
//!
//! - [`codec`]: the only place that knows the wire format (a framed, versioned
//!   bincode envelope). Changing the format means editing that one file.
//! - [`protocol`]: request and response types, one module per message family.
//!   With bincode, enum variant order *is* the format: only ever append.
//! - [`identity`]: how a role and a name travel in an X.509 certificate, and
//!   how a peer's certificate is read back into a [`identity::PeerIdentity`].
//! - [`config`]: the agent's TOML config, parsed and validated with file, line
//!   and key in every error.
//! - [`timefmt`]: UTC RFC 3339 formatting for messages, and durations as
//!   "1.5 s".
//! - [`clidoc`]: shell completions and man pages from a binary's clap
//!   definition (both binaries' `completions` and `man`).
//! - [`private`]: owner-only (0700/0600) directories, files and SQLite
//!   databases, whatever the umask.
//! - [`glob`]: path globs (`*`, `?`, `**`, a trailing `/`), for backup
//!   excludes and the release scan's include/exclude lists.
//! - [`scan`]: the forbidden-text scan of a release (controller and agent).
//! - [`pem`]: PEM certificates, CA roots and private keys read from files,
//!   with [`pem::TlsFileError`] naming each problem.
//! - [`http`]: the HTTP/1.1 client (hyper, rustls) of the agent's probes
//!   and of both binaries' webhooks; [`notify`]: the webhook delivery
//!   (bounds, retries, the URL scrubbed from errors).
//! - [`x509`]: the serial, common name, expiry and URI SANs read from a
//!   certificate (a small DER reader; golivectl's PKI keeps x509-parser).
//! - [`names`]: validation of the names the controller is allowed to send
//!   (apps, releases, idempotency keys).

pub mod clidoc;
pub mod codec;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod glob;
pub mod http;
pub mod identity;
pub mod names;
pub mod notify;
pub mod pem;
pub mod private;
pub mod protocol;
pub mod scan;
pub mod timefmt;
pub mod x509;

/// The golive version both binaries report (the workspace version).
pub const GOLIVE_VERSION: &str = env!("CARGO_PKG_VERSION");
