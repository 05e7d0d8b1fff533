//! Access-log formats: `combined`, `common`, an nginx `log_format` string or
//! an Apache `LogFormat` string, compiled into a list of literals and fields
//! that [`super::parse`] walks once per line.

use std::fmt;

/// The combined format (nginx's predefined `combined`, Apache's
/// `"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\""`).
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                            $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";
/// The common log format (Apache's `"%h %l %u %t \"%r\" %>s %b"`).
pub const COMMON: &str =
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent";

/// A compiled log format. Two formats that split lines the same way are
/// equal, whatever spelling they were given in (the tailer registry keys on
/// this).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LogFormat {
    pub(crate) items: Vec<Item>,
}

/// What a field holds, as far as the window cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    /// Any field we only step over (address, user, request, bytes, headers).
    Skip,
    /// An nginx `$upstream_*` field we step over: it may be a list with
    /// spaces (`10.0.0.1:80, 10.0.0.2:80 : unix:/run/app.sock`).
    SkipList,
    /// `10/Oct/2025:13:55:36 +0200` (nginx `$time_local`, inside Apache's `%t` brackets).
    TimeLocal,
    /// `2025-10-10T13:55:36+02:00` (nginx `$time_iso8601`).
    TimeIso8601,
    /// Three digits.
    Status,
    /// The request's latency in this unit; `-` means "no latency for this line".
    Latency(Unit),
    /// nginx `$upstream_response_time`: seconds, `-`, or a list such as
    /// `0.010, 0.020 : 0.030` (one entry per upstream tried; they are summed).
    UpstreamSeconds,
    /// golive's maintenance marker (issue 12, part 12): the response header
    /// [`MAINTENANCE_HEADER`] the shipped snippets add to the maintenance
    /// page, logged as nginx `$sent_http_x_golive_maintenance` or Apache
    /// `%{X-Golive-Maintenance}o`. `-` (or empty): not a maintenance answer.
    Maintenance,
}

/// The response header golive's maintenance page carries (the snippets in
/// packaging/ set it to `1`): how a log line, an http probe or an
/// availability sample tells golive's maintenance from an outage.
pub const MAINTENANCE_HEADER: &str = "X-Golive-Maintenance";
/// [`MAINTENANCE_HEADER`] as nginx names it in a `log_format`.
const NGINX_MAINTENANCE_VAR: &str = "sent_http_x_golive_maintenance";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Unit {
    /// Decimal seconds (`0.123`): nginx `$request_time`, Apache `%T` / `%{s}T`.
    Seconds,
    /// Whole milliseconds: Apache `%{ms}T`.
    Millis,
    /// Whole microseconds: Apache `%D` / `%{us}T`.
    Micros,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Item {
    Lit(Box<[u8]>),
    Field {
        field: Field,
        /// Between double quotes: the end is the first `"` not escaped by a
        /// backslash (Apache writes `\"`; nginx writes `\x22`).
        quoted: bool,
    },
}

impl LogFormat {
    /// `"combined"` (the default), `"common"`, or a format string: an nginx
    /// `log_format` such as
    /// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time`,
    /// or an Apache `LogFormat` such as `%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\" %D`
    /// (`\"` may be written as in httpd.conf). The error names the bad token
    /// and the fix.
    pub fn parse(spec: &str) -> Result<LogFormat, String> {
        let text = match spec.trim() {
            "" => {
                return Err(
                    "the access-log format is empty; use \"combined\", \"common\", \
                            or the log_format (nginx) / LogFormat (Apache) string of the log"
                        .into(),
                );
            }
            "combined" => COMBINED,
            "common" => COMMON,
            _ => spec,
        };
        let raw = tokenize(text)?;
        let items = compile(raw)?;
        Ok(LogFormat { items })
    }

    /// Whether lines carry a latency (`$request_time`, `%D`, ...), so that
    /// the window has a p95.
    pub fn has_latency(&self) -> bool {
        self.fields()
            .any(|f| matches!(f, Field::Latency(_) | Field::UpstreamSeconds))
    }

    /// Whether lines carry their own time. Without it lines are placed by
    /// arrival, and the tailer does not read back the existing file.
    pub fn has_time(&self) -> bool {
        self.fields()
            .any(|f| matches!(f, Field::TimeLocal | Field::TimeIso8601))
    }

    /// Whether lines carry golive's maintenance marker, so that
    /// maintenance answers outside golive's journaled windows are known too.
    pub fn has_maintenance_marker(&self) -> bool {
        self.fields().any(|f| f == Field::Maintenance)
    }

    fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.items.iter().filter_map(|i| match i {
            Item::Field { field, .. } => Some(*field),
            Item::Lit(_) => None,
        })
    }
}

impl fmt::Debug for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogFormat(")?;
        for item in &self.items {
            match item {
                Item::Lit(l) => write!(f, "{:?}", String::from_utf8_lossy(l))?,
                Item::Field { field, quoted } => {
                    write!(f, "<{field:?}{}>", if *quoted { " quoted" } else { "" })?
                }
            }
        }
        f.write_str(")")
    }
}

/// A token of the format string before fields are classified: a literal, or
/// a field with the text that named it (for error messages).
enum Raw {
    Lit(Vec<u8>),
    Field { field: Field, name: String },
}

fn tokenize(text: &str) -> Result<Vec<Raw>, String> {
    let b = text.as_bytes();
    let mut out: Vec<Raw> = Vec::new();
    let mut lit = Vec::new();
    let (mut nginx, mut apache): (Option<String>, Option<String>) = (None, None);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if matches!(b.get(i + 1), Some(b'"' | b'\\')) => {
                lit.push(b[i + 1]);
                i += 2;
            }
            b'$' => {
                let (name, next) = nginx_var(text, i)?;
                let field = match name {
                    "time_local" => Field::TimeLocal,
                    "time_iso8601" => Field::TimeIso8601,
                    "status" => Field::Status,
                    "request_time" => Field::Latency(Unit::Seconds),
                    "upstream_response_time" => Field::UpstreamSeconds,
                    n if n.eq_ignore_ascii_case(NGINX_MAINTENANCE_VAR) => Field::Maintenance,
                    n if n.starts_with("upstream_") => Field::SkipList,
                    _ => Field::Skip,
                };
                nginx.get_or_insert_with(|| format!("${name}"));
                push_field(&mut out, &mut lit, field, &text[i..next]);
                i = next;
            }
            b'%' if b.get(i + 1) == Some(&b'%') => {
                lit.push(b'%');
                i += 2;
            }
            b'%' => {
                let (field, next, brackets) = apache_directive(text, i)?;
                apache.get_or_insert_with(|| text[i..next].to_string());
                if brackets {
                    lit.push(b'[');
                }
                push_field(&mut out, &mut lit, field, &text[i..next]);
                if brackets {
                    lit.push(b']');
                }
                i = next;
            }
            c => {
                lit.push(c);
                i += 1;
            }
        }
    }
    if !lit.is_empty() {
        out.push(Raw::Lit(lit));
    }
    if let (Some(n), Some(a)) = (nginx, apache) {
        return Err(format!(
            "the access-log format mixes an nginx variable (`{n}`) and an Apache directive (`{a}`); \
             copy the format from one server's config (nginx log_format or Apache LogFormat)"
        ));
    }
    Ok(out)
}

fn push_field(out: &mut Vec<Raw>, lit: &mut Vec<u8>, field: Field, name: &str) {
    if !lit.is_empty() {
        out.push(Raw::Lit(std::mem::take(lit)));
    }
    out.push(Raw::Field {
        field,
        name: name.to_string(),
    });
}

/// `$name` or `${name}` at `at`; returns the name and the index after it.
fn nginx_var(text: &str, at: usize) -> Result<(&str, usize), String> {
    let b = text.as_bytes();
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.get(at + 1) == Some(&b'{') {
        let end = text[at + 2..]
            .find('}')
            .map(|e| at + 2 + e)
            .ok_or_else(|| {
                format!(
                    "`${{` at column {} of the access-log format has no closing `}}`; write `${{name}}`",
                    at + 1
                )
            })?;
        let name = &text[at + 2..end];
        if name.is_empty() || !name.bytes().all(is_name) {
            return Err(format!(
                "`{}` at column {} of the access-log format is not an nginx variable; \
                 names are letters, digits and `_`",
                &text[at..=end],
                at + 1
            ));
        }
        return Ok((name, end + 1));
    }
    let end = b[at + 1..]
        .iter()
        .position(|c| !is_name(*c))
        .map_or(b.len(), |p| at + 1 + p);
    if end == at + 1 {
        return Err(format!(
            "`$` at column {} of the access-log format is not followed by a variable name; \
             write e.g. `$status`",
            at + 1
        ));
    }
    Ok((&text[at + 1..end], end))
}

/// Apache directive letters (mod_log_config), with or without `{...}`.
const APACHE_LETTERS: &[u8] = b"aABbCDefhHiIklLmnoOpPqrRsStTuUvVXx";

/// `%[<>][conditions][{arg}]letter` at `at`; returns the field, the index
/// after it, and whether the field is written inside `[...]` (`%t`).
fn apache_directive(text: &str, at: usize) -> Result<(Field, usize, bool), String> {
    let b = text.as_bytes();
    let col = at + 1;
    let mut i = at + 1;
    // Conditions (`%400,501{User-agent}i`, `%!200i`) only decide whether the
    // value is `-`, and `<`/`>` pick the original or final request: neither
    // changes how a line splits.
    while i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], b',' | b'!' | b'<' | b'>')) {
        i += 1;
    }
    let mut arg = None;
    if b.get(i) == Some(&b'{') {
        let end = text[i + 1..].find('}').map(|e| i + 1 + e).ok_or_else(|| {
            format!("`%{{` at column {col} of the access-log format has no closing `}}`")
        })?;
        arg = Some(&text[i + 1..end]);
        i = end + 1;
    }
    // `%{VAR}^ti` / `%{VAR}^to`: trailer lines.
    if b.get(i) == Some(&b'^') && matches!(b.get(i + 1..i + 3), Some(b"ti" | b"to")) {
        return Ok((Field::Skip, i + 3, false));
    }
    let Some(&letter) = b.get(i) else {
        return Err(format!(
            "`{}` at column {col} of the access-log format is an incomplete Apache directive; \
             write e.g. `%>s`, or `%%` for a literal `%`",
            &text[at..]
        ));
    };
    let token = text.get(at..=i).unwrap_or(&text[at..]);
    if !APACHE_LETTERS.contains(&letter) {
        return Err(format!(
            "`{token}` at column {col} of the access-log format is not an Apache LogFormat \
             directive; see mod_log_config (`%h %l %u %t \\\"%r\\\" %>s %b ...`), or write `%%` for a literal `%`"
        ));
    }
    let field = match (letter, arg) {
        (b's', _) => Field::Status,
        (b't', None) => return Ok((Field::TimeLocal, i + 1, true)),
        (b't', Some(_)) => {
            return Err(format!(
                "`{token}` at column {col}: a custom time format is not read; \
                 log the time with plain `%t`"
            ));
        }
        (b'o', Some(h)) if h.eq_ignore_ascii_case(MAINTENANCE_HEADER) => Field::Maintenance,
        (b'D', _) => Field::Latency(Unit::Micros),
        (b'T', None | Some("s")) => Field::Latency(Unit::Seconds),
        (b'T', Some("ms")) => Field::Latency(Unit::Millis),
        (b'T', Some("us")) => Field::Latency(Unit::Micros),
        (b'T', Some(other)) => {
            return Err(format!(
                "`{token}` at column {col}: unknown unit `{other}` for %T; use `%{{s}}T`, `%{{ms}}T`, `%{{us}}T` or `%D`"
            ));
        }
        _ => Field::Skip,
    };
    Ok((field, i + 1, false))
}

/// Classifies the tokens: checks the format can split a line and holds a
/// status, keeps one time and one latency field (the others are stepped
/// over), and marks quoted fields.
fn compile(raw: Vec<Raw>) -> Result<Vec<Item>, String> {
    let mut status = None::<&str>;
    let mut time = None::<&str>;
    let mut marker = None::<&str>;
    for (k, r) in raw.iter().enumerate() {
        let Raw::Field { field, name } = r else {
            continue;
        };
        if let Some(Raw::Field { name: next, .. }) = raw.get(k + 1) {
            return Err(format!(
                "`{name}` and `{next}` follow each other with nothing between them in the \
                 access-log format, so a line cannot be split there; put the separator the \
                 server writes (usually a space) between them"
            ));
        }
        match field {
            Field::Status => {
                if let Some(first) = status.replace(name) {
                    return Err(format!(
                        "the access-log format has two status fields (`{first}` and `{name}`); keep one"
                    ));
                }
            }
            Field::Maintenance => {
                if let Some(first) = marker.replace(name) {
                    return Err(format!(
                        "the access-log format has two maintenance markers (`{first}` and `{name}`); keep one"
                    ));
                }
            }
            Field::TimeLocal | Field::TimeIso8601 => {
                if let Some(first) = time.replace(name) {
                    return Err(format!(
                        "the access-log format has two time fields (`{first}` and `{name}`); keep one"
                    ));
                }
            }
            _ => {}
        }
    }
    if status.is_none() {
        return Err(
            "the access-log format has no status field; add `$status` (nginx) or `%>s` \
                    (Apache) where the server writes it, or use \"combined\""
                .into(),
        );
    }
    // One latency: the request's own time wins over the upstream's.
    let latency = raw
        .iter()
        .position(|r| {
            matches!(
                r,
                Raw::Field {
                    field: Field::Latency(_),
                    ..
                }
            )
        })
        .or_else(|| {
            raw.iter().position(|r| {
                matches!(
                    r,
                    Raw::Field {
                        field: Field::UpstreamSeconds,
                        ..
                    }
                )
            })
        });
    let mut items = Vec::with_capacity(raw.len());
    for (k, r) in raw.iter().enumerate() {
        items.push(match r {
            Raw::Lit(l) => Item::Lit(l.clone().into_boxed_slice()),
            Raw::Field { field, .. } => {
                let field = match field {
                    Field::Latency(_) if Some(k) != latency => Field::Skip,
                    Field::UpstreamSeconds if Some(k) != latency => Field::SkipList,
                    f => *f,
                };
                let before = k.checked_sub(1).and_then(|p| raw.get(p));
                let quoted = matches!(before, Some(Raw::Lit(l)) if l.ends_with(b"\""))
                    && matches!(raw.get(k + 1), Some(Raw::Lit(l)) if l.starts_with(b"\""));
                Item::Field { field, quoted }
            }
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(f: &LogFormat) -> String {
        format!("{f:?}")
    }

    #[test]
    fn presets_and_spellings_compile_alike() {
        let nginx = LogFormat::parse(COMBINED).unwrap();
        let apache =
            LogFormat::parse(r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\""#)
                .unwrap();
        assert_eq!(LogFormat::parse("combined").unwrap(), nginx);
        // Apache's `%l` is a field where nginx writes a literal `-`: same lines.
        let line =
            br#"192.0.2.1 - bob [10/Oct/2025:13:55:36 +0200] "GET / HTTP/1.1" 200 5 "-" "ua""#;
        assert!(apache.parse_line(line).is_some());
        assert_eq!(apache.parse_line(line), nginx.parse_line(line));
        assert_eq!(
            LogFormat::parse("common").unwrap(),
            LogFormat::parse(
                r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent"#
            )
            .unwrap()
        );
        assert!(!nginx.has_latency() && nginx.has_time());
        assert_eq!(
            shape(&nginx),
            r#"LogFormat(<Skip>" - "<Skip>" ["<TimeLocal>"] \""<Skip quoted>"\" "<Status>" "<Skip>" \""<Skip quoted>"\" \""<Skip quoted>"\"")"#
        );
    }

    #[test]
    fn latency_fields_and_preference() {
        let f = LogFormat::parse("$status $upstream_response_time $request_time").unwrap();
        assert_eq!(
            shape(&f),
            r#"LogFormat(<Status>" "<SkipList>" "<Latency(Seconds)>)"#
        );
        let f = LogFormat::parse("${status} ${upstream_response_time}").unwrap();
        assert_eq!(shape(&f), r#"LogFormat(<Status>" "<UpstreamSeconds>)"#);
        for (spec, unit) in [
            ("%>s %D", Unit::Micros),
            ("%>s %T", Unit::Seconds),
            ("%>s %{ms}T", Unit::Millis),
            ("%>s %{us}T", Unit::Micros),
        ] {
            let f = LogFormat::parse(spec).unwrap();
            assert!(f.has_latency() && !f.has_time());
            assert!(
                f.items.contains(&Item::Field {
                    field: Field::Latency(unit),
                    quoted: false
                }),
                "{spec}: {f:?}"
            );
        }
        let f = LogFormat::parse("%400,501{User-agent}i %<s %% %{X}^ti").unwrap();
        assert_eq!(shape(&f), r#"LogFormat(<Skip>" "<Status>" % "<Skip>)"#);
    }

    /// Issue 12, part 12: golive's maintenance marker, in either server's
    /// spelling, is a field of its own.
    #[test]
    fn issue12_the_maintenance_marker_is_recognised() {
        let nginx =
            LogFormat::parse(&format!("{COMBINED} $sent_http_x_golive_maintenance")).unwrap();
        let apache = LogFormat::parse(
            r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\" %{x-golive-maintenance}o"#,
        )
        .unwrap();
        assert!(nginx.has_maintenance_marker() && apache.has_maintenance_marker());
        assert!(
            !LogFormat::parse("combined")
                .unwrap()
                .has_maintenance_marker()
        );
        // Another response header is only stepped over.
        let other = LogFormat::parse("%>s %{X-Other}o").unwrap();
        assert!(!other.has_maintenance_marker());
        let err =
            LogFormat::parse("$status $sent_http_x_golive_maintenance %{X-Golive-Maintenance}o")
                .unwrap_err();
        assert!(err.contains("mixes"), "{err}");
        let err = LogFormat::parse(
            "$status $sent_http_x_golive_maintenance $sent_http_x_golive_maintenance",
        )
        .unwrap_err();
        assert!(err.contains("two maintenance markers"), "{err}");
    }

    #[test]
    fn bad_formats_name_the_token_and_the_fix() {
        let cases = [
            ("", "empty"),
            (
                "$status$request_time",
                "`$status` and `$request_time` follow each other",
            ),
            (
                "$remote_addr $body_bytes_sent",
                "no status field; add `$status`",
            ),
            ("%h %Z %>s", "`%Z` at column 4"),
            ("%>s %{%d/%b}t", "plain `%t`"),
            ("%>s %{min}T", "unknown unit `min`"),
            (
                "$status %D",
                "mixes an nginx variable (`$status`) and an Apache directive (`%D`)",
            ),
            ("$status $ x", "`$` at column 9"),
            ("$status ${bad", "no closing `}`"),
            ("$status $status", "two status fields"),
            ("[$time_local] $status %t", "mixes"),
            ("[$time_local] $status [$time_iso8601]", "two time fields"),
            ("%>s %", "incomplete Apache directive"),
        ];
        for (spec, want) in cases {
            let err = LogFormat::parse(spec).unwrap_err();
            assert!(err.contains(want), "{spec:?}: {err}");
        }
    }
}
