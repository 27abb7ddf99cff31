//! `Vips` against a fake stack: what it adds, announces and removes, when, and what it does
//! when the stack fails.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;

/// What the fake stack was asked, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Add(String),
    Remove(String),
    Announce(String),
}

/// A machine with interface `eth0` (index 2) whose address operations fail while `failing`.
#[derive(Default)]
struct Fake {
    calls: Rc<RefCell<Vec<Call>>>,
    on: Rc<RefCell<Vec<VipAddr>>>,
    failing: Rc<RefCell<bool>>,
}

const LINK: Link = Link {
    index: 2,
    mac: [2, 0, 0, 0, 0, 1],
};

impl Stack for Fake {
    fn link(&mut self, name: &str) -> io::Result<Link> {
        match name {
            "eth0" => Ok(LINK),
            _ => Err(io::Error::from_raw_os_error(libc::ENODEV)),
        }
    }

    fn add(&mut self, _link: &Link, addr: &VipAddr) -> io::Result<()> {
        self.calls.borrow_mut().push(Call::Add(addr.to_string()));
        if *self.failing.borrow() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if !self.on.borrow().contains(addr) {
            self.on.borrow_mut().push(*addr);
        }
        Ok(())
    }

    fn remove(&mut self, _index: u32, addr: &VipAddr) -> io::Result<bool> {
        self.calls.borrow_mut().push(Call::Remove(addr.to_string()));
        if *self.failing.borrow() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let mut on = self.on.borrow_mut();
        let before = on.len();
        on.retain(|held| held != addr);
        Ok(on.len() < before)
    }

    fn announce(&mut self, _link: &Link, addr: &VipAddr) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Announce(addr.to_string()));
        Ok(())
    }
}

struct Setup {
    vips: Vips<Fake>,
    calls: Rc<RefCell<Vec<Call>>>,
    on: Rc<RefCell<Vec<VipAddr>>>,
    failing: Rc<RefCell<bool>>,
}

fn setup(addrs: &[&str]) -> Setup {
    let fake = Fake::default();
    let (calls, on, failing) = (
        Rc::clone(&fake.calls),
        Rc::clone(&fake.on),
        Rc::clone(&fake.failing),
    );
    let addrs: Vec<VipAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let devs = ["eth0".parse().unwrap()];
    let id = NodeId::new(1).unwrap();
    let vips = Vips::new(id, pair(&addrs, &devs).unwrap(), fake);
    Setup {
        vips,
        calls,
        on,
        failing,
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn count(calls: &[Call], wanted: &Call) -> usize {
    calls.iter().filter(|call| *call == wanted).count()
}

#[test]
fn held_it_is_added_and_announced_twice_over_let_go_it_is_removed_at_once() {
    let mut s = setup(&["10.0.0.100/24", "fd00::100/64"]);
    assert!(s.vips.is_released());
    s.vips.hold(at(1_000), Term(3));
    assert_eq!(s.on.borrow().len(), 2);
    assert_eq!(s.vips.held(), "10.0.0.100/24@eth0,fd00::100/64@eth0");
    assert_eq!(s.vips.status_field(), Some(("vips", s.vips.held())));
    let v4 = Call::Announce("10.0.0.100/24".to_owned());
    let v6 = Call::Announce("fd00::100/64".to_owned());
    assert_eq!(count(&s.calls.borrow(), &v4), ANNOUNCE_BURST as usize);
    assert_eq!(count(&s.calls.borrow(), &v6), ANNOUNCE_BURST as usize);
    // The second burst, and no third.
    let again = at(1_000) + ANNOUNCE_AGAIN_AFTER;
    assert_eq!(s.vips.deadline(), Some(again));
    s.vips.hold(again - Duration::from_millis(1), Term(3));
    assert_eq!(count(&s.calls.borrow(), &v4), ANNOUNCE_BURST as usize);
    s.vips.hold(again, Term(3));
    assert_eq!(count(&s.calls.borrow(), &v4), 2 * ANNOUNCE_BURST as usize);
    assert_eq!(s.vips.deadline(), None);
    s.vips.hold(again + ANNOUNCE_AGAIN_AFTER, Term(3));
    assert_eq!(count(&s.calls.borrow(), &v4), 2 * ANNOUNCE_BURST as usize);
    // Holding again in the same term adds nothing.
    let adds = |calls: &[Call]| calls.iter().filter(|c| matches!(c, Call::Add(_))).count();
    assert_eq!(adds(&s.calls.borrow()), 2);

    // Let go: removed within the call, whatever time `by` would allow.
    s.vips.release(at(20_000), at(30_000));
    assert!(s.vips.is_released());
    assert!(s.on.borrow().is_empty());
    assert_eq!(s.vips.held(), "");
    assert_eq!(s.vips.deadline(), None);
    // Let go again: nothing more to do.
    let calls = s.calls.borrow().len();
    s.vips.release(at(20_001), at(20_001));
    assert_eq!(s.calls.borrow().len(), calls);
}

#[test]
fn a_new_term_is_announced_again() {
    let mut s = setup(&["10.0.0.100/24"]);
    s.vips.hold(at(0), Term(3));
    s.vips.hold(at(10), Term(4));
    let announce = Call::Announce("10.0.0.100/24".to_owned());
    assert_eq!(
        count(&s.calls.borrow(), &announce),
        2 * ANNOUNCE_BURST as usize
    );
}

#[test]
fn a_failed_add_is_tried_again_with_a_growing_wait() {
    let mut s = setup(&["10.0.0.100/24"]);
    *s.failing.borrow_mut() = true;
    s.vips.hold(at(0), Term(3));
    assert!(s.vips.is_released());
    assert_eq!(s.vips.deadline(), Some(at(100)));
    s.vips.hold(at(50), Term(3)); // not due
    s.vips.hold(at(100), Term(3));
    assert_eq!(s.vips.deadline(), Some(at(300)));
    let add = Call::Add("10.0.0.100/24".to_owned());
    assert_eq!(count(&s.calls.borrow(), &add), 2);
    *s.failing.borrow_mut() = false;
    s.vips.hold(at(300), Term(3));
    assert_eq!(s.vips.held(), "10.0.0.100/24@eth0");
}

#[test]
fn a_removal_that_keeps_failing_is_retried_then_given_up_loudly() {
    let mut s = setup(&["10.0.0.100/24"]);
    s.vips.hold(at(0), Term(3));
    *s.failing.borrow_mut() = true;
    s.vips.release(at(1_000), at(1_000));
    assert!(!s.vips.is_released(), "still on: the handoff waits");
    assert_eq!(s.vips.deadline(), Some(at(1_000) + REMOVE_RETRY));
    let mut now = at(1_000);
    for _ in 1..REMOVE_ATTEMPTS_MAX {
        now = now + REMOVE_RETRY;
        s.vips.release(now, now);
    }
    // Given up within the bound a handoff waits for.
    assert!(s.vips.is_released());
    assert!(now.saturating_since(at(1_000)) < RELEASE_BOUND);
    let remove = Call::Remove("10.0.0.100/24".to_owned());
    assert_eq!(
        count(&s.calls.borrow(), &remove),
        REMOVE_ATTEMPTS_MAX as usize
    );
}

#[test]
fn stale_addresses_go_at_start_and_held_ones_when_dropped() {
    let mut s = setup(&["10.0.0.100/24", "fd00::100/64"]);
    s.on.borrow_mut().push("10.0.0.100/24".parse().unwrap());
    s.vips.remove_stale().unwrap();
    assert!(s.on.borrow().is_empty());
    s.vips.hold(at(0), Term(1));
    assert_eq!(s.on.borrow().len(), 2);
    let on = Rc::clone(&s.on);
    drop(s);
    assert!(
        on.borrow().is_empty(),
        "dropping the node's addresses removes them"
    );
}

#[test]
fn addresses_and_interfaces_parse_and_pair() {
    let ok: VipAddr = "10.0.0.100/24".parse().unwrap();
    assert_eq!(ok.to_string(), "10.0.0.100/24");
    assert!("fd00::100/128".parse::<VipAddr>().is_ok());
    for bad in [
        "10.0.0.100",
        "10.0.0.100/33",
        "10.0.0.100/0",
        "fd00::1/129",
        "0.0.0.0/8",
        "127.0.0.2/8",
        "224.0.0.1/4",
        "255.255.255.255/32",
        "::1/128",
        "::ffff:10.0.0.1/120",
        "nowhere/24",
    ] {
        assert!(bad.parse::<VipAddr>().is_err(), "{bad}");
    }
    assert!("eth0".parse::<Interface>().is_ok());
    assert!("enp0s31f6.100".parse::<Interface>().is_ok());
    for bad in [
        "",
        "a/b",
        "eth0:1",
        "a,b",
        "with space",
        "sixteen-bytes-xx",
        "..",
    ] {
        assert!(bad.parse::<Interface>().is_err(), "{bad:?}");
    }

    let addrs: Vec<VipAddr> = ["10.0.0.100/24", "fd00::100/64"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let eth0: Interface = "eth0".parse().unwrap();
    let eth1: Interface = "eth1".parse().unwrap();
    let one = pair(&addrs, std::slice::from_ref(&eth0)).unwrap();
    assert!(one.iter().all(|vip| vip.dev == eth0));
    let each = pair(&addrs, &[eth0.clone(), eth1.clone()]).unwrap();
    assert_eq!(each[1].to_string(), "fd00::100/64@eth1");
    assert!(pair(&addrs, &[eth0.clone(), eth1.clone(), eth0.clone()]).is_err());
    assert!(pair(&[], std::slice::from_ref(&eth0)).is_err());
    assert!(pair(&[addrs[0], addrs[0]], std::slice::from_ref(&eth0)).is_err());
    let many = vec![addrs[0]; VIPS_MAX + 1];
    assert!(pair(&many, std::slice::from_ref(&eth0))
        .unwrap_err()
        .contains("at most"));
    assert_eq!(pair(&[], &[]), Ok(Vec::new()));

    let own = ["10.0.0.100".parse().unwrap()];
    assert!(refuse_own_address(&one, &own).is_some());
    assert!(refuse_own_address(&one, &["10.0.0.1".parse().unwrap()]).is_none());
}
