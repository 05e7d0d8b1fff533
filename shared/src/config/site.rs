//! Where a TOML error points: the line and the full dotted key of the item it
//! is about, for the agent config and the controller's plan alike.
//!
//! serde reports a span, not a key. An unknown key's span is the key itself, a
//! wrong type's is the value, a missing key's is its table (the header, or the
//! inline table). Issue 11: mapping the span to "the key whose value starts
//! nearest before it" named the *previous* key; here the span is matched to
//! the innermost key or value that contains it, and the field named in the
//! message is appended when the span is its table.

use std::ops::Range;

use toml_edit::{Document, Item, Table, Value};

/// A place in a TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// 1-based; `None` only when the error has no position at all.
    pub line: Option<usize>,
    /// Dotted key, array elements by index: `apps.shop.probes.0.url`.
    pub key: String,
}

/// What [`find`] matched: the site, plus the node the span fell on, so a
/// caller can look closer (serde buffers tagged tables and then reports
/// errors inside them at the table).
pub(crate) struct Found {
    pub site: Site,
    /// Path of the innermost node containing the span.
    pub node: Vec<String>,
    /// That node is a table (standard, array element or inline) and the error
    /// is not about one of its keys by name (neither unknown nor missing).
    pub inside_table: bool,
}

/// The site of a `toml` deserialization error in `source`.
pub fn error_site(source: &str, err: &toml::de::Error) -> Site {
    find(source, err.span(), err.message()).site
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(source: &str, offset: usize) -> usize {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    source[..end].matches('\n').count() + 1
}

/// The field a serde message names: `unknown field `x`` or `missing field `x``.
fn named_field<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('`').next())
}

pub(crate) fn find(source: &str, span: Option<Range<usize>>, message: &str) -> Found {
    let unknown = named_field(message, "unknown field `");
    let missing = named_field(message, "missing field `");
    let Some(span) = span else {
        return Found {
            site: Site {
                line: None,
                key: missing.or(unknown).unwrap_or_default().to_string(),
            },
            node: Vec::new(),
            inside_table: false,
        };
    };
    let line = line_of(source, span.start);
    let Some(nodes) = nodes(source) else {
        // Not even toml_edit can parse it: a syntax error. Name the key from
        // the text around the line.
        return Found {
            site: Site {
                line: Some(line),
                key: key_from_text(source, span.start),
            },
            node: Vec::new(),
            inside_table: false,
        };
    };
    // The document itself reports a missing top-level key with an empty span.
    let node = if span.is_empty() && span.start == 0 {
        None
    } else {
        nodes
            .iter()
            .flat_map(|n| [(n, &n.key), (n, &n.value)])
            .filter_map(|(n, r)| r.as_ref().map(|r| (n, r)))
            .filter(|(_, r)| r.start <= span.start && span.end <= r.end)
            .min_by_key(|(n, r)| (r.end - r.start, usize::MAX - n.path.len()))
            .map(|(n, _)| n)
    };
    let root = Node {
        path: Vec::new(),
        key: None,
        value: None,
        table: true,
    };
    let node = node.unwrap_or(&root);
    let child = |field: &str| {
        let mut path = node.path.clone();
        path.push(field.to_string());
        let line = nodes
            .iter()
            .find(|n| n.path == path)
            .and_then(|n| n.key.as_ref().or(n.value.as_ref()))
            .map_or(line, |r| line_of(source, r.start));
        (path, line)
    };
    let (path, line, inside_table) = match (unknown, missing) {
        (Some(field), _) if node.path.last().is_some_and(|k| k == field) => {
            (node.path.clone(), line, false)
        }
        (Some(field), _) | (None, Some(field)) if node.table => {
            let (path, line) = child(field);
            (path, line, false)
        }
        _ => (node.path.clone(), line, node.table),
    };
    Found {
        site: Site {
            line: Some(line),
            key: path.join("."),
        },
        node: node.path.clone(),
        inside_table,
    }
}

/// `source` with the item at the dotted `key` (and everything under it)
/// overwritten by spaces, newlines kept so that every line number stays;
/// `None` when the text does not parse or has no such item. The plan's
/// parser blanks the item an error is about and reads the rest again, so
/// that one run reports every problem (issue 12).
pub fn blank_item(source: &str, key: &str) -> Option<String> {
    let nodes = nodes(source)?;
    let path: Vec<String> = key.split('.').map(str::to_string).collect();
    if key.is_empty() || !nodes.iter().any(|n| n.path == path) {
        return None;
    }
    let mut bytes = source.as_bytes().to_vec();
    let mut blank = |r: Range<usize>| {
        for b in &mut bytes[r.start.min(source.len())..r.end.min(source.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    for n in nodes.iter().filter(|n| n.path.starts_with(&path)) {
        match (&n.key, &n.value) {
            // `key = value`: the `=` goes too.
            (Some(k), Some(v)) if !n.table || k.end <= v.start => blank(k.start..v.end.max(k.end)),
            (k, v) => {
                k.clone().into_iter().chain(v.clone()).for_each(&mut blank);
            }
        }
    }
    // Only whole UTF-8 sequences were replaced (spans fall on char
    // boundaries), so this cannot fail; fall back to "no such item".
    String::from_utf8(bytes).ok()
}

/// A key or value of the document with its path and spans.
struct Node {
    path: Vec<String>,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    /// A table of any kind: its keys are named by "unknown/missing field".
    table: bool,
}

fn nodes(source: &str) -> Option<Vec<Node>> {
    let doc = Document::parse(source).ok()?;
    let mut out = Vec::new();
    let mut path = Vec::new();
    collect_table(doc.as_table(), &mut path, &mut out);
    Some(out)
}

fn collect_table(t: &Table, path: &mut Vec<String>, out: &mut Vec<Node>) {
    for (k, item) in t.iter() {
        path.push(k.to_string());
        collect_item(item, t.key(k).and_then(|k| k.span()), path, out);
        path.pop();
    }
}

fn collect_item(
    item: &Item,
    key: Option<Range<usize>>,
    path: &mut Vec<String>,
    out: &mut Vec<Node>,
) {
    match item {
        Item::None => {}
        Item::Table(t) => {
            out.push(Node {
                path: path.clone(),
                key,
                value: t.span(),
                table: true,
            });
            collect_table(t, path, out);
        }
        Item::ArrayOfTables(a) => {
            out.push(Node {
                path: path.clone(),
                key,
                value: None,
                table: false,
            });
            for (i, t) in a.iter().enumerate() {
                path.push(i.to_string());
                out.push(Node {
                    path: path.clone(),
                    key: None,
                    value: t.span(),
                    table: true,
                });
                collect_table(t, path, out);
                path.pop();
            }
        }
        Item::Value(v) => collect_value(v, key, path, out),
    }
}

fn collect_value(
    v: &Value,
    key: Option<Range<usize>>,
    path: &mut Vec<String>,
    out: &mut Vec<Node>,
) {
    out.push(Node {
        path: path.clone(),
        key,
        value: v.span(),
        table: matches!(v, Value::InlineTable(_)),
    });
    match v {
        Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                path.push(k.to_string());
                collect_value(v, t.key(k).and_then(|k| k.span()), path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(i.to_string());
                collect_value(v, None, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// For text that does not parse: the last table header before `offset` and
/// the bare key its line starts with, e.g. `agent.name` for `name = web1`.
fn key_from_text(source: &str, offset: usize) -> String {
    let line_no = line_of(source, offset);
    let mut table = String::new();
    let mut key = String::new();
    for (i, line) in source.lines().enumerate().take(line_no) {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            if let Some(end) = header.find(']') {
                table = header[..end]
                    .split('.')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(".");
            }
            key.clear();
        } else if i + 1 == line_no
            && let Some((k, _)) = line.split_once('=')
        {
            let k = k.trim();
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
            {
                key = k.split('.').map(str::trim).collect::<Vec<_>>().join(".");
            }
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    }
}

/// The table at `path` (a standard table, an array element or an inline
/// table) as a document of its own, without the key `tag`, and that key's
/// string value: serde can then read it as the struct the tag selects and
/// point into it.
pub(crate) fn standalone(source: &str, path: &[String], tag: &str) -> Option<(String, String)> {
    let doc = Document::parse(source).ok()?;
    let mut table = table_at(doc.as_table(), path)?;
    let tag_value = table.get(tag)?.as_str()?.to_string();
    table.remove(tag);
    Some((toml_edit::DocumentMut::from(table).to_string(), tag_value))
}

fn table_at(root: &Table, path: &[String]) -> Option<Table> {
    let (first, rest) = path.split_first()?;
    let item = root.get(first)?;
    item_table_at(item, rest)
}

fn item_table_at(item: &Item, path: &[String]) -> Option<Table> {
    match (item, path.split_first()) {
        (Item::Table(t), None) => Some(t.clone()),
        (Item::Table(t), Some(_)) => table_at(t, path),
        (Item::ArrayOfTables(a), Some((i, rest))) => {
            let t = a.get(i.parse().ok()?)?;
            if rest.is_empty() {
                Some(t.clone())
            } else {
                table_at(t, rest)
            }
        }
        (Item::Value(v), _) => value_table_at(v, path),
        _ => None,
    }
}

fn value_table_at(v: &Value, path: &[String]) -> Option<Table> {
    match (v, path.split_first()) {
        (Value::InlineTable(t), None) => Some(t.clone().into_table()),
        (Value::InlineTable(t), Some((k, rest))) => value_table_at(t.get(k)?, rest),
        (Value::Array(a), Some((i, rest))) => value_table_at(a.get(i.parse().ok()?)?, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(src: &str, span: Range<usize>, message: &str) -> (Option<usize>, String) {
        let s = find(src, Some(span), message).site;
        (s.line, s.key)
    }

    #[test]
    fn spans_map_to_the_innermost_key() {
        let src = "[a]\nx = 1\ny = { z = [1, 2] }\n";
        let at = |needle: &str| {
            let i = src.find(needle).unwrap();
            i..i + needle.len()
        };
        assert_eq!(
            site(src, at("y"), "unknown field `y`"),
            (Some(3), "a.y".into())
        );
        assert_eq!(
            site(src, at("2"), "invalid type"),
            (Some(3), "a.y.z.1".into())
        );
        assert_eq!(
            site(src, at("{ z = [1, 2] }"), "missing field `w`"),
            (Some(3), "a.y.w".into())
        );
        assert_eq!(
            site(src, at("[a]"), "missing field `q`"),
            (Some(1), "a.q".into())
        );
        assert_eq!(site(src, 0..0, "missing field `b`"), (Some(1), "b".into()));
        let none = find(src, None, "missing field `b`").site;
        assert_eq!((none.line, none.key.as_str()), (None, "b"));
    }

    #[test]
    fn issue12_blank_item_keeps_lines_and_removes_the_item() {
        let src = "a = 1\nbogus = [\n  1,\n]\n[t]\nx = \"é\"\n[[h]]\nn = 1\ny = 2\n[u]\nk = 3\n";
        let out = blank_item(src, "bogus").unwrap();
        assert_eq!(out.lines().count(), src.lines().count());
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert!(!t.contains_key("bogus") && t.contains_key("a"), "{out}");
        let out = blank_item(src, "t.x").unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert!(t["t"].as_table().unwrap().is_empty(), "{out}");
        let out = blank_item(src, "h.0.y").unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["h"][0].as_table().unwrap().len(), 1, "{out}");
        let out = blank_item(src, "u").unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert!(!t.contains_key("u") && t.contains_key("h"), "{out}");
        assert_eq!(blank_item(src, "nope"), None);
        assert_eq!(blank_item("a = = 1", "a"), None);
    }

    #[test]
    fn unparsable_text_is_named_from_its_lines() {
        let src = "top = 1\n[a . b]\nc.d = nope\n";
        assert_eq!(key_from_text(src, src.find("nope").unwrap()), "a.b.c.d");
        assert_eq!(key_from_text(src, 2), "top");
        assert_eq!(key_from_text("[[x]]\n!!\n", 7), "x");
    }

    #[test]
    fn standalone_tables_drop_the_tag() {
        let src =
            "[[p]]\nkind = \"k\"\nn = 1\n[p.sub]\nm = 2\n\n[q]\nl = [{ kind = \"j\", o = 3 }]\n";
        let (text, tag) = standalone(src, &["p".into(), "0".into()], "kind").unwrap();
        assert_eq!(tag, "k");
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t.to_string(), "n = 1\n\n[sub]\nm = 2\n");
        let (text, tag) = standalone(src, &["q".into(), "l".into(), "0".into()], "kind").unwrap();
        assert_eq!((text.trim(), tag.as_str()), ("o = 3", "j"));
        assert!(standalone(src, &["q".into()], "kind").is_none());
    }
}
