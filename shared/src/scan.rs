//! The forbidden-text scan of a release (seed 000: "no `dd()`,
//! `var_dump()`, `console.log()` in production"), shared by both sides: the
//! controller runs it on an artifact before uploading it (`golivectl
//! preflight`, and `deploy` through its checks), and the agent on the tree it
//! exported from git before staging it (issue 12: a git release never passes
//! through the controller). Same patterns, same globs, same rules, same hits.
//!
//! ```toml
//! [preflight]
//! forbidden = ["dd(", "var_dump(", "console.log("]
//! include = ["**/*.php", "**/*.js"]          # default: DEFAULT_INCLUDE
//! exclude = ["**/vendor/", "**/tests/"]      # default: DEFAULT_EXCLUDE
//! ```
//!
//! - A tar stream is read entry by entry in blocks: memory stays bounded
//!   whatever its size (a block plus at most [`MAX_LINE`] bytes of an
//!   unfinished line; longer lines are searched in pieces that overlap by the
//!   longest pattern). Patterns are found with memchr's SIMD substring
//!   search. Only regular files are read: symlinks are never followed.
//! - Globs are those of backup excludes (`*`, `?` within a name, `**` across
//!   directories, a trailing `/` for directories), matched against the path
//!   inside the archive; a file is scanned when an include matches it and no
//!   exclude matches it or one of its directories. Files with a NUL byte in
//!   their first 8 KiB are binary and skipped.
//! - Patterns are plain text, case-sensitive. A pattern that starts with a
//!   letter, digit, `_` or `$` only matches at the start of a word, so
//!   `dd(` finds `dd($x)` and `->dd()` but not `add(`.
//! - Each hit is `path:line: pattern` (once per line and pattern); the first
//!   [`MAX_HITS`] are kept and the rest counted.
//! - A config that arrives over the wire is bounded ([`check`]): a glob with
//!   many `**` costs time exponential in their number.

use std::io::Read;
use std::path::{Component, Path};

pub use crate::protocol::ScanConfig;
use serde::Serialize;

use crate::glob::Globs;

/// Text source files of the usual web stacks.
pub const DEFAULT_INCLUDE: &[&str] = &[
    "**/*.php",
    "**/*.inc",
    "**/*.module",
    "**/*.install",
    "**/*.theme",
    "**/*.twig",
    "**/*.js",
    "**/*.mjs",
    "**/*.cjs",
    "**/*.jsx",
    "**/*.ts",
    "**/*.tsx",
    "**/*.vue",
    "**/*.svelte",
    "**/*.html",
    "**/*.py",
    "**/*.rb",
];
/// Third-party code and generated bundles: not the team's to fix.
pub const DEFAULT_EXCLUDE: &[&str] = &["**/vendor/", "**/node_modules/", "**/*.min.js", "**/*.map"];
/// Hits listed; more are counted.
pub const MAX_HITS: usize = 50;
/// Longest stretch of one line held in memory.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes read at a time.
const BLOCK: usize = 256 * 1024;
/// Bytes looked at for a NUL to call a file binary.
const BINARY_SNIFF: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub path: String,
    pub line: u64,
    pub pattern: String,
}

impl std::fmt::Display for Hit {
    /// `web/index.php:3: dd(`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.pattern)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    /// Files searched.
    pub files: u64,
    /// Bytes searched (uncompressed).
    pub bytes: u64,
    /// Files skipped as binary.
    pub binary: u64,
    /// The first [`MAX_HITS`] hits, in archive order.
    pub hits: Vec<Hit>,
    /// Hits beyond those listed.
    pub more: u64,
}

impl ScanReport {
    /// Every hit, listed or only counted.
    pub fn total(&self) -> u64 {
        self.hits.len() as u64 + self.more
    }
}

struct Pattern {
    text: String,
    /// SIMD substring search (memchr), built once per scan.
    finder: memchr::memmem::Finder<'static>,
    word_start: bool,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        Pattern {
            word_start: text.bytes().next().is_some_and(is_word),
            finder: memchr::memmem::Finder::new(text.as_bytes()).into_owned(),
            text: text.into(),
        }
    }

    fn len(&self) -> usize {
        self.finder.needle().len()
    }
}

/// Which files of the archive are searched.
struct Selection {
    include: Globs,
    exclude: Globs,
}

impl Selection {
    fn wants(&self, path: &Path) -> bool {
        if !self.include.matches(path, false) || self.exclude.matches(path, false) {
            return false;
        }
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if self.exclude.matches(d, true) {
                return false;
            }
            dir = d.parent();
        }
        true
    }
}

/// Patterns or globs in one list, at most.
pub const MAX_PATTERNS: usize = 256;
/// Bytes of one pattern or glob, at most.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// `**` components in one glob, at most: matching tries every split of the
/// path at each of them.
pub const MAX_DOUBLE_STARS: usize = 4;

/// Checks a scan config: every pattern on one line and not empty, an
/// include list that selects something, no empty glob, and the size limits.
/// The error names the list (`forbidden`, `include`, `exclude`) and the fix.
pub fn check(cfg: &ScanConfig) -> Result<(), (&'static str, String)> {
    if let Some(p) = cfg
        .forbidden
        .iter()
        .find(|p| p.trim().is_empty() || p.contains('\n'))
    {
        return Err((
            "forbidden",
            format!("{p:?}: a pattern is text on one line, not empty"),
        ));
    }
    if cfg.include.is_empty() || cfg.include.iter().any(|g| g.trim().is_empty()) {
        return Err((
            "include",
            "an include list scans nothing when it is empty or has an empty glob; \
             remove the key for the default (source files)"
                .into(),
        ));
    }
    if cfg.exclude.iter().any(|g| g.trim().is_empty()) {
        return Err(("exclude", "an exclude glob is empty".into()));
    }
    for (key, list) in [
        ("forbidden", &cfg.forbidden),
        ("include", &cfg.include),
        ("exclude", &cfg.exclude),
    ] {
        if list.len() > MAX_PATTERNS {
            return Err((
                key,
                format!(
                    "{} entries; at most {MAX_PATTERNS} are accepted",
                    list.len()
                ),
            ));
        }
        if let Some(p) = list.iter().find(|p| p.len() > MAX_PATTERN_BYTES) {
            return Err((
                key,
                format!(
                    "an entry of {} bytes; at most {MAX_PATTERN_BYTES} are accepted",
                    p.len()
                ),
            ));
        }
        if key != "forbidden"
            && let Some(g) = list
                .iter()
                .find(|g| g.split('/').filter(|c| *c == "**").count() > MAX_DOUBLE_STARS)
        {
            return Err((
                key,
                format!("{g:?} has more than {MAX_DOUBLE_STARS} `**` components"),
            ));
        }
    }
    Ok(())
}

/// Scans a tar stream.
pub fn scan_tar(reader: impl Read, cfg: &ScanConfig) -> std::io::Result<ScanReport> {
    let patterns: Vec<Pattern> = cfg.forbidden.iter().map(|p| Pattern::new(p)).collect();
    let selection = Selection {
        include: Globs::new(&cfg.include),
        exclude: Globs::new(&cfg.exclude),
    };
    let mut report = ScanReport::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path()?.into_owned();
        // `./a/b.php` → `a/b.php`, as globs and operators expect.
        let path: std::path::PathBuf = raw
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if path.as_os_str().is_empty() || !selection.wants(&path) {
            continue;
        }
        scan_file(entry, &path.display().to_string(), &patterns, &mut report)?;
    }
    Ok(report)
}

fn scan_file(
    mut file: impl Read,
    name: &str,
    patterns: &[Pattern],
    report: &mut ScanReport,
) -> std::io::Result<()> {
    let longest = patterns.iter().map(Pattern::len).max().unwrap_or(0);
    let mut block = vec![0u8; BLOCK];
    // Unscanned bytes: the start of a line not complete yet.
    let mut data: Vec<u8> = Vec::with_capacity(BLOCK);
    let mut at = Cursor {
        line: 1,
        before: None,
        reported: vec![None; patterns.len()],
    };
    let mut first = true;
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut block) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if first {
            first = false;
            if block[..n.min(BINARY_SNIFF)].contains(&0) {
                report.binary += 1;
                return Ok(());
            }
        }
        if n == 0 {
            scan_region(&data, &mut at, patterns, name, report);
            break;
        }
        bytes += n as u64;
        data.extend_from_slice(&block[..n]);
        match memchr::memrchr(b'\n', &data) {
            // Whole lines: scan them, keep the incomplete rest.
            Some(last) => {
                scan_region(&data[..=last], &mut at, patterns, name, report);
                at.line += memchr::memchr_iter(b'\n', &data[..=last]).count() as u64;
                at.before = None;
                data.drain(..=last);
            }
            // One long line: scan what there is, keep an overlap so a
            // pattern across the cut is still found (reported once).
            None if data.len() > MAX_LINE => {
                scan_region(&data, &mut at, patterns, name, report);
                let cut = data.len() - longest.saturating_sub(1).min(data.len());
                at.before = cut.checked_sub(1).map(|i| data[i]).or(at.before);
                data.drain(..cut);
            }
            None => {}
        }
    }
    report.files += 1;
    report.bytes += bytes;
    Ok(())
}

/// Where a region starts: its line number, the byte before it on that line
/// (after a long-line cut), and the last line each pattern was reported on.
struct Cursor {
    line: u64,
    before: Option<u8>,
    reported: Vec<Option<u64>>,
}

/// Reports the patterns in `region` (which starts at `at`), once per line
/// and pattern, in line order.
fn scan_region(
    region: &[u8],
    at: &mut Cursor,
    patterns: &[Pattern],
    name: &str,
    report: &mut ScanReport,
) {
    let mut found: Vec<(u64, usize)> = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        if p.len() == 0 {
            continue;
        }
        let (mut pos, mut line) = (0, at.line);
        for hit in p.finder.find_iter(region) {
            let prev = if hit == 0 {
                at.before
            } else {
                Some(region[hit - 1])
            };
            if p.word_start && prev.is_some_and(is_word) {
                continue;
            }
            line += memchr::memchr_iter(b'\n', &region[pos..hit]).count() as u64;
            pos = hit;
            if at.reported[i] != Some(line) {
                at.reported[i] = Some(line);
                found.push((line, i));
            }
        }
    }
    found.sort_unstable();
    for (line, i) in found {
        if report.hits.len() < MAX_HITS {
            report.hits.push(Hit {
                path: name.to_string(),
                line,
                pattern: patterns[i].text.clone(),
            });
        } else {
            report.more += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(forbidden: &[&str]) -> ScanConfig {
        ScanConfig {
            forbidden: forbidden.iter().map(|s| s.to_string()).collect(),
            include: DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
            exclude: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn finds_patterns_with_lines_and_respects_words_and_globs() {
        let tar = tar_of(&[
            (
                "./web/index.php",
                b"<?php\n$this->add($x);\ndd($user);\nvar_dump(1); dd(2);\n",
            ),
            (
                "web/app.js",
                b"let a = 1;\n  console.log(a)\nmyconsole.log(b)",
            ),
            ("vendor/lib/x.php", b"dd($x);\n"),
            ("web/themes/node_modules/y.js", b"console.log(1)\n"),
            ("web/app.min.js", b"console.log(1)\n"),
            ("README.md", b"dd(\n"),
            ("web/logo.php", b"\x00\x01dd("),
        ]);
        let r = scan_tar(&tar[..], &cfg(&["dd(", "var_dump(", "console.log("])).unwrap();
        let got: Vec<String> = r
            .hits
            .iter()
            .map(|h| format!("{}:{}: {}", h.path, h.line, h.pattern))
            .collect();
        assert_eq!(
            got,
            [
                "web/index.php:3: dd(",
                "web/index.php:4: dd(",
                "web/index.php:4: var_dump(",
                "web/app.js:2: console.log(",
            ]
        );
        assert_eq!((r.files, r.binary, r.more), (2, 1, 0));
    }

    #[test]
    fn long_lines_are_split_without_losing_a_hit_and_hits_are_capped() {
        // A line of three blocks; the pattern straddles the first block
        // boundary (the line is cut and searched in overlapping pieces).
        let mut long = vec![b'x'; BLOCK * 3 + 5];
        let at = BLOCK - 1;
        long[at - 1] = b' ';
        long[at..at + 3].copy_from_slice(b"dd(");
        long.extend_from_slice(b"\nadd(\n");
        let mut many = Vec::new();
        for _ in 0..(MAX_HITS + 7) {
            many.extend_from_slice(b"console.log(1)\n");
        }
        let tar = tar_of(&[("a.js", &long), ("b.js", &many)]);
        let r = scan_tar(&tar[..], &cfg(&["dd(", "console.log("])).unwrap();
        assert_eq!(
            r.hits[0],
            Hit {
                path: "a.js".into(),
                line: 1,
                pattern: "dd(".into()
            }
        );
        assert_eq!(r.hits.len(), MAX_HITS);
        assert_eq!(r.more, 8, "1 dd( (not twice) + 57 console.log( - 50 listed");
        assert_eq!(r.hits[1].path, "b.js");
    }

    /// Issue 12: the agent takes the config from the wire, so it is bounded
    /// and checked with the plan's own messages.
    #[test]
    fn issue12_configs_are_checked_and_bounded() {
        assert_eq!(check(&cfg(&["dd("])), Ok(()));
        let field = |c: &ScanConfig| check(c).unwrap_err().0;
        assert_eq!(field(&cfg(&[" "])), "forbidden");
        assert_eq!(field(&cfg(&["a\nb"])), "forbidden");
        let mut c = cfg(&["dd("]);
        c.include.clear();
        assert_eq!(field(&c), "include");
        let mut c = cfg(&["dd("]);
        c.exclude.push(String::new());
        assert_eq!(field(&c), "exclude");
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("p{i}(")).collect();
        let c = ScanConfig {
            forbidden: many,
            ..cfg(&[])
        };
        assert_eq!(field(&c), "forbidden");
        let mut c = cfg(&["x".repeat(MAX_PATTERN_BYTES + 1).as_str()]);
        assert_eq!(field(&c), "forbidden");
        c.forbidden = vec!["dd(".into()];
        c.exclude = vec!["**/**/**/**/**/x".into()];
        let (f, m) = check(&c).unwrap_err();
        assert_eq!(f, "exclude");
        assert!(m.contains("more than 4 `**`"), "{m}");
        c.exclude = vec!["**/a/**/b/**/c/**/*.php".into()];
        assert_eq!(check(&c), Ok(()));
    }

    #[test]
    fn a_hit_reads_as_path_line_pattern() {
        let h = Hit {
            path: "web/index.php".into(),
            line: 3,
            pattern: "dd(".into(),
        };
        assert_eq!(h.to_string(), "web/index.php:3: dd(");
        let r = ScanReport {
            hits: vec![h],
            more: 4,
            ..ScanReport::default()
        };
        assert_eq!(r.total(), 5);
    }
}
