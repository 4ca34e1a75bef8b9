//! The DHCPv4 client state machine through whole exchanges, driven with crafted server
//! replies and a virtual clock (no sockets): RFC 2131 states, timers, retransmission,
//! NAK handling, option parsing and packets that must be ignored. Replies recorded from
//! QEMU's user-network DHCP server are in tests/data.

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tessera_node::net::dhcp::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 9);
const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const S: fn(u64) -> Duration = Duration::from_secs;

/// The one packet an action list sends, decoded, with where it goes.
fn sent(actions: &[Action]) -> (v4::Message, Destination) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { packet, to, .. } => Some((packet, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "expected one packet in {actions:?}");
    let (packet, to) = sends[0];
    assert!(packet.len() >= 300, "padded to the BOOTP minimum");
    (v4::Message::from_bytes(packet).unwrap(), to)
}

fn msg_type(m: &v4::Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

fn opt(m: &v4::Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

/// A server reply to `request` (same xid and chaddr), with `options` after the type.
fn reply(
    request: &v4::Message,
    kind: MessageType,
    yiaddr: Ipv4Addr,
    options: &[DhcpOption],
) -> Vec<u8> {
    let mut m = v4::Message::new_with_id(
        request.xid(),
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &request.chaddr()[..6],
    );
    m.set_opcode(v4::Opcode::BootReply);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in options {
        m.opts_mut().insert(o.clone());
    }
    m.to_vec().unwrap()
}

/// The options QEMU's server sends with OFFER and ACK.
fn lease_options(server: Ipv4Addr, lease_s: u32) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ServerIdentifier(server),
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
        DhcpOption::Router(vec![SERVER]),
        DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]),
        DhcpOption::AddressLeaseTime(lease_s),
    ]
}

fn the_lease(actions: &[Action]) -> Lease {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Configure(l) | Action::Renewed(l) => Some(l.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no lease in {actions:?}"))
}

/// A client taken through DISCOVER/OFFER/REQUEST/ACK at t0; returns it with the lease.
fn bound_client(t0: Instant, lease_s: u32, extra: &[DhcpOption]) -> (Client, Lease) {
    let mut c = Client::new(MAC, 7, t0);
    let (discover, _) = sent(&c.on_timer(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ADDRESS,
        &lease_options(SERVER, lease_s),
    );
    let (request, _) = sent(&c.on_packet(&offer, t0).unwrap());
    let mut opts = lease_options(SERVER, lease_s);
    opts.extend_from_slice(extra);
    let ack = reply(&request, MessageType::Ack, ADDRESS, &opts);
    let actions = c.on_packet(&ack, t0).unwrap();
    (c, the_lease(&actions))
}

#[test]
fn full_exchange_binds_with_the_offered_lease() {
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 1, t0);
    assert_eq!(c.state().name(), "init");
    assert_eq!(c.next_deadline(), Some(t0), "DISCOVER at once");

    let (discover, to) = sent(&c.on_timer(t0));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert_eq!(discover.opcode(), v4::Opcode::BootRequest);
    assert!(
        discover.flags().broadcast(),
        "replies must be broadcast to an unconfigured client"
    );
    assert_eq!(&discover.chaddr()[..6], &MAC);
    assert_eq!(discover.xid(), c.xid());
    assert_eq!(
        opt(&discover, OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(vec![
            1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56
        ]))
    );
    match opt(&discover, OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(codes)) => {
            for code in [
                OptionCode::SubnetMask,
                OptionCode::Router,
                OptionCode::DomainNameServer,
                OptionCode::Hostname,
            ] {
                assert!(codes.contains(&code), "{code:?} requested");
            }
        }
        other => panic!("no parameter request list: {other:?}"),
    }
    assert_eq!(c.state().name(), "selecting");

    let t1 = t0 + Duration::from_millis(30);
    let offer = reply(
        &discover,
        MessageType::Offer,
        ADDRESS,
        &lease_options(SERVER, 86400),
    );
    let (request, to) = sent(&c.on_packet(&offer, t1).unwrap());
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(msg_type(&request), MessageType::Request);
    assert_eq!(
        request.xid(),
        discover.xid(),
        "REQUEST answers the OFFER's transaction"
    );
    assert!(request.ciaddr().is_unspecified());
    assert_eq!(
        opt(&request, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDRESS))
    );
    assert_eq!(
        opt(&request, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        c.state(),
        &State::Requesting {
            offer: Offer {
                address: ADDRESS,
                server: SERVER
            }
        }
    );

    let t2 = t1 + Duration::from_millis(30);
    let ack = reply(
        &request,
        MessageType::Ack,
        ADDRESS,
        &lease_options(SERVER, 86400),
    );
    let actions = c.on_packet(&ack, t2).unwrap();
    assert_eq!(actions.len(), 1);
    let lease = the_lease(&actions);
    assert!(matches!(actions[0], Action::Configure(_)));
    assert_eq!(
        (lease.address, lease.prefix_len, lease.server),
        (ADDRESS, 24, SERVER)
    );
    assert_eq!(lease.routers, vec![SERVER]);
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    assert_eq!(lease.duration, Some(S(86400)));
    assert_eq!(
        lease.start, t1,
        "the lease counts from when the REQUEST was sent"
    );
    assert_eq!(c.state().name(), "bound");
    assert_eq!(
        c.next_deadline(),
        Some(t1 + S(43200)),
        "T1 = half the lease"
    );
}

/// The OFFER and ACK QEMU's user-network server sent to a real boot (tests/data), with the
/// transaction id set to ours.
#[test]
fn replies_recorded_from_qemu_user_networking_bind() {
    let data = |name| {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let with_xid = |mut packet: Vec<u8>, xid: u32| {
        packet[4..8].copy_from_slice(&xid.to_be_bytes());
        packet
    };
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 42, t0);
    c.on_timer(t0);
    let (request, _) = sent(
        &c.on_packet(&with_xid(data("qemu-offer.bin"), c.xid()), t0)
            .unwrap(),
    );
    assert_eq!(
        opt(&request, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDRESS))
    );
    let lease = the_lease(
        &c.on_packet(&with_xid(data("qemu-ack.bin"), c.xid()), t0)
            .unwrap(),
    );
    assert_eq!(
        (
            lease.address,
            lease.prefix_len,
            lease.routers.clone(),
            lease.dns.clone()
        ),
        (ADDRESS, 24, vec![SERVER], vec![Ipv4Addr::new(10, 0, 2, 3)])
    );
    assert_eq!(
        (lease.duration_secs(), lease.renew_after, lease.rebind_after),
        (86400, S(43200), S(75600))
    );

    // Our own DISCOVER and REQUEST as QEMU received them decode as what we meant.
    let discover = v4::Message::from_bytes(&data("qemu-discover.bin")).unwrap();
    assert_eq!(
        (msg_type(&discover), discover.flags().broadcast()),
        (MessageType::Discover, true)
    );
    let request = v4::Message::from_bytes(&data("qemu-request.bin")).unwrap();
    assert_eq!(
        opt(&request, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
}

#[test]
fn discover_is_retransmitted_with_exponential_backoff_and_jitter() {
    let mut offsets = Vec::new();
    for seed in 0..20 {
        let t0 = Instant::now();
        let mut c = Client::new(MAC, seed, t0);
        let (first, _) = sent(&c.on_timer(t0));
        let mut now = t0;
        for base in [4, 8, 16, 32, 64, 64, 64] {
            let at = c.next_deadline().unwrap();
            let delay = at - now;
            assert!(
                delay >= S(base) - S(1) && delay <= S(base) + S(1),
                "seed {seed}: retransmission after {delay:?}, expected {base} s ± 1 s"
            );
            offsets.push(delay.as_millis() as i64 - base as i64 * 1000);
            assert!(
                c.on_timer(at - Duration::from_millis(1)).is_empty(),
                "nothing before the deadline"
            );
            let (again, _) = sent(&c.on_timer(at));
            assert_eq!(
                again.xid(),
                first.xid(),
                "retransmissions keep the transaction id"
            );
            assert_eq!(
                u64::from(again.secs()),
                (at - t0).as_secs(),
                "secs counts from the first DISCOVER"
            );
            now = at;
        }
    }
    let distinct: std::collections::BTreeSet<_> = offsets.iter().collect();
    assert!(
        distinct.len() > offsets.len() / 2,
        "jitter varies: {offsets:?}"
    );
    assert!(offsets.iter().any(|o| *o < 0) && offsets.iter().any(|o| *o > 0));
}

#[test]
fn unanswered_request_starts_over_after_its_attempts() {
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 3, t0);
    let (discover, _) = sent(&c.on_timer(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ADDRESS,
        &lease_options(SERVER, 3600),
    );
    sent(&c.on_packet(&offer, t0).unwrap());
    let mut requests = 1;
    loop {
        let at = c.next_deadline().unwrap();
        let (m, _) = sent(&c.on_timer(at));
        if msg_type(&m) == MessageType::Discover {
            assert_ne!(
                m.xid(),
                discover.xid(),
                "a new exchange has a new transaction id"
            );
            break;
        }
        assert_eq!(msg_type(&m), MessageType::Request);
        requests += 1;
    }
    assert_eq!(requests, REQUEST_ATTEMPTS);
    assert_eq!(c.state().name(), "selecting");
}

#[test]
fn renewal_at_t1_is_unicast_to_the_server_and_extends_the_lease() {
    let t0 = Instant::now();
    let (mut c, lease) = bound_client(t0, 3600, &[]);
    let t1 = lease.renew_at().unwrap();
    assert_eq!(t1, t0 + S(1800));
    assert!(c.on_timer(t1 - S(1)).is_empty());
    let (renew, to) = sent(&c.on_timer(t1));
    assert_eq!(to, Destination::Server(SERVER));
    assert_eq!(c.state().name(), "renewing");
    assert_eq!(msg_type(&renew), MessageType::Request);
    assert_eq!(renew.ciaddr(), ADDRESS);
    assert!(!renew.flags().broadcast());
    assert!(
        opt(&renew, OptionCode::RequestedIpAddress).is_none(),
        "RFC 2131 §4.3.2: not in RENEWING"
    );
    assert!(opt(&renew, OptionCode::ServerIdentifier).is_none());

    // No answer: again after half the time left until T2 (T2 = 3150 s), at least 60 s.
    let retry = c.next_deadline().unwrap();
    assert_eq!(retry, t1 + (S(3150) - S(1800)) / 2);
    let (again, _) = sent(&c.on_timer(retry));
    assert_eq!(again.xid(), renew.xid());

    let ack = reply(
        &again,
        MessageType::Ack,
        ADDRESS,
        &lease_options(SERVER, 3600),
    );
    let actions = c.on_packet(&ack, retry + S(1)).unwrap();
    assert!(
        matches!(actions.as_slice(), [Action::Renewed(_)]),
        "{actions:?}"
    );
    let renewed = the_lease(&actions);
    assert_eq!(
        renewed.start, t1,
        "counted from the first REQUEST of the renewal"
    );
    assert_eq!(c.state().name(), "bound");
    assert_eq!(c.next_deadline(), Some(t1 + S(1800)));
}

#[test]
fn renewing_retransmits_no_sooner_than_every_60_seconds() {
    let t0 = Instant::now();
    let (mut c, lease) = bound_client(t0, 86400, &[]);
    let t1 = lease.renew_at().unwrap();
    sent(&c.on_timer(t1));
    assert_eq!(c.next_deadline(), Some(t1 + S((75600 - 43200) / 2)));
    // Close to T2 the retransmission is 60 s out, so T2 comes first.
    let late = lease.rebind_at().unwrap() - S(70);
    sent(&c.on_timer(c.next_deadline().unwrap()));
    let mut now = c.next_deadline().unwrap();
    while now < late {
        sent(&c.on_timer(now));
        now = c.next_deadline().unwrap();
    }
    let gap = now - late;
    assert!(gap <= S(70), "{gap:?}");
}

#[test]
fn rebinding_at_t2_broadcasts_and_accepts_any_server() {
    let t0 = Instant::now();
    let (mut c, lease) = bound_client(t0, 1000, &[]);
    sent(&c.on_timer(lease.renew_at().unwrap()));
    let t2 = lease.rebind_at().unwrap();
    assert_eq!(t2, t0 + S(875));
    let (rebind, to) = sent(&c.on_timer(t2));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(c.state().name(), "rebinding");
    assert_eq!(rebind.ciaddr(), ADDRESS);
    assert_eq!(
        c.next_deadline(),
        Some(t2 + Duration::from_millis(62_500)),
        "half of the 125 s left"
    );

    let ack = reply(
        &rebind,
        MessageType::Ack,
        ADDRESS,
        &lease_options(OTHER_SERVER, 1000),
    );
    let lease = the_lease(&c.on_packet(&ack, t2 + S(1)).unwrap());
    assert_eq!(
        lease.server, OTHER_SERVER,
        "renewals now go to the server that answered"
    );
}

#[test]
fn lease_expiry_removes_the_address_and_starts_over() {
    let t0 = Instant::now();
    let (mut c, lease) = bound_client(t0, 1000, &[]);
    let mut now = t0;
    let mut deconfigured = None;
    while deconfigured.is_none() {
        now = c.next_deadline().unwrap();
        assert!(now <= lease.expires_at().unwrap());
        for a in c.on_timer(now) {
            if let Action::Deconfigure { lease, reason } = a {
                deconfigured = Some((lease, reason));
            }
        }
    }
    assert_eq!(now, t0 + S(1000));
    let (old, reason) = deconfigured.unwrap();
    assert_eq!(old.address, ADDRESS);
    assert_eq!(reason, "lease expired");
    assert_eq!(
        c.state().name(),
        "selecting",
        "a DISCOVER went out with the removal"
    );
}

#[test]
fn expiry_is_noticed_even_when_the_timers_were_missed() {
    let t0 = Instant::now();
    let (mut c, _) = bound_client(t0, 1000, &[]);
    // E.g. the VM was paused: the first timer runs after the lease ended.
    let actions = c.on_timer(t0 + S(5000));
    assert!(
        matches!(actions[0], Action::Deconfigure { .. }),
        "{actions:?}"
    );
    assert_eq!(msg_type(&sent(&actions).0), MessageType::Discover);
}

#[test]
fn nak_while_requesting_restarts_after_a_growing_delay() {
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 5, t0);
    let mut now = t0;
    for expected_delay in [1, 2, 4] {
        let (discover, _) = sent(&c.on_timer(now));
        let offer = reply(
            &discover,
            MessageType::Offer,
            ADDRESS,
            &lease_options(SERVER, 600),
        );
        let (request, _) = sent(&c.on_packet(&offer, now).unwrap());
        let nak = reply(
            &request,
            MessageType::Nak,
            Ipv4Addr::UNSPECIFIED,
            &[DhcpOption::ServerIdentifier(SERVER)],
        );
        assert!(c.on_packet(&nak, now).unwrap().is_empty());
        assert_eq!(c.state().name(), "init");
        let restart = c.next_deadline().unwrap();
        assert_eq!(restart - now, S(expected_delay));
        assert!(c.on_timer(restart - Duration::from_millis(1)).is_empty());
        now = restart;
    }
    // A lease resets the delay.
    let (discover, _) = sent(&c.on_timer(now));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ADDRESS,
        &lease_options(SERVER, 600),
    );
    let (request, _) = sent(&c.on_packet(&offer, now).unwrap());
    let ack = reply(
        &request,
        MessageType::Ack,
        ADDRESS,
        &lease_options(SERVER, 600),
    );
    let lease = the_lease(&c.on_packet(&ack, now).unwrap());
    let renew = c.on_timer(lease.renew_at().unwrap());
    let nak = reply(
        &sent(&renew).0,
        MessageType::Nak,
        Ipv4Addr::UNSPECIFIED,
        &[DhcpOption::ServerIdentifier(SERVER)],
    );
    let at = lease.renew_at().unwrap();
    c.on_packet(&nak, at).unwrap();
    assert_eq!(c.next_deadline(), Some(at + S(1)));
}

#[test]
fn nak_while_renewing_removes_the_address() {
    let t0 = Instant::now();
    let (mut c, lease) = bound_client(t0, 600, &[]);
    let (renew, _) = sent(&c.on_timer(lease.renew_at().unwrap()));
    let nak = reply(
        &renew,
        MessageType::Nak,
        Ipv4Addr::UNSPECIFIED,
        &[DhcpOption::ServerIdentifier(SERVER)],
    );
    let actions = c.on_packet(&nak, t0 + S(301)).unwrap();
    match actions.as_slice() {
        [Action::Deconfigure { lease, reason }] => {
            assert_eq!(lease.address, ADDRESS);
            assert!(reason.contains("DHCPNAK"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.state().name(), "init");
}

#[test]
fn a_different_address_on_renewal_replaces_the_old_one() {
    let t0 = Instant::now();
    let (mut c, lease) = bound_client(t0, 600, &[]);
    let (renew, _) = sent(&c.on_timer(lease.renew_at().unwrap()));
    let other = Ipv4Addr::new(10, 0, 2, 16);
    let ack = reply(&renew, MessageType::Ack, other, &lease_options(SERVER, 600));
    let actions = c.on_packet(&ack, t0 + S(301)).unwrap();
    match actions.as_slice() {
        [Action::Deconfigure { lease: old, .. }, Action::Configure(new)] => {
            assert_eq!((old.address, new.address), (ADDRESS, other));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_t1_and_t2_are_used_when_consistent() {
    let t0 = Instant::now();
    let (_, lease) = bound_client(
        t0,
        1000,
        &[DhcpOption::Renewal(100), DhcpOption::Rebinding(200)],
    );
    assert_eq!((lease.renew_after, lease.rebind_after), (S(100), S(200)));
    // T1 after T2, T2 after the lease end: both ignored.
    let (_, lease) = bound_client(
        t0,
        1000,
        &[DhcpOption::Renewal(900), DhcpOption::Rebinding(5000)],
    );
    assert_eq!((lease.renew_after, lease.rebind_after), (S(500), S(875)));
}

#[test]
fn lease_options_are_parsed() {
    let t0 = Instant::now();
    let extra = [
        DhcpOption::Router(vec![SERVER, OTHER_SERVER]),
        DhcpOption::DomainNameServer(vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)]),
        DhcpOption::Hostname("node-7\0".into()),
        DhcpOption::DomainName("cluster.example".into()),
        DhcpOption::InterfaceMtu(1400),
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 240, 0)),
    ];
    let (_, lease) = bound_client(t0, 7200, &extra);
    assert_eq!(lease.prefix_len, 20);
    assert_eq!(lease.routers, vec![SERVER, OTHER_SERVER]);
    assert_eq!(
        lease.dns,
        vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)]
    );
    assert_eq!(
        lease.hostname.as_deref(),
        Some("node-7"),
        "trailing NUL dropped"
    );
    assert_eq!(lease.domain.as_deref(), Some("cluster.example"));
    assert_eq!(lease.mtu, Some(1400));
}

#[test]
fn infinite_and_tiny_leases() {
    let t0 = Instant::now();
    let (c, lease) = bound_client(t0, INFINITE_LEASE, &[]);
    assert_eq!(
        (lease.duration, lease.duration_secs()),
        (None, u64::from(u32::MAX))
    );
    assert_eq!(c.next_deadline(), None, "nothing to renew");
    let (_, lease) = bound_client(t0, 0, &[]);
    assert_eq!(lease.duration, Some(MIN_LEASE));
}

#[test]
fn masks_become_prefix_lengths() {
    let mask = |a, b, c, d| prefix_len(Ipv4Addr::new(a, b, c, d));
    assert_eq!(mask(255, 255, 255, 0), Some(24));
    assert_eq!(mask(255, 255, 255, 255), Some(32));
    assert_eq!(mask(255, 255, 255, 252), Some(30));
    assert_eq!(mask(255, 0, 0, 0), Some(8));
    assert_eq!(mask(0, 0, 0, 0), Some(0));
    assert_eq!(mask(255, 0, 255, 0), None);
    assert_eq!(mask(0, 255, 255, 255), None);
}

#[test]
fn without_a_mask_the_class_decides() {
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 9, t0);
    let (discover, _) = sent(&c.on_timer(t0));
    let opts = [
        DhcpOption::ServerIdentifier(SERVER),
        DhcpOption::AddressLeaseTime(600),
    ];
    let (request, _) = sent(
        &c.on_packet(&reply(&discover, MessageType::Offer, ADDRESS, &opts), t0)
            .unwrap(),
    );
    let lease = the_lease(
        &c.on_packet(&reply(&request, MessageType::Ack, ADDRESS, &opts), t0)
            .unwrap(),
    );
    assert_eq!(lease.prefix_len, 8, "10.x is class A");
    assert!(lease.routers.is_empty() && lease.dns.is_empty());
}

#[test]
fn malformed_and_foreign_packets_are_ignored() {
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 11, t0);
    let (discover, _) = sent(&c.on_timer(t0));
    let good = reply(
        &discover,
        MessageType::Offer,
        ADDRESS,
        &lease_options(SERVER, 600),
    );

    let check = |c: &mut Client, bytes: &[u8], expect: fn(&Ignored) -> bool| {
        let err = c.on_packet(bytes, t0).expect_err("must be ignored");
        assert!(expect(&err), "unexpected reason: {err}");
        assert_eq!(c.state().name(), "selecting", "state unchanged");
    };
    check(&mut c, &good[..100], |e| matches!(e, Ignored::Malformed(_)));
    check(&mut c, &[], |e| matches!(e, Ignored::Malformed(_)));
    let mut no_magic = good.clone();
    no_magic[236] = 0;
    check(&mut c, &no_magic, |e| matches!(e, Ignored::Malformed(_)));
    let mut request_op = good.clone();
    request_op[0] = 1;
    check(&mut c, &request_op, |e| matches!(e, Ignored::NotAReply(1)));
    let mut other_xid = good.clone();
    other_xid[4] ^= 0xff;
    check(&mut c, &other_xid, |e| {
        matches!(e, Ignored::OtherTransaction { .. })
    });
    // A hardware address length past chaddr's 16 bytes (dhcproto's chaddr() panicked on it).
    for hlen in [17, 48, 255] {
        let mut long_hlen = good.clone();
        long_hlen[2] = hlen;
        check(
            &mut c,
            &long_hlen,
            |e| matches!(e, Ignored::Malformed(m) if m.contains("hardware address length")),
        );
    }
    let mut other_mac = good.clone();
    other_mac[33] ^= 0xff;
    check(&mut c, &other_mac, |e| matches!(e, Ignored::OtherClient));
    let no_type = {
        let mut m = v4::Message::from_bytes(&good).unwrap();
        m.opts_mut().remove(OptionCode::MessageType);
        m.to_vec().unwrap()
    };
    check(&mut c, &no_type, |e| matches!(e, Ignored::Malformed(_)));
    let no_server = reply(
        &discover,
        MessageType::Offer,
        ADDRESS,
        &[DhcpOption::AddressLeaseTime(600)],
    );
    check(&mut c, &no_server, |e| {
        matches!(e, Ignored::Incomplete { .. })
    });
    let no_address = reply(
        &discover,
        MessageType::Offer,
        Ipv4Addr::UNSPECIFIED,
        &lease_options(SERVER, 600),
    );
    check(&mut c, &no_address, |e| {
        matches!(e, Ignored::Incomplete { .. })
    });
    let early_ack = reply(
        &discover,
        MessageType::Ack,
        ADDRESS,
        &lease_options(SERVER, 600),
    );
    check(&mut c, &early_ack, |e| {
        matches!(
            e,
            Ignored::Unexpected {
                state: "selecting",
                ..
            }
        )
    });

    // Noise never panics and never changes the state.
    let mut x: u32 = 12345;
    for len in 0..700 {
        let mut noise: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        if noise.len() > 240 {
            noise[236..240].copy_from_slice(&[99, 130, 83, 99]);
        }
        assert!(c.on_packet(&noise, t0).is_err());
    }
    // Nor do random options behind a header that is ours (they reach the option parsers).
    for len in 0..2000 {
        let mut packet = good[..240].to_vec();
        packet.extend((0..len % 300).map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        }));
        let _ = c.on_packet(&packet, t0);
        assert_eq!(c.state().name(), "selecting");
    }
    // The genuine offer still works afterwards.
    assert_eq!(
        msg_type(&sent(&c.on_packet(&good, t0).unwrap()).0),
        MessageType::Request
    );
}

#[test]
fn acks_that_cannot_be_used_are_ignored() {
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 13, t0);
    let (discover, _) = sent(&c.on_timer(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ADDRESS,
        &lease_options(SERVER, 600),
    );
    let (request, _) = sent(&c.on_packet(&offer, t0).unwrap());

    let from_other = reply(
        &request,
        MessageType::Ack,
        ADDRESS,
        &lease_options(OTHER_SERVER, 600),
    );
    assert!(matches!(
        c.on_packet(&from_other, t0),
        Err(Ignored::OtherServer { .. })
    ));
    let nak_from_other = reply(
        &request,
        MessageType::Nak,
        Ipv4Addr::UNSPECIFIED,
        &[DhcpOption::ServerIdentifier(OTHER_SERVER)],
    );
    assert!(matches!(
        c.on_packet(&nak_from_other, t0),
        Err(Ignored::OtherServer { .. })
    ));
    let no_lease_time = reply(
        &request,
        MessageType::Ack,
        ADDRESS,
        &[DhcpOption::ServerIdentifier(SERVER)],
    );
    assert!(matches!(
        c.on_packet(&no_lease_time, t0),
        Err(Ignored::Incomplete { .. })
    ));
    let mut bad_mask = lease_options(SERVER, 600);
    bad_mask.push(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
    let bad_mask = reply(&request, MessageType::Ack, ADDRESS, &bad_mask);
    assert!(matches!(
        c.on_packet(&bad_mask, t0),
        Err(Ignored::BadMask(_))
    ));
    let wrong_address = reply(
        &request,
        MessageType::Ack,
        Ipv4Addr::new(10, 0, 2, 99),
        &lease_options(SERVER, 600),
    );
    assert!(c.on_packet(&wrong_address, t0).is_err());
    let second_offer = reply(
        &request,
        MessageType::Offer,
        ADDRESS,
        &lease_options(OTHER_SERVER, 600),
    );
    assert!(matches!(
        c.on_packet(&second_offer, t0),
        Err(Ignored::Unexpected { .. })
    ));
    assert_eq!(c.state().name(), "requesting");

    let ack = reply(
        &request,
        MessageType::Ack,
        ADDRESS,
        &lease_options(SERVER, 600),
    );
    assert!(matches!(
        c.on_packet(&ack, t0).unwrap().as_slice(),
        [Action::Configure(_)]
    ));
    // A duplicate ACK once bound changes nothing.
    assert!(matches!(
        c.on_packet(&ack, t0),
        Err(Ignored::Unexpected { state: "bound", .. })
    ));
}
