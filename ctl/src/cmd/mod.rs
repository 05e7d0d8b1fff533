//! One file per subcommand. Each returns an [`Exit`]; errors that are the
//! user's to fix are [`crate::output::UsageError`] (exit 2).

pub mod backup;
pub mod decide;
pub mod demo;
pub mod deploy;
pub mod flag;
pub mod history;
pub mod maintenance;
pub mod migrate;
pub mod pki;
pub mod preflight;
pub mod probe;
pub mod run;
pub mod status;

use std::path::PathBuf;

use crate::cli::{Cli, Command};
use crate::journal;
use crate::output::{Exit, Out};

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let out = Out { format: cli.output };
    let state = cli.state.clone().unwrap_or_else(journal::default_state_dir);
    match cli.command {
        Command::Ca { command } => pki::ca(out, command),
        Command::Cert { command } => pki::cert(out, command),
        Command::Status { plan } => {
            status::status(out, &plan.unwrap_or_else(|| PathBuf::from("golive.toml"))).await
        }
        Command::Deploy {
            plan,
            dry_run,
            hotfix,
            reason,
        } => {
            let reason = match (hotfix, reason) {
                (true, Some(r)) if r.trim().is_empty() => {
                    return Err(crate::output::usage(
                        "--reason is empty: say why this hotfix cannot wait for the window",
                    ));
                }
                (true, r) => r,
                (false, _) => None,
            };
            deploy::deploy(out, &state, &plan, dry_run, reason.as_deref()).await
        }
        Command::Probe { plan, tags } => probe::probe(out, &plan, &tags).await,
        Command::Preflight { plan } => preflight::preflight(out, &plan).await,
        Command::Rollback { id, plan } => deploy::rollback(out, &state, &id, plan.as_deref()).await,
        Command::Go { id, by, note } => {
            decide::decide(out, &state, &id, &by, true, note.as_deref()).await
        }
        Command::NoGo { id, by, reason } => {
            decide::decide(out, &state, &id, &by, false, Some(&reason)).await
        }
        Command::History { limit } => history::history(out, &state, limit),
        Command::Show { id } => history::show(out, &state, &id),
        Command::Jobs { plan, limit } => status::jobs(out, &plan, limit).await,
        Command::Follow { plan, host, job } => deploy::follow_cmd(out, &plan, &host, job).await,
        Command::Unlock { plan, reason } => deploy::unlock(out, &plan, &reason).await,
        Command::Backup { command } => backup::run(out, &state, command).await,
        Command::Migrate { command } => migrate::run(out, &state, command).await,
        Command::Maintenance {
            switch,
            plan,
            reason,
        } => maintenance::maintenance(out, switch, &plan, reason).await,
        Command::Flag { command } => flag::run(out, command).await,
        Command::Run { plan, command } => run::run(out, &plan, &command).await,
        Command::Demo { keep } => demo::demo(out, keep).await,
    }
}
