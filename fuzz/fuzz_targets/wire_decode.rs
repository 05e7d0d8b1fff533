//! Fuzz target: the wire envelope decoder (requests and responses).
//! The harness is `golive_shared::fuzzing::wire`; the regression test over
//! `fuzz/regressions/wire_decode/` runs it too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| golive_shared::fuzzing::wire(data));
