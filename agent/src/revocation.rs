//! The revocation deny list: one certificate serial (hex) per line, `#`
//! comments. The TLS verifier consults it during every handshake
//! ([`crate::tls`]), and `handlers::admit` again on every request, so a
//! connection opened before a revocation is refused from its next request.
//!
//! It fails closed (issue 11): at start-up a list that is missing or does
//! not parse refuses to start, naming the file and line. While running, a
//! change is read once the writes have settled, parsed whole, and only then
//! replaces the list in force; a missing, malformed or half-written file
//! keeps the last good list, is logged, and shows in `golivectl status`.
//! A non-empty list must end with a newline and an empty file is refused:
//! that is how a rewrite caught half-way is told from a shorter list.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use golive_shared::identity::normalize_serial;
use golive_shared::protocol::{RevocationInfo, UnixMillis, now_millis};

/// Changes are read once no event came for this long: an editor's or a
/// shell's rewrite is a burst of events.
const SETTLE: Duration = Duration::from_millis(100);

/// Why a deny list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error(
        "cannot read the revocation list {path}: {reason}; restore the file \
         (`golivectl ca init` writes an empty list, `golivectl cert revoke` adds to it) \
         or remove tls.revoked from the config"
    )]
    Read { path: String, reason: String },
    #[error(
        "the revocation list {path} is empty (0 bytes); a list with nothing revoked \
         holds at least a comment line, e.g. `# no certificate revoked`"
    )]
    Empty { path: String },
    #[error(
        "{path}:{line}: {text:?} is not a certificate serial (hex digits, with `:` \
         separators or a 0x prefix allowed); fix the line or make it a `#` comment"
    )]
    BadLine {
        path: String,
        line: usize,
        text: String,
    },
    #[error(
        "{path}:{line}: the last line has no newline, so the file looks half-written; \
         write the new list to a temporary file and rename it into place \
         (`golivectl cert revoke` does)"
    )]
    Unterminated { path: String, line: usize },
}

/// Parses a whole list; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<HashSet<String>, ListError> {
    let shown = || path.display().to_string();
    if text.is_empty() {
        return Err(ListError::Empty { path: shown() });
    }
    let mut set = HashSet::new();
    let mut lines = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        lines = i + 1;
        if !raw.ends_with('\n') {
            return Err(ListError::Unterminated {
                path: shown(),
                line: i + 1,
            });
        }
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        if !is_serial(entry) {
            return Err(ListError::BadLine {
                path: shown(),
                line: i + 1,
                text: entry.chars().take(80).collect(),
            });
        }
        set.insert(normalize_serial(entry));
    }
    debug_assert!(lines > 0);
    Ok(set)
}

/// Hex digits with optional `:` separators and an optional `0x` prefix;
/// X.509 serials are at most 20 bytes.
fn is_serial(s: &str) -> bool {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let digits = hex.chars().filter(|c| *c != ':').count();
    (1..=40).contains(&digits) && hex.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
}

fn read(path: &Path) -> Result<HashSet<String>, ListError> {
    let text = std::fs::read(path).map_err(|e| ListError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let text = String::from_utf8(text).map_err(|_| ListError::Read {
        path: path.display().to_string(),
        reason: "it is not UTF-8 text".into(),
    })?;
    parse(path, &text)
}

struct InForce {
    serials: HashSet<String>,
    loaded_at: UnixMillis,
    /// Why the file on disk is not what is in force, when it is not.
    error: Option<String>,
}

/// The deny list in force, shared by the TLS verifier and the handlers.
pub struct DenyList {
    /// None when the config names no list: nothing is revoked.
    path: Option<PathBuf>,
    state: RwLock<InForce>,
}

impl std::fmt::Debug for DenyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyList")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DenyList {
    /// No list configured.
    pub fn none() -> DenyList {
        DenyList {
            path: None,
            state: RwLock::new(InForce {
                serials: HashSet::new(),
                loaded_at: now_millis(),
                error: None,
            }),
        }
    }

    /// Reads the list at start-up: missing or malformed is an error.
    pub fn load(path: &Path) -> Result<DenyList, ListError> {
        let serials = read(path)?;
        Ok(DenyList {
            path: Some(path.to_path_buf()),
            state: RwLock::new(InForce {
                serials,
                loaded_at: now_millis(),
                error: None,
            }),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether `serial` (normalised hex) is revoked. A poisoned lock
    /// refuses everyone: fail closed.
    pub fn contains(&self, serial: &str) -> bool {
        self.state
            .read()
            .map(|s| s.serials.contains(serial))
            .unwrap_or(true)
    }

    /// True when nothing is revoked (the verifier then skips parsing).
    pub fn is_empty(&self) -> bool {
        self.state
            .read()
            .map(|s| s.serials.is_empty())
            .unwrap_or(false)
    }

    /// What `golivectl status` shows.
    pub fn info(&self) -> Option<RevocationInfo> {
        let path = self.path.as_ref()?;
        let s = self.state.read().ok()?;
        Some(RevocationInfo {
            path: path.display().to_string(),
            serials: s.serials.len() as u64,
            loaded_at: s.loaded_at,
            error: s.error.clone(),
        })
    }

    /// Reads the file again: a good list replaces the one in force; a bad
    /// one is logged (once per distinct problem) and the last good list
    /// stays.
    pub fn reload(&self) {
        let Some(path) = &self.path else { return };
        let result = read(path);
        let Ok(mut s) = self.state.write() else {
            return;
        };
        match result {
            Ok(set) => {
                if s.error.is_some() || s.serials != set {
                    tracing::info!(
                        "revocation list {} reloaded: {} serials",
                        path.display(),
                        set.len()
                    );
                }
                s.serials = set;
                s.loaded_at = now_millis();
                s.error = None;
            }
            Err(e) => {
                let text = e.to_string();
                if s.error.as_deref() != Some(&text) {
                    tracing::error!(
                        "{text}; keeping the last good list ({} serials, read at {})",
                        s.serials.len(),
                        golive_shared::timefmt::utc(s.loaded_at)
                    );
                }
                s.error = Some(text);
            }
        }
    }
}

/// The watch on the deny list; dropping it stops the watch thread.
pub type Watching = crate::watch::Watching;

/// Follows the deny list's file: every relevant change is read once the
/// writes settle ([`DenyList::reload`]).
pub fn watch(list: Arc<DenyList>) -> std::io::Result<Option<Watching>> {
    let Some(path) = list.path().map(Path::to_path_buf) else {
        return Ok(None);
    };
    crate::watch::follow(&path, "golive-revoked", SETTLE, move || list.reload()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/etc/golive/revoked.txt")
    }

    #[test]
    fn parses_comments_and_formats() {
        let set = parse(p(), "# revoked\n01:A2  # bob\n\n0xff\n").unwrap();
        assert!(set.contains("1a2") && set.contains("ff") && set.len() == 2);
        assert!(parse(p(), "# nothing revoked\n").unwrap().is_empty());
    }

    #[test]
    fn issue11_a_bad_empty_or_half_written_list_is_refused_with_its_line() {
        let e = parse(p(), "01:a2\nbob\n").unwrap_err();
        assert_eq!(
            e,
            ListError::BadLine {
                path: p().display().to_string(),
                line: 2,
                text: "bob".into()
            }
        );
        assert!(
            e.to_string().starts_with("/etc/golive/revoked.txt:2:"),
            "{e}"
        );
        assert!(matches!(parse(p(), ""), Err(ListError::Empty { .. })));
        assert_eq!(
            parse(p(), "# list\n01:A").unwrap_err(),
            ListError::Unterminated {
                path: p().display().to_string(),
                line: 2
            }
        );
        assert!(parse(p(), "0x\n").is_err());
        assert!(parse(p(), &format!("{}\n", "a".repeat(41))).is_err());
    }

    #[test]
    fn issue11_reload_keeps_the_last_good_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "1a2\n").unwrap();
        let list = DenyList::load(&path).unwrap();
        assert!(list.contains("1a2"));
        for bad in ["", "1a2\nnot a serial\n", "1a2\n3b"] {
            std::fs::write(&path, bad).unwrap();
            list.reload();
            assert!(list.contains("1a2"), "{bad:?} un-revoked the serial");
            assert!(list.info().unwrap().error.is_some(), "{bad:?}");
        }
        std::fs::remove_file(&path).unwrap();
        list.reload();
        assert!(list.contains("1a2"), "a deleted list un-revoked the serial");
        let err = list.info().unwrap().error.unwrap();
        assert!(err.contains("cannot read the revocation list"), "{err}");
        std::fs::write(&path, "# none\n").unwrap();
        list.reload();
        assert!(!list.contains("1a2"));
        assert_eq!(list.info().unwrap().error, None);
        assert!(matches!(
            DenyList::load(&dir.path().join("missing.txt")),
            Err(ListError::Read { .. })
        ));
    }
}
