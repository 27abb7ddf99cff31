//! A three-node flock driven by arbitrary actions; the safety invariants are asserted after
//! every input to a node (see `goose_fuzz::flock`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goose_fuzz::flock::run(data));
