//! golivectl: the controller.
//!
//! # Layout
//!
//! - [`cli`]: clap derive, raw arguments only.
//! - [`cmd`]: one module per subcommand; each returns an [`output::Exit`].
//! - [`plan`]: plan files, parsed raw then validated into a [`plan::Plan`].
//! - [`client`]: the mTLS transport to one agent (knows nothing of plans).
//! - [`ssh`]: the SSH route to an agent without an open port (`via`).
//! - [`fanout`]: one future per host, at most N at a time, on the calling task.
//! - [`gate`]: the go/no-go gate: severity → action, evaluated and recorded.
//! - [`deployment`]: the deployment as data (compiled, stored, resumed)
//!   and the executor of its host-changing steps.
//! - [`journal`]: the controller's SQLite record of deployments and steps.
//! - [`pki`], [`tls`]: the deployment CA, certificates, rustls client config.
//! - [`output`]: human or JSON output, SPEC §7 exit codes.
//! - [`window`]: the deployment window (days, hours, time zone).
//! - [`scan`]: the preflight scan of a release artifact for forbidden text.
//! - [`stages`]: stages files (several apps' plans, deployed in order).

pub mod cli;
pub mod client;
pub mod cmd;
pub mod deployment;
pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod jobs;
pub mod journal;
pub mod notify;
pub mod output;
pub mod pki;
pub mod plan;
pub mod preflight;
pub mod probes;
pub mod progress;
pub mod record;
pub mod scan;
pub mod ssh;
pub mod stages;
pub mod tls;
pub mod transport;
pub mod watchdog;
pub mod waves;
pub mod window;
