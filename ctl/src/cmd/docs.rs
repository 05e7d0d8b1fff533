//! `golivectl completions SHELL` and `golivectl man` (issue 16): generated
//! from the same clap definition as the parser, so they never drift.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::output::{Exit, Out, usage};

/// The completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a failed write (a
    // closed pipe), and a closed pipe is not worth a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "golivectl", &mut script);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
    Ok(Exit::Done)
}

/// golivectl(1) on stdout, or every page into `dir`.
pub fn man(out: Out, dir: Option<&Path>) -> anyhow::Result<Exit> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(Exit::Done);
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        usage(format!(
            "cannot create the man page directory {}: {e}",
            dir.display()
        ))
    })?;
    clap_mangen::generate_to(cmd, dir)
        .map_err(|e| anyhow::anyhow!("cannot write the man pages into {}: {e}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("golivectl") && n.ends_with(".1"))
        .collect();
    pages.sort();
    out.line(format!(
        "wrote {} man page(s) into {}: {}",
        pages.len(),
        dir.display(),
        pages.join(", ")
    ));
    Ok(Exit::Done)
}
