//! `golive-agent`: a thin main over the library (see `lib.rs`).
//!
//! Exit codes: 0 done; 1 failed; 2 bad usage, config or input (for
//! `rollback`: a request the agent refused, changing nothing).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use golive_shared::config;
use golive_shared::protocol::{
    DatabaseChoice, ErrorCode, EventKind, HostRollback, JobEventsRequest, JobInfo, JobResult,
    JobSpec, JobState, Request, Response, RollbackRequester, SubmitJob,
};

#[derive(Parser)]
#[command(
    name = "golive-agent",
    version,
    about = "golive agent: runs go-live steps on this host over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `human` text (default) or `json` objects, one per line;
    /// overrides the config's `[log] format`.
    #[arg(long, global = true, value_name = "human|json")]
    log_format: Option<config::LogFormat>,
    /// Least severe level logged: error, warn, info (default), debug
    /// (adds every request, with peer and role), trace; overrides the
    /// config's `[log] level`.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<config::LogLevel>,
}

/// The subscriber, from the flags, else `[log]` in `cfg`, else human at
/// info.
fn init_log(
    format: Option<config::LogFormat>,
    level: Option<config::LogLevel>,
    cfg: Option<&config::AgentConfig>,
) {
    let section = cfg.map(|c| c.log.clone()).unwrap_or_default();
    golive_agent::log::init(
        format.unwrap_or(section.format),
        level.unwrap_or(section.level),
    );
}

#[derive(Subcommand)]
enum Command {
    /// Serve controllers over mutual TLS until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Log to this file, rotated by size, instead of stderr (cron mode;
        /// with systemd, stderr goes to the journal).
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Rotate the log file before it passes this many bytes.
        #[arg(long, default_value_t = golive_agent::logfile::DEFAULT_MAX_BYTES, requires = "log_file")]
        log_max_bytes: u64,
        /// Rotated log files kept (FILE.1 is the newest).
        #[arg(long, default_value_t = golive_agent::logfile::DEFAULT_KEEP, requires = "log_file")]
        log_keep: u32,
        /// Start a new session first (set by `ensure-running`).
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Cron mode: start the agent detached unless the state directory's
    /// lock says one runs, then exit at once. Exit 0: started or already
    /// running (said which); 2: bad config (nothing started); 1: the agent
    /// could not start. For a crontab: `* * * * *` and `@reboot`.
    EnsureRunning {
        #[arg(long)]
        config: PathBuf,
        /// The agent's log file; default STATE_DIR/agent.log.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Rotate the log file before it passes this many bytes (default 10 MiB).
        #[arg(long)]
        log_max_bytes: Option<u64>,
        /// Rotated log files kept (default 3).
        #[arg(long)]
        log_keep: Option<u32>,
    },
    /// Check a config file; report every problem with file, line and key.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Roll APP back on this host without a controller: the agent's host
    /// rollback job (code, database, flags, hooks), through the running
    /// agent's local socket, or in this process when the agent is stopped.
    Rollback {
        app: String,
        #[arg(long)]
        config: PathBuf,
        /// Release to return to; default: the rollback point's previous
        /// release (another one needs --force).
        #[arg(long)]
        to: Option<String>,
        /// Roll back this deployment; default: the app's newest.
        #[arg(long)]
        deployment: Option<String>,
        /// Allow a target other than the rollback point's previous release,
        /// or a deployment that is not the newest.
        #[arg(long)]
        force: bool,
        /// Why, for the journal.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Relay standard input and output to this agent's listen address, for
    /// a controller that reaches the host through ssh (`ssh_mode =
    /// "bridge"`); the TLS session inside is the controller's.
    Bridge {
        #[arg(long)]
        config: PathBuf,
    },
    /// Shell completions on stdout, e.g. `golive-agent completions bash >
    /// ~/.local/share/bash-completion/completions/golive-agent`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: golive_shared::clidoc::Shell,
    },
    /// Man pages: golive-agent(1) on stdout, or with --dir golive-agent.1
    /// and one page per subcommand (golive-agent-serve.1, ...) written into DIR.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
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
    use golive_shared::clidoc;
    let (log_format, log_level) = (cli.log_format, cli.log_level);
    match &cli.command {
        // Their own output is their answer on stdout and stderr; the
        // subscriber is for what the library logs meanwhile.
        Command::CheckConfig { .. } | Command::EnsureRunning { .. } | Command::Bridge { .. } => {
            init_log(log_format, log_level, None)
        }
        // Once the config is read: its `[log]` counts.
        Command::Serve { .. } | Command::Rollback { .. } => {}
        // Documentation only: nothing to log.
        Command::Completions { .. } | Command::Man { .. } => {}
    }
    match cli.command {
        Command::Completions { shell } => {
            let script = clidoc::completion_script(Cli::command(), "golive-agent", shell);
            // A closed pipe is not worth an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            let page = clidoc::man_page(Cli::command())?;
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &page);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => match clidoc::write_man_pages(Cli::command(), &dir) {
            Ok(pages) => {
                println!(
                    "wrote {} man page(s) into {}: {}",
                    pages.len(),
                    dir.display(),
                    pages.join(", ")
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ clidoc::ManError::CreateDir { .. }) => {
                eprintln!("golive-agent: {e}");
                Ok(ExitCode::from(2))
            }
            Err(e) => Err(e.into()),
        },
        Command::CheckConfig { config } => match golive_agent::reload::check(&config) {
            Ok(cfg) => {
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
            Err(lines) => {
                for line in lines {
                    eprintln!("{line}");
                }
                Ok(ExitCode::from(2))
            }
        },
        Command::EnsureRunning {
            config,
            log_file,
            log_max_bytes,
            log_keep,
        } => {
            // The usual check-config errors, before anything is started.
            let cfg = match golive_agent::reload::check(&config) {
                Ok(c) => c,
                Err(lines) => {
                    for line in lines {
                        eprintln!("{line}");
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let mut log =
                golive_agent::cron::LogOptions::for_config(&cfg, log_file, log_max_bytes, log_keep);
            log.format = log_format;
            log.level = log_level;
            match golive_agent::cron::ensure_running(&cfg, &config, &log) {
                Ok(golive_agent::cron::Ensured::AlreadyRunning { pid }) => {
                    println!(
                        "golive-agent {}: already running{} (state {}); started nothing",
                        cfg.agent.name,
                        pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
                        cfg.agent.state_dir.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(golive_agent::cron::Ensured::Started { pid, addr }) => {
                    println!(
                        "golive-agent {}: started, pid {pid}, listening on {addr}, log {}",
                        cfg.agent.name,
                        log.path.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("golive-agent: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Bridge { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let addr = golive_agent::bridge::target(&cfg);
            golive_agent::bridge::relay(addr, std::io::stdin(), std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            log_file,
            log_max_bytes,
            log_keep,
            detached,
        } => {
            if detached {
                // Not a group leader (spawned by ensure-running), so this
                // cannot fail but for a bug: say so and go on.
                if let Err(e) = nix::unistd::setsid() {
                    eprintln!("golive-agent: setsid: {e}");
                }
            }
            if let Some(path) = &log_file
                && let Err(e) = golive_agent::logfile::install(path, log_max_bytes, log_keep)
            {
                eprintln!(
                    "golive-agent: cannot open the log file {}: {e}",
                    path.display()
                );
                return Ok(ExitCode::from(2));
            }
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            init_log(log_format, log_level, Some(&cfg));
            // One thread: an idle agent should cost next to nothing (issue 2:
            // < 8 MiB RSS); file work runs on the blocking pool.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(async {
                // SIGHUP and a change of the file reload it (issue 16).
                let hup = golive_agent::reload::catch_sighup()?;
                // SIGTERM is caught from here on, before READY: a stop that
                // systemd sends the moment the agent says it is ready drains
                // like any other instead of killing it mid-start.
                let term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                match golive_agent::prepare(cfg).await {
                    Ok(prepared) => {
                        let reloader = golive_agent::reload::Reloader::new(
                            Arc::clone(prepared.agent()),
                            &config,
                        );
                        let _hup = golive_agent::reload::on_sighup(Arc::clone(&reloader), hup);
                        let _watch = golive_agent::reload::watch(reloader).map_err(|e| {
                            anyhow::anyhow!(
                                "cannot watch the config file {}: {e}",
                                config.display()
                            )
                        })?;
                        // Listener bound, journal open (issue 16): systemd
                        // may start what depends on the agent.
                        let addr = prepared.local_addr();
                        golive_agent::sdnotify::ready(&format!("serving on {addr}"));
                        let _pings = golive_agent::sdnotify::watchdog_interval().map(|every| {
                            golive_agent::sdnotify::start_watchdog(
                                Arc::clone(prepared.agent()),
                                every,
                            )
                        });
                        prepared
                            .serve(async {
                                shutdown_signal(term).await;
                                golive_agent::sdnotify::stopping();
                            })
                            .await;
                        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        tracing::error!("golive-agent: {e}");
                        Ok(ExitCode::from(2))
                    }
                }
            })?;
            // A job the stop could not wait for was marked interrupted and
            // its programs ended (issue 16); its blocking work is not waited
            // for beyond this.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            Ok(code)
        }
        Command::Rollback {
            app,
            config,
            to,
            deployment,
            force,
            reason,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            init_log(log_format, log_level, Some(&cfg));
            if cfg.app(&app).is_none() {
                eprintln!(
                    "golive-agent: no app {app:?} in {}; declared apps: {}",
                    config.display(),
                    cfg.app_names()
                );
                return Ok(ExitCode::from(2));
            }
            let uid = nix::unistd::geteuid().as_raw();
            let who = golive_agent::local::describe_uid(uid);
            let req = HostRollback {
                app: app.clone(),
                deployment,
                to,
                reason: reason
                    .unwrap_or_else(|| format!("golive-agent rollback by {who} on this host")),
                requested_by: RollbackRequester::LocalCli,
                force,
                restore: None,
            };
            match golive_agent::open_state(&cfg) {
                Err(golive_agent::StartError::InUse { .. }) => {
                    println!("{app}: the agent runs; asking it through its local socket");
                    Ok(rollback_via_socket(&cfg, req))
                }
                Err(e) => {
                    eprintln!("golive-agent: {e}");
                    Ok(ExitCode::from(2))
                }
                Ok((lock, journal)) => {
                    println!("{app}: the agent is stopped; rolling back in this process");
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let code = rt.block_on(rollback_in_process(cfg, journal, &who, req));
                    drop(lock);
                    Ok(code)
                }
            }
        }
    }
}

/// Prints a job's log events; returns the last sequence number seen.
fn print_events(events: &[golive_shared::protocol::JobEvent], after: u64) -> u64 {
    let mut last = after;
    for e in events {
        last = last.max(e.seq);
        if let EventKind::Log { line, .. } = &e.kind {
            println!("  {line}");
        }
    }
    last
}

/// The end of a followed rollback job: a summary and the exit code.
fn finished(app: &str, job: &JobInfo) -> ExitCode {
    match (&job.state, &job.result) {
        (JobState::Succeeded, Some(JobResult::HostRolledBack(r))) => {
            println!(
                "{app}: rolled back from {} to {} (job {})",
                r.from.as_deref().unwrap_or("none"),
                r.to,
                job.id
            );
            let db = match &r.database {
                DatabaseChoice::CodeOnly { why } => format!("code only ({why})"),
                DatabaseChoice::DownMigrations {
                    to_version,
                    reverted,
                    ..
                } => format!("down migrations {reverted:?} to version {to_version}"),
                DatabaseChoice::Restore {
                    backup,
                    failed_state_backup,
                    tables,
                    ..
                } => format!(
                    "restored {backup}; {} row(s) discarded, kept in {failed_state_backup}",
                    tables
                        .iter()
                        .map(golive_shared::protocol::TableRows::lost)
                        .sum::<u64>()
                ),
                DatabaseChoice::RestoreForbidden { why, .. } => {
                    format!("unchanged: {why}")
                }
            };
            println!("{app}: database: {db}");
            if let Some(a) = &r.operator_action {
                println!("{app}: OPERATOR ACTION NEEDED: {a}");
            }
            ExitCode::SUCCESS
        }
        (JobState::Succeeded, _) => ExitCode::SUCCESS,
        (state, _) => {
            eprintln!(
                "golive-agent: rollback of {app} {} (job {}): {}",
                state.as_str(),
                job.id,
                job.error.as_deref().unwrap_or("no message")
            );
            ExitCode::from(1)
        }
    }
}

fn refused(app: &str, e: &golive_shared::protocol::ErrorBody) -> ExitCode {
    eprintln!("golive-agent: rollback of {app} refused: {}", e.message);
    match e.code {
        ErrorCode::Internal => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

fn announce(app: &str, job: &JobInfo) {
    if job.deduplicated {
        println!(
            "{app}: this rollback is job {} ({}), asked for before: following it, not running it again",
            job.id, job.idempotency_key
        );
    } else {
        println!("{app}: job {} ({})", job.id, job.idempotency_key);
    }
}

/// Through the running agent's local socket.
fn rollback_via_socket(cfg: &config::AgentConfig, req: HostRollback) -> ExitCode {
    let app = req.app.clone();
    let mut client = match golive_agent::local::Client::connect(&cfg.agent.state_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("golive-agent: {e}");
            return ExitCode::from(1);
        }
    };
    let submit = Request::SubmitJob(SubmitJob {
        idempotency_key: "local-cli".into(),
        lease: None,
        spec: JobSpec::HostRollback(req),
    });
    let job = match client.call(&submit) {
        Ok(Response::Job(j)) => j,
        Ok(Response::Error(e)) => return refused(&app, &e),
        Ok(other) => {
            eprintln!("golive-agent: unexpected answer {other:?}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("golive-agent: {e}");
            return ExitCode::from(1);
        }
    };
    announce(&app, &job);
    let mut after = 0;
    loop {
        let req = Request::JobEvents(JobEventsRequest {
            job_id: job.id,
            after_seq: after,
            wait_ms: 20_000,
        });
        match client.call(&req) {
            Ok(Response::Events(ev)) => {
                after = print_events(&ev.events, after);
                if ev.job.state.is_final() && ev.events.is_empty() {
                    return finished(&app, &ev.job);
                }
            }
            Ok(Response::Error(e)) => return refused(&app, &e),
            Ok(other) => {
                eprintln!("golive-agent: unexpected answer {other:?}");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!(
                    "golive-agent: lost the agent while following job {}: {e}; the job goes on \
                     in the agent (see `golivectl jobs`)",
                    job.id
                );
                return ExitCode::from(1);
            }
        }
    }
}

/// In this process, holding the state lock: the same journaled job, run as
/// the agent would (an unfinished rollback of the app is resumed first).
async fn rollback_in_process(
    cfg: config::AgentConfig,
    journal: golive_agent::journal::Journal,
    who: &str,
    req: HostRollback,
) -> ExitCode {
    use std::sync::Arc;
    let app = req.app.clone();
    let agent = Arc::new(golive_agent::state::Agent::new(
        cfg,
        journal,
        Arc::new(golive_agent::revocation::DenyList::none()),
    ));
    golive_agent::jobs::resume(&agent, Some(&app));
    let job = match golive_agent::jobs::submit_rollback(
        &agent,
        who,
        golive_agent::jobs::Via::Internal,
        req,
    ) {
        Ok(j) => j,
        Err(e) => return refused(&app, &e),
    };
    announce(&app, &job);
    let mut after = 0;
    loop {
        let req = JobEventsRequest {
            job_id: job.id,
            after_seq: after,
            wait_ms: 20_000,
        };
        match golive_agent::jobs::events(&agent, req).await {
            Ok(ev) => {
                after = print_events(&ev.events, after);
                if ev.job.state.is_final() && ev.events.is_empty() {
                    return finished(&app, &ev.job);
                }
            }
            Err(e) => return refused(&app, &e),
        }
    }
}

async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
