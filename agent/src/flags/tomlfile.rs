//! A flag change in a TOML file, through toml_edit (issue 12, part 11):
//! comments, key order, inline tables and the decoration around a changed
//! value (its spacing and trailing comment) are kept.

use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::Place;

/// Replaces `t[key]`'s value with `v`, keeping its decoration; adds it
/// when absent.
fn set_scalar(t: &mut dyn TableLike, key: &str, v: Value) {
    match t.get_mut(key) {
        Some(Item::Value(old)) => {
            let decor = old.decor().clone();
            *old = v;
            *old.decor_mut() = decor;
        }
        _ => {
            t.insert(key, Item::Value(v));
        }
    }
}

/// A new flag: `[KEY]` with its fields (inline when its parent is inline).
fn new_flag(place: &Place, on: bool, percent: Option<u8>) -> Item {
    let mut t = toml_edit::Table::new();
    t.insert(&place.on_field, toml_edit::value(on));
    if let (Some(p), Some(field)) = (percent, &place.percent_field) {
        t.insert(field, toml_edit::value(i64::from(p)));
    }
    Item::Table(t)
}

/// Sets the flag at `place` in TOML `text` (the rules of [`super::apply`],
/// which the caller checked first).
pub(super) fn edit(
    text: &str,
    place: &Place,
    on: bool,
    percent: Option<u8>,
) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let (parents, name) = place.path.split_at(place.path.len() - 1);
    let mut table: &mut dyn TableLike = doc.as_table_mut();
    for key in parents {
        if !table.contains_key(key) {
            let mut t = toml_edit::Table::new();
            // `[a.b]` alone, not an empty `[a]` header above it.
            t.set_implicit(true);
            table.insert(key, Item::Table(t));
        }
        let here = table;
        table = here
            .get_mut(key)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| format!("{key} is not a table"))?;
    }
    let name = &name[0];
    match table.get_mut(name) {
        None => {
            table.insert(name, new_flag(place, on, percent));
        }
        Some(Item::Value(Value::Boolean(_))) => {
            if percent.is_some() {
                return Err(super::plain_boolean(place));
            }
            set_scalar(table, name, Value::from(on));
        }
        Some(item) => {
            let flag = item
                .as_table_like_mut()
                .ok_or_else(|| format!("{name} is neither a table nor true/false"))?;
            set_scalar(flag, &place.on_field, Value::from(on));
            match (percent, &place.percent_field) {
                (Some(p), Some(field)) => set_scalar(flag, field, Value::from(i64::from(p))),
                (None, Some(field)) => {
                    flag.remove(field);
                }
                // No percentage declared: the table's other keys stay.
                (None, None) => {}
                (Some(_), None) => return Err(format!("flag {} has no percentage", place.name)),
            }
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(path: &[&str]) -> Place {
        Place {
            name: "f".into(),
            path: path.iter().map(|s| s.to_string()).collect(),
            on_field: "habilitado".into(),
            percent_field: Some("porcentaje_rollout".into()),
        }
    }

    const TEXT: &str = r#"# the app's flags
[FASES.FASE_37_BI_ANALYTICS]
habilitado = false   # off until v1.2.0
niveles = ["produccion_abierta"]
porcentaje_rollout = 0

[FASES.OTRA]
habilitado = true
inline = { habilitado = false, x = 1 }
"#;

    #[test]
    fn keeps_comments_order_and_decoration() {
        let out = edit(
            TEXT,
            &place(&["FASES", "FASE_37_BI_ANALYTICS"]),
            true,
            Some(75),
        )
        .unwrap();
        assert_eq!(
            out,
            TEXT.replace("habilitado = false   #", "habilitado = true   #")
                .replace("porcentaje_rollout = 0", "porcentaje_rollout = 75")
        );
        let out = edit(TEXT, &place(&["FASES", "OTRA", "inline"]), true, None).unwrap();
        assert!(
            out.contains("inline = { habilitado = true, x = 1 }"),
            "{out}"
        );
    }

    #[test]
    fn new_flags_and_plain_booleans() {
        let out = edit("x = 1\nbi = false\n", &place(&["bi"]), true, None).unwrap();
        assert_eq!(out, "x = 1\nbi = true\n");
        assert!(edit("bi = false\n", &place(&["bi"]), true, Some(5)).is_err());
        let out = edit("x = 1\n", &place(&["A", "B"]), true, Some(5)).unwrap();
        let t: toml::Table = out.parse().unwrap();
        assert_eq!(t["A"]["B"]["habilitado"].as_bool(), Some(true), "{out}");
        assert_eq!(t["A"]["B"]["porcentaje_rollout"].as_integer(), Some(5));
        assert!(!out.contains("[A]\n"), "{out}");
    }
}
