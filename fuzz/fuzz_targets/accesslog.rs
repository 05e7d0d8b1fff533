//! Fuzz target: the access-log line parser and format strings.
//! The harness is `golive_agent::fuzzing::access_log`; the regression test over
//! `fuzz/regressions/accesslog/` runs it too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| golive_agent::fuzzing::access_log(data));
