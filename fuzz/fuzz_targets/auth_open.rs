//! Sealed frames opened in any order, tampered with, forged and replayed: `ReplayGuard::open`
//! never panics and agrees with a reference model (see `goose_fuzz::auth`); a sealed frame
//! opens exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goose_fuzz::auth::run(data));
