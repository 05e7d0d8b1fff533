//! Path globs, as backup excludes and the release scan's include/exclude
//! lists use them (one matcher for both binaries).
//!
//! A glob is matched against a relative path, anchored at its start: `*`
//! and `?` match within one name (leading dots included), a `**` component
//! matches any number of components (also none), a trailing `/` matches
//! directories only. So `*.tmp` only matches at the top; `**/*.tmp` at any
//! depth. Matching is on bytes: names need not be UTF-8.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A list of globs (see the module docs for the syntax).
#[derive(Debug, Clone)]
pub struct Globs(Vec<Pattern>);

#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<Vec<u8>>,
    dir_only: bool,
}

impl Globs {
    pub fn new(patterns: &[String]) -> Globs {
        Globs(
            patterns
                .iter()
                .filter_map(|p| {
                    let dir_only = p.ends_with('/');
                    let parts: Vec<Vec<u8>> = p
                        .split('/')
                        .filter(|c| !c.is_empty() && *c != ".")
                        .map(|c| c.as_bytes().to_vec())
                        .collect();
                    (!parts.is_empty()).then_some(Pattern { parts, dir_only })
                })
                .collect(),
        )
    }

    /// Whether any pattern matches `rel` (a directory when `is_dir`).
    pub fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let comps: Vec<&[u8]> = rel.iter().map(|c| c.as_bytes()).collect();
        self.0
            .iter()
            .any(|p| (is_dir || !p.dir_only) && match_parts(&p.parts, &comps))
    }
}

fn match_parts(pat: &[Vec<u8>], path: &[&[u8]]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p.as_slice() == b"**" => {
            (0..=path.len()).any(|k| match_parts(rest, &path[k..]))
        }
        Some((p, rest)) => !path.is_empty() && glob(p, path[0]) && match_parts(rest, &path[1..]),
    }
}

/// `*` (any run) and `?` (one byte) within one name.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            // Let the last `*` swallow one more byte and retry.
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matcher() {
        assert!(glob(b"*.tmp", b"a.tmp"));
        assert!(glob(b"*.tmp", b".tmp"));
        assert!(!glob(b"*.tmp", b"a.tmpx"));
        assert!(glob(b"a*b*c", b"axxbyybzc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"?.log", b"x.log"));
        assert!(!glob(b"?.log", b"xy.log"));
        assert!(glob(b"*", b""));
        let ex = Globs::new(&[
            "*.tmp".into(),
            "cache/".into(),
            "**/*.log".into(),
            "a/**/z".into(),
        ]);
        let t = |p: &str, d: bool| ex.matches(Path::new(p), d);
        assert!(t("x.tmp", false));
        assert!(!t("sub/x.tmp", false), "`*` stays within one component");
        assert!(t("cache", true));
        assert!(!t("cache", false), "trailing `/` is directories only");
        assert!(!t("sub/cache", true));
        assert!(t("x.log", false) && t("a/b/c/x.log", false));
        assert!(t("a/z", true) && t("a/b/c/z", false) && !t("b/a/z", false));
        assert!(!Globs::new(&[]).matches(Path::new("x"), false));
    }
}
