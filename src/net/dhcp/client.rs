//! The DHCP client state machine (RFC 2131 §4.4): DISCOVER → OFFER → REQUEST → ACK, with
//! retransmission, a bound on the whole exchange, and a bounded number of restarts after a
//! NAK. Pure: the network and the clock are behind [`Transport`].

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::packet::{MessageType, Packet, Reply};

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpPolicy {
    /// Bound on the whole exchange.
    pub total: Duration,
    /// The wait after the first message; doubled after each retransmission…
    pub first_timeout: Duration,
    /// …up to this.
    pub max_timeout: Duration,
    /// Each wait is moved by a random amount within ± this, so that clients booted together
    /// do not retransmit in lockstep.
    pub jitter: Duration,
    /// REQUESTs sent for one offer before starting over with a DISCOVER.
    pub request_tries: u32,
    /// NAKs accepted (each one starts over) before giving up.
    pub max_naks: u32,
    /// Sent as option 12, so that the server can register the name.
    pub hostname: Option<String>,
}

impl Default for DhcpPolicy {
    fn default() -> Self {
        Self {
            total: Duration::from_secs(30),
            first_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(8),
            jitter: Duration::from_millis(100),
            request_tries: 4,
            max_naks: 3,
            hostname: None,
        }
    }
}

/// Datagrams to the server(s) and back, and the time.
pub trait Transport {
    fn now(&self) -> Instant;
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
    /// One datagram into `buf`, or `None` once `deadline` has passed.
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no offer after {} in {} s", crate::text::plural(.tries, "try"), crate::text::tenths(*.secs))]
    NoOffer { tries: u32, secs: f64 },
    #[error("server {server} offered {address} but did not acknowledge it ({}); no lease after {} s", crate::text::plural(.requests, "request"), crate::text::tenths(*.secs))]
    NoAck {
        server: Ipv4Addr,
        address: Ipv4Addr,
        requests: u32,
        secs: f64,
    },
    #[error("server {server} declined (NAK): {message}")]
    Nak { server: Ipv4Addr, message: String },
    #[error("cannot send the {kind}: {source}")]
    Send {
        kind: MessageType,
        source: io::Error,
    },
    #[error("cannot receive replies: {0}")]
    Receive(io::Error),
}

/// xorshift64*: jitter and transaction ids need to differ between clients, not to be secret.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

/// The accepted offer.
struct Offer {
    address: Ipv4Addr,
    server: Ipv4Addr,
}

enum Answer {
    Ack(Box<Reply>),
    Nak(String),
}

struct Client<'a, T> {
    t: &'a mut T,
    mac: [u8; 6],
    policy: &'a DhcpPolicy,
    rng: Rng,
    start: Instant,
    end: Instant,
    discovers: u32,
    buf: Vec<u8>,
}

/// Runs the exchange and returns the server's ACK. Its `server_id` is always set.
/// `seed` makes the transaction ids and jitter (use a random value).
pub fn run<T: Transport>(
    t: &mut T,
    mac: [u8; 6],
    policy: &DhcpPolicy,
    seed: u64,
) -> Result<Reply, ClientError> {
    let start = t.now();
    let mut c = Client {
        t,
        mac,
        policy,
        rng: Rng(seed | 1), // xorshift must not start at 0
        start,
        end: start + policy.total,
        discovers: 0,
        buf: vec![0; 4096],
    };
    let mut naks = 0;
    loop {
        // A fresh transaction each time round: late answers to the old one are ignored.
        let xid = c.rng.next();
        let offer = c.select(xid)?;
        log::debug!("DHCP: {} offers {}", offer.server, offer.address);
        match c.request(xid, &offer)? {
            Some(Answer::Ack(mut reply)) => {
                reply.server_id.get_or_insert(offer.server);
                return Ok(*reply);
            }
            Some(Answer::Nak(message)) => {
                naks += 1;
                log::debug!("DHCP: {} sent NAK {naks}: {message}", offer.server);
                if naks > c.policy.max_naks {
                    return Err(ClientError::Nak {
                        server: offer.server,
                        message,
                    });
                }
            }
            None => log::debug!("DHCP: no answer from {}, starting over", offer.server),
        }
    }
}

impl<T: Transport> Client<'_, T> {
    fn secs(&self) -> u16 {
        let s = self.t.now().saturating_duration_since(self.start).as_secs();
        s.min(u16::MAX.into()) as u16
    }

    fn elapsed(&self) -> f64 {
        self.t
            .now()
            .saturating_duration_since(self.start)
            .as_secs_f64()
    }

    /// The wait after the `n`th transmission (0-based): exponential, capped, jittered.
    fn timeout(&mut self, n: u32) -> Duration {
        let p = self.policy;
        let base = p
            .first_timeout
            .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .min(p.max_timeout);
        let j = p.jitter.as_micros() as u64;
        if j == 0 {
            return base;
        }
        let offset = u64::from(self.rng.next()) % (2 * j + 1);
        (base + Duration::from_micros(offset)).saturating_sub(p.jitter)
    }

    /// Sends DISCOVERs until a usable OFFER arrives.
    fn select(&mut self, xid: u32) -> Result<Offer, ClientError> {
        let mut n = 0;
        while self.t.now() < self.end {
            let hostname = self.policy.hostname.as_deref();
            let p = Packet::discover(xid, self.secs(), self.mac, hostname);
            self.send(MessageType::Discover, &p)?;
            self.discovers += 1;
            let deadline = self.deadline(n);
            n += 1;
            // The first acceptable offer wins: servers that answer later are not waited for.
            let offer = self.receive(xid, deadline, |r| match (r.kind, r.server_id) {
                (MessageType::Offer, Some(server)) if !r.yiaddr.is_unspecified() => Some(Offer {
                    address: r.yiaddr,
                    server,
                }),
                _ => None,
            })?;
            if let Some(offer) = offer {
                return Ok(offer);
            }
        }
        Err(ClientError::NoOffer {
            tries: self.discovers,
            secs: self.elapsed(),
        })
    }

    /// Requests the offered address; `None` when the server stays silent.
    fn request(&mut self, xid: u32, offer: &Offer) -> Result<Option<Answer>, ClientError> {
        let mut sent = 0;
        for n in 0..self.policy.request_tries {
            if self.t.now() >= self.end {
                break;
            }
            let hostname = self.policy.hostname.as_deref();
            let p = Packet::request(
                xid,
                self.secs(),
                self.mac,
                offer.address,
                offer.server,
                hostname,
            );
            self.send(MessageType::Request, &p)?;
            sent += 1;
            let deadline = self.deadline(n);
            // Only the chosen server answers for it; an ACK or NAK from another is not ours.
            let answer = self.receive(xid, deadline, |r| {
                if r.server_id.is_some_and(|s| s != offer.server) {
                    return None;
                }
                match r.kind {
                    MessageType::Ack if !r.yiaddr.is_unspecified() => {
                        Some(Answer::Ack(Box::new(r)))
                    }
                    MessageType::Nak => Some(Answer::Nak(
                        r.message.unwrap_or_else(|| "no reason given".into()),
                    )),
                    _ => None,
                }
            })?;
            if answer.is_some() {
                return Ok(answer);
            }
        }
        if self.t.now() >= self.end {
            return Err(ClientError::NoAck {
                server: offer.server,
                address: offer.address,
                requests: sent,
                secs: self.elapsed(),
            });
        }
        Ok(None)
    }

    fn deadline(&mut self, n: u32) -> Instant {
        (self.t.now() + self.timeout(n)).min(self.end)
    }

    fn send(&mut self, kind: MessageType, p: &Packet) -> Result<(), ClientError> {
        log::debug!(
            "DHCP: sending {kind} (xid {:#010x}, secs {})",
            p.xid,
            p.secs
        );
        self.t
            .send(&p.encode())
            .map_err(|source| ClientError::Send { kind, source })
    }

    /// Waits until `deadline` for a reply to `xid` that `accept` takes. Everything else (other
    /// transactions, other clients, garbage) is skipped.
    fn receive<R>(
        &mut self,
        xid: u32,
        deadline: Instant,
        mut accept: impl FnMut(Reply) -> Option<R>,
    ) -> Result<Option<R>, ClientError> {
        while let Some(n) = self
            .t
            .recv(&mut self.buf, deadline)
            .map_err(ClientError::Receive)?
        {
            match Reply::decode(&self.buf[..n], xid, self.mac) {
                Ok(r) => {
                    let (kind, server) = (r.kind, r.server_id);
                    match accept(r) {
                        Some(v) => return Ok(Some(v)),
                        None => log::debug!("DHCP: ignoring {kind} from {server:?}"),
                    }
                }
                Err(e) => log::debug!("DHCP: ignoring a datagram: {e}"),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dhcp::packet::{self, OPT_MESSAGE_TYPE, OPT_REQUESTED_IP, OPT_SERVER_ID};
    use std::collections::VecDeque;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const S1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const S2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A network with virtual time: `server` sees each packet the client sends (and its index)
    /// and returns the datagrams it answers with. Waiting for nothing jumps to the deadline; a
    /// datagram takes 1 ms.
    struct Fake<F> {
        start: Instant,
        now: Instant,
        /// (milliseconds since the start, packet)
        sent: Vec<(u128, Packet)>,
        queue: VecDeque<Vec<u8>>,
        server: F,
    }

    impl<F: FnMut(&Packet, usize) -> Vec<Vec<u8>>> Fake<F> {
        fn new(server: F) -> Self {
            let start = Instant::now();
            Self {
                start,
                now: start,
                sent: Vec::new(),
                queue: VecDeque::new(),
                server,
            }
        }
        fn kinds(&self) -> Vec<MessageType> {
            self.sent
                .iter()
                .map(|(_, p)| p.message_type().unwrap())
                .collect()
        }
        fn times(&self) -> Vec<u128> {
            self.sent.iter().map(|(t, _)| *t).collect()
        }
    }

    impl<F: FnMut(&Packet, usize) -> Vec<Vec<u8>>> Transport for Fake<F> {
        fn now(&self) -> Instant {
            self.now
        }
        fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
            let p = Packet::parse(bytes).expect("the client sends valid packets");
            let t = (self.now - self.start).as_millis();
            self.sent.push((t, p.clone()));
            let answers = (self.server)(&p, self.sent.len() - 1);
            self.queue.extend(answers);
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
            assert!(deadline > self.now, "waits must move forward");
            match self.queue.pop_front() {
                Some(d) => {
                    self.now += Duration::from_millis(1);
                    buf[..d.len()].copy_from_slice(&d);
                    Ok(Some(d.len()))
                }
                None => {
                    self.now = deadline;
                    Ok(None)
                }
            }
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// What a server at `server` answers to `req` with `kind`, offering `addr`.
    fn answer(req: &Packet, kind: MessageType, server: Ipv4Addr, addr: &str) -> Vec<u8> {
        let mut options = vec![
            (OPT_MESSAGE_TYPE, vec![kind as u8]),
            (OPT_SERVER_ID, server.octets().to_vec()),
        ];
        if kind == MessageType::Nak {
            options.push((packet::OPT_MESSAGE, b"wrong network".to_vec()));
        } else {
            options.push((packet::OPT_SUBNET_MASK, vec![255, 255, 255, 0]));
            options.push((packet::OPT_ROUTER, server.octets().to_vec()));
        }
        Packet {
            op: 2,
            xid: req.xid,
            secs: 0,
            flags: req.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: if kind == MessageType::Nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                ip(addr)
            },
            siaddr: server,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: req.chaddr,
            sname: None,
            file: None,
            options,
        }
        .encode()
    }

    /// A well-behaved server at S1 offering `addr`.
    fn good(req: &Packet, addr: &str) -> Vec<Vec<u8>> {
        match req.message_type() {
            Some(MessageType::Discover) => vec![answer(req, MessageType::Offer, S1, addr)],
            Some(MessageType::Request) => vec![answer(req, MessageType::Ack, S1, addr)],
            _ => vec![],
        }
    }

    fn quiet() -> DhcpPolicy {
        DhcpPolicy {
            jitter: Duration::ZERO,
            ..DhcpPolicy::default()
        }
    }

    #[test]
    fn discover_offer_request_ack() {
        let mut net = Fake::new(|p: &Packet, _| good(p, "10.0.0.50"));
        let policy = DhcpPolicy {
            hostname: Some("node7".into()),
            ..quiet()
        };
        let ack = run(&mut net, MAC, &policy, 42).unwrap();
        assert_eq!(ack.kind, MessageType::Ack);
        assert_eq!(ack.yiaddr, ip("10.0.0.50"));
        assert_eq!(ack.server_id, Some(S1));
        assert_eq!(ack.routers, vec![S1]);
        assert_eq!(net.kinds(), [MessageType::Discover, MessageType::Request]);
        let (d, r) = (&net.sent[0].1, &net.sent[1].1);
        assert_eq!(d.xid, r.xid, "the REQUEST carries the offer's transaction");
        assert_eq!(r.option(OPT_REQUESTED_IP), Some(&[10, 0, 0, 50][..]));
        assert_eq!(r.option(OPT_SERVER_ID), Some(&S1.octets()[..]));
        assert_eq!(r.option(packet::OPT_HOSTNAME), Some(&b"node7"[..]));
        assert_eq!(d.flags, packet::FLAG_BROADCAST);
        assert_eq!(d.chaddr, MAC);
    }

    #[test]
    fn silence_backs_off_exponentially_until_the_bound() {
        let mut net = Fake::new(|_: &Packet, _| vec![]);
        let err = run(&mut net, MAC, &quiet(), 1).unwrap_err();
        // 1, 2, 4, 8, then capped at 8 until 30 s.
        assert_eq!(net.times(), [0, 1000, 3000, 7000, 15000, 23000]);
        assert!(net.kinds().iter().all(|k| *k == MessageType::Discover));
        assert_eq!(err.to_string(), "no offer after 6 tries in 30.0 s");
        assert_eq!(
            net.now - net.start,
            Duration::from_secs(30),
            "never waits past the bound"
        );
        let xids: Vec<u32> = net.sent.iter().map(|(_, p)| p.xid).collect();
        assert!(
            xids.iter().all(|x| *x == xids[0]),
            "retransmissions keep the xid"
        );
    }

    #[test]
    fn jitter_stays_within_its_bound_and_varies() {
        let mut net = Fake::new(|_: &Packet, _| vec![]);
        let policy = DhcpPolicy {
            total: Duration::from_secs(16),
            jitter: Duration::from_millis(250),
            ..DhcpPolicy::default()
        };
        run(&mut net, MAC, &policy, 99).unwrap_err();
        let t = net.times();
        let gaps: Vec<u128> = t.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, base) in gaps.iter().zip([1000, 2000, 4000, 8000]) {
            assert!(gap.abs_diff(base) <= 250, "{gaps:?}");
        }
        assert!(
            gaps.iter().zip([1000, 2000, 4000]).any(|(g, b)| *g != b),
            "{gaps:?}"
        );
        // The seed changes the transaction id.
        let mut other = Fake::new(|_: &Packet, _| vec![]);
        run(&mut other, MAC, &policy, 100).unwrap_err();
        assert_ne!(net.sent[0].1.xid, other.sent[0].1.xid);
    }

    #[test]
    fn lost_packets_are_retransmitted() {
        // The first two DISCOVERs and the first REQUEST are lost.
        let mut net = Fake::new(|p: &Packet, i| {
            if [0, 1, 3].contains(&i) {
                vec![]
            } else {
                good(p, "10.0.0.51")
            }
        });
        let ack = run(&mut net, MAC, &quiet(), 7).unwrap();
        assert_eq!(ack.yiaddr, ip("10.0.0.51"));
        use MessageType::*;
        assert_eq!(
            net.kinds(),
            [Discover, Discover, Discover, Request, Request]
        );
        assert_eq!(net.times(), [0, 1000, 3000, 3001, 4001]);
    }

    #[test]
    fn replies_for_other_transactions_and_clients_are_ignored() {
        let mut net = Fake::new(|p: &Packet, _| {
            let mut other_xid = p.clone();
            other_xid.xid ^= 1;
            let mut other_mac = p.clone();
            other_mac.chaddr = [2, 0, 0, 0, 0, 8];
            let kind = if p.message_type() == Some(MessageType::Discover) {
                MessageType::Offer
            } else {
                MessageType::Ack
            };
            let mut out = vec![
                answer(&other_xid, kind, S1, "10.0.0.66"),
                answer(&other_mac, kind, S1, "10.0.0.67"),
                b"not dhcp at all".to_vec(),
                Packet::discover(p.xid, 0, MAC, None).encode(), // our own broadcast, looped
            ];
            out.extend(good(p, "10.0.0.52"));
            out
        });
        let ack = run(&mut net, MAC, &quiet(), 3).unwrap();
        assert_eq!(ack.yiaddr, ip("10.0.0.52"));
        assert_eq!(net.kinds(), [MessageType::Discover, MessageType::Request]);
    }

    #[test]
    fn first_offer_wins_and_other_servers_are_ignored() {
        let mut net = Fake::new(|p: &Packet, _| match p.message_type() {
            Some(MessageType::Discover) => vec![
                answer(p, MessageType::Offer, S2, "10.0.0.90"),
                answer(p, MessageType::Offer, S1, "10.0.0.53"),
            ],
            // S1 answers first, but the client chose S2: only S2's answer counts.
            Some(MessageType::Request) => vec![
                answer(p, MessageType::Nak, S1, ""),
                answer(p, MessageType::Ack, S1, "10.0.0.53"),
                answer(p, MessageType::Ack, S2, "10.0.0.90"),
            ],
            _ => vec![],
        });
        let ack = run(&mut net, MAC, &quiet(), 5).unwrap();
        assert_eq!((ack.yiaddr, ack.server_id), (ip("10.0.0.90"), Some(S2)));
        assert_eq!(net.sent[1].1.option(OPT_SERVER_ID), Some(&S2.octets()[..]));
    }

    #[test]
    fn offers_without_address_or_server_id_are_skipped() {
        let mut net = Fake::new(|p: &Packet, _| match p.message_type() {
            Some(MessageType::Discover) => {
                let mut no_id =
                    Packet::parse(&answer(p, MessageType::Offer, S2, "10.0.0.91")).unwrap();
                no_id.options.retain(|(c, _)| *c != OPT_SERVER_ID);
                vec![
                    no_id.encode(),
                    answer(p, MessageType::Offer, S2, "0.0.0.0"),
                    answer(p, MessageType::Offer, S1, "10.0.0.54"),
                ]
            }
            _ => good(p, "10.0.0.54"),
        });
        let ack = run(&mut net, MAC, &quiet(), 5).unwrap();
        assert_eq!((ack.yiaddr, ack.server_id), (ip("10.0.0.54"), Some(S1)));
    }

    #[test]
    fn nak_starts_over_with_a_new_transaction() {
        let mut naks = 1;
        let mut net = Fake::new(move |p: &Packet, _| {
            if p.message_type() == Some(MessageType::Request) && naks > 0 {
                naks -= 1;
                return vec![answer(p, MessageType::Nak, S1, "")];
            }
            good(p, "10.0.0.55")
        });
        let ack = run(&mut net, MAC, &quiet(), 11).unwrap();
        assert_eq!(ack.yiaddr, ip("10.0.0.55"));
        use MessageType::*;
        assert_eq!(net.kinds(), [Discover, Request, Discover, Request]);
        assert_ne!(net.sent[0].1.xid, net.sent[2].1.xid);
        assert_eq!(net.sent[2].1.xid, net.sent[3].1.xid);
    }

    #[test]
    fn naks_are_bounded() {
        let mut net = Fake::new(|p: &Packet, _| match p.message_type() {
            Some(MessageType::Request) => vec![answer(p, MessageType::Nak, S1, "")],
            _ => good(p, "10.0.0.56"),
        });
        let policy = DhcpPolicy {
            max_naks: 2,
            ..quiet()
        };
        let err = run(&mut net, MAC, &policy, 13).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server 10.0.0.1 declined (NAK): wrong network"
        );
        assert_eq!(net.kinds().len(), 6, "three rounds of DISCOVER and REQUEST");
    }

    #[test]
    fn a_silent_server_after_its_offer_means_starting_over() {
        // S1 offers but never acknowledges; from the second round S2 answers everything.
        let mut net = Fake::new(|p: &Packet, i| match p.message_type() {
            Some(MessageType::Discover) if i == 0 => {
                vec![answer(p, MessageType::Offer, S1, "10.0.0.57")]
            }
            Some(MessageType::Discover) => vec![answer(p, MessageType::Offer, S2, "10.0.0.58")],
            Some(MessageType::Request) if p.option(OPT_SERVER_ID) == Some(&S2.octets()[..]) => {
                vec![answer(p, MessageType::Ack, S2, "10.0.0.58")]
            }
            _ => vec![],
        });
        let ack = run(&mut net, MAC, &quiet(), 17).unwrap();
        assert_eq!((ack.yiaddr, ack.server_id), (ip("10.0.0.58"), Some(S2)));
        use MessageType::*;
        assert_eq!(
            net.kinds(),
            [Discover, Request, Request, Request, Request, Discover, Request]
        );
    }

    #[test]
    fn no_ack_before_the_bound_names_the_server() {
        let mut net = Fake::new(|p: &Packet, _| match p.message_type() {
            Some(MessageType::Discover) => vec![answer(p, MessageType::Offer, S1, "10.0.0.59")],
            _ => vec![],
        });
        let policy = DhcpPolicy {
            total: Duration::from_secs(5),
            ..quiet()
        };
        let err = run(&mut net, MAC, &policy, 19).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server 10.0.0.1 offered 10.0.0.59 but did not acknowledge it (3 requests); no lease after 5.0 s"
        );
        assert_eq!(net.now - net.start, Duration::from_secs(5));
    }

    #[test]
    fn transport_errors_name_the_message() {
        struct Broken;
        impl Transport for Broken {
            fn now(&self) -> Instant {
                Instant::now()
            }
            fn send(&mut self, _: &[u8]) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(libc::ENETDOWN))
            }
            fn recv(&mut self, _: &mut [u8], _: Instant) -> io::Result<Option<usize>> {
                unreachable!()
            }
        }
        let err = run(&mut Broken, MAC, &quiet(), 1).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot send the DISCOVER: "),
            "{err}"
        );
    }
}
