//! The command probe: a program the config declares, run like a hook
//! through [`crate::exec`] (own process group, environment, optional user)
//! with the probe's timeout, after which its whole group is terminated. It
//! passes on the expected exit code and, when asked, a text in its output.

use std::time::Duration;

use golive_shared::config::{AppConfig, CommandProbe};

use super::{Check, blocking, clip, ms};
use crate::exec::{self, Prepared};
use crate::release::layout::AppLayout;

/// Output kept for `output_contains` and messages (the last part).
const MAX_OUTPUT: usize = 64 * 1024;

pub(super) fn threshold(p: &CommandProbe) -> String {
    match &p.output_contains {
        Some(o) => format!("exit {}, output contains {o:?}", p.expect_exit),
        None => format!("exit {}", p.expect_exit),
    }
}

pub(super) async fn check(app: &AppConfig, p: &CommandProbe, limit: Duration) -> Check {
    // The live release when there is one: that is what the probe checks.
    let current = AppLayout::new(&app.root).current_link();
    let base = if current.is_dir() {
        current
    } else {
        app.root.clone()
    };
    let mut env = app.run.env.clone();
    env.extend(p.env.clone());
    env.insert("GOLIVE_ROOT".into(), app.root.display().to_string());
    env.insert("GOLIVE_PROBE".into(), p.name.clone());
    let prepared = Prepared {
        argv: p.cmd.clone(),
        cwd: match &p.cwd {
            Some(c) if c.is_absolute() => c.clone(),
            Some(c) => base.join(c),
            None => base,
        },
        env,
        user: p.user.clone().or_else(|| app.run.user.clone()),
        timeout: limit,
        grace: Duration::from_secs(1),
        max_output: MAX_OUTPUT,
    };
    let p = p.clone();
    blocking(move || judge(&p, &prepared)).await
}

fn judge(p: &CommandProbe, prepared: &Prepared) -> Check {
    let shown = prepared.display();
    let outcome = match exec::run(prepared, &mut |_| {}) {
        Ok(o) => o,
        Err(e) => return Check::error(format!("cannot run `{shown}`: {e}")),
    };
    if outcome.timed_out {
        return Check::error(format!("`{shown}` {}", outcome.describe(prepared.timeout)));
    }
    let took = ms(outcome.duration);
    let value = match outcome.exit_code {
        Some(c) => format!("exit {c}, {took}"),
        None => format!("{}, {took}", outcome.describe(prepared.timeout)),
    };
    let mut failures = Vec::new();
    if outcome.exit_code != Some(p.expect_exit) {
        failures.push(format!(
            "{}, expected exit {}",
            outcome.describe(prepared.timeout),
            p.expect_exit
        ));
    }
    if let Some(needle) = &p.output_contains
        && !outcome.tail.contains(needle.as_str())
    {
        failures.push(format!("its output does not contain {needle:?}"));
    }
    if failures.is_empty() {
        return Check::pass(value, format!("`{shown}` passed in {took}"));
    }
    let last: Vec<&str> = outcome
        .tail
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let said = match last.len() {
        0 => "no output".to_string(),
        n => format!(
            "last output: {}",
            clip(&last[n.saturating_sub(3)..].join(" | "), 300)
        ),
    };
    Check::fail(value, format!("`{shown}`: {}; {said}", failures.join("; ")))
}
