//! A flag change in a JSON file, made in place (issue 12, part 11): only the
//! bytes of the changed values are replaced, so the app's key order,
//! indentation, arrays on one line and trailing newline stay as they were.
//!
//! The text is first parsed whole by serde_json (so it is valid JSON); this
//! module then only locates objects and members by byte offset. A new member
//! goes after the object's last one, with the indentation of its first (or,
//! in an empty object, one level deeper than the object's line, in the
//! file's indent unit: 2 or 4 spaces or a tab, as its first indented line).

use serde_json::Value;

use super::Place;

/// One `"key": value` of an object, by byte offsets.
struct Member {
    key: String,
    /// The key's opening quote.
    start: usize,
    /// The value: `[start, end)`.
    value: (usize, usize),
}

/// An object: its braces and members.
struct Object {
    open: usize,
    close: usize,
    members: Vec<Member>,
}

impl Object {
    /// The last member named `key` (serde_json keeps the last of duplicates).
    fn find(&self, key: &str) -> Option<usize> {
        self.members.iter().rposition(|m| m.key == key)
    }
}

fn bad(at: usize) -> String {
    format!("unexpected JSON at byte {at}")
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string opening at `i`.
fn string_end(b: &[u8], i: usize) -> Result<usize, String> {
    let mut j = i + 1;
    loop {
        match b.get(j) {
            Some(b'"') => return Ok(j + 1),
            Some(b'\\') => j += 2,
            Some(_) => j += 1,
            None => return Err(bad(i)),
        }
    }
}

/// The end (exclusive) of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Result<usize, String> {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(bad(i))
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            if j == i { Err(bad(i)) } else { Ok(j) }
        }
        None => Err(bad(i)),
    }
}

/// The object whose `{` is at `open`.
fn object_at(b: &[u8], open: usize) -> Result<Object, String> {
    if b.get(open) != Some(&b'{') {
        return Err(bad(open));
    }
    let mut members = Vec::new();
    let mut i = ws(b, open + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(Object {
            open,
            close: i,
            members,
        });
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(bad(i));
        }
        let key_end = string_end(b, i)?;
        let key: String = serde_json::from_slice(&b[i..key_end]).map_err(|_| bad(i))?;
        let colon = ws(b, key_end);
        if b.get(colon) != Some(&b':') {
            return Err(bad(colon));
        }
        let vs = ws(b, colon + 1);
        let ve = value_end(b, vs)?;
        members.push(Member {
            key,
            start: i,
            value: (vs, ve),
        });
        let next = ws(b, ve);
        match b.get(next) {
            Some(b',') => i = ws(b, next + 1),
            Some(b'}') => {
                return Ok(Object {
                    open,
                    close: next,
                    members,
                });
            }
            _ => return Err(bad(next)),
        }
    }
}

/// The file's indent unit: the leading whitespace of the top object's
/// first member when it is on a line of its own; 2 spaces otherwise.
fn indent_unit(text: &str) -> String {
    let b = text.as_bytes();
    if let Ok(top) = object_at(b, ws(b, 0))
        && let Some(first) = top.members.first()
    {
        let lead = &text[top.open + 1..first.start];
        if let Some(nl) = lead.rfind('\n') {
            let unit = &lead[nl + 1..];
            if !unit.is_empty() {
                return unit.to_string();
            }
        }
    }
    "  ".into()
}

/// The line ending the file uses.
fn newline(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

/// The leading whitespace of the line that holds byte `pos`.
fn line_indent(text: &str, pos: usize) -> &str {
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let n = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[..n]
}

/// `v` on one line, `{"a": 1, "b": {"c": true}}`.
fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// `v` over several lines, each line after the first starting with `base`.
fn pretty(v: &Value, unit: &str, base: &str, nl: &str) -> String {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let inner = format!("{base}{unit}");
            let members: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{inner}{}: {}",
                        Value::from(k.as_str()),
                        pretty(v, unit, &inner, nl)
                    )
                })
                .collect();
            format!("{{{nl}{}{nl}{base}}}", members.join(&format!(",{nl}")))
        }
        other => inline(other),
    }
}

fn splice(text: &str, range: (usize, usize), with: &str) -> String {
    format!("{}{with}{}", &text[..range.0], &text[range.1..])
}

/// Adds `"key": value` at the end of `obj`.
fn insert_member(text: &str, obj: &Object, key: &str, value: &Value) -> String {
    let unit = indent_unit(text);
    let nl = newline(text);
    let quoted = Value::from(key).to_string();
    match obj.members.last() {
        Some(last) => {
            let lead = &text[obj.open + 1..obj.members[0].start];
            let text_value = match lead.rfind('\n') {
                Some(i) => pretty(value, &unit, &lead[i + 1..], nl),
                None => inline(value),
            };
            let lead = if lead.is_empty() { " " } else { lead };
            let at = last.value.1;
            splice(text, (at, at), &format!(",{lead}{quoted}: {text_value}"))
        }
        None if text.contains('\n') => {
            let base = line_indent(text, obj.open);
            let inner = format!("{base}{unit}");
            let body = format!(
                "{nl}{inner}{quoted}: {}{nl}{base}",
                pretty(value, &unit, &inner, nl)
            );
            splice(text, (obj.open + 1, obj.close), &body)
        }
        None => splice(
            text,
            (obj.open + 1, obj.close),
            &format!("{quoted}: {}", inline(value)),
        ),
    }
}

/// Removes member `k` of `obj`, with the comma that separated it.
fn remove_member(text: &str, obj: &Object, k: usize) -> String {
    let m = &obj.members;
    if m.len() == 1 {
        splice(text, (obj.open + 1, obj.close), "")
    } else if k > 0 {
        splice(text, (m[k - 1].value.1, m[k].value.1), "")
    } else {
        splice(text, (m[0].start, m[1].start), "")
    }
}

/// Replaces or adds member `key` of `obj`.
fn set_member(text: &str, obj: &Object, key: &str, value: &Value) -> String {
    match obj.find(key) {
        Some(k) => splice(text, obj.members[k].value, &inline(value)),
        None => insert_member(text, obj, key, value),
    }
}

/// The object `path` leads to from the top, when every step is an object.
fn locate(text: &str, path: &[String]) -> Result<Object, String> {
    let b = text.as_bytes();
    let mut obj = object_at(b, ws(b, 0))?;
    for key in path {
        let k = obj.find(key).ok_or_else(|| bad(obj.open))?;
        obj = object_at(b, obj.members[k].value.0)?;
    }
    Ok(obj)
}

/// Sets the flag at `place` to `on` and `percent` (none: the percent field
/// is removed) in JSON `text`, changing nothing else. The caller has
/// checked the semantics (an object or a boolean at the key, objects on
/// the way) with [`super::apply`]; this follows the same rules.
pub(super) fn edit(
    text: &str,
    place: &Place,
    on: bool,
    percent: Option<u8>,
) -> Result<String, String> {
    let text = if text.trim().is_empty() {
        "{}\n".to_string()
    } else {
        text.to_string()
    };
    let path = &place.path;
    // Down to the flag's parent object, creating what is missing.
    for depth in 0..path.len() {
        let obj = locate(&text, &path[..depth])?;
        if obj.find(&path[depth]).is_none() {
            let mut value = place.new_flag(on, percent);
            for key in path[depth + 1..].iter().rev() {
                value = Value::Object([(key.clone(), value)].into_iter().collect());
            }
            return Ok(insert_member(&text, &obj, &path[depth], &value));
        }
    }
    let (parent_path, name) = path.split_at(path.len() - 1);
    let parent = locate(&text, parent_path)?;
    let k = parent.find(&name[0]).ok_or_else(|| bad(parent.open))?;
    let (vs, ve) = parent.members[k].value;
    if matches!(&text[vs..ve], "true" | "false") {
        if percent.is_some() {
            return Err(super::plain_boolean(place));
        }
        return Ok(splice(&text, (vs, ve), if on { "true" } else { "false" }));
    }
    let flag = locate(&text, path)?;
    let text = set_member(&text, &flag, &place.on_field, &Value::Bool(on));
    let flag = locate(&text, path)?;
    let Some(field) = &place.percent_field else {
        // No percentage declared: the object's other members stay.
        return match percent {
            None => Ok(text),
            Some(_) => Err(format!("flag {} has no percentage", place.name)),
        };
    };
    Ok(match (percent, flag.find(field)) {
        (Some(p), _) => set_member(&text, &flag, field, &Value::from(p)),
        (None, Some(k)) => remove_member(&text, &flag, k),
        (None, None) => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(path: &[&str], on: &str, pct: &str) -> Place {
        Place {
            name: "f".into(),
            path: path.iter().map(|s| s.to_string()).collect(),
            on_field: on.into(),
            percent_field: Some(pct.into()),
        }
    }

    /// Seed 004's file, exactly as its runbook shows it.
    const SEED: &str = r#"{
  "FASES": {
    "FASE_8_DATA_QUALITY": {
      "habilitado": true,
      "niveles": ["piloto", "produccion_controlada", "produccion_abierta"],
      "porcentaje_rollout": 100,
      "version_minima": "1.0.0"
    },
    "FASE_37_BI_ANALYTICS": {
      "habilitado": false,
      "niveles": ["produccion_abierta"],
      "porcentaje_rollout": 0,
      "version_minima": "1.2.0",
      "notas": "Disponible en v1.2.0+"
    }
  },
  "ALERTAS": {}
}
"#;

    #[test]
    fn seed_flag_changes_only_its_values() {
        let p = place(
            &["FASES", "FASE_37_BI_ANALYTICS"],
            "habilitado",
            "porcentaje_rollout",
        );
        let out = edit(SEED, &p, true, Some(75)).unwrap();
        assert_eq!(
            out,
            SEED.replace("\"habilitado\": false", "\"habilitado\": true")
                .replace("\"porcentaje_rollout\": 0", "\"porcentaje_rollout\": 75")
        );
        // Off without a percentage removes the field (a restore to a state
        // without one); the comma goes with it.
        let out = edit(&out, &p, false, None).unwrap();
        assert!(
            out.contains(
                "\"habilitado\": false,\n      \"niveles\": [\"produccion_abierta\"],\n      \"version_minima\""
            ),
            "{out}"
        );
        serde_json::from_str::<Value>(&out).unwrap();
    }

    #[test]
    fn new_flags_follow_the_files_layout() {
        // Four-space indent, a missing flag in an existing object, a
        // missing intermediate object, CRLF line ends.
        let text = "{\r\n    \"a\": {\"x\": 1}\r\n}";
        let out = edit(text, &place(&["b"], "enabled", "percent"), true, Some(5)).unwrap();
        assert_eq!(
            out,
            "{\r\n    \"a\": {\"x\": 1},\r\n    \"b\": {\r\n        \"enabled\": true,\r\n        \"percent\": 5\r\n    }\r\n}"
        );
        let out = edit(&out, &place(&["a", "y"], "on", "pct"), false, None).unwrap();
        assert!(
            out.contains("\"a\": {\"x\": 1, \"y\": {\"on\": false}}"),
            "{out}"
        );
        let out = edit(&out, &place(&["n", "m"], "on", "pct"), true, None).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["n"]["m"]["on"], true);
        // An empty file becomes golive's default layout.
        assert_eq!(
            edit("", &place(&["bi"], "enabled", "percent"), true, None).unwrap(),
            "{\n  \"bi\": {\n    \"enabled\": true\n  }\n}\n"
        );
        // An empty object in a one-line file.
        assert_eq!(
            edit("{}", &place(&["bi"], "enabled", "percent"), false, None).unwrap(),
            "{\"bi\": {\"enabled\": false}}"
        );
    }

    #[test]
    fn plain_booleans_duplicates_and_escapes() {
        let text = r#"{"a\"b": {"enabled": true}, "bi": true, "bi": false, "s": "}{,\""}"#;
        let out = edit(text, &place(&["bi"], "enabled", "percent"), true, None).unwrap();
        assert_eq!(out, text.replace("\"bi\": false", "\"bi\": true"));
        assert!(edit(text, &place(&["bi"], "enabled", "percent"), true, Some(3)).is_err());
        let out = edit(text, &place(&["a\"b"], "enabled", "percent"), false, None).unwrap();
        assert!(out.starts_with(r#"{"a\"b": {"enabled": false}"#), "{out}");
        let out = edit(text, &place(&["a\"b"], "enabled", "percent"), true, Some(9)).unwrap();
        assert!(
            out.starts_with(r#"{"a\"b": {"enabled": true, "percent": 9}"#),
            "{out}"
        );
        let first = edit(&out, &place(&["a\"b"], "percent", "enabled"), true, None).unwrap();
        assert!(
            first.starts_with(r#"{"a\"b": {"percent": true}"#),
            "{first}"
        );
    }
}
