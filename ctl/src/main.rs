//! `golivectl`: a thin main over the library.
//!
//! Exit codes (SPEC §7): 0 done; 1 failed; 2 bad usage, config or input
//! (nothing changed); 3 rolled back; 4 paused awaiting a decision.

use std::process::ExitCode;

use clap::Parser;
use golivectl::cli::Cli;
use golivectl::output::{Exit, Format, UsageError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.output == Format::Json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("golivectl: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let result = rt.block_on(golivectl::cmd::run(cli));
    // Live progress lines left by a command that ended early go first.
    golivectl::progress::finish();
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            let exit = if e.downcast_ref::<UsageError>().is_some() {
                Exit::Usage
            } else {
                Exit::Failed
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": format!("{e:#}"), "exit": exit.code()})
                );
            }
            eprintln!("golivectl: {e:#}");
            exit.into()
        }
    }
}
