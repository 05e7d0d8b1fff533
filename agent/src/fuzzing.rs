//! Fuzz harnesses for the agent's parsers of outside input (issue 11): the
//! archive unpacker, the access-log line parser and the migration scanner.
//! Each takes arbitrary bytes and must return without panicking; the
//! unpacker's must also leave nothing outside the release directory. The
//! cargo-fuzz targets in `fuzz/` and the regression test over
//! `fuzz/regressions/` call these same functions.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::accesslog::format::LogFormat;
use crate::release::unpack::{UnpackLimits, unpack as unpack_archive};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh directory of our own under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "golive-fuzz-{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The unpacker. The first byte picks how the rest is stored: as it is
/// (plain tar, or a gzip/zstd stream the unpacker sniffs), or compressed here
/// with gzip or zstd, so the tar layer is reached through each decoder.
pub fn unpack(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let scratch = Scratch::new("unpack");
    let root = &scratch.0;
    let archive = root.join("artifact");
    let bytes = match mode % 3 {
        0 => body.to_vec(),
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(body).expect("gzip into memory");
            gz.finish().expect("gzip into memory")
        }
        _ => zstd::encode_all(body, 1).expect("zstd into memory"),
    };
    std::fs::write(&archive, bytes).expect("write the archive");
    let releases = root.join("releases");
    let release = releases.join("r1");
    let limits = UnpackLimits {
        max_bytes: 4 * 1024 * 1024,
        max_entries: 2000,
    };
    let result = unpack_archive(&archive, &release, &limits);
    if let Err(e) = &result {
        let _ = e.to_string();
        assert!(
            std::fs::symlink_metadata(&release).is_err(),
            "a failed unpack left {}",
            release.display()
        );
    }
    let canonical_release = std::fs::canonicalize(&release).ok();
    check_contained(
        root,
        &[archive.as_path(), releases.as_path()],
        &release,
        canonical_release.as_deref(),
    );
}

/// Everything under `root` is one of `allowed`, or inside `release`; every
/// symlink inside resolves inside it.
fn check_contained(root: &Path, allowed: &[&Path], release: &Path, canonical: Option<&Path>) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let inside = path.starts_with(release);
            assert!(
                inside || allowed.contains(&path.as_path()),
                "the unpacker wrote {} outside the release",
                path.display()
            );
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("read a link");
                let parent = path.parent().expect("a link has a parent");
                let rel = parent.strip_prefix(release).expect("inside the release");
                assert!(
                    lexically_inside(rel, &target),
                    "the link {} -> {} leaves the release",
                    path.display(),
                    target.display()
                );
                if let (Some(c), Ok(resolved)) = (canonical, std::fs::canonicalize(&path)) {
                    assert!(
                        resolved.starts_with(c),
                        "the link {} resolves to {} outside the release",
                        path.display(),
                        resolved.display()
                    );
                }
            } else if meta.is_dir() {
                stack.push(path);
            }
        }
    }
}

/// Whether `target`, read from the directory `from` (relative to the
/// release root), stays inside the release.
fn lexically_inside(from: &Path, target: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = from
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The formats the access-log target parses with: the built-in ones and
/// an nginx and an Apache format with a latency.
fn formats() -> &'static [LogFormat] {
    static FORMATS: OnceLock<Vec<LogFormat>> = OnceLock::new();
    FORMATS.get_or_init(|| {
        [
            "combined",
            "common",
            "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \
             \"$http_referer\" \"$http_user_agent\" $request_time",
            "%h %l %u %t \\\"%r\\\" %>s %b \\\"%{Referer}i\\\" \\\"%{User-agent}i\\\" %D",
            "$time_iso8601 $status $upstream_response_time",
        ]
        .iter()
        .map(|f| LogFormat::parse(f).expect("a built-in format compiles"))
        .collect()
    })
}

/// The access-log line parser: the first byte picks a format; 255 parses
/// the rest as a format string instead.
pub fn access_log(data: &[u8]) {
    let Some((&pick, line)) = data.split_first() else {
        return;
    };
    if pick == 255 {
        if let Ok(spec) = std::str::from_utf8(line) {
            let _ = LogFormat::parse(spec);
        }
        return;
    }
    let formats = formats();
    let format = &formats[pick as usize % formats.len()];
    if let Some(entry) = format.parse_line(line) {
        assert!(entry.status <= 999, "status {} out of range", entry.status);
    }
}

/// The migration scanner over a directory made from `data`: NUL-separated
/// (name, contents) pairs, at most 16 files, names made file-safe.
pub fn migrations(data: &[u8]) {
    let scratch = Scratch::new("migrations");
    let dir = &scratch.0;
    let mut parts = data.split(|b| *b == 0);
    for _ in 0..16 {
        let Some(name) = parts.next() else { break };
        let contents = parts.next().unwrap_or_default();
        let name: String = String::from_utf8_lossy(name)
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .take(200)
            .collect();
        if name.is_empty() || name == "." || name == ".." {
            continue;
        }
        let _ = std::fs::write(dir.join(&name), contents);
    }
    match crate::migrate::scan(dir) {
        Ok(found) => {
            for pair in found.windows(2) {
                assert!(pair[0].version < pair[1].version, "not sorted by version");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_judged_lexically() {
        assert!(lexically_inside(Path::new("a/b"), Path::new("../c")));
        assert!(lexically_inside(Path::new(""), Path::new("x/../y")));
        assert!(!lexically_inside(Path::new("a"), Path::new("../../etc")));
        assert!(!lexically_inside(Path::new(""), Path::new("/etc/passwd")));
    }
}
