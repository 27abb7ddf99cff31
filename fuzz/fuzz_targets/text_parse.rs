//! `text::parse` never panics, a parsed command (plain or signed) renders back to itself,
//! and every reply fits a `heapless::String<TEXT_REPLY_SIZE_MAX>` (see `goose_fuzz::text`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goose_fuzz::text::run(data));
