//! The deployment window (SPEC §7): the days and hours, in a time zone, when
//! `golivectl deploy` may start. Outside it a deploy is refused (exit 2,
//! nothing changed) unless `--hotfix --reason TEXT` is given, and the reason
//! is recorded with the deployment. `golivectl preflight` says whether the
//! window is open and when it next opens.
//!
//! ```toml
//! [window]
//! days = ["mon", "tue", "wed", "thu", "fri"]   # default: every day
//! hours = "06:00-09:00"                        # end before start: past midnight
//! timezone = "Europe/Madrid"                   # IANA name, from the system tz database
//! ```
//!
//! A window whose end is earlier than its start runs past midnight, and
//! `days` names the day it opens on (`days = ["sun"], hours = "22:00-02:00"`
//! is open from Sunday 22:00 to Monday 02:00). `24:00` ends at midnight.
//! Local times that a DST change skips move forward (jiff's "compatible"
//! rule), so a window never silently disappears.

use jiff::Timestamp;
use jiff::Zoned;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub days: Option<Vec<String>>,
    pub hours: String,
    pub timezone: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A validated window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after midnight.
    start: u16,
    /// Minutes after midnight, 1..=1440; at or before `start`: the next day.
    end: u16,
    tz: TimeZone,
    tz_name: String,
}

/// Whether the window is open at a given moment.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Open { closes: Zoned },
    Closed { opens: Zoned },
}

/// A problem with one key of `[window]`: (dotted key, message).
pub type WindowError = (&'static str, String);

impl Window {
    pub fn parse(raw: &RawWindow) -> Result<Window, WindowError> {
        let mut days = [false; 7];
        match &raw.days {
            None => days = [true; 7],
            Some(list) if list.is_empty() => {
                return Err((
                    "window.days",
                    "is empty: list at least one day, e.g. [\"mon\", \"tue\"], or remove the key for every day"
                        .into(),
                ));
            }
            Some(list) => {
                for d in list {
                    let lower = d.to_ascii_lowercase();
                    let Some(i) = DAYS
                        .iter()
                        .position(|x| *x == lower)
                        .or_else(|| LONG_DAYS.iter().position(|x| *x == lower))
                    else {
                        return Err((
                            "window.days",
                            format!("{d:?} is not a day; use {}", DAYS.join(", ")),
                        ));
                    };
                    days[i] = true;
                }
            }
        }
        let bad_hours = || {
            (
                "window.hours",
                format!(
                    "{:?} is not a time range; write \"HH:MM-HH:MM\", e.g. \"06:00-09:00\" \
                     (an end before the start runs past midnight)",
                    raw.hours
                ),
            )
        };
        let (a, b) = raw.hours.split_once('-').ok_or_else(bad_hours)?;
        let start = minutes(a.trim(), false).ok_or_else(bad_hours)?;
        let end = minutes(b.trim(), true).ok_or_else(bad_hours)?;
        if start == end {
            return Err((
                "window.hours",
                format!(
                    "{:?} is empty: the end equals the start; for whole days write \"00:00-24:00\"",
                    raw.hours
                ),
            ));
        }
        let tz = TimeZone::get(&raw.timezone).map_err(|e| {
            (
                "window.timezone",
                format!(
                    "{:?} is not a time zone in the system tz database ({e}); use an IANA name \
                     such as \"Europe/Madrid\" or \"UTC\" (install the tzdata package if it is missing)",
                    raw.timezone
                ),
            )
        })?;
        Ok(Window {
            days,
            start,
            end,
            tz,
            tz_name: raw.timezone.clone(),
        })
    }

    /// `mon, tue 06:00-09:00 Europe/Madrid`.
    /// The window's time zone (notifications say times in it).
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    pub fn describe(&self) -> String {
        let days: Vec<&str> = DAYS
            .iter()
            .zip(self.days)
            .filter(|(_, on)| *on)
            .map(|(d, _)| *d)
            .collect();
        let days = if days.len() == 7 {
            "every day".to_string()
        } else {
            days.join(", ")
        };
        format!(
            "{days} {}-{} {}",
            hhmm(self.start),
            hhmm(self.end),
            self.tz_name
        )
    }

    /// Open or closed at `now`, with when that changes.
    pub fn state(&self, now: Timestamp) -> State {
        let today = now.to_zoned(self.tz.clone()).date();
        let mut next: Option<Zoned> = None;
        // Yesterday's window may run past midnight into today; eight days
        // ahead always reaches the next opening of a non-empty day set.
        let mut day = today.yesterday().unwrap_or(today);
        for _ in 0..9 {
            if self.days[day.weekday().to_monday_zero_offset() as usize]
                && let Some((open, close)) = self.interval(day)
            {
                if open.timestamp() <= now && now < close.timestamp() {
                    return State::Open { closes: close };
                }
                if open.timestamp() > now && next.as_ref().is_none_or(|n| open < *n) {
                    next = Some(open);
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        State::Closed {
            opens: next.unwrap_or_else(|| now.to_zoned(self.tz.clone())),
        }
    }

    /// The window that opens on `day`, as zoned instants.
    fn interval(&self, day: Date) -> Option<(Zoned, Zoned)> {
        let at = |d: Date, m: u16| -> Option<Zoned> {
            let (d, m) = if m == 1440 {
                (d.tomorrow().ok()?, 0)
            } else {
                (d, m)
            };
            d.at((m / 60) as i8, (m % 60) as i8, 0, 0)
                .to_zoned(self.tz.clone())
                .ok()
        };
        let open = at(day, self.start)?;
        let close = if self.end > self.start {
            at(day, self.end)?
        } else {
            at(day.tomorrow().ok()?, self.end)?
        };
        Some((open, close))
    }
}

/// `HH:MM` → minutes after midnight; `24:00` only as an end.
fn minutes(s: &str, end: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    match (h, m) {
        (24, 0) if end => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// `Mon 2026-11-23 06:00 CET`.
pub fn show(z: &Zoned) -> String {
    z.strftime("%a %Y-%m-%d %H:%M %Z").to_string()
}

/// `2h 05m` from `now` to `then`.
pub fn until(now: Timestamp, then: &Zoned) -> String {
    let mins = (then.timestamp().as_second() - now.as_second()).max(0) / 60;
    if mins >= 24 * 60 {
        format!("{}d {}h", mins / (24 * 60), mins % (24 * 60) / 60)
    } else {
        format!("{}h {:02}m", mins / 60, mins % 60)
    }
}

/// The deploy's window check: `Ok(None)` inside the window (or without
/// one), `Ok(Some(note))` outside it with a hotfix reason, `Err(refusal)`
/// outside it without one.
pub fn admit(
    window: Option<&Window>,
    hotfix: Option<&str>,
    now: Timestamp,
) -> Result<Option<String>, String> {
    let Some(w) = window else {
        return Ok(None);
    };
    match (w.state(now), hotfix) {
        (State::Open { .. }, _) => Ok(None),
        (State::Closed { opens }, Some(reason)) => Ok(Some(format!(
            "outside the deployment window ({}; next opening {}): going ahead as a hotfix: {reason}",
            w.describe(),
            show(&opens)
        ))),
        (State::Closed { opens }, None) => Err(format!(
            "outside the deployment window ({}): it opens next at {} (in {}); nothing was changed. \
             Deploy then, or give `--hotfix --reason TEXT` to deploy now (the reason is recorded)",
            w.describe(),
            show(&opens),
            until(now, &opens)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: Option<&[&str]>, hours: &str, tz: &str) -> Result<Window, WindowError> {
        Window::parse(&RawWindow {
            days: days.map(|d| d.iter().map(|s| s.to_string()).collect()),
            hours: hours.into(),
            timezone: tz.into(),
        })
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn bad_keys_are_named() {
        let e = window(Some(&["mon", "funday"]), "06:00-09:00", "UTC").unwrap_err();
        assert_eq!(e.0, "window.days");
        assert!(
            e.1.contains("\"funday\"") && e.1.contains("mon, tue"),
            "{e:?}"
        );
        assert_eq!(
            window(Some(&[]), "06:00-09:00", "UTC").unwrap_err().0,
            "window.days"
        );
        for hours in [
            "6-9",
            "06:00",
            "25:00-26:00",
            "06:00-06:00",
            "06:60-07:00",
            "24:00-02:00",
        ] {
            let e = window(None, hours, "UTC").unwrap_err();
            assert_eq!(e.0, "window.hours", "{hours}: {e:?}");
        }
        let e = window(None, "06:00-09:00", "Europe/Atlantis").unwrap_err();
        assert_eq!(e.0, "window.timezone");
        assert!(e.1.contains("Europe/Atlantis"), "{e:?}");
        assert!(window(Some(&["Monday", "FRI"]), "22:00-24:00", "Europe/Madrid").is_ok());
    }

    #[test]
    fn weekday_mornings_in_madrid() {
        let w = window(
            Some(&["mon", "tue", "wed", "thu", "fri"]),
            "06:00-09:00",
            "Europe/Madrid",
        )
        .unwrap();
        assert_eq!(
            w.describe(),
            "mon, tue, wed, thu, fri 06:00-09:00 Europe/Madrid"
        );
        // Monday 2026-11-23 07:00 CET = 06:00 UTC: open until 09:00 CET.
        match w.state(ts("2026-11-23T06:00:00Z")) {
            State::Open { closes } => assert_eq!(show(&closes), "Mon 2026-11-23 09:00 CET"),
            other => panic!("{other:?}"),
        }
        // 09:00 CET sharp is closed; next: Tuesday 06:00.
        match w.state(ts("2026-11-23T08:00:00Z")) {
            State::Closed { opens } => assert_eq!(show(&opens), "Tue 2026-11-24 06:00 CET"),
            other => panic!("{other:?}"),
        }
        // Friday evening: next is Monday.
        match w.state(ts("2026-11-27T18:00:00Z")) {
            State::Closed { opens } => {
                assert_eq!(show(&opens), "Mon 2026-11-30 06:00 CET");
                assert_eq!(until(ts("2026-11-27T18:00:00Z"), &opens), "2d 11h");
            }
            other => panic!("{other:?}"),
        }
        // Summer time: 06:00 CEST is 04:00 UTC.
        assert!(matches!(
            w.state(ts("2026-07-01T04:30:00Z")),
            State::Open { .. }
        ));
        assert!(matches!(
            w.state(ts("2026-07-01T03:30:00Z")),
            State::Closed { .. }
        ));
    }

    #[test]
    fn overnight_windows_belong_to_the_day_they_open() {
        // Seed 004: Sundays 02:00-04:00 Bogota; and a Sunday-night window.
        let w = window(Some(&["sun"]), "22:00-02:00", "UTC").unwrap();
        // Monday 01:00 is inside Sunday's window.
        assert!(matches!(
            w.state(ts("2026-11-23T01:00:00Z")),
            State::Open { .. }
        ));
        // Monday 23:00 is not (Monday is not listed).
        match w.state(ts("2026-11-23T23:00:00Z")) {
            State::Closed { opens } => assert_eq!(show(&opens), "Sun 2026-11-29 22:00 UTC"),
            other => panic!("{other:?}"),
        }
        let bogota = window(Some(&["sunday"]), "02:00-04:00", "America/Bogota").unwrap();
        // Sunday 2026-11-22 03:00 in Bogota (UTC-5) = 08:00 UTC.
        assert!(matches!(
            bogota.state(ts("2026-11-22T08:00:00Z")),
            State::Open { .. }
        ));
    }

    #[test]
    fn a_dst_gap_moves_the_opening_forward() {
        // 2026-03-29: Madrid skips 02:00-03:00.
        let w = window(Some(&["sun"]), "02:30-04:00", "Europe/Madrid").unwrap();
        match w.state(ts("2026-03-28T12:00:00Z")) {
            State::Closed { opens } => assert_eq!(show(&opens), "Sun 2026-03-29 03:30 CEST"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn admit_refuses_outside_without_a_hotfix_reason() {
        let w = window(None, "06:00-07:00", "UTC").unwrap();
        let now = ts("2026-11-23T12:00:00Z");
        let e = admit(Some(&w), None, now).unwrap_err();
        assert!(
            e.contains("every day 06:00-07:00 UTC") && e.contains("Tue 2026-11-24 06:00 UTC"),
            "{e}"
        );
        assert!(
            e.contains("in 18h 00m") && e.contains("--hotfix --reason"),
            "{e}"
        );
        let note = admit(Some(&w), Some("db lock fix"), now).unwrap().unwrap();
        assert!(note.contains("hotfix: db lock fix"), "{note}");
        assert_eq!(admit(Some(&w), None, ts("2026-11-23T06:30:00Z")), Ok(None));
        assert_eq!(admit(None, None, now), Ok(None));
    }
}
