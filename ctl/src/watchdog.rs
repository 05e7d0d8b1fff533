//! The plan's `[watchdog]` (issue 13): how long each host watches the
//! release after its switch, how often, and which triggers roll it back.
//! Parsed raw, then validated here into [`Watchdog`] before anything
//! connects; the agent checks it again against the probes it declares.

use serde::Deserialize;

/// `[watchdog]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatchdog {
    /// The watch window after each host's switch, e.g. "30m".
    pub window: Option<String>,
    /// Time between two samples, e.g. "10s".
    pub interval: Option<String>,
    /// Consecutive probe errors that count as the condition holding.
    pub error_limit: Option<u32>,
    /// Dead-man: roll back unless `golivectl go ID` arrives within this.
    pub confirm_within: Option<String>,
    /// Empty or absent: each host's defaults from seed 003, built from the
    /// probes it declares.
    #[serde(default)]
    pub triggers: Vec<RawTrigger>,
}

/// `[[watchdog.triggers]]`: one condition on one probe, for a duration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    pub name: Option<String>,
    /// A probe the hosts' configs declare for the app.
    pub probe: String,
    /// Percent of 5xx answers in an access-log probe's window.
    pub error_rate_above: Option<f64>,
    /// p95 latency in an access-log probe's window, e.g. "5s".
    pub p95_above: Option<String>,
    /// The probe gets no answer.
    pub unresponsive: Option<bool>,
    /// The probe does not pass.
    pub failing: Option<bool>,
    /// How long the condition must hold in every sample, e.g. "2m".
    #[serde(rename = "for")]
    pub for_: Option<String>,
}

/// What a trigger watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// In tenths of a percent (50 = 5 %).
    ErrorRateAbove {
        per_mille: u32,
    },
    P95Above {
        ms: u64,
    },
    Unresponsive,
    Failing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub name: String,
    pub probe: String,
    pub condition: Condition,
    pub for_secs: u64,
}

/// A validated `[watchdog]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    pub window_secs: u64,
    pub interval_ms: u64,
    pub error_limit: u32,
    pub confirm_within_secs: Option<u64>,
    pub triggers: Vec<Trigger>,
}

/// Seed 003's window and sampling interval.
const DEFAULT_WINDOW_SECS: u64 = 30 * 60;
const DEFAULT_INTERVAL_MS: u64 = 10_000;
const DEFAULT_ERROR_LIMIT: u32 = 3;
const MAX_TRIGGERS: usize = 16;

/// A duration written with its unit: "500ms", "10s", "2m", "1h", "1d".
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. \"30s\", \"2m\", \"1h\""))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. \"30s\", \"2m\", \"1h\""))?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use ms, s, m, h or d (\"30s\", \"2m\", \"1h\")"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Validates `[watchdog]`; errors are `(dotted key, message)`.
pub fn parse(raw: &RawWatchdog) -> Result<Watchdog, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut secs =
        |key: &str, text: &Option<String>, default_ms: u64, min_ms: u64, max_ms: u64| match text
            .as_deref()
            .map(parse_duration_ms)
        {
            None => default_ms,
            Some(Ok(ms)) if (min_ms..=max_ms).contains(&ms) => ms,
            Some(Ok(_)) => {
                problems.push((
                    key.to_string(),
                    format!("use {} to {}", human(min_ms), human(max_ms)),
                ));
                default_ms
            }
            Some(Err(e)) => {
                problems.push((key.to_string(), e));
                default_ms
            }
        };
    let window_ms = secs(
        "watchdog.window",
        &raw.window,
        DEFAULT_WINDOW_SECS * 1000,
        1000,
        7 * 86_400_000,
    );
    let interval_ms = secs(
        "watchdog.interval",
        &raw.interval,
        DEFAULT_INTERVAL_MS,
        200,
        600_000,
    );
    let confirm_ms = raw.confirm_within.as_ref().map(|_| {
        secs(
            "watchdog.confirm_within",
            &raw.confirm_within,
            0,
            1000,
            7 * 86_400_000,
        )
    });
    let mut triggers = Vec::new();
    for (i, t) in raw.triggers.iter().enumerate() {
        let at = |k: &str| format!("watchdog.triggers.{i}.{k}");
        let mut conditions = Vec::new();
        if let Some(p) = t.error_rate_above {
            if !(0.0..100.0).contains(&p) || !p.is_finite() {
                problems.push((at("error_rate_above"), "a percentage from 0 to 100".into()));
            } else {
                conditions.push(Condition::ErrorRateAbove {
                    per_mille: (p * 10.0).round() as u32,
                });
            }
        }
        if let Some(text) = &t.p95_above {
            match parse_duration_ms(text) {
                Ok(ms) if (1..=600_000).contains(&ms) => {
                    conditions.push(Condition::P95Above { ms })
                }
                Ok(_) => problems.push((at("p95_above"), "use 1ms to 10m".into())),
                Err(e) => problems.push((at("p95_above"), e)),
            }
        }
        if t.unresponsive == Some(true) {
            conditions.push(Condition::Unresponsive);
        }
        if t.failing == Some(true) {
            conditions.push(Condition::Failing);
        }
        let condition = match conditions.as_slice() {
            [c] => *c,
            [] => {
                problems.push((
                    format!("watchdog.triggers.{i}"),
                    "no condition: give one of error_rate_above = PERCENT, p95_above = \"5s\", \
                     unresponsive = true, failing = true"
                        .into(),
                ));
                continue;
            }
            _ => {
                problems.push((
                    format!("watchdog.triggers.{i}"),
                    "one condition per trigger: write another [[watchdog.triggers]] for the next"
                        .into(),
                ));
                continue;
            }
        };
        let for_ms = match t.for_.as_deref().map(parse_duration_ms) {
            None => 0,
            Some(Ok(ms)) if ms <= window_ms => ms,
            Some(Ok(_)) => {
                problems.push((
                    at("for"),
                    "longer than the watch window: it could never hold".into(),
                ));
                0
            }
            Some(Err(e)) => {
                problems.push((at("for"), e));
                0
            }
        };
        if t.probe.trim().is_empty() {
            problems.push((
                at("probe"),
                "name a probe the hosts declare for the app".into(),
            ));
        }
        let name = t
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", t.probe, describe(condition)));
        triggers.push(Trigger {
            name,
            probe: t.probe.clone(),
            condition,
            for_secs: for_ms / 1000,
        });
    }
    if raw.triggers.len() > MAX_TRIGGERS {
        problems.push((
            "watchdog.triggers".into(),
            format!("at most {MAX_TRIGGERS} triggers"),
        ));
    }
    let error_limit = raw.error_limit.unwrap_or(DEFAULT_ERROR_LIMIT);
    if !(1..=100).contains(&error_limit) {
        problems.push(("watchdog.error_limit".into(), "use 1 to 100".into()));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Watchdog {
        window_secs: window_ms / 1000,
        interval_ms,
        error_limit,
        confirm_within_secs: confirm_ms.map(|ms| ms / 1000),
        triggers,
    })
}

/// "5xx above 5.0 %", "p95 above 5000 ms", "unresponsive", "failing".
pub fn describe(c: Condition) -> String {
    match c {
        Condition::ErrorRateAbove { per_mille } => {
            format!("5xx above {}.{} %", per_mille / 10, per_mille % 10)
        }
        Condition::P95Above { ms } => format!("p95 above {ms} ms"),
        Condition::Unresponsive => "unresponsive".into(),
        Condition::Failing => "failing".into(),
    }
}

/// "1 s", "10 min", "2 h" for a bound in a message.
fn human(ms: u64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{} d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawWatchdog {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn issue13_durations_need_their_unit() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("30").unwrap_err().contains("no unit"));
        assert!(
            parse_duration_ms("3 weeks")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration_ms("m").is_err());
    }

    #[test]
    fn issue13_seed_003s_table_reads_as_triggers() {
        let w = parse(&raw(
            "window = \"30m\"\ninterval = \"10s\"\nconfirm_within = \"15m\"\n\
             [[triggers]]\nprobe = \"traffic\"\nerror_rate_above = 5\nfor = \"2m\"\n\
             [[triggers]]\nprobe = \"traffic\"\np95_above = \"5s\"\nfor = \"3m\"\n\
             [[triggers]]\nname = \"down\"\nprobe = \"health\"\nunresponsive = true\nfor = \"1m\"\n",
        ))
        .unwrap();
        assert_eq!(w.window_secs, 1800);
        assert_eq!(w.interval_ms, 10_000);
        assert_eq!(w.confirm_within_secs, Some(900));
        assert_eq!(w.error_limit, 3);
        assert_eq!(
            w.triggers,
            [
                Trigger {
                    name: "traffic 5xx above 5.0 %".into(),
                    probe: "traffic".into(),
                    condition: Condition::ErrorRateAbove { per_mille: 50 },
                    for_secs: 120
                },
                Trigger {
                    name: "traffic p95 above 5000 ms".into(),
                    probe: "traffic".into(),
                    condition: Condition::P95Above { ms: 5000 },
                    for_secs: 180
                },
                Trigger {
                    name: "down".into(),
                    probe: "health".into(),
                    condition: Condition::Unresponsive,
                    for_secs: 60
                },
            ]
        );
        // No triggers: the hosts' defaults; every bound checked.
        let w = parse(&raw("")).unwrap();
        assert!(w.triggers.is_empty() && w.window_secs == 1800 && w.confirm_within_secs.is_none());
    }

    #[test]
    fn issue13_bad_watchdogs_name_each_key() {
        let e = parse(&raw(
            "window = \"30\"\ninterval = \"10ms\"\nerror_limit = 0\n\
             [[triggers]]\nprobe = \"x\"\n\
             [[triggers]]\nprobe = \"x\"\nfailing = true\nunresponsive = true\n\
             [[triggers]]\nprobe = \"x\"\nerror_rate_above = 150\n\
             [[triggers]]\nprobe = \"x\"\nfailing = true\nfor = \"2h\"\n",
        ))
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "watchdog.window",
                "watchdog.interval",
                "watchdog.triggers.0",
                "watchdog.triggers.1",
                "watchdog.triggers.2.error_rate_above",
                "watchdog.triggers.2",
                "watchdog.triggers.3.for",
                "watchdog.error_limit",
            ],
            "{e:?}"
        );
    }
}
