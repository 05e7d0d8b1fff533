//! `golive-agent`: a thin main over the library (see `lib.rs`).
//!
//! Exit codes: 0 done; 1 failed; 2 bad usage, config or input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use golive_shared::config;
use golive_shared::protocol::{JobResult, JobSpec, RollbackRelease};

#[derive(Parser)]
#[command(
    name = "golive-agent",
    version,
    about = "golive agent: runs go-live steps on this host over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve controllers over mutual TLS until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config file; report every problem with file, line and key.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Emergency rollback of APP on this host, without a controller.
    /// Refuses while the agent runs (use `golivectl rollback` then).
    Rollback {
        app: String,
        #[arg(long)]
        config: PathBuf,
        /// Release to return to; default: the one before the current.
        #[arg(long)]
        to: Option<String>,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("golive-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// glibc gives threads that allocate malloc arenas of their own (up to 8 per
/// core), and an arena keeps what is freed in it. During a backup, zstd's
/// workers and the writer thread each held their 1 MiB buffers in their own
/// arena: peak RSS 31-34 MiB, against 26-27 MiB with two arenas
/// (docs/bench-backup.md). An operator's own `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES` wins.
/// The workspace's one `unsafe` block (ARCHITECTURE.md, invariants).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter, and this runs first
    // thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn load(path: &std::path::Path) -> Result<config::AgentConfig, ExitCode> {
    config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!(
            "golive-agent: fix the config above ({} problem(s))",
            errors.0.len()
        );
        ExitCode::from(2)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let deny = match &cfg.tls.revoked {
                Some(p) => match golive_agent::revocation::DenyList::load(p) {
                    Ok(list) => list,
                    Err(e) => {
                        eprintln!("{}: tls.revoked: {e}", config.display());
                        return Ok(ExitCode::from(2));
                    }
                },
                None => golive_agent::revocation::DenyList::none(),
            };
            if let Err(e) = golive_agent::tls::server_config(
                &cfg.tls.ca,
                &cfg.tls.cert,
                &cfg.tls.key,
                std::sync::Arc::new(deny),
            ) {
                eprintln!("{}: {e}", config.display());
                return Ok(ExitCode::from(2));
            }
            if let Err(e) = golive_agent::probe::check_ca_files(&cfg) {
                eprintln!("{}: {e}", config.display());
                return Ok(ExitCode::from(2));
            }
            if let Err(e) = golive_agent::probe::check_log_formats(&cfg) {
                eprintln!("{}: {e}", config.display());
                return Ok(ExitCode::from(2));
            }
            // A repository git would refuse to read (issue 12): found now,
            // not at the first fetch.
            let mut refused = false;
            for (name, app) in &cfg.apps {
                use golive_agent::release::git::{Ownership, ownership};
                let problem = match ownership(name, app) {
                    Ok(Ownership::Dubious(why)) | Err(why) => why,
                    Ok(_) => continue,
                };
                eprintln!("{}: key `apps.{name}.git.url`: {problem}", config.display());
                refused = true;
            }
            if refused {
                return Ok(ExitCode::from(2));
            }
            println!(
                "{}: ok (agent {}, listen {}, {} app(s): {})",
                config.display(),
                cfg.agent.name,
                cfg.agent.listen,
                cfg.apps.len(),
                cfg.app_names()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            // One thread: an idle agent should cost next to nothing (issue 2:
            // < 8 MiB RSS); file work runs on the blocking pool.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                match golive_agent::prepare(cfg).await {
                    Ok(prepared) => {
                        prepared.serve(shutdown_signal()).await;
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("golive-agent: {e}");
                        Ok(ExitCode::from(2))
                    }
                }
            })
        }
        Command::Rollback { app, config, to } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if cfg.app(&app).is_none() {
                eprintln!(
                    "golive-agent: no app {app:?} in {}; declared apps: {}",
                    config.display(),
                    cfg.app_names()
                );
                return Ok(ExitCode::from(2));
            }
            let (_lock, journal) = match golive_agent::open_state(&cfg) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("golive-agent: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let spec = JobSpec::Rollback(RollbackRelease {
                app: app.clone(),
                to,
                reason: "local emergency rollback (golive-agent rollback)".into(),
            });
            let emit = |kind: golive_shared::protocol::EventKind| {
                if let golive_shared::protocol::EventKind::Log { line, .. } = kind {
                    println!("{line}");
                }
            };
            match golive_agent::jobs::execute(&cfg, &journal, &spec, None, &emit) {
                Ok(JobResult::RolledBack { from, to, .. }) => {
                    println!(
                        "{app}: rolled back from {} to {to}",
                        from.as_deref().unwrap_or("none")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(other) => anyhow::bail!("unexpected result {other:?}"),
                Err(e) => {
                    eprintln!("golive-agent: rollback of {app} failed: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
