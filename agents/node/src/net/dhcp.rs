//! The DHCPv4 client (RFC 2131) as a pure state machine: no socket, no clock and no
//! randomness of its own. The service feeds it the packets it receives and the timer expiries,
//! each with the current time, and carries out the [`Action`]s it returns.
//!
//! ```text
//! INIT ─DISCOVER─► SELECTING ─OFFER/REQUEST─► REQUESTING ─ACK─► BOUND
//!   ▲                                            │NAK             │ T1
//!   ├────────────────────────────────────────────┘                ▼
//!   ├──────────────── NAK ──────────────── RENEWING (unicast REQUEST to the server)
//!   │                                            │ T2
//!   └──────── NAK or lease expiry ───────── REBINDING (broadcast REQUEST)
//! ```
//!
//! Retransmission (RFC 2131 §4.1): DISCOVER and REQUEST are sent again after 4 s, 8 s, 16 s,
//! 32 s, then every 64 s, each delay randomized by ±1 s. A REQUEST that got no answer after
//! [`REQUEST_ATTEMPTS`] sends starts over from INIT. In RENEWING and REBINDING the REQUEST is
//! repeated after half the time left until T2, or until the lease ends, but at least 60 s
//! apart (§4.4.5). After a DHCPNAK the client waits 1 s, 2 s, 4 s … (at most 64 s, reset once
//! bound) before it starts over, so that a server that keeps refusing cannot make it flood the
//! link.

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// Delay before the first retransmission of a DISCOVER or REQUEST.
pub const FIRST_RETRANSMIT: Duration = Duration::from_secs(4);
/// The retransmission delay doubles up to this.
pub const MAX_RETRANSMIT: Duration = Duration::from_secs(64);
/// Each retransmission delay is moved by a uniform random amount in ±this.
pub const RETRANSMIT_JITTER: Duration = Duration::from_secs(1);
/// How many times a REQUEST (REQUESTING state) is sent before starting over.
pub const REQUEST_ATTEMPTS: u32 = 5;
/// Shortest wait between REQUESTs in RENEWING and REBINDING.
pub const MIN_RENEW_RETRANSMIT: Duration = Duration::from_secs(60);
/// A lease shorter than this is treated as this long, so a bad server cannot make the
/// client renew in a tight loop.
pub const MIN_LEASE: Duration = Duration::from_secs(10);
/// Lease time meaning "forever" (RFC 2132 §9.2).
pub const INFINITE_LEASE: u32 = u32::MAX;
/// DHCP messages are padded to the BOOTP minimum (RFC 1542 §2.1).
const MIN_MESSAGE_LEN: usize = 300;
/// Fixed BOOTP header plus the magic cookie.
const HEADER_LEN: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The BOOTP header's client hardware address field.
const CHADDR_LEN: usize = 16;

/// A lease the server acknowledged: everything the node configures from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The server identifier: renewals are unicast to it.
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// `None` for an infinite lease.
    pub duration: Option<Duration>,
    /// T1 and T2, counted from `start`.
    pub renew_after: Duration,
    pub rebind_after: Duration,
    /// When the REQUEST that obtained this lease was first sent (RFC 2131 §4.4.1).
    pub start: Instant,
}

impl Lease {
    pub fn renew_at(&self) -> Option<Instant> {
        self.duration.map(|_| self.start + self.renew_after)
    }
    pub fn rebind_at(&self) -> Option<Instant> {
        self.duration.map(|_| self.start + self.rebind_after)
    }
    pub fn expires_at(&self) -> Option<Instant> {
        self.duration.map(|d| self.start + d)
    }
    /// Lease time in seconds as the server gave it (`u32::MAX`: infinite).
    pub fn duration_secs(&self) -> u64 {
        self.duration
            .map_or(u64::from(INFINITE_LEASE), |d| d.as_secs())
    }
}

/// An offer the client chose (the first valid one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting until `restart_at` to send a DISCOVER.
    Init {
        restart_at: Instant,
    },
    /// DISCOVER sent, waiting for an OFFER.
    Selecting,
    /// REQUEST for `offer` sent, waiting for ACK or NAK.
    Requesting {
        offer: Offer,
    },
    Bound {
        lease: Lease,
    },
    /// Past T1: REQUEST unicast to the lease's server.
    Renewing {
        lease: Lease,
    },
    /// Past T2: REQUEST broadcast to any server.
    Rebinding {
        lease: Lease,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Init { .. } => "init",
            State::Selecting => "selecting",
            State::Requesting { .. } => "requesting",
            State::Bound { .. } => "bound",
            State::Renewing { .. } => "renewing",
            State::Rebinding { .. } => "rebinding",
        }
    }

    pub fn lease(&self) -> Option<&Lease> {
        match self {
            State::Bound { lease } | State::Renewing { lease } | State::Rebinding { lease } => {
                Some(lease)
            }
            _ => None,
        }
    }
}

/// Where a packet goes: 255.255.255.255:67 or the server's unicast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Broadcast,
    Server(Ipv4Addr),
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        kind: MessageType,
        packet: Vec<u8>,
        to: Destination,
    },
    /// A new lease: add its address, routes and DNS.
    Configure(Lease),
    /// The same address for longer: nothing to change on the link.
    Renewed(Lease),
    /// The lease is gone: remove its address and routes.
    Deconfigure { lease: Lease, reason: &'static str },
}

/// Why a received packet was not acted on (it is dropped; the client's state is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("malformed DHCP packet: {0}")]
    Malformed(String),
    #[error("not a reply (op {0})")]
    NotAReply(u8),
    #[error("transaction {got:#010x} is not ours ({ours:#010x})")]
    OtherTransaction { got: u32, ours: u32 },
    #[error("addressed to another client")]
    OtherClient,
    #[error("{kind:?} is not expected in state {state}")]
    Unexpected {
        kind: MessageType,
        state: &'static str,
    },
    #[error("{kind:?} from {server}, not from the server we are talking to ({expected})")]
    OtherServer {
        kind: MessageType,
        server: Ipv4Addr,
        expected: Ipv4Addr,
    },
    #[error("{kind:?} is missing {what}")]
    Incomplete {
        kind: MessageType,
        what: &'static str,
    },
    #[error("subnet mask {0} is not a contiguous prefix")]
    BadMask(Ipv4Addr),
}

/// Retransmission bookkeeping for the packet in flight.
#[derive(Debug, Clone, Copy)]
struct Retransmit {
    at: Instant,
    /// How many times the packet was sent so far.
    sent: u32,
}

pub struct Client {
    mac: [u8; 6],
    rng: SplitMix64,
    state: State,
    xid: u32,
    /// Start of the current exchange; the `secs` field counts from here.
    exchange_start: Instant,
    /// When the first REQUEST of the current exchange was sent; a lease counts from it.
    request_start: Instant,
    retransmit: Option<Retransmit>,
    /// DHCPNAKs since the last lease: the restart delay doubles with each.
    naks: u32,
}

impl Client {
    /// A client for the interface with hardware address `mac`; `seed` feeds transaction ids
    /// and jitter (pass real randomness outside tests). It sends its first DISCOVER on the
    /// first [`Client::on_timer`].
    pub fn new(mac: [u8; 6], seed: u64, now: Instant) -> Self {
        let mut rng = SplitMix64(seed);
        let xid = rng.next_u32();
        Client {
            mac,
            rng,
            state: State::Init { restart_at: now },
            xid,
            exchange_start: now,
            request_start: now,
            retransmit: None,
            naks: 0,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// When [`Client::on_timer`] must be called next; `None` while bound to an infinite lease.
    pub fn next_deadline(&self) -> Option<Instant> {
        let retransmit = self.retransmit.map(|r| r.at);
        match &self.state {
            State::Init { restart_at } => Some(*restart_at),
            State::Selecting | State::Requesting { .. } => retransmit,
            State::Bound { lease } => lease.renew_at(),
            State::Renewing { lease } => earliest(retransmit, lease.rebind_at()),
            State::Rebinding { lease } => earliest(retransmit, lease.expires_at()),
        }
    }

    /// Handles every timer that is due at `now` (none if called early).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let due = |at: Option<Instant>| at.is_some_and(|t| now >= t);
        let retransmit_due = due(self.retransmit.map(|r| r.at));
        match self.state.clone() {
            State::Init { restart_at } if now >= restart_at => self.discover(now),
            State::Selecting if retransmit_due => self.send_discover(now),
            State::Requesting { offer } if retransmit_due => {
                if self.retransmit.is_some_and(|r| r.sent >= REQUEST_ATTEMPTS) {
                    // No answer from the server we chose: start over.
                    self.discover(now)
                } else {
                    self.send_request(now, offer)
                }
            }
            State::Bound { lease } | State::Renewing { lease } | State::Rebinding { lease }
                if due(lease.expires_at()) =>
            {
                let mut actions = vec![Action::Deconfigure {
                    lease,
                    reason: "lease expired",
                }];
                actions.extend(self.discover(now));
                actions
            }
            State::Bound { lease } | State::Renewing { lease } if due(lease.rebind_at()) => {
                self.state = State::Rebinding { lease };
                self.start_exchange(now);
                self.send_renewal(now)
            }
            State::Bound { lease } if due(lease.renew_at()) => {
                self.state = State::Renewing { lease };
                self.start_exchange(now);
                self.send_renewal(now)
            }
            State::Renewing { .. } | State::Rebinding { .. } if retransmit_due => {
                self.send_renewal(now)
            }
            _ => Vec::new(),
        }
    }

    /// Handles one received UDP payload. Packets that are malformed, for another client or
    /// transaction, or unexpected in the current state are ignored with the reason.
    pub fn on_packet(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Action>, Ignored> {
        let msg = self.decode_reply(bytes)?;
        let kind = msg
            .opts()
            .msg_type()
            .ok_or(Ignored::Malformed("no message type option".into()))?;
        let server = server_id(&msg);
        match (self.state.clone(), kind) {
            (State::Selecting, MessageType::Offer) => {
                let address = msg.yiaddr();
                let server = server.ok_or(Ignored::Incomplete {
                    kind,
                    what: "a server identifier",
                })?;
                if address.is_unspecified() {
                    return Err(Ignored::Incomplete {
                        kind,
                        what: "an address (yiaddr)",
                    });
                }
                let offer = Offer { address, server };
                self.state = State::Requesting { offer };
                self.retransmit = None;
                self.request_start = now;
                Ok(self.send_request(now, offer))
            }
            (State::Requesting { offer }, MessageType::Ack) => {
                check_server(kind, server, offer.server)?;
                if msg.yiaddr() != offer.address {
                    return Err(Ignored::Incomplete {
                        kind,
                        what: "the offered address",
                    });
                }
                let lease = lease_from_ack(&msg, offer.server, self.request_start)?;
                Ok(self.bind(lease))
            }
            (
                State::Renewing { lease: old } | State::Rebinding { lease: old },
                MessageType::Ack,
            ) => {
                if matches!(self.state, State::Renewing { .. }) {
                    check_server(kind, server, old.server)?;
                }
                let lease = lease_from_ack(&msg, old.server, self.request_start)?;
                if lease.address == old.address && lease.prefix_len == old.prefix_len {
                    self.bind(lease.clone());
                    Ok(vec![Action::Renewed(lease)])
                } else {
                    let mut actions = vec![Action::Deconfigure {
                        lease: old,
                        reason: "server gave a different address",
                    }];
                    actions.extend(self.bind(lease));
                    Ok(actions)
                }
            }
            (State::Requesting { offer }, MessageType::Nak) => {
                check_server(kind, server, offer.server)?;
                Ok(self.nak(now))
            }
            (State::Renewing { lease } | State::Rebinding { lease }, MessageType::Nak) => {
                if matches!(self.state, State::Renewing { .. }) {
                    check_server(kind, server, lease.server)?;
                }
                let mut actions = vec![Action::Deconfigure {
                    lease,
                    reason: "server refused the renewal (DHCPNAK)",
                }];
                actions.extend(self.nak(now));
                Ok(actions)
            }
            (state, kind) => Err(Ignored::Unexpected {
                kind,
                state: state.name(),
            }),
        }
    }

    fn bind(&mut self, lease: Lease) -> Vec<Action> {
        self.state = State::Bound {
            lease: lease.clone(),
        };
        self.retransmit = None;
        self.naks = 0;
        vec![Action::Configure(lease)]
    }

    fn nak(&mut self, now: Instant) -> Vec<Action> {
        let delay = Duration::from_secs(1 << self.naks.min(6)).min(MAX_RETRANSMIT);
        self.naks += 1;
        self.state = State::Init {
            restart_at: now + delay,
        };
        self.retransmit = None;
        Vec::new()
    }

    /// Starts a new acquisition: SELECTING with a fresh transaction.
    fn discover(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Selecting;
        self.start_exchange(now);
        self.send_discover(now)
    }

    fn start_exchange(&mut self, now: Instant) {
        self.xid = self.rng.next_u32();
        self.exchange_start = now;
        self.request_start = now;
        self.retransmit = None;
    }

    fn send_discover(&mut self, now: Instant) -> Vec<Action> {
        self.schedule_backoff(now);
        let packet = self.build(MessageType::Discover, now, None, None, None);
        vec![send(MessageType::Discover, packet, Destination::Broadcast)]
    }

    fn send_request(&mut self, now: Instant, offer: Offer) -> Vec<Action> {
        self.schedule_backoff(now);
        let packet = self.build(
            MessageType::Request,
            now,
            None,
            Some(offer.address),
            Some(offer.server),
        );
        vec![send(MessageType::Request, packet, Destination::Broadcast)]
    }

    /// RENEWING: unicast to the server; REBINDING: broadcast. Both carry ciaddr and neither
    /// the requested-address nor the server-identifier option (RFC 2131 §4.3.2).
    fn send_renewal(&mut self, now: Instant) -> Vec<Action> {
        let (lease, until, to) = match &self.state {
            State::Renewing { lease } => {
                (lease, lease.rebind_at(), Destination::Server(lease.server))
            }
            State::Rebinding { lease } => (lease, lease.expires_at(), Destination::Broadcast),
            _ => return Vec::new(),
        };
        let address = lease.address;
        let left = until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let sent = self.retransmit.map_or(0, |r| r.sent);
        self.retransmit = Some(Retransmit {
            at: now + (left / 2).max(MIN_RENEW_RETRANSMIT),
            sent: sent + 1,
        });
        let packet = self.build(MessageType::Request, now, Some(address), None, None);
        vec![send(MessageType::Request, packet, to)]
    }

    /// Next retransmission: 4 s doubling to 64 s, ±1 s.
    fn schedule_backoff(&mut self, now: Instant) {
        let sent = self.retransmit.map_or(0, |r| r.sent);
        let base = FIRST_RETRANSMIT
            .saturating_mul(1 << sent.min(5))
            .min(MAX_RETRANSMIT);
        let jitter_ms = RETRANSMIT_JITTER.as_millis() as u64;
        let offset = self.rng.below(2 * jitter_ms + 1);
        let delay = base + Duration::from_millis(offset) - RETRANSMIT_JITTER;
        self.retransmit = Some(Retransmit {
            at: now + delay,
            sent: sent + 1,
        });
    }

    fn build(
        &self,
        kind: MessageType,
        now: Instant,
        ciaddr: Option<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
    ) -> Vec<u8> {
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let mut msg = v4::Message::new_with_id(
            self.xid,
            ciaddr.unwrap_or(unspecified),
            unspecified,
            unspecified,
            unspecified,
            &self.mac,
        );
        // Without an address the reply must be broadcast: an unconfigured interface does not
        // receive unicast to the offered address.
        if ciaddr.is_none() {
            msg.set_flags(v4::Flags::default().set_broadcast());
        }
        let secs = now.saturating_duration_since(self.exchange_start).as_secs();
        msg.set_secs(u16::try_from(secs).unwrap_or(u16::MAX));
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8]; // hardware type: Ethernet
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::MaxMessageSize(1500));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::DomainName,
            OptionCode::InterfaceMtu,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        if let Some(address) = requested {
            opts.insert(DhcpOption::RequestedIpAddress(address));
        }
        if let Some(server) = server {
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
        let mut packet = msg
            .to_vec()
            .expect("a DHCP request built from fixed options always encodes");
        if packet.len() < MIN_MESSAGE_LEN {
            packet.resize(MIN_MESSAGE_LEN, 0);
        }
        packet
    }

    fn decode_reply(&self, bytes: &[u8]) -> Result<v4::Message, Ignored> {
        if bytes.len() < HEADER_LEN {
            return Err(Ignored::Malformed(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if bytes[236..240] != MAGIC_COOKIE {
            return Err(Ignored::Malformed("no DHCP magic cookie".into()));
        }
        // dhcproto's chaddr() slices its 16-byte field by the packet's hlen: a reply claiming
        // more than 16 would panic there (found by fuzzing; any host on the link can send it).
        let hlen = bytes[2];
        if usize::from(hlen) > CHADDR_LEN {
            return Err(Ignored::Malformed(format!(
                "hardware address length {hlen}, more than the {CHADDR_LEN}-byte chaddr field"
            )));
        }
        // dhcproto checks some option lengths with debug_assert! and subtracts from others
        // unchecked: a panic while decoding a packet off the wire is a malformed packet.
        let msg = match std::panic::catch_unwind(|| v4::Message::from_bytes(bytes)) {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => return Err(Ignored::Malformed(e.to_string())),
            Err(_) => return Err(Ignored::Malformed("inconsistent option lengths".into())),
        };
        if msg.opcode() != v4::Opcode::BootReply {
            return Err(Ignored::NotAReply(u8::from(msg.opcode())));
        }
        if msg.xid() != self.xid {
            return Err(Ignored::OtherTransaction {
                got: msg.xid(),
                ours: self.xid,
            });
        }
        if msg.chaddr().get(..6) != Some(&self.mac[..]) {
            return Err(Ignored::OtherClient);
        }
        Ok(msg)
    }
}

fn send(kind: MessageType, packet: Vec<u8>, to: Destination) -> Action {
    Action::Send { kind, packet, to }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn server_id(msg: &v4::Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn check_server(
    kind: MessageType,
    server: Option<Ipv4Addr>,
    expected: Ipv4Addr,
) -> Result<(), Ignored> {
    match server {
        Some(server) if server != expected => Err(Ignored::OtherServer {
            kind,
            server,
            expected,
        }),
        _ => Ok(()),
    }
}

/// The lease a DHCPACK grants, counted from `start`. `server` is used when the ACK carries no
/// server identifier.
pub fn lease_from_ack(
    msg: &v4::Message,
    server: Ipv4Addr,
    start: Instant,
) -> Result<Lease, Ignored> {
    let kind = MessageType::Ack;
    let opts = msg.opts();
    let address = msg.yiaddr();
    if address.is_unspecified() {
        return Err(Ignored::Incomplete {
            kind,
            what: "an address (yiaddr)",
        });
    }
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => prefix_len(*mask).ok_or(Ignored::BadMask(*mask))?,
        _ => classful_prefix_len(address),
    };
    let seconds = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => *s,
        _ => {
            return Err(Ignored::Incomplete {
                kind,
                what: "the lease time option",
            })
        }
    };
    let duration =
        (seconds != INFINITE_LEASE).then(|| Duration::from_secs(seconds.into()).max(MIN_LEASE));
    let lease_len = duration.unwrap_or(Duration::MAX);
    let secs_option = |code| match opts.get(code) {
        Some(DhcpOption::Renewal(s)) | Some(DhcpOption::Rebinding(s)) => {
            Some(Duration::from_secs((*s).into()))
        }
        _ => None,
    };
    // T1 defaults to half the lease and T2 to 7/8 (RFC 2131 §4.4.5); server values are used
    // only when they are in order (T1 < T2 < lease).
    let (mut renew_after, mut rebind_after) = (lease_len / 2, lease_len / 8 * 7);
    if let Some(t2) = secs_option(OptionCode::Rebinding).filter(|t2| *t2 < lease_len) {
        rebind_after = t2;
    }
    if let Some(t1) = secs_option(OptionCode::Renewal).filter(|t1| *t1 < rebind_after) {
        renew_after = t1;
    }
    if renew_after >= rebind_after {
        renew_after = rebind_after / 8 * 7;
    }
    let ips = |code| match opts.get(code) {
        Some(DhcpOption::Router(v)) | Some(DhcpOption::DomainNameServer(v)) => v.clone(),
        _ => Vec::new(),
    };
    let text = |code| match opts.get(code) {
        Some(DhcpOption::Hostname(s)) | Some(DhcpOption::DomainName(s)) => {
            let s = s.trim_end_matches('\0').trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        _ => None,
    };
    Ok(Lease {
        address,
        prefix_len,
        server: server_id(msg).unwrap_or(server),
        routers: ips(OptionCode::Router),
        dns: ips(OptionCode::DomainNameServer),
        domain: text(OptionCode::DomainName),
        hostname: text(OptionCode::Hostname),
        mtu: match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m >= 68 => Some(*m),
            _ => None,
        },
        duration,
        renew_after,
        rebind_after,
        start,
    })
}

/// Prefix length of a subnet mask; `None` unless the one bits are contiguous.
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The historical class-based prefix, for a server that sends no subnet mask.
fn classful_prefix_len(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// SplitMix64: small, seedable, good enough for transaction ids and jitter.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in `0..n` (n > 0; the modulo bias is negligible for small n).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
