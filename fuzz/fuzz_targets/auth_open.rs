//! Sealed frames opened in any order, tampered with, forged and replayed while the
//! receiver's membership changes: `ReplayGuard::open` never panics and agrees with a
//! reference model (see `goose_fuzz::auth`); a sealed frame opens at most once while its
//! sender keeps its window, and only with the key. Nonces issued and redeemed agree with a
//! model of `Nonces`: none redeemed twice, or without being issued.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goose_fuzz::auth::run(data));
