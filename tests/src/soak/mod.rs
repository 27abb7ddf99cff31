//! A randomized fault soak with real `goose` processes, and the checker that judges it.
//!
//! [`history`] is what a soak records (every probe with its send and receive times, every
//! fault the nemesis injected); [`check::check`] proves from it one goose per term, a
//! linearizable goose, terms that never go back, and a goose within a bound after every
//! heal.

pub mod check;
pub mod history;
