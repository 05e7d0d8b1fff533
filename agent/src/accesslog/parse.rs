//! One access-log line against a [`LogFormat`]: the hot path. Works on byte
//! slices, allocates nothing, and reads only the time, the status and the
//! latency; every other field is stepped over with `memchr`. A line that does
//! not follow the format is `None` (counted as unparsed by the caller).

use memchr::memchr;

use super::format::{Field, Item, LogFormat, Unit};

/// What the window needs from one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Unix seconds (UTC) when the line carries a time.
    pub time: Option<i64>,
    pub status: u16,
    /// Microseconds, when the format has a latency field and the line has a
    /// value there (`-` is none).
    pub latency_us: Option<u64>,
    /// The line carries golive's maintenance marker (the maintenance page
    /// answered it; issue 12, part 12).
    pub maintenance: bool,
}

impl LogFormat {
    /// Parses one line (without its `\n`; a trailing `\r` is ignored).
    /// Fields after the format's last one are ignored when they follow a
    /// space, so `combined` also reads nginx's `main` (which appends
    /// `"$http_x_forwarded_for"`).
    pub fn parse_line(&self, line: &[u8]) -> Option<Entry> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut pos = 0;
        let mut entry = Entry {
            time: None,
            status: 0,
            latency_us: None,
            maintenance: false,
        };
        let items = &self.items;
        for (k, item) in items.iter().enumerate() {
            match item {
                Item::Lit(lit) => {
                    if !line[pos..].starts_with(lit) {
                        return None;
                    }
                    pos += lit.len();
                }
                Item::Field { field, quoted } => {
                    let rest = &line[pos..];
                    // The field ends where the next literal begins; the last
                    // field ends at a space or at the end of the line.
                    let (term, last) = match items.get(k + 1) {
                        Some(Item::Lit(l)) => (l[0], false),
                        _ => (b' ', true),
                    };
                    let mut len = if *field == Field::TimeLocal {
                        // Fixed width, with a space inside.
                        TIME_LOCAL_LEN.min(rest.len())
                    } else if *quoted {
                        find_unescaped_quote(rest)?
                    } else {
                        match memchr(term, rest) {
                            Some(n) => n,
                            None if last => rest.len(),
                            None => return None,
                        }
                    };
                    let value = &rest[..len];
                    match field {
                        Field::Skip => {}
                        Field::SkipList => len = upstream_len(rest, len),
                        Field::Status => entry.status = status(value)?,
                        Field::Maintenance => entry.maintenance = !matches!(value, b"" | b"-"),
                        Field::TimeLocal => entry.time = Some(time_local(value)?),
                        Field::TimeIso8601 => entry.time = Some(time_iso8601(value)?),
                        Field::Latency(unit) => entry.latency_us = latency(value, *unit)?,
                        Field::UpstreamSeconds => {
                            len = upstream_len(rest, len);
                            entry.latency_us = upstream(&rest[..len])?;
                        }
                    }
                    pos += len;
                }
            }
        }
        // Trailing fields appended to a known format are allowed after a space.
        match line.get(pos) {
            None | Some(b' ') => Some(entry),
            Some(_) => None,
        }
    }
}

/// Length up to the first `"` not escaped by a backslash.
fn find_unescaped_quote(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr(b'"', &s[from..])?;
        let backslashes = s[..at].iter().rev().take_while(|c| **c == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
}

/// An upstream list (`0.010, 0.020 : 0.030`) contains spaces: extend the
/// field over `, ` and ` : ` separators past the first space.
fn upstream_len(rest: &[u8], mut len: usize) -> usize {
    loop {
        let tail = &rest[len..];
        let sep = if rest[..len].ends_with(b",") && tail.first() == Some(&b' ') {
            1
        } else if tail.starts_with(b" : ") {
            3
        } else {
            return len;
        };
        let from = len + sep;
        len = from + memchr(b' ', &rest[from..]).unwrap_or(rest.len() - from);
    }
}

fn status(v: &[u8]) -> Option<u16> {
    match *v {
        [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Digits at `v[at..at + n]` as a number.
#[inline]
fn digits(v: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut x = 0i64;
    for &c in v.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        x = x * 10 + i64::from(c - b'0');
    }
    Some(x)
}

fn month(m: &[u8]) -> Option<i64> {
    Some(match m {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

const TIME_LOCAL_LEN: usize = 26;

/// `10/Oct/2025:13:55:36 +0200` → unix seconds. The offset is in the line,
/// so no time-zone database is needed.
pub(crate) fn time_local(v: &[u8]) -> Option<i64> {
    if v.len() != TIME_LOCAL_LEN
        || v[2] != b'/'
        || v[6] != b'/'
        || v[11] != b':'
        || v[14] != b':'
        || v[17] != b':'
        || v[20] != b' '
    {
        return None;
    }
    let day = digits(v, 0, 2)?;
    let mon = month(&v[3..6])?;
    let year = digits(v, 7, 4)?;
    let (h, m, s) = (digits(v, 12, 2)?, digits(v, 15, 2)?, digits(v, 18, 2)?);
    let sign = match v[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let off = sign * (digits(v, 22, 2)? * 3600 + digits(v, 24, 2)? * 60);
    unix(year, mon, day, h, m, s, off)
}

/// `2025-10-10T13:55:36+02:00` (or `...Z`) → unix seconds.
pub(crate) fn time_iso8601(v: &[u8]) -> Option<i64> {
    if v.len() < 20
        || v[4] != b'-'
        || v[7] != b'-'
        || v[10] != b'T'
        || v[13] != b':'
        || v[16] != b':'
    {
        return None;
    }
    let off = match &v[19..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let off = digits(v, 20, 2)? * 3600 + digits(v, 23, 2)? * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let (year, mon, day) = (digits(v, 0, 4)?, digits(v, 5, 2)?, digits(v, 8, 2)?);
    let (h, m, s) = (digits(v, 11, 2)?, digits(v, 14, 2)?, digits(v, 17, 2)?);
    unix(year, mon, day, h, m, s, off)
}

fn unix(year: i64, mon: i64, day: i64, h: i64, m: i64, s: i64, off: i64) -> Option<i64> {
    if !(1..=12).contains(&mon) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, mon, day) * 86_400 + h * 3600 + m * 60 + s - off)
}

/// Howard Hinnant's civil-to-days algorithm (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `10/Oct/2025:13:55:36 +0200` for unix seconds and an offset east of UTC
/// in minutes: the inverse of the `$time_local` parser, for tests and the benchmark's
/// log generator.
pub fn format_time_local(unix: i64, offset_minutes: i32) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = unix + i64::from(offset_minutes) * 60;
    let (days, rem) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let off = offset_minutes.abs();
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} {}{:02}{:02}",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        if offset_minutes < 0 { '-' } else { '+' },
        off / 60,
        off % 60
    )
}

/// A latency value; `Ok(None)` for `-`, `None` (malformed) for anything
/// that is not a number.
fn latency(v: &[u8], unit: Unit) -> Option<Option<u64>> {
    if v == b"-" {
        return Some(None);
    }
    Some(Some(match unit {
        Unit::Seconds => seconds_us(v)?,
        Unit::Millis => whole(v)?.saturating_mul(1000),
        Unit::Micros => whole(v)?,
    }))
}

fn whole(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut x = 0u64;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
    }
    Some(x)
}

/// Decimal seconds (`0.123`, `12`, `0.000250`) → microseconds; digits past
/// the sixth decimal are checked and dropped.
fn seconds_us(v: &[u8]) -> Option<u64> {
    let (int, frac) = match memchr(b'.', v) {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    let mut us = whole(int)?.saturating_mul(1_000_000);
    let mut scale = 100_000;
    for &c in frac {
        if !c.is_ascii_digit() {
            return None;
        }
        us += u64::from(c - b'0') * scale;
        scale /= 10;
    }
    Some(us)
}

/// `$upstream_response_time`: `-`, `0.012`, or a list; a list is summed
/// (each entry is one upstream tried for this request). `-` entries in a
/// list count as nothing.
fn upstream(v: &[u8]) -> Option<Option<u64>> {
    let mut total = None::<u64>;
    for part in v.split(|c| *c == b',' || *c == b':') {
        let part = part.trim_ascii();
        if part == b"-" {
            continue;
        }
        total = Some(total.unwrap_or(0).saturating_add(seconds_us(part)?));
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: Option<i64>, status: u16, latency_us: Option<u64>) -> Option<Entry> {
        Some(Entry {
            time,
            status,
            latency_us,
            maintenance: false,
        })
    }

    /// Issue 12, part 12: a line whose marker field holds a value is a
    /// maintenance answer; `-` (the header was not sent) is not.
    #[test]
    fn issue12_the_maintenance_marker_is_read() {
        let f = LogFormat::parse(
            "[$time_local] $status $request_time \"$sent_http_x_golive_maintenance\"",
        )
        .unwrap();
        let on = f
            .parse_line(b"[10/Oct/2025:13:55:36 +0200] 503 0.001 \"1\"")
            .unwrap();
        assert!(on.maintenance && on.status == 503, "{on:?}");
        let off = f
            .parse_line(b"[10/Oct/2025:13:55:36 +0200] 503 0.001 \"-\"")
            .unwrap();
        assert_eq!(off, entry(Some(T), 503, Some(1000)).unwrap());
        let apache = LogFormat::parse("%>s %{X-Golive-Maintenance}o").unwrap();
        assert!(apache.parse_line(b"503 1").unwrap().maintenance);
        assert!(!apache.parse_line(b"502 -").unwrap().maintenance);
    }

    // 10/Oct/2025:13:55:36 +0200 is 11:55:36 UTC.
    const T: i64 = 1_760_097_336;

    #[test]
    fn times_without_a_tz_database() {
        assert_eq!(time_local(b"10/Oct/2025:13:55:36 +0200"), Some(T));
        assert_eq!(time_local(b"10/Oct/2025:06:25:36 -0530"), Some(T));
        assert_eq!(time_local(b"01/Jan/1970:00:00:00 +0000"), Some(0));
        assert_eq!(
            time_local(b"29/Feb/2024:23:59:59 +0000"),
            Some(1_709_251_199)
        );
        assert_eq!(time_iso8601(b"2025-10-10T13:55:36+02:00"), Some(T));
        assert_eq!(time_iso8601(b"2025-10-10T11:55:36Z"), Some(T));
        for bad in [
            &b"10/Oct/2025:13:55:36"[..],
            b"10/Okt/2025:13:55:36 +0200",
            b"10/Oct/2025:25:55:36 +0200",
            b"1x/Oct/2025:13:55:36 +0200",
            b"10/Oct/2025:13:55:36 *0200",
            b"10-Oct-2025:13:55:36 +0200",
        ] {
            assert_eq!(time_local(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        for (unix, off) in [
            (T, 120),
            (T, -330),
            (0, 0),
            (1_709_251_199, 0),
            (4_102_444_800, 60),
        ] {
            let text = format_time_local(unix, off);
            assert_eq!(time_local(text.as_bytes()), Some(unix), "{text}");
        }
        assert_eq!(format_time_local(T, 120), "10/Oct/2025:13:55:36 +0200");
        assert_eq!(time_iso8601(b"2025-10-10 13:55:36+02:00"), None);
        assert_eq!(time_iso8601(b"2025-10-10T13:55:36+0200"), None);
    }

    #[test]
    fn combined_and_common() {
        let f = LogFormat::parse("combined").unwrap();
        let line = br#"203.0.113.9 - - [10/Oct/2025:13:55:36 +0200] "GET /cart?id=1 HTTP/1.1" 502 157 "https://shop.example/" "Mozilla/5.0 (X11; Linux x86_64)""#;
        assert_eq!(f.parse_line(line), entry(Some(T), 502, None));
        // nginx "main" appends "$http_x_forwarded_for": still read.
        let main = [&line[..], b" \"198.51.100.1\""].concat();
        assert_eq!(f.parse_line(&main), entry(Some(T), 502, None));
        // CRLF, user with name, Apache-escaped quote in the request and the agent.
        let line = br#"::1 - alice [10/Oct/2025:13:55:36 +0200] "GET /a\"b HTTP/1.1" 200 - "-" "say \"hi\"\\"
"#;
        let line = line.strip_suffix(b"\n").unwrap();
        let line = [line, b"\r"].concat();
        assert_eq!(f.parse_line(&line), entry(Some(T), 200, None));
        let common = LogFormat::parse("common").unwrap();
        assert_eq!(
            common.parse_line(
                br#"10.0.0.1 - - [10/Oct/2025:13:55:36 +0200] "POST /login HTTP/1.0" 404 0"#
            ),
            entry(Some(T), 404, None)
        );
    }

    #[test]
    fn custom_nginx_with_request_and_upstream_time() {
        let f = LogFormat::parse(
            r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time"#,
        )
        .unwrap();
        let line = br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0" 0.123"#;
        assert_eq!(f.parse_line(line), entry(Some(T), 200, Some(123_000)));
        let line = br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0" 12"#;
        assert_eq!(f.parse_line(line), entry(Some(T), 200, Some(12_000_000)));

        let f = LogFormat::parse(
            "$time_iso8601 $status \"$request\" $upstream_response_time rt=$request_time",
        )
        .unwrap();
        // Upstream is stepped over when $request_time is present, even as a list.
        let line =
            br#"2025-10-10T13:55:36+02:00 503 "GET /x HTTP/1.1" 0.010, 0.020 : 0.030 rt=0.061"#;
        assert_eq!(f.parse_line(line), entry(Some(T), 503, Some(61_000)));

        let f = LogFormat::parse("[$time_local] $status $upstream_response_time $host").unwrap();
        let cases: [(&[u8], Option<Entry>); 5] = [
            (
                b"[10/Oct/2025:13:55:36 +0200] 200 0.010, 0.020 : 0.030 shop.example",
                entry(Some(T), 200, Some(60_000)),
            ),
            (
                b"[10/Oct/2025:13:55:36 +0200] 504 - shop.example",
                entry(Some(T), 504, None),
            ),
            (
                b"[10/Oct/2025:13:55:36 +0200] 502 -, 0.004 shop.example",
                entry(Some(T), 502, Some(4_000)),
            ),
            (
                b"[10/Oct/2025:13:55:36 +0200] 200 0.5 shop.example",
                entry(Some(T), 200, Some(500_000)),
            ),
            (b"[10/Oct/2025:13:55:36 +0200] 200 abc shop.example", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                f.parse_line(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn apache_with_microseconds_and_seconds() {
        let f =
            LogFormat::parse(r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\" %D"#)
                .unwrap();
        let line = br#"192.0.2.7 - - [10/Oct/2025:13:55:36 +0200] "GET /node/1 HTTP/1.1" 200 2326 "http://x/" "Mozilla/5.0" 48213"#;
        assert_eq!(f.parse_line(line), entry(Some(T), 200, Some(48_213)));
        let f = LogFormat::parse(r#"%v:%p %h %l %u %t "%r" %>s %O %T"#).unwrap();
        let line = br#"shop.example:443 192.0.2.7 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/1.1" 500 10 3"#;
        assert_eq!(f.parse_line(line), entry(Some(T), 500, Some(3_000_000)));
        // A time not in brackets: its inner space does not end the field.
        let f = LogFormat::parse("%t|%>s").unwrap();
        assert_eq!(
            f.parse_line(b"[10/Oct/2025:13:55:36 +0200]|200"),
            entry(Some(T), 200, None)
        );
        let f = LogFormat::parse("$time_local $status").unwrap();
        assert_eq!(
            f.parse_line(b"10/Oct/2025:13:55:36 +0200 200"),
            entry(Some(T), 200, None)
        );
        assert_eq!(f.parse_line(b"10/Oct/2025:13:55:36 200"), None);
        let f = LogFormat::parse(r#"%>s %{ms}T"#).unwrap();
        assert_eq!(f.parse_line(b"200 250"), entry(None, 200, Some(250_000)));
    }

    #[test]
    fn malformed_lines_are_none() {
        let f = LogFormat::parse(
            r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time"#,
        )
        .unwrap();
        let good = br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0" 0.123"#;
        assert!(f.parse_line(good).is_some());
        let bad: [&[u8]; 11] = [
            b"",
            b"garbage",
            br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0"#,
            br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 20 512 "-" "curl/8.5.0" 0.123"#,
            br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 2000 512 "-" "curl/8.5.0" 0.123"#,
            br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" OK 512 "-" "curl/8.5.0" 0.123"#,
            br#"10.1.2.3 - - [10/Oct/2025 13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0" 0.123"#,
            br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0" 0.1x3"#,
            br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0 200 512 "-" "curl/8.5.0" 0.123"#,
            br#"10.1.2.3 [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0" 0.123"#,
            br#"10.1.2.3 - - [10/Oct/2025:13:55:36 +0200] "GET / HTTP/2.0" 200 512 "-" "curl/8.5.0" 0.123x"#,
        ];
        for line in bad {
            assert_eq!(
                f.parse_line(line),
                None,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
