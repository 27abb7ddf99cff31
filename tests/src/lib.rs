//! The flock's tests beyond the core's own: the seeded swarm over the simulator
//! ([`flock_sim`]), real `goose` processes on 127.0.0.1 ([`procs`]), the probe flood
//! ([`flood`]), probe throughput against the machine's limit ([`load`]), and in network
//! namespaces ([`netns`]) the soak ([`soak`]) and the virtual IP moved by goose or
//! keepalived ([`vip`]).

pub mod flood;
pub mod load;
pub mod netns;
pub mod procs;
pub mod soak;
pub mod swarm;
pub mod vip;
