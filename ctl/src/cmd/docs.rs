//! `golivectl completions SHELL` and `golivectl man` (issue 16): generated
//! from the same clap definition as the parser, so they never drift
//! (golive_shared::clidoc, shared with golive-agent).

use std::path::Path;

use clap::CommandFactory;
use golive_shared::clidoc;

use crate::cli::Cli;
use crate::output::{Exit, Out, usage};

/// The completion script for `shell` on stdout.
pub fn completions(shell: clidoc::Shell) -> anyhow::Result<Exit> {
    let script = clidoc::completion_script(Cli::command(), "golivectl", shell);
    // A closed pipe is not worth an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
    Ok(Exit::Done)
}

/// golivectl(1) on stdout, or every page into `dir`.
pub fn man(out: Out, dir: Option<&Path>) -> anyhow::Result<Exit> {
    let Some(dir) = dir else {
        let page = clidoc::man_page(Cli::command())?;
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &page);
        return Ok(Exit::Done);
    };
    let pages = clidoc::write_man_pages(Cli::command(), dir).map_err(|e| match e {
        clidoc::ManError::CreateDir { .. } => usage(e.to_string()),
        clidoc::ManError::Write { .. } => anyhow::Error::new(e),
    })?;
    out.line(format!(
        "wrote {} man page(s) into {}: {}",
        pages.len(),
        dir.display(),
        pages.join(", ")
    ));
    Ok(Exit::Done)
}
