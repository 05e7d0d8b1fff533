//! Fuzz harness for the plan parser (issue 11); see
//! `golive_shared::fuzzing`. The cargo-fuzz target `plan` and the
//! regression test over `fuzz/regressions/plan/` call it.

use std::path::Path;

/// Parses and validates arbitrary text as a plan; must not panic.
pub fn plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = crate::plan::parse(Path::new("/nonexistent/golive-fuzz/plan.toml"), text) {
        let _ = e.to_string();
    }
}
