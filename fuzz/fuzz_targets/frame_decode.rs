//! `wire::decode` never panics on any bytes, and every frame it accepts re-encodes to a
//! frame that decodes to the same header and message (see `goose_fuzz::frame_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goose_fuzz::frame_decode(data));
