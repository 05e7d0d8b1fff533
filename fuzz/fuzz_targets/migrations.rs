//! Fuzz target: the migration file scanner.
//! The harness is `golive_agent::fuzzing::migrations`; the regression test over
//! `fuzz/regressions/migrations/` runs it too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| golive_agent::fuzzing::migrations(data));
