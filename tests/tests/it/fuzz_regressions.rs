//! Issue 11: every input in `fuzz/regressions/TARGET/` (crashes the fuzzers
//! found, once fixed, and hand-made hostile inputs: truncated frames, huge
//! length prefixes, deep nesting, link tricks) runs through the same
//! harness as its cargo-fuzz target, and must return without panicking.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read a regression input");
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no regression inputs in {}", dir.display());
    out
}

fn run_all(target: &str, harness: fn(&[u8])) {
    for (path, bytes) in inputs(target) {
        let result = std::panic::catch_unwind(|| harness(&bytes));
        assert!(
            result.is_ok(),
            "{} panicked the {target} harness",
            path.display()
        );
    }
}

#[test]
fn issue11_fuzz_regressions_wire_decode() {
    run_all("wire_decode", golive_shared::fuzzing::wire);
}

#[test]
fn issue11_fuzz_regressions_agent_config() {
    run_all("agent_config", golive_shared::fuzzing::agent_config);
}

#[test]
fn issue11_fuzz_regressions_plan() {
    run_all("plan", golivectl::fuzzing::plan);
}

#[test]
fn issue11_fuzz_regressions_unpack() {
    run_all("unpack", golive_agent::fuzzing::unpack);
}

#[test]
fn issue11_fuzz_regressions_accesslog() {
    run_all("accesslog", golive_agent::fuzzing::access_log);
}

#[test]
fn issue11_fuzz_regressions_migrations() {
    run_all("migrations", golive_agent::fuzzing::migrations);
}
