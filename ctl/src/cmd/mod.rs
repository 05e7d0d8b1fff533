//! One file per subcommand. Each returns an [`Exit`]; errors that are the
//! user's to fix are [`crate::output::UsageError`] (exit 2).

pub mod backup;
pub mod decide;
pub mod demo;
pub mod deploy;
pub mod docs;
pub mod flag;
pub mod follow;
pub mod history;
pub mod init;
pub mod maintenance;
pub mod migrate;
pub mod pki;
pub mod preflight;
pub mod probe;
pub mod rollback;
pub mod run;
pub mod status;
pub mod unlock;

use std::path::PathBuf;

use crate::cli::{Cli, Command};
use crate::journal;
use crate::output::{Exit, Out};

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let out = Out { format: cli.output };
    crate::progress::install(cli.output);
    let state = cli.state.clone().unwrap_or_else(journal::default_state_dir);
    match cli.command {
        Command::Ca { command } => pki::ca(out, command),
        Command::Cert { command } => pki::cert(out, command),
        Command::Status { plan } => {
            let plan = plan.unwrap_or_else(|| PathBuf::from("golive.toml"));
            status::status(out, &state, &plan).await
        }
        Command::Deploy {
            plan,
            dry_run,
            hotfix,
            force,
            reason,
            approved_by,
            resume,
        } => {
            let reason = reason.map(|r| r.trim().to_string());
            match (&reason, hotfix || force) {
                (Some(_), false) => {
                    return Err(crate::output::usage(
                        "--reason goes with --hotfix (outside the window) or --force (over failing \
                         preflight checks); without either there is nothing to justify",
                    ));
                }
                (Some(r), true) if r.is_empty() => {
                    return Err(crate::output::usage(if hotfix {
                        "--reason is empty: say why this hotfix cannot wait for the window"
                    } else {
                        "--reason is empty: say why this deployment goes on over failing checks"
                    }));
                }
                _ => {}
            }
            let options = deploy::Options {
                dry_run,
                hotfix: reason.clone().filter(|_| hotfix),
                force: reason.filter(|_| force),
                approved_by,
                resume,
            };
            deploy::deploy(out, &state, &plan, &options).await
        }
        Command::Probe { plan, tags } => probe::probe(out, &plan, &tags).await,
        Command::Preflight { plan } => preflight::preflight(out, &plan).await,
        Command::Rollback { id, plan, hosts } => {
            rollback::rollback(out, &state, &id, plan.as_deref(), hosts.as_deref()).await
        }
        Command::Go { id, by, note } => {
            decide::decide(out, &state, &id, &by, true, note.as_deref()).await
        }
        Command::NoGo { id, by, reason } => {
            decide::decide(out, &state, &id, &by, false, Some(&reason)).await
        }
        Command::History {
            plan,
            limit,
            format,
            dir,
        } => history::history(out, &state, plan.as_deref(), limit, format, dir.as_deref()),
        Command::Show {
            id,
            format,
            out: file,
        } => history::show(out, &state, &id, format, file.as_deref()).await,
        Command::Jobs { plan, limit } => status::jobs(out, &plan, limit).await,
        Command::Follow { plan, host, job } => follow::follow_cmd(out, &plan, &host, job).await,
        Command::Unlock { plan, reason } => unlock::unlock(out, &plan, &reason).await,
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
        Command::Init { dir, force } => init::init(out, &dir, force),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(out, dir.as_deref()),
    }
}
