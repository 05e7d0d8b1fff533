//! Fuzz target: the agent config parser and validator.
//! The harness is `golive_shared::fuzzing::agent_config`; the regression test over
//! `fuzz/regressions/agent_config/` runs it too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| golive_shared::fuzzing::agent_config(data));
