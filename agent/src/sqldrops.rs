//! What a down migration drops (issue 12 part 8): a small SQL scanner that
//! finds `DROP TABLE` and `ALTER TABLE ... DROP [COLUMN]` in a migration's
//! text, so `migrate down` can say which tables and columns go before it
//! runs. It reads tokens, not a grammar: comments, string literals
//! (`'...'`, PostgreSQL `$tag$...$tag$`) and quoted identifiers (`"..."`,
//! `` `...` ``) are understood, so a `DROP` inside a string or comment is not
//! reported. Anything else it cannot read is simply not reported: the
//! verified backup taken before every down is the safety net, this is the
//! warning.

/// A table (or one of its columns) a statement drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The table's name parts as written (`schema.table` → two parts),
    /// unquoted.
    pub table: Vec<String>,
    pub column: Option<String>,
}

impl Dropped {
    /// The table as shown to people: `orders`, `app.orders`.
    pub fn table_name(&self) -> String {
        self.table.join(".")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word (keyword or identifier), as written.
    Word(String),
    /// A quoted identifier, unquoted.
    Quoted(String),
    Punct(char),
    /// A string literal or anything else that is one opaque value.
    Other,
}

impl Token {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn ident(&self) -> Option<&str> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w),
            _ => None,
        }
    }
}

/// Splits SQL into statements of tokens.
fn statements(sql: &str) -> Vec<Vec<Token>> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    let n = chars.len();
    while i < n {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < n && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            // '' is an escaped quote; a backslash escapes in MariaDB.
            i += 1;
            while i < n {
                if chars[i] == '\\' {
                    i += 2;
                } else if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            current.push(Token::Other);
        } else if c == '"' || c == '`' {
            let mut name = String::new();
            i += 1;
            while i < n {
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        name.push(c);
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    name.push(chars[i]);
                    i += 1;
                }
            }
            current.push(Token::Quoted(name));
        } else if c == '$'
            && let Some(tag_len) = dollar_tag(&chars[i..])
        {
            // $tag$ ... $tag$ (PostgreSQL): one opaque string.
            let tag: Vec<char> = chars[i..i + tag_len].to_vec();
            i += tag_len;
            while i < n && !chars[i..].starts_with(&tag) {
                i += 1;
            }
            i = (i + tag_len).min(n);
            current.push(Token::Other);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            current.push(Token::Word(chars[start..i].iter().collect()));
        } else if c == ';' {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            i += 1;
        } else {
            current.push(Token::Punct(c));
            i += 1;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The length of a `$tag$` opener at the start of `chars`, if it is one.
fn dollar_tag(chars: &[char]) -> Option<usize> {
    let end = chars[1..].iter().position(|&c| c == '$')? + 1;
    chars[1..end]
        .iter()
        .all(|c| c.is_alphanumeric() || *c == '_')
        .then_some(end + 1)
}

/// A qualified name (`a`, `a.b`, `"A"."b"`) at `t[*i..]`.
fn name(t: &[Token], i: &mut usize) -> Option<Vec<String>> {
    let mut parts = vec![t.get(*i)?.ident()?.to_string()];
    *i += 1;
    while t.get(*i) == Some(&Token::Punct('.')) {
        parts.push(t.get(*i + 1)?.ident()?.to_string());
        *i += 2;
    }
    Some(parts)
}

fn skip(t: &[Token], i: &mut usize, words: &[&str]) -> bool {
    if words
        .iter()
        .enumerate()
        .all(|(k, w)| t.get(*i + k).is_some_and(|x| x.is(w)))
    {
        *i += words.len();
        true
    } else {
        false
    }
}

/// The tables and columns `sql` drops, in the order it drops them.
pub fn find(sql: &str) -> Vec<Dropped> {
    let mut out = Vec::new();
    for t in statements(sql) {
        let mut i = 0;
        if skip(&t, &mut i, &["DROP", "TABLE"]) {
            skip(&t, &mut i, &["IF", "EXISTS"]);
            while let Some(table) = name(&t, &mut i) {
                out.push(Dropped {
                    table,
                    column: None,
                });
                if t.get(i) != Some(&Token::Punct(',')) {
                    break;
                }
                i += 1;
            }
        } else if skip(&t, &mut i, &["ALTER", "TABLE"]) {
            skip(&t, &mut i, &["IF", "EXISTS"]);
            skip(&t, &mut i, &["ONLY"]);
            let Some(table) = name(&t, &mut i) else {
                continue;
            };
            // The actions, split at commas outside parentheses.
            let mut depth = 0i32;
            let mut action_start = i;
            for k in i..=t.len() {
                let end = match t.get(k) {
                    None => true,
                    Some(Token::Punct('(')) => {
                        depth += 1;
                        false
                    }
                    Some(Token::Punct(')')) => {
                        depth -= 1;
                        false
                    }
                    Some(Token::Punct(',')) => depth == 0,
                    Some(_) => false,
                };
                if end {
                    if let Some(column) = dropped_column(&t[action_start..k]) {
                        out.push(Dropped {
                            table: table.clone(),
                            column: Some(column),
                        });
                    }
                    action_start = k + 1;
                }
            }
        }
    }
    out
}

/// `DROP [COLUMN] [IF EXISTS] name` → the column; other drops (constraints,
/// indexes, keys, partitions, defaults) → none.
fn dropped_column(action: &[Token]) -> Option<String> {
    let mut i = 0;
    if !skip(action, &mut i, &["DROP"]) {
        return None;
    }
    if !skip(action, &mut i, &["COLUMN"]) {
        const NOT_COLUMNS: &[&str] = &[
            "CONSTRAINT",
            "INDEX",
            "KEY",
            "PRIMARY",
            "FOREIGN",
            "CHECK",
            "PARTITION",
            "DEFAULT",
            "NOT",
            "EXPRESSION",
            "IDENTITY",
            "SYSTEM",
            "PERIOD",
        ];
        if action
            .get(i)
            .is_some_and(|x| matches!(x, Token::Word(_)) && NOT_COLUMNS.iter().any(|w| x.is(w)))
        {
            return None;
        }
    }
    skip(action, &mut i, &["IF", "EXISTS"]);
    action.get(i)?.ident().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(sql: &str) -> Vec<String> {
        find(sql)
            .into_iter()
            .map(|d| match d.column {
                None => format!("table {}", d.table_name()),
                Some(ref c) => format!("column {}.{c}", d.table_name()),
            })
            .collect()
    }

    #[test]
    fn tables_and_columns_in_every_dialect() {
        assert_eq!(
            show(
                "-- golive: reverts 0002\nDROP TABLE order_notes;\n\
                 drop table if exists a, \"Weird \"\"Name\", app.`b`;\n\
                 ALTER TABLE orders DROP COLUMN note;\n\
                 ALTER TABLE IF EXISTS ONLY public.orders DROP COLUMN IF EXISTS x, DROP y, \
                 ADD COLUMN z int, DROP CONSTRAINT c1, DROP INDEX i, DROP PRIMARY KEY, \
                 ALTER COLUMN w DROP DEFAULT, ALTER COLUMN w DROP NOT NULL;\n\
                 alter table t drop column `q``r`"
            ),
            [
                "table order_notes",
                "table a",
                "table Weird \"Name",
                "table app.b",
                "column orders.note",
                "column public.orders.x",
                "column public.orders.y",
                "column t.q`r",
            ]
        );
    }

    #[test]
    fn drops_in_strings_comments_and_bodies_are_not_drops() {
        assert!(
            show(
                "INSERT INTO log VALUES ('DROP TABLE users; it''s fine');\n\
                 /* DROP TABLE x; */ -- DROP TABLE y;\n\
                 DO $body$ BEGIN EXECUTE 'x'; DROP TABLE z; END $body$;\n\
                 CREATE TABLE keep (id int, CHECK (id > 0));\n\
                 DROP INDEX idx_orders; DROP VIEW v;"
            )
            .is_empty()
        );
        // Parentheses inside an action do not split it.
        assert_eq!(
            show("ALTER TABLE t ADD CONSTRAINT c CHECK (a IN (1, 2)), DROP COLUMN b"),
            ["column t.b"]
        );
        assert!(show("").is_empty());
        assert!(show("DROP TABLE").is_empty());
        assert!(show("ALTER TABLE").is_empty());
    }
}
