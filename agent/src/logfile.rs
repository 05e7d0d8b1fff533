//! The agent's log as a size-rotated file (issue 16), for an agent with no
//! journald and no terminal: cron mode on shared hosting, where
//! `ensure-running` starts it with `--log-file STATE_DIR/agent.log`.
//!
//! The log subscriber ([`crate::log`]) writes its lines here.
//!
//! Before a line would take the file past its bound, `FILE` becomes
//! `FILE.1` (`FILE.1` becomes `FILE.2`, ..., the oldest kept is dropped)
//! and a new `FILE` is started. The file is also the process's stdout and
//! stderr (dup2), so a panic message or a library's own output lands in it
//! too; its size is read from the file, so those count against the bound.
//! Files are created owner-only, like everything in the state directory.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where lines go once [`install`] ran.
static SINK: OnceLock<Mutex<Rotating>> = OnceLock::new();

/// Default bound of one log file.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Default number of rotated files kept beside the live one.
pub const DEFAULT_KEEP: u32 = 3;

/// A log file rotated at `max_bytes`, keeping `keep` old ones.
pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    /// Whether stdout and stderr follow the file (the installed one only).
    redirect: bool,
}

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::state::PRIVATE_FILE)
        .open(path)
}

/// `FILE.n`
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Rotating {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Rotating> {
        Ok(Rotating {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file: open(path)?,
            redirect: false,
        })
    }

    /// Appends `line` (a newline is added), rotating first when it would
    /// pass the bound. A failure to rotate keeps writing to the old file:
    /// losing the log is worse than a long file.
    pub fn write_line(&mut self, line: &str) {
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + line.len() as u64 + 1 > self.max_bytes {
            let _ = self.rotate();
        }
        let _ = self.file.write_all(format!("{line}\n").as_bytes());
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open(&self.path)?;
        if self.redirect {
            redirect_std(&self.file);
        }
        Ok(())
    }
}

/// Points stdout and stderr at `file`.
fn redirect_std(file: &File) {
    let _ = nix::unistd::dup2_stdout(file);
    let _ = nix::unistd::dup2_stderr(file);
}

/// From now on the agent's log lines (and anything written to stdout or
/// stderr) go to `path`, rotated at `max_bytes`, keeping `keep` old files.
pub fn install(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<()> {
    let mut rotating = Rotating::open(path, max_bytes, keep)?;
    rotating.redirect = true;
    redirect_std(&rotating.file);
    SINK.set(Mutex::new(rotating)).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the log file was already set",
        )
    })
}

/// Whether the log file was installed.
pub(crate) fn installed() -> bool {
    SINK.get().is_some()
}

/// Writes a line to the log file when one is installed; false otherwise.
pub(crate) fn write(line: &str) -> bool {
    match SINK.get() {
        Some(sink) => {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_line(line);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue16_rotates_at_the_bound_and_keeps_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut log = Rotating {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
            file: open(&path).unwrap(),
            redirect: false,
        };
        for i in 0..40 {
            log.write_line(&format!("line {i:02} of the log, about thirty"));
        }
        for p in [&path, &rotated(&path, 1), &rotated(&path, 2)] {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len > 0 && len <= 100, "{} is {len} bytes", p.display());
        }
        assert!(!rotated(&path, 3).exists(), "keeps two old files");
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(
            live.ends_with("line 39 of the log, about thirty\n"),
            "{live}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
