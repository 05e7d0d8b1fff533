//! The release artifact scan of `golivectl preflight` (seed 000: "no `dd()`,
//! `var_dump()`, `console.log()` in production"): the plan's forbidden
//! patterns searched in the artifact's text files, on the controller,
//! before anything is uploaded.
//!
//! ```toml
//! [preflight]
//! forbidden = ["dd(", "var_dump(", "console.log("]
//! include = ["**/*.php", "**/*.js"]          # default: DEFAULT_INCLUDE
//! exclude = ["**/vendor/", "**/tests/"]      # default: DEFAULT_EXCLUDE
//! ```
//!
//! - The archive (tar, tar.gz or tar.zst, told apart by their magic bytes)
//!   is streamed entry by entry in blocks: memory stays bounded whatever its
//!   size (a block plus at most [`MAX_LINE`] bytes of an unfinished line;
//!   longer lines are searched in pieces that overlap by the longest
//!   pattern). Patterns are found with memchr's SIMD substring search.
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

use std::io::Read;
use std::path::{Component, Path};

use golive_agent::backup::files::Excludes as Globs;
use serde::Serialize;

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

/// What to look for and where (validated from the plan's `[preflight]`).
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub forbidden: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub path: String,
    pub line: u64,
    pub pattern: String,
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
        if !self.include.excluded(path, false) || self.exclude.excluded(path, false) {
            return false;
        }
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if self.exclude.excluded(d, true) {
                return false;
            }
            dir = d.parent();
        }
        true
    }
}

/// Scans `artifact` (tar, tar.gz or tar.zst). An unreadable or malformed
/// archive is an error naming the file.
pub fn scan(artifact: &Path, cfg: &ScanConfig) -> Result<ScanReport, String> {
    let err = |e: std::io::Error| format!("cannot scan {}: {e}", artifact.display());
    let mut file = std::fs::File::open(artifact).map_err(err)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(err)?;
    let file = std::fs::File::open(artifact).map_err(err)?;
    let reader: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::new(file).map_err(err)?),
        _ => Box::new(file),
    };
    scan_tar(reader, cfg).map_err(|e| {
        format!(
            "cannot scan {}: {e}; is it a tar, tar.gz or tar.zst archive?",
            artifact.display()
        )
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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

    #[test]
    fn compressed_archives_and_garbage() {
        let tar = tar_of(&[("x.php", b"var_dump($a);\n")]);
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("a.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &tar).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let zst = dir.path().join("a.tar.zst");
        std::fs::write(&zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        for p in [&gz, &zst] {
            let r = scan(p, &cfg(&["var_dump("])).unwrap();
            assert_eq!(r.hits.len(), 1, "{}", p.display());
        }
        let bad = dir.path().join("bad.tar.gz");
        std::fs::write(&bad, b"\x1f\x8bnot gzip at all").unwrap();
        let e = scan(&bad, &cfg(&["x"])).unwrap_err();
        assert!(e.contains("bad.tar.gz"), "{e}");
    }
}
