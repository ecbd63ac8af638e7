//! The DHCP client's exchange (`net::dhcp::client::run`) against a hostile segment: the input
//! says what arrives after each packet the client sends — replies of any type, for our
//! transaction or another's, from any server, raw datagrams, silences — on a virtual clock.
//!
//! Beyond "no panic": the exchange ends within its time bound; an accepted lease is an ACK
//! for the client's last REQUEST, from the server it asked, with an address; a NAK is fatal
//! only past the policy's count; what the client sends is a DISCOVER or a REQUEST for an
//! address and server that an OFFER named.

#![no_main]

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nbdroot::net::dhcp::client::{self, ClientError, DhcpPolicy, Transport};
use nbdroot::net::dhcp::packet::{
    MessageType, Packet, OPT_MESSAGE, OPT_MESSAGE_TYPE, OPT_REQUESTED_IP, OPT_SERVER_ID,
};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];

#[derive(Debug, Arbitrary)]
struct Input {
    seed: u64,
    /// What arrives after each packet the client sends, in order.
    answers: Vec<Vec<Datagram>>,
}

#[derive(Debug, Arbitrary)]
enum Datagram {
    Reply {
        /// A DHCP message type when 1 to 8.
        kind: u8,
        yiaddr: [u8; 4],
        server: Option<[u8; 4]>,
        /// Not 0: another transaction's.
        xid_delta: u8,
        other_client: bool,
        message: Option<String>,
        extra: Vec<(u8, Vec<u8>)>,
    },
    Raw(Vec<u8>),
    /// Nothing for this long.
    Silence {
        ms: u16,
    },
}

fuzz_target!(|input: Input| run(input));

fn run(input: Input) {
    let policy = DhcpPolicy::default();
    let mut net = Segment::new(input.answers);
    let result = client::run(&mut net, MAC, &policy, input.seed);
    let elapsed = net.now - net.start;
    // Every wait ends by the bound, and so does the exchange.
    assert!(elapsed <= policy.total, "{elapsed:?}");

    let requests: Vec<&Packet> = net
        .sent
        .iter()
        .filter(|p| p.message_type() == Some(MessageType::Request))
        .collect();
    for p in &net.sent {
        assert_eq!(p.chaddr, MAC);
        match p.message_type() {
            Some(MessageType::Discover) => {}
            Some(MessageType::Request) => {
                // For an address and server some OFFER of this transaction named.
                let offered = (p.option(OPT_REQUESTED_IP), p.option(OPT_SERVER_ID));
                assert!(
                    net.offers.iter().any(|(xid, address, server)| *xid == p.xid
                        && offered == (Some(&address[..]), Some(&server[..]))),
                    "a REQUEST for {offered:?} that no OFFER made"
                );
            }
            other => panic!("the client sent {other:?}"),
        }
    }
    match result {
        Ok(ack) => {
            assert_eq!(ack.kind, MessageType::Ack);
            assert!(!ack.yiaddr.is_unspecified());
            let last = requests.last().expect("an ACK answers a REQUEST");
            assert_eq!(ack.xid, last.xid);
            let asked = last
                .option(OPT_SERVER_ID)
                .expect("a REQUEST names its server");
            assert_eq!(&ack.server_id.expect("set").octets()[..], asked);
        }
        Err(ClientError::NoOffer { .. } | ClientError::NoAck { .. }) => {
            assert!(elapsed >= policy.total, "gave up after {elapsed:?}");
        }
        Err(ClientError::Nak { .. }) => assert!(net.naks > policy.max_naks),
        Err(e @ (ClientError::Send { .. } | ClientError::Receive(_))) => {
            panic!("the segment never fails: {e}")
        }
    }
}

/// A network segment with a virtual clock. What the client sends is recorded; what arrives
/// after it comes from the input, each datagram taking a millisecond.
struct Segment {
    start: Instant,
    now: Instant,
    answers: VecDeque<Vec<Datagram>>,
    /// (arrival, datagram)
    queue: VecDeque<(Instant, Vec<u8>)>,
    sent: Vec<Packet>,
    /// (xid, address, server) of every OFFER sent for our MAC with an address and a server.
    offers: Vec<(u32, [u8; 4], [u8; 4])>,
    /// NAKs sent for our transactions.
    naks: u32,
}

impl Segment {
    fn new(answers: Vec<Vec<Datagram>>) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            answers: answers.into(),
            queue: VecDeque::new(),
            sent: Vec::new(),
            offers: Vec::new(),
            naks: 0,
        }
    }

    fn answer(&mut self, req: &Packet) {
        let mut at = self.now;
        for d in self.answers.pop_front().unwrap_or_default() {
            at += Duration::from_millis(1);
            let bytes = match d {
                Datagram::Silence { ms } => {
                    at += Duration::from_millis(ms.into());
                    continue;
                }
                Datagram::Raw(bytes) => bytes,
                Datagram::Reply {
                    kind,
                    yiaddr,
                    server,
                    xid_delta,
                    other_client,
                    message,
                    extra,
                } => {
                    let xid = req.xid.wrapping_add(xid_delta.into());
                    let chaddr = if other_client {
                        [2, 0, 0, 0, 0, 8]
                    } else {
                        MAC
                    };
                    let ours = xid == req.xid && chaddr == MAC;
                    match (MessageType::from_u8(kind), server) {
                        (Some(MessageType::Offer), Some(s)) if ours && yiaddr != [0; 4] => {
                            self.offers.push((xid, yiaddr, s))
                        }
                        (Some(MessageType::Nak), _) if ours => self.naks += 1,
                        _ => {}
                    }
                    let mut options = vec![(OPT_MESSAGE_TYPE, vec![kind])];
                    options.extend(server.map(|s| (OPT_SERVER_ID, s.to_vec())));
                    options.extend(message.map(|m| (OPT_MESSAGE, m.into_bytes())));
                    // Extra options of other codes only: those above are the ones checked.
                    options.extend(extra.into_iter().filter(|(c, _)| {
                        ![0, 255, OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_MESSAGE].contains(c)
                    }));
                    Packet {
                        op: 2,
                        xid,
                        secs: 0,
                        flags: 0,
                        ciaddr: Ipv4Addr::UNSPECIFIED,
                        yiaddr: yiaddr.into(),
                        siaddr: Ipv4Addr::UNSPECIFIED,
                        giaddr: Ipv4Addr::UNSPECIFIED,
                        chaddr,
                        sname: None,
                        file: None,
                        options,
                    }
                    .encode()
                }
            };
            self.queue.push_back((at, bytes));
        }
    }
}

impl Transport for Segment {
    fn now(&self) -> Instant {
        self.now
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let p = Packet::parse(bytes).expect("the client sends valid packets");
        self.answer(&p);
        self.sent.push(p);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
        match self.queue.front() {
            Some(&(at, _)) if at <= deadline => {
                let (at, d) = self.queue.pop_front().expect("a datagram");
                self.now = self.now.max(at);
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(Some(n))
            }
            _ => {
                self.now = self.now.max(deadline);
                Ok(None)
            }
        }
    }
}
