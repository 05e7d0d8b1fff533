//! The revocation deny list: one certificate serial (hex) per line, `#`
//! comments. Loaded at start and reloaded whenever the file changes (notify
//! watches its directory, because editors and `golivectl cert revoke`
//! replace the file by rename).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use golive_shared::identity::normalize_serial;
use notify::{RecursiveMode, Watcher};

use crate::log;
use crate::state::Agent;

pub fn parse(text: &str) -> HashSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(normalize_serial)
        .collect()
}

/// Reads the list; a missing file is an empty list.
pub fn load(path: &Path) -> std::io::Result<HashSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(e),
    }
}

/// Watches the deny list and swaps it into `agent.revoked` on change. The
/// returned watcher must be kept alive.
pub fn watch(agent: Arc<Agent>, path: PathBuf) -> notify::Result<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            return;
        }
        match load(&path) {
            Ok(set) => {
                let count = set.len();
                if let Ok(mut guard) = agent.revoked.write() {
                    if *guard != set {
                        log::info(&format!(
                            "revocation list {} reloaded: {count} serials",
                            path.display()
                        ));
                    }
                    *guard = set;
                }
            }
            // Keep the old list: a half-written file must not un-revoke anyone.
            Err(e) => log::warn(&format!(
                "cannot reload revocation list {}: {e}; keeping the previous list",
                path.display()
            )),
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_comments_and_formats() {
        let set = super::parse("# revoked\n01:A2  # bob\n\n0xff\n");
        assert!(set.contains("1a2") && set.contains("ff") && set.len() == 2);
    }
}
