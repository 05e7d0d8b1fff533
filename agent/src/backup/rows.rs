//! Row counts per table in a dump stream, for what a restore throws away
//! (issue 12 part 9). Both counters read the stream as it goes by, in
//! chunks, keeping at most [`PREFIX_CAP`] bytes of the current line: memory
//! stays bounded whatever the size of the dump or of one line in it.
//!
//! - [`CopyCounter`]: the SQL `pg_restore --data-only -f -` prints for a
//!   custom-format dump. Each table's data is a `COPY name (...) FROM stdin;`
//!   line, one line per row (the text format escapes line breaks inside
//!   values), and a `\.` line. Exact.
//! - [`InsertCounter`]: a `mariadb-dump` stream: `CREATE TABLE` lines name
//!   the tables, extended `INSERT INTO ... VALUES (...),(...);` statements
//!   hold the rows (on one line, or one row per line as newer dump tools
//!   write them). Rows are the top-level parentheses after `VALUES`,
//!   outside string literals (quoted with `'` or `"`, backslash escapes, as
//!   the dump tool writes them). Exact for what the dump tool writes.

use std::collections::BTreeMap;

/// How much of a line is kept to recognise it (the statement head).
pub const PREFIX_CAP: usize = 8192;

/// Parses `name`, `schema.name`, `"Odd ""name"""`, `` `a``b` `` at the start of
/// `s`; returns the parts and the rest.
fn qualified_name(s: &[u8]) -> Option<(Vec<String>, &[u8])> {
    let mut parts = Vec::new();
    let mut i = 0;
    loop {
        let q = *s.get(i)?;
        let mut part = Vec::new();
        if q == b'"' || q == b'`' {
            i += 1;
            loop {
                let c = *s.get(i)?;
                if c == q {
                    if s.get(i + 1) == Some(&q) {
                        part.push(q);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                part.push(c);
                i += 1;
            }
        } else {
            while let Some(&c) = s.get(i) {
                if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
                    part.push(c);
                    i += 1;
                } else {
                    break;
                }
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(String::from_utf8_lossy(&part).into_owned());
        if s.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return Some((parts, &s[i..]));
        }
    }
}

/// `public.orders` → `orders`; other schemas stay qualified.
pub fn pg_display(parts: &[String]) -> String {
    match parts {
        [schema, table] if schema == "public" => table.clone(),
        _ => parts.join("."),
    }
}

/// Counts the rows of each table in `pg_restore -f -` output.
#[derive(Debug, Default)]
pub struct CopyCounter {
    line: Vec<u8>,
    line_len: usize,
    /// The table whose COPY data is being read.
    table: Option<String>,
    counts: BTreeMap<String, u64>,
}

impl CopyCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                self.end_line();
                continue;
            }
            if self.line.len() < PREFIX_CAP {
                self.line.push(b);
            }
            self.line_len += 1;
        }
    }

    fn end_line(&mut self) {
        match &self.table {
            Some(t) => {
                if self.line_len == 2 && self.line == b"\\." {
                    self.table = None;
                } else {
                    *self.counts.entry(t.clone()).or_default() += 1;
                }
            }
            None => {
                if let Some(rest) = self.line.strip_prefix(b"COPY ")
                    && let Some((parts, tail)) = qualified_name(rest)
                    && self.line.ends_with(b"FROM stdin;")
                    && (tail.starts_with(b" (") || tail.starts_with(b" FROM"))
                {
                    let name = pg_display(&parts);
                    self.counts.entry(name.clone()).or_default();
                    self.table = Some(name);
                }
            }
        }
        self.line.clear();
        self.line_len = 0;
    }

    /// Rows per table (tables with no rows included).
    pub fn finish(mut self) -> BTreeMap<String, u64> {
        if self.line_len > 0 {
            self.end_line();
        }
        self.counts
    }
}

/// Counts the rows of each table in a `mariadb-dump` stream.
#[derive(Debug, Default)]
pub struct InsertCounter {
    line: Vec<u8>,
    /// Inside the VALUES list of an INSERT into this table.
    table: Option<String>,
    depth: u32,
    quote: Option<u8>,
    escaped: bool,
    counts: BTreeMap<String, u64>,
}

impl InsertCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.table.is_some() {
                self.values_byte(b);
            } else {
                self.line_byte(b);
            }
        }
    }

    fn values_byte(&mut self, b: u8) {
        if let Some(q) = self.quote {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == q {
                self.quote = None;
            }
            return;
        }
        match b {
            b'\'' | b'"' => self.quote = Some(b),
            b'(' => {
                if self.depth == 0
                    && let Some(t) = &self.table
                {
                    *self.counts.entry(t.clone()).or_default() += 1;
                }
                self.depth += 1;
            }
            b')' => self.depth = self.depth.saturating_sub(1),
            b';' if self.depth == 0 => {
                self.table = None;
                self.line.clear();
            }
            _ => {}
        }
    }

    fn line_byte(&mut self, b: u8) {
        // The VALUES list starts (on this line, or on the next ones: newer
        // dump tools write one row per line): count from here without
        // keeping the line.
        if (b == b'(' || b == b'\n') && self.values_start() {
            if b == b'(' {
                self.values_byte(b);
            }
            return;
        }
        if b == b'\n' {
            if let Some(rest) = self.line.strip_prefix(b"CREATE TABLE ")
                && let Some((parts, _)) = qualified_name(rest)
            {
                self.counts.entry(parts.join(".")).or_default();
            }
            self.line.clear();
            return;
        }
        if self.line.len() < PREFIX_CAP {
            self.line.push(b);
        }
    }

    /// At the end of `INSERT INTO name VALUES`: enters the VALUES list.
    fn values_start(&mut self) -> bool {
        if !(self.line.starts_with(b"INSERT INTO ")
            && self.line.trim_ascii_end().ends_with(b"VALUES"))
        {
            return false;
        }
        let Some((parts, _)) = qualified_name(&self.line[b"INSERT INTO ".len()..]) else {
            return false;
        };
        let name = parts.join(".");
        self.counts.entry(name.clone()).or_default();
        self.table = Some(name);
        self.depth = 0;
        self.quote = None;
        self.escaped = false;
        self.line.clear();
        true
    }

    /// Rows per table (tables created with no rows included).
    pub fn finish(self) -> BTreeMap<String, u64> {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in chunks of every size from 1 to 7 bytes: the result
    /// must not depend on where the chunks split.
    fn each_split<T: Default>(
        text: &[u8],
        feed: impl Fn(&mut T, &[u8]),
        finish: impl Fn(T) -> BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        let mut results = Vec::new();
        for size in 1..=7 {
            let mut c = T::default();
            for chunk in text.chunks(size) {
                feed(&mut c, chunk);
            }
            results.push(finish(c));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        results.pop().unwrap()
    }

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn copy_blocks_are_counted_per_table() {
        let sql = b"SET statement_timeout = 0;\n\
            COPY public.orders (id, amount) FROM stdin;\n1\t10\n2\tline\\nbreak\n3\t\\.x\n\\.\n\n\
            COPY public.empty (id) FROM stdin;\n\\.\n\
            COPY app.\"Odd \"\"Name\" (id) FROM stdin;\n7\n\\.\n\
            SELECT pg_catalog.setval('public.orders_id_seq', 3, true);\n";
        let got = each_split(sql, CopyCounter::feed, CopyCounter::finish);
        assert_eq!(
            got,
            map(&[("orders", 3), ("empty", 0), ("app.Odd \"Name", 1)])
        );
    }

    #[test]
    fn extended_inserts_are_counted_per_table() {
        let dump = b"-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n\
            DROP TABLE IF EXISTS `orders`;\n\
            CREATE TABLE `orders` (\n  `id` int(11) NOT NULL,\n  `note` text\n) ENGINE=InnoDB;\n\
            /*!50001 CREATE TABLE `a_view` (\n  `id` tinyint NOT NULL\n) ENGINE=MyISAM */;\n\
            CREATE TABLE `empty` (`id` int);\n\
            CREATE TABLE `we``ird` (`id` int);\n\
            INSERT INTO `orders` VALUES (1,'a (b), c'),(2,'it\\'s );(3,'),(3,NULL),(4,0x28);\n\
            INSERT INTO `orders` VALUES (5,\"x\\\"(\");\n\
            INSERT INTO `we``ird` VALUES (1);\n\
            INSERT INTO `empty` VALUES\n(1),\n(2);\n\
            -- Dump completed on 2026-01-01\n";
        let got = each_split(dump, InsertCounter::feed, InsertCounter::finish);
        assert_eq!(got, map(&[("orders", 5), ("empty", 2), ("we`ird", 1)]));
    }

    #[test]
    fn a_long_line_does_not_grow_the_buffer() {
        let mut c = InsertCounter::default();
        c.feed(b"/* ");
        c.feed(&vec![b'x'; PREFIX_CAP * 4]);
        assert!(c.line.len() <= PREFIX_CAP);
        c.feed(b" */\nCREATE TABLE `t` (`id` int);\nINSERT INTO `t` VALUES ");
        for _ in 0..1000 {
            c.feed(b"(1,'");
            c.feed(&[b'y'; 100]);
            c.feed(b"'),");
        }
        c.feed(b"(2,'z');\n");
        assert!(c.line.len() <= PREFIX_CAP);
        assert_eq!(c.finish(), map(&[("t", 1001)]));
    }
}
