//! Fuzz target: the plan parser and validator.
//! The harness is `golivectl::fuzzing::plan`; the regression test over
//! `fuzz/regressions/plan/` runs it too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| golivectl::fuzzing::plan(data));
