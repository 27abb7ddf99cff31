//! Five boards on an in-memory Ethernet in simulated time (see `sim`): elections, goose
//! loss, partitions, restarts on flash, and the text protocol as `nc -u` would see it.
//! Every step checks that at most one board is goose at that instant.

mod sim;

use goose_core::auth::key::{ClusterKey, KEY_SIZE};
use goose_core::auth::write_signed_control;
use goose_core::Term;
use goose_embedded::BoardConfig;
use sim::{port_of, Sim, BOARDS, STRANGER, STRANGER_PORT};

/// Election timeouts are 150–300 ms and PreVote adds a round: a flock with a majority
/// elects a goose well within this.
const ELECTION_MS_MAX: u64 = 2_000;

fn words(reply: &str) -> Vec<&str> {
    assert!(reply.ends_with('\n'), "one line ending in \\n: {reply:?}");
    assert_eq!(reply.matches('\n').count(), 1, "one line: {reply:?}");
    reply.split_whitespace().collect()
}

fn term_of(sim: &Sim, id: u16) -> Term {
    sim.board(id).node().term()
}

#[test]
fn election_five_boards_elect_one_goose_and_probes_agree() {
    for seed in 1..=5 {
        let mut sim = Sim::new(seed);
        let goose = sim.elect(ELECTION_MS_MAX);
        sim.run_ms(500);
        assert_eq!(sim.goose(), Some(goose), "seed {seed}: the goose stays");
        let term = term_of(&sim, goose);
        for id in 1..=BOARDS as u16 {
            let reply = sim.ask(id, "whois-goose").expect("a probe is answered");
            let expected = if id == goose {
                format!("goose id={id} term={} goose={goose}", term.0)
            } else {
                format!("duck id={id} term={} goose={goose}", term.0)
            };
            // The goose adds the lease it has left (`lease_ms=`): compare the rest.
            let words: Vec<&str> = words(&reply)
                .into_iter()
                .filter(|word| !word.starts_with("lease_ms="))
                .collect();
            assert_eq!(words.join(" "), expected, "seed {seed}");
            assert_eq!(
                reply.contains(" lease_ms="),
                id == goose,
                "seed {seed}: {reply:?}"
            );
        }
    }
}

#[test]
fn goose_loss_a_new_goose_then_the_old_one_returns_as_duck() {
    let mut sim = Sim::new(7);
    let first = sim.elect(ELECTION_MS_MAX);
    let first_term = term_of(&sim, first);
    sim.kill(first);
    let second = sim.elect(ELECTION_MS_MAX);
    assert_ne!(second, first);
    assert!(term_of(&sim, second) > first_term);
    sim.restart(first);
    sim.run_ms(1_000);
    assert_eq!(
        sim.goose(),
        Some(second),
        "a returning goose does not disrupt"
    );
    let reply = sim.ask(first, "whois-goose").unwrap();
    assert_eq!(words(&reply)[..2], ["duck", &format!("id={first}")]);
    assert_eq!(term_of(&sim, first), term_of(&sim, second));
}

#[test]
fn goose_loss_repeatedly_always_one_goose_within_the_bound() {
    let mut sim = Sim::new(11);
    let mut goose = sim.elect(ELECTION_MS_MAX);
    for _ in 0..6 {
        sim.kill(goose);
        let next = sim.elect(ELECTION_MS_MAX);
        sim.restart(goose);
        goose = next;
        sim.run_ms(300);
    }
}

#[test]
fn partition_the_minority_has_no_goose_the_majority_elects_one() {
    let mut sim = Sim::new(3);
    let goose = sim.elect(ELECTION_MS_MAX);
    // The goose and one other board on one side (hub ports are board ids).
    let buddy = if goose == 1 { 2 } else { 1 };
    sim.net.borrow_mut().split(&[goose, buddy]);
    let majority: Vec<u16> = (1..=BOARDS as u16)
        .filter(|id| *id != goose && *id != buddy)
        .collect();
    let elected = sim
        .run_until(ELECTION_MS_MAX, |sim| {
            sim.goose().is_some_and(|g| majority.contains(&g))
        })
        .is_some();
    assert!(elected, "the majority side elects a goose");
    sim.run_ms(1_000);
    let now = sim.now();
    assert!(
        !sim.board(goose).is_goose(now),
        "the cut-off goose lost its lease"
    );
    assert!(!sim.board(buddy).is_goose(now));
    sim.net.borrow_mut().heal();
    sim.run_ms(1_500);
    let after = sim.goose().expect("one goose after healing");
    let term = term_of(&sim, after);
    for id in 1..=BOARDS as u16 {
        assert_eq!(
            term_of(&sim, id),
            term,
            "board {id} caught up with the term"
        );
    }
}

#[test]
fn partition_by_ctl_isolates_the_goose_and_heal_lets_it_back() {
    let mut sim = Sim::new(5);
    let goose = sim.elect(ELECTION_MS_MAX);
    let others: Vec<String> = (1..=BOARDS as u16)
        .filter(|id| *id != goose)
        .map(|id| id.to_string())
        .collect();
    // Name peers by id and one by address, as scripts/partition.sh does.
    let last: u16 = others[3].parse().unwrap();
    let named = format!(
        "ctl partition {},127.0.0.1:{}",
        others[..3].join(","),
        port_of(last)
    );
    assert_eq!(sim.ask(goose, &named).as_deref(), Some("ok\n"));
    let new = sim
        .run_until(ELECTION_MS_MAX, |sim| {
            sim.goose().is_some_and(|g| g != goose)
        })
        .is_some();
    assert!(new, "the others elect a new goose");
    let status = sim.ask(goose, "ctl status").unwrap();
    assert!(status.contains(" role=duck "), "{status}");
    assert!(!status.contains(" drop_partition_in=0 "), "{status}");
    assert!(!status.contains(" drop_partition_out=0 "), "{status}");
    assert_eq!(sim.ask(goose, "ctl heal").as_deref(), Some("ok\n"));
    sim.run_ms(1_000);
    let now = sim.now();
    let leader = sim.goose().unwrap();
    assert_eq!(term_of(&sim, goose), term_of(&sim, leader));
    assert!(!sim.board(goose).is_goose(now) || leader == goose);
}

#[test]
fn frame_loss_ten_percent_still_one_goose() {
    let mut sim = Sim::new(13);
    sim.net.borrow_mut().set_loss_ppm(100_000);
    sim.elect(3 * ELECTION_MS_MAX);
    sim.run_ms(3_000);
    let held = sim
        .geese
        .iter()
        .rev()
        .take(3_000)
        .filter(|g| g.is_some())
        .count();
    assert!(
        held > 2_000,
        "the goose mostly keeps its lease: {held}/3000 ms"
    );
}

#[test]
fn restart_on_flash_keeps_term_and_vote() {
    let mut sim = Sim::new(17);
    let goose = sim.elect(ELECTION_MS_MAX);
    sim.run_ms(200);
    let duck = if goose == 1 { 2 } else { 1 };
    let term = term_of(&sim, duck);
    let vote = sim.board(duck).node().voted_for();
    assert!(term > Term(0));
    sim.kill(duck);
    sim.restart(duck);
    assert_eq!(term_of(&sim, duck), term, "the term came back from flash");
    assert_eq!(sim.board(duck).node().voted_for(), vote, "and the vote");
    // All boards down at once, then up: nobody forgets, terms only grow.
    let terms: Vec<Term> = (1..=BOARDS as u16).map(|id| term_of(&sim, id)).collect();
    for id in 1..=BOARDS as u16 {
        sim.kill(id);
    }
    for id in 1..=BOARDS as u16 {
        sim.restart(id);
        assert_eq!(term_of(&sim, id), terms[usize::from(id) - 1]);
    }
    sim.elect(ELECTION_MS_MAX);
}

#[test]
fn ctl_stop_and_start_like_a_desktop_node() {
    let mut sim = Sim::new(19);
    let goose = sim.elect(ELECTION_MS_MAX);
    let term = term_of(&sim, goose);
    assert_eq!(sim.ask(goose, "ctl stop").as_deref(), Some("ok\n"));
    let reply = sim.ask(goose, "whois-goose").unwrap();
    assert_eq!(
        words(&reply).join(" "),
        format!("duck id={goose} term={} goose=none state=stopped", term.0)
    );
    let status = sim.ask(goose, "ctl status").unwrap();
    assert!(
        status.starts_with("ok role=duck raft=follower "),
        "{status}"
    );
    assert!(
        status.contains(" state=stopped ") && status.contains(" lease_ms=0 "),
        "{status}"
    );
    let new = sim
        .run_until(ELECTION_MS_MAX, |sim| {
            sim.goose().is_some_and(|g| g != goose)
        })
        .is_some();
    assert!(new, "another board becomes goose");
    assert_eq!(term_of(&sim, goose), term, "a stopped board keeps its term");
    assert_eq!(sim.ask(goose, "ctl start").as_deref(), Some("ok\n"));
    sim.run_ms(1_000);
    let reply = sim.ask(goose, "whois-goose").unwrap();
    let leader = sim.goose().unwrap();
    assert_ne!(leader, goose);
    assert_eq!(words(&reply)[0], "duck");
    assert_eq!(words(&reply)[3], format!("goose={leader}"));
    assert_eq!(
        sim.ask(goose, "ctl start").as_deref(),
        Some("ok\n"),
        "idempotent"
    );
}

#[test]
fn ctl_status_reports_every_field() {
    let mut sim = Sim::new(23);
    let goose = sim.elect(ELECTION_MS_MAX);
    sim.run_ms(100);
    let status = sim.ask(goose, "ctl status").unwrap();
    let words = words(&status);
    assert_eq!(words[0], "ok");
    for key in [
        "role=goose",
        "raft=leader",
        "state=running",
        "members=1,2,3,4,5",
        "voters=1,2,3,4,5",
        "learners=",
    ] {
        assert!(words.contains(&key), "{key} in {status}");
    }
    for key in [
        "id=",
        "term=",
        "goose=",
        "commit=",
        "lease_ms=",
        "drop_magic=",
        "drop_unroutable=",
    ] {
        assert!(
            words.iter().any(|w| w.starts_with(key)),
            "{key} in {status}"
        );
    }
    let lease: u64 = words
        .iter()
        .find_map(|w| w.strip_prefix("lease_ms="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(lease > 0, "{status}");
}

#[test]
fn text_protocol_unknown_replies_and_goose_only_commands() {
    let mut sim = Sim::new(29);
    let goose = sim.elect(ELECTION_MS_MAX);
    let duck = if goose == 1 { 2 } else { 1 };
    assert_eq!(
        sim.ask(duck, "hello").as_deref(),
        Some("err unknown-command\n")
    );
    assert_eq!(
        sim.ask(duck, "whois-goose \r\n")
            .map(|r| r.starts_with("duck")),
        Some(true)
    );
    assert_eq!(
        sim.ask(duck, "ok nothing to see"),
        None,
        "replies get no answer"
    );
    assert_eq!(sim.ask(duck, "goose id=1 term=1 goose=1"), None);
    assert_eq!(
        sim.ask(duck, "ctl frobnicate").as_deref(),
        Some("err unknown-command\n")
    );
    assert_eq!(
        sim.ask(duck, "ctl partition x").as_deref(),
        Some("err bad-node-id\n")
    );
    assert_eq!(
        sim.ask(duck, "ctl transfer").unwrap(),
        format!(
            "err not-goose goose={goose} addr=127.0.0.1:{}\n",
            port_of(goose)
        )
    );
    assert_eq!(
        sim.ask(goose, "ctl remove 9").as_deref(),
        Some("err unknown-node\n")
    );
    // Junk that looks binary is counted by the core, never answered, never fatal.
    assert_eq!(sim.ask(duck, "\u{80}\u{1}garbage"), None);
    sim.run_ms(300);
    assert!(sim.goose().is_some());
}

#[test]
fn control_from_a_stranger_is_forbidden_without_the_token() {
    let stranger = (STRANGER, STRANGER_PORT);
    // A reply to a new neighbour waits for ARP, which smoltcp rate-limits to one request
    // per second across all neighbours (see the README's porting notes).
    let arp_wait_ms = 1_100;
    let mut sim = Sim::new(31);
    let goose = sim.elect(ELECTION_MS_MAX);
    let duck = if goose == 1 { 2 } else { 1 };
    let replies = sim.send_from(stranger, duck, &["ctl stop", "whois-goose"], arp_wait_ms);
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0], "err forbidden\n");
    assert!(replies[1].starts_with("duck "), "{}", replies[1]);
    assert!(!sim.board(duck).is_stopped());

    let mut sim = Sim::with_configs(31, |config| {
        config.control_token = Some(heapless::String::try_from("s3cret").unwrap());
    });
    sim.elect(ELECTION_MS_MAX);
    let texts = ["ctl token=wrong stop", "ctl token=s3cret stop"];
    let replies = sim.send_from(stranger, duck, &texts, arp_wait_ms);
    assert_eq!(replies, ["err forbidden\n", "ok\n"]);
    assert!(sim.board(duck).is_stopped());
    // The host never needs the token.
    assert_eq!(sim.ask(duck, "ctl start").as_deref(), Some("ok\n"));
    assert!(!sim.board(duck).is_stopped());
}

#[test]
fn probe_burst_every_probe_is_answered() {
    let mut sim = Sim::new(37);
    sim.elect(ELECTION_MS_MAX);
    let burst = ["whois-goose"; 30]; // just under the QEMU MAC's FIFO
    let replies = sim.send_from((BoardConfig::QEMU_HOST, sim::CLIENT_PORT), 2, &burst, 30);
    assert_eq!(replies.len(), burst.len());
}

/// Seeded faults in turn: loss, the goose killed and restarted, a random split, healing.
/// Safety is checked at every step by the simulator; liveness after each healing.
#[test]
fn swarm_faults_many_seeds_one_goose_at_most_and_always_again() {
    for seed in 1..=20u64 {
        let mut sim = Sim::new(seed);
        sim.net
            .borrow_mut()
            .set_loss_ppm((seed % 4) as u32 * 30_000);
        let goose = sim.elect(3 * ELECTION_MS_MAX);
        sim.kill(goose);
        sim.run_ms(100 + seed * 37 % 400);
        sim.restart(goose);
        let side: Vec<u16> = (1..=BOARDS as u16)
            .filter(|id| (seed >> id) & 1 == 1)
            .collect();
        sim.net.borrow_mut().split(&side);
        sim.run_ms(1_500);
        sim.net.borrow_mut().heal();
        sim.net.borrow_mut().set_loss_ppm(0);
        sim.run_until(3 * ELECTION_MS_MAX, |sim| sim.goose().is_some())
            .unwrap_or_else(|| panic!("seed {seed}: no goose after healing"));
    }
}

#[test]
fn transfer_hands_the_goose_to_the_named_board() {
    let mut sim = Sim::new(41);
    let goose = sim.elect(ELECTION_MS_MAX);
    sim.run_ms(200);
    let target = if goose == 3 { 4 } else { 3 };
    let reply = sim.ask(goose, &format!("ctl transfer {target}"));
    assert_eq!(reply, Some(format!("ok to={target}\n")));
    let moved = sim.run_until(ELECTION_MS_MAX, |sim| sim.goose() == Some(target));
    assert!(moved.is_some(), "board {target} becomes goose");
    let old = goose;
    assert_eq!(
        sim.ask(old, "ctl transfer").unwrap(),
        format!(
            "err not-goose goose={target} addr=127.0.0.1:{}\n",
            port_of(target)
        )
    );
    assert_eq!(
        sim.ask(target, &format!("ctl transfer {target}"))
            .as_deref(),
        Some("err unknown-node\n"),
        "not to itself"
    );
}

#[test]
fn remove_then_add_change_the_membership_through_the_log() {
    let mut sim = Sim::new(43);
    let goose = sim.elect(ELECTION_MS_MAX);
    sim.run_ms(200);
    let leaving = if goose == 5 { 4 } else { 5 };
    assert_eq!(
        sim.ask(goose, "ctl add 6 127.0.0.1:9906").as_deref(),
        Some("err members-full\n"),
        "a board holds 5 members"
    );
    assert_eq!(
        sim.ask(goose, &format!("ctl remove {leaving}")).as_deref(),
        Some("ok\n")
    );
    let removed = sim.run_until(1_000, |sim| {
        sim.boards[usize::from(leaving) - 1]
            .events
            .contains(&goose_core::Event::Removed)
    });
    assert!(removed.is_some(), "the removed board is told, to exit");
    sim.kill(leaving);
    sim.run_ms(300);
    let goose = sim.elect(ELECTION_MS_MAX);
    assert_eq!(sim.board(goose).node().members().len(), BOARDS - 1);
    assert_eq!(
        sim.ask(goose, "ctl add 6 127.0.0.1:9906").as_deref(),
        Some("ok\n")
    );
    sim.run_ms(300);
    let status = sim.ask(goose, "ctl status").unwrap();
    assert!(status.contains(" learners=6 "), "{status}");
    assert_eq!(
        sim.ask(goose, "ctl add 6 127.0.0.1:9906").as_deref(),
        Some("ok\n"),
        "again: no-op"
    );
    assert_eq!(
        sim.ask(goose, "ctl add 7 127.0.0.1:9906").as_deref(),
        Some("err address-in-use\n")
    );
}

// --- With a cluster key ----------------------------------------------------------------

fn keyed(byte: u8) -> ClusterKey {
    ClusterKey::new(&[byte; KEY_SIZE])
}

/// `ctl <command>` signed with `key` over a nonce the board issued, as `goose ctl
/// --cluster-key-file` sends it.
fn signed_ctl(sim: &mut Sim, id: u16, key: &ClusterKey, command: &str) -> String {
    let reply = sim.ask(id, "ctl nonce").expect("a nonce");
    let nonce = reply
        .trim_end()
        .strip_prefix("ok nonce=")
        .unwrap_or_else(|| panic!("{reply:?}"));
    let nonce = u64::from_str_radix(nonce, 16).unwrap();
    let mut datagram = String::new();
    write_signed_control(&mut datagram, key, nonce, command).unwrap();
    sim.ask(id, &datagram).expect("an answer")
}

#[test]
fn auth_keyed_boards_seal_every_frame_and_restart_with_a_higher_epoch() {
    let mut sim = Sim::with_configs(41, |config| config.key = Some(keyed(7)));
    let goose = sim.elect(ELECTION_MS_MAX);
    sim.run_ms(500);
    assert_eq!(sim.goose(), Some(goose));
    for id in 1..=BOARDS as u16 {
        let board = sim.board(id);
        assert_eq!(board.epoch(), Some(1), "first boot");
        let stats = board.stats().service;
        assert_eq!(
            (stats.drop_bad_mac, stats.drop_unsealed, stats.drop_replay),
            (0, 0, 0)
        );
    }
    // Control must be signed now, even from the trusted host.
    let reply = sim.ask(goose, "ctl status").unwrap();
    assert_eq!(reply, "err forbidden\n");
    let status = signed_ctl(&mut sim, goose, &keyed(7), "status");
    assert!(status.starts_with("ok role=goose "), "{status}");
    assert!(status.contains(" drop_bad_mac=0 "), "{status}");
    let forged = signed_ctl(&mut sim, goose, &keyed(8), "status");
    assert_eq!(forged, "err forbidden\n");
    // A restarted board comes back with the next epoch, and its frames are accepted
    // (a reused epoch would be dropped as replays).
    let duck = if goose == 1 { 2 } else { 1 };
    for boot in 2..=3 {
        sim.kill(duck);
        sim.restart(duck);
        assert_eq!(sim.board(duck).epoch(), Some(boot));
        sim.run_ms(300);
    }
    sim.kill(goose);
    let next = sim.elect(ELECTION_MS_MAX);
    assert_ne!(next, goose);
    for id in (1..=BOARDS as u16).filter(|&id| id != goose) {
        let stats = sim.board(id).stats().service;
        assert_eq!(
            (stats.drop_bad_mac, stats.drop_replay),
            (0, 0),
            "board {id}"
        );
    }
}

#[test]
fn auth_a_board_with_another_key_is_not_heard() {
    let mut sim = Sim::with_configs(43, |config| {
        let byte = if config.node.id.get() == 5 { 9 } else { 7 };
        config.key = Some(keyed(byte));
    });
    let goose = sim.elect(ELECTION_MS_MAX);
    assert_ne!(
        goose, 5,
        "board 5 cannot win votes it cannot be heard asking for"
    );
    sim.run_ms(1_000);
    let heard = |sim: &Sim, id: u16| sim.board(id).stats().service.drop_bad_mac;
    assert!(heard(&sim, 5) > 0, "board 5 drops the flock's frames");
    assert!(
        (1..=4).any(|id| heard(&sim, id) > 0),
        "and the flock board 5's"
    );
    assert_eq!(sim.goose(), Some(goose));
}
