//! Replays one `node_sequences` input on stable, printing every action and each node's
//! status after it: `cargo run --example replay -- artifacts/node_sequences/crash-…`.
//! With `--scenario NAME`, replays a seed scenario instead; with `--frames INPUT`, prints a
//! `node_frames` input's operations and runs it.

use goose_fuzz::flock::{decode_script, Driver};
use goose_fuzz::seeds::scenarios;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (setup, actions) = match args.as_slice() {
        [flag, name] if flag == "--scenario" => {
            let scenario = scenarios()
                .into_iter()
                .find(|s| s.name == name)
                .expect("no such scenario");
            (scenario.setup, scenario.actions)
        }
        [flag, path] if flag == "--frames" => {
            let data = std::fs::read(path).expect("readable input");
            let mut stats = goose_core::Stats::default();
            for step in goose_fuzz::single::trace(&data) {
                println!("{:?}", step.op);
                let s = step.status;
                println!(
                    "    {:?} term={} log_term={} leader={:?} commit={} last={:?} goose={} failed={} voters={:?}",
                    s.raft,
                    s.term,
                    step.log_term,
                    s.leader.map(|l| l.get()),
                    s.commit,
                    (s.last.term.0, s.last.index.0),
                    s.goose,
                    s.failed,
                    step.members
                        .iter()
                        .filter(|m| m.voter)
                        .map(|m| m.id.get())
                        .collect::<Vec<_>>()
                );
                // Counters that moved (a restart starts them from zero again).
                let now = step.stats.counters();
                for (i, (name, value)) in now.iter().enumerate() {
                    let before = stats.counters()[i].1;
                    if *value != before {
                        println!("    {name}: {before} -> {value}");
                    }
                }
                stats = step.stats;
                for (to, message) in &step.sent {
                    println!("    sent to {to}: {message:?}");
                }
            }
            return;
        }
        [path] => decode_script(&std::fs::read(path).expect("readable input")),
        _ => {
            eprintln!("usage: replay INPUT | replay --scenario NAME | replay --frames INPUT");
            std::process::exit(2);
        }
    };
    println!("{setup:?}");
    let mut driver = Driver::new(&setup);
    for action in &actions {
        driver.apply(action);
        let flock = driver.flock();
        println!("{action:?}  in flight: {}", flock.in_flight().len());
        for n in 1..=goose_fuzz::flock::NODES as u16 {
            match flock.node(n) {
                Some(node) => {
                    let s = node.status(flock.local_now(n));
                    println!(
                        "    {}: {:?} term={} leader={:?} commit={} last={:?} goose={}",
                        n,
                        s.raft,
                        s.term,
                        s.leader.map(|l| l.get()),
                        s.commit,
                        (s.last.term.0, s.last.index.0),
                        s.goose
                    );
                }
                None => println!("    {n}: down"),
            }
        }
    }
}
