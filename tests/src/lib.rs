//! The flock's tests beyond the core's own: the seeded swarm over the simulator
//! ([`flock_sim`]), real `goose` processes on 127.0.0.1 ([`procs`]), the probe flood
//! ([`flood`]) and the soak in network namespaces ([`soak`]).

pub mod flood;
pub mod procs;
pub mod soak;
pub mod swarm;
