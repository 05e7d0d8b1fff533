//! Checking a watchdog spec from the wire against what this host declares,
//! and the host's default triggers (seed 003's automatic-rollback table).
//!
//! A trigger names a probe of the app: error rate and p95 read an
//! access-log probe (p95 one whose format logs a latency); unresponsive and
//! failing take any probe. Every bound is checked, and a refusal names the
//! field and the fix; nothing is armed then.

use std::collections::HashSet;

use golive_shared::config::{AppConfig, ProbeConfig};
use golive_shared::protocol::*;

use crate::accesslog::LogFormat;

/// The spec to arm: `spec` checked against `app_name`'s probes, with the
/// host's default triggers when it names none.
pub fn check(app_name: &str, app: &AppConfig, spec: &WatchdogSpec) -> Result<WatchdogSpec, String> {
    let mut spec = spec.clone();
    if !(1..=MAX_WINDOW_SECS).contains(&spec.window_secs) {
        return Err(format!(
            "window_secs = {} is out of bounds: use 1 to {MAX_WINDOW_SECS} (7 days)",
            spec.window_secs
        ));
    }
    if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&spec.interval_ms) {
        return Err(format!(
            "interval_ms = {} is out of bounds: use {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS} ms",
            spec.interval_ms
        ));
    }
    if spec.interval_ms > spec.window_secs * 1000 {
        return Err(format!(
            "interval_ms = {} is longer than the window ({} s): nothing would be sampled",
            spec.interval_ms, spec.window_secs
        ));
    }
    if !(1..=MAX_ERROR_LIMIT).contains(&spec.error_limit) {
        return Err(format!(
            "error_limit = {} is out of bounds: use 1 to {MAX_ERROR_LIMIT} consecutive errors",
            spec.error_limit
        ));
    }
    if let Some(c) = spec.confirm_within_secs
        && !(1..=spec.window_secs).contains(&c)
    {
        return Err(format!(
            "confirm_within_secs = {c} must be 1 to the window's {} s: the dead-man's deadline \
             falls inside the window",
            spec.window_secs
        ));
    }
    if spec.triggers.is_empty() {
        spec.triggers = defaults(app_name, app)?;
    }
    if spec.triggers.len() > MAX_TRIGGERS {
        return Err(format!(
            "{} triggers: at most {MAX_TRIGGERS}",
            spec.triggers.len()
        ));
    }
    let mut names = HashSet::new();
    for t in &spec.triggers {
        check_trigger(app_name, app, t, spec.window_secs)?;
        if !names.insert(t.name.as_str()) {
            return Err(format!(
                "trigger {:?} is named twice; give each trigger its own name",
                t.name
            ));
        }
    }
    Ok(spec)
}

fn check_trigger(
    app_name: &str,
    app: &AppConfig,
    t: &Trigger,
    window_secs: u64,
) -> Result<(), String> {
    golive_shared::names::check_trigger_name(&t.name)?;
    let Some(probe) = app.probes.iter().find(|p| p.name() == t.probe) else {
        let declared: Vec<&str> = app.probes.iter().map(|p| p.name()).collect();
        return Err(format!(
            "trigger {:?} names probe {:?}, which app {app_name} does not declare on this host; \
             declared probes: {}",
            t.name,
            t.probe,
            if declared.is_empty() {
                "(none)".to_string()
            } else {
                declared.join(", ")
            }
        ));
    };
    if t.for_secs > window_secs {
        return Err(format!(
            "trigger {:?}: for_secs = {} is longer than the window ({window_secs} s), so it could \
             never hold",
            t.name, t.for_secs
        ));
    }
    match t.condition {
        Condition::ErrorRateAbove { per_mille } if !(1..=1000).contains(&per_mille) => {
            return Err(format!(
                "trigger {:?}: an error rate of {}.{} % is out of bounds; use 0.1 to 100 %",
                t.name,
                per_mille / 10,
                per_mille % 10
            ));
        }
        Condition::P95Above { ms } if !(1..=MAX_P95_MS).contains(&ms) => {
            return Err(format!(
                "trigger {:?}: a p95 of {ms} ms is out of bounds; use 1 to {MAX_P95_MS} ms",
                t.name
            ));
        }
        _ => {}
    }
    if t.condition.reads_log() {
        let ProbeConfig::AccessLog(p) = probe else {
            return Err(format!(
                "trigger {:?} ({}) needs an access-log probe, and {:?} is a {} probe; name an \
                 access-log probe of app {app_name}, or use the unresponsive or failing condition",
                t.name,
                t.condition.describe(),
                t.probe,
                probe.kind()
            ));
        };
        if matches!(t.condition, Condition::P95Above { .. })
            && !LogFormat::parse(&p.format).is_ok_and(|f| f.has_latency())
        {
            return Err(format!(
                "trigger {:?} (p95) reads access-log probe {:?}, whose format logs no latency; \
                 log $request_time (nginx) or %D (Apache) and name it in the probe's format",
                t.name, t.probe
            ));
        }
    }
    Ok(())
}

/// Seed 003's triggers from the probes the app declares: error rate above
/// 5 % for 2 min and p95 above 5 s for 3 min on its first access-log probe
/// (p95 when that log has a latency field), unresponsive for 1 min on its
/// first http probe.
pub fn defaults(app_name: &str, app: &AppConfig) -> Result<Vec<Trigger>, String> {
    let mut out = Vec::new();
    if let Some(ProbeConfig::AccessLog(p)) = app
        .probes
        .iter()
        .find(|p| matches!(p, ProbeConfig::AccessLog(_)))
    {
        out.push(Trigger {
            name: "error-rate".into(),
            probe: p.name.clone(),
            condition: Condition::ErrorRateAbove {
                per_mille: DEFAULT_ERROR_RATE_PER_MILLE,
            },
            for_secs: DEFAULT_ERROR_RATE_FOR_SECS,
        });
        if LogFormat::parse(&p.format).is_ok_and(|f| f.has_latency()) {
            out.push(Trigger {
                name: "p95".into(),
                probe: p.name.clone(),
                condition: Condition::P95Above { ms: DEFAULT_P95_MS },
                for_secs: DEFAULT_P95_FOR_SECS,
            });
        }
    }
    if let Some(p) = app
        .probes
        .iter()
        .find(|p| matches!(p, ProbeConfig::Http(_)))
    {
        out.push(Trigger {
            name: "unresponsive".into(),
            probe: p.name().to_string(),
            condition: Condition::Unresponsive,
            for_secs: DEFAULT_UNRESPONSIVE_FOR_SECS,
        });
    }
    if out.is_empty() {
        return Err(format!(
            "the spec names no triggers and app {app_name} declares no http or access-log probe \
             to build the default ones from; declare one ([[apps.{app_name}.probes]]) or name \
             triggers"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(probes: &str) -> AppConfig {
        toml::from_str(&format!("root = \"/srv/shop\"\n{probes}")).unwrap()
    }

    const PROBES: &str = "[[probes]]\nkind = \"http\"\nname = \"health\"\nurl = \"http://127.0.0.1:1/\"\n\
         [[probes]]\nkind = \"access-log\"\nname = \"log\"\npath = \"/var/log/a.log\"\n\
         [[probes]]\nkind = \"access-log\"\nname = \"timed\"\npath = \"/var/log/b.log\"\n\
         format = '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent $request_time'\n";

    fn trigger(name: &str, probe: &str, condition: Condition, for_secs: u64) -> Trigger {
        Trigger {
            name: name.into(),
            probe: probe.into(),
            condition,
            for_secs,
        }
    }

    #[test]
    fn issue13_default_triggers_follow_seed_003_and_the_declared_probes() {
        let spec = check("shop", &app(PROBES), &WatchdogSpec::defaults()).unwrap();
        assert_eq!(
            spec.triggers,
            vec![
                trigger(
                    "error-rate",
                    "log",
                    Condition::ErrorRateAbove { per_mille: 50 },
                    120
                ),
                trigger("unresponsive", "health", Condition::Unresponsive, 60),
            ],
            "the first access log has no latency field: no p95 trigger"
        );
        let only_timed = "[[probes]]\nkind = \"access-log\"\nname = \"timed\"\npath = \"/var/log/b.log\"\n\
             format = '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent $request_time'\n";
        let spec = check("shop", &app(only_timed), &WatchdogSpec::defaults()).unwrap();
        assert_eq!(spec.triggers.len(), 2);
        assert_eq!(spec.triggers[1].condition, Condition::P95Above { ms: 5000 });
        assert_eq!(spec.triggers[1].for_secs, 180);
        let err = check("shop", &app(""), &WatchdogSpec::defaults()).unwrap_err();
        assert!(
            err.contains("declares no http or access-log probe"),
            "{err}"
        );
    }

    #[test]
    fn issue13_bad_specs_are_refused_naming_the_field() {
        let a = app(PROBES);
        let with = |f: &dyn Fn(&mut WatchdogSpec)| {
            let mut s = WatchdogSpec::defaults();
            f(&mut s);
            check("shop", &a, &s).unwrap_err()
        };
        assert!(with(&|s| s.window_secs = 0).contains("window_secs = 0"));
        assert!(with(&|s| s.interval_ms = 50).contains("interval_ms = 50"));
        assert!(with(&|s| s.error_limit = 0).contains("error_limit = 0"));
        assert!(
            with(&|s| s.confirm_within_secs = Some(DEFAULT_WINDOW_SECS + 1))
                .contains("confirm_within_secs")
        );
        let e = with(&|s| s.triggers = vec![trigger("x", "nope", Condition::Failing, 1)]);
        assert!(
            e.contains("does not declare") && e.contains("health, log, timed"),
            "{e}"
        );
        let e = with(&|s| {
            s.triggers = vec![trigger(
                "x",
                "health",
                Condition::ErrorRateAbove { per_mille: 50 },
                1,
            )]
        });
        assert!(e.contains("needs an access-log probe"), "{e}");
        let e =
            with(&|s| s.triggers = vec![trigger("x", "log", Condition::P95Above { ms: 100 }, 1)]);
        assert!(e.contains("logs no latency"), "{e}");
        let e = with(&|s| {
            s.triggers = vec![trigger(
                "x",
                "log",
                Condition::ErrorRateAbove { per_mille: 0 },
                1,
            )]
        });
        assert!(e.contains("out of bounds"), "{e}");
        let e = with(&|s| {
            s.triggers = vec![
                trigger("x", "health", Condition::Failing, 1),
                trigger("x", "log", Condition::Failing, 1),
            ]
        });
        assert!(e.contains("named twice"), "{e}");
        let e = with(&|s| s.triggers = vec![trigger("x", "health", Condition::Failing, 999_999)]);
        assert!(e.contains("longer than the window"), "{e}");
        // Any probe kind may be failing or unresponsive; a timed log may be p95.
        let mut s = WatchdogSpec::defaults();
        s.triggers = vec![
            trigger("a", "log", Condition::Failing, 0),
            trigger("b", "timed", Condition::P95Above { ms: 800 }, 30),
        ];
        assert_eq!(check("shop", &a, &s).unwrap().triggers, s.triggers);
    }
}
