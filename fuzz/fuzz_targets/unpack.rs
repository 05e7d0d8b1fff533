//! Fuzz target: the archive unpacker (nothing may land outside the release directory).
//! The harness is `golive_agent::fuzzing::unpack`; the regression test over
//! `fuzz/regressions/unpack/` runs it too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| golive_agent::fuzzing::unpack(data));
