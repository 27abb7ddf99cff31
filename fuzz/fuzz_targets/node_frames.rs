//! One node fed arbitrary well-formed messages from any peer, raw bytes, time jumps,
//! proposals, failed saves and restarts: it never panics and keeps its own contract (see
//! `goose_fuzz::single`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goose_fuzz::single::run(data));
