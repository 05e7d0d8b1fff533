//! Shell completions and man pages generated from a binary's clap definition
//! (issue 16), shared by `golivectl` and `golive-agent` so both behave alike.

use std::path::Path;

pub use clap_complete::Shell;

/// Why the man pages could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    #[error("cannot create the man page directory {dir}: {source}; pick a writable --dir")]
    CreateDir { dir: String, source: std::io::Error },
    #[error("cannot write the man pages into {dir}: {source}")]
    Write { dir: String, source: std::io::Error },
}

/// The completion script of `bin` for `shell`. Into a buffer, not stdout:
/// clap_complete panics on a failed write (a closed pipe), and a closed pipe
/// is not worth a panic.
pub fn completion_script(mut cmd: clap::Command, bin: &str, shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut script);
    script
}

/// The top-level man page (BIN(1)).
pub fn man_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    Ok(page)
}

/// BIN.1 and one page per subcommand (BIN-SUB.1) into `dir`, created if
/// missing; returns the pages of `cmd` found there, sorted.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<String>, ManError> {
    let name = cmd.get_name().to_string();
    std::fs::create_dir_all(dir).map_err(|source| ManError::CreateDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let write = |source| ManError::Write {
        dir: dir.display().to_string(),
        source,
    };
    clap_mangen::generate_to(cmd, dir).map_err(write)?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .map_err(write)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".1") && (n == &format!("{name}.1") || n.starts_with(&format!("{name}-")))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> clap::Command {
        clap::Command::new("demo-bin")
            .about("a demo")
            .subcommand(clap::Command::new("serve").about("serves"))
    }

    #[test]
    fn issue16_man_pages_one_per_subcommand() {
        let dir = std::env::temp_dir().join(format!("golive-clidoc-{}", std::process::id()));
        let pages = write_man_pages(demo(), &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(pages, ["demo-bin-serve.1", "demo-bin.1"]);
    }

    #[test]
    fn issue16_completion_names_the_subcommands() {
        let script = String::from_utf8(completion_script(demo(), "demo-bin", Shell::Bash)).unwrap();
        assert!(script.contains("serve"), "{script}");
        assert!(script.contains("complete -F"), "{script}");
        let page = String::from_utf8(man_page(demo()).unwrap()).unwrap();
        assert!(page.contains(".TH demo-bin 1"), "{page}");
    }
}
