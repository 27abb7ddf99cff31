//! Am I goose, with which fencing token, until when? Asks the node at $GOOSE_NODE.

use std::time::Instant;

use goose_client::Flock;

fn main() {
    let node = std::env::var("GOOSE_NODE").unwrap_or_else(|_| "127.0.0.1:9900".into());
    let flock = Flock::new([node.parse().expect("GOOSE_NODE is <ip>:<port>")]);
    match flock.ask()[0].lease() {
        Some(lease) => {
            let left = lease.until.saturating_duration_since(Instant::now());
            println!(
                "goose term={} for {:.3} s more",
                lease.term,
                left.as_secs_f64()
            );
        }
        None => println!("duck"),
    }
}
