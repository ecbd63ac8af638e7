//! Differential tests of our netlink codec (`netlink::message`) and the rtnetlink requests
//! built on it (`net::rtnl`, `net::link`) against netlink-packet-route and
//! netlink-packet-core, dev-dependencies only.
//!
//! Requests: every message we send parses in the oracle to the fields we meant, and the oracle
//! writes the parsed message back byte for byte (so no byte of ours is one it ignores).
//! Replies: links, acknowledgements, errors and the end of a dump as the oracle writes them
//! parse with our decoder to the same values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroI32;

use nbdroot::net::link::{address6_message, default_route6_message, set_link_message, LinkChange};
use nbdroot::net::rtnl::{address_message, link_up_message, route_message};
use nbdroot::netlink::message::{
    self, as_str, as_u32, MessageBuilder, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_MULTI, NLM_F_REPLACE, NLM_F_REQUEST,
};
use nbdroot::plan::Mac;
use netlink_packet_core::{
    DefaultNla, DoneMessage, ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressScope,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use proptest::collection::vec;
use proptest::prelude::*;

type Parsed = NetlinkMessage<RouteNetlinkMessage>;

const REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;

/// Finishes `msg` with `seq`, parses it with the oracle, checks the netlink header and that
/// the oracle writes the same bytes back; returns the rtnetlink payload.
fn oracle_parse(
    msg: MessageBuilder,
    seq: u32,
    ty: u16,
    flags: u16,
) -> Result<RouteNetlinkMessage, TestCaseError> {
    let bytes = msg.finish(seq);
    let parsed = Parsed::deserialize(&bytes)
        .map_err(|e| TestCaseError::fail(format!("oracle refused {bytes:?}: {e}")))?;
    let h = parsed.header;
    prop_assert_eq!(h.length as usize, bytes.len());
    prop_assert_eq!(h.message_type, ty);
    prop_assert_eq!(h.flags, flags);
    prop_assert_eq!(h.sequence_number, seq);
    prop_assert_eq!(h.port_number, 0, "the kernel fills in the port");
    let mut again = vec![0; parsed.buffer_len()];
    parsed.serialize(&mut again);
    prop_assert_eq!(&again, &bytes, "the oracle writes it back otherwise");
    match parsed.payload {
        NetlinkPayload::InnerMessage(m) => Ok(m),
        other => Err(TestCaseError::fail(format!("not rtnetlink: {other:?}"))),
    }
}

fn link(m: RouteNetlinkMessage) -> LinkMessage {
    match m {
        RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::SetLink(l) => l,
        other => panic!("not a link message: {other:?}"),
    }
}

fn v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Interface names as the kernel takes them (at most 15 bytes).
fn ifname() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9._-]{0,14}"
}

proptest! {
    #![proptest_config(config())]

    /// `Rtnl::link_up`.
    #[test]
    fn link_up_parses_in_the_oracle(index: u32, seq: u32) {
        let msg = link_up_message(index);
        let m = oracle_parse(msg, seq, libc::RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)?;
        prop_assert!(matches!(m, RouteNetlinkMessage::NewLink(_)));
        let l = link(m);
        prop_assert_eq!(l.header.interface_family, AddressFamily::Unspec);
        prop_assert_eq!(l.header.index, index);
        prop_assert_eq!(l.header.flags, LinkFlags::Up);
        prop_assert_eq!(l.header.change_mask, LinkFlags::Up);
        prop_assert_eq!(l.attributes, vec![]);
    }

    /// `Rtnl::set_link`: MTU, MAC, name and up/down, each optional.
    #[test]
    fn set_link_parses_in_the_oracle(
        index: u32,
        seq: u32,
        mtu: Option<u16>,
        mac: Option<[u8; 6]>,
        name in proptest::option::of(ifname()),
        up: Option<bool>,
    ) {
        let change = LinkChange { mtu, mac: mac.map(Mac), name: name.as_deref(), up };
        let msg = set_link_message(index, &change);
        let m = oracle_parse(msg, seq, libc::RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK)?;
        prop_assert!(matches!(m, RouteNetlinkMessage::SetLink(_)));
        let l = link(m);
        prop_assert_eq!(l.header.index, index);
        let (flags, mask) = match up {
            Some(true) => (LinkFlags::Up, LinkFlags::Up),
            Some(false) => (LinkFlags::empty(), LinkFlags::Up),
            None => (LinkFlags::empty(), LinkFlags::empty()),
        };
        prop_assert_eq!((l.header.flags, l.header.change_mask), (flags, mask));
        let mut want = Vec::new();
        want.extend(mtu.map(|m| LinkAttribute::Mtu(m.into())));
        want.extend(mac.map(|m| LinkAttribute::Address(m.to_vec())));
        want.extend(name.map(LinkAttribute::IfName));
        prop_assert_eq!(l.attributes, want);
    }

    /// `Rtnl::add_address` and `add_address_with_broadcast`.
    #[test]
    fn ipv4_address_parses_in_the_oracle(
        index: u32,
        seq: u32,
        addr in v4(),
        prefix_len in 0u8..=32,
        broadcast in proptest::option::of(v4()),
    ) {
        let msg = address_message(index, addr, prefix_len, broadcast);
        let m = oracle_parse(msg, seq, libc::RTM_NEWADDR, REPLACE)?;
        let RouteNetlinkMessage::NewAddress(a) = m else {
            return Err(TestCaseError::fail(format!("{m:?}")));
        };
        prop_assert_eq!(a.header.family, AddressFamily::Inet);
        prop_assert_eq!(a.header.prefix_len, prefix_len);
        prop_assert_eq!(a.header.index, index);
        prop_assert_eq!(a.header.flags, AddressHeaderFlags::empty());
        prop_assert_eq!(a.header.scope, AddressScope::Universe);
        let mut want = vec![
            AddressAttribute::Local(IpAddr::V4(addr)),
            AddressAttribute::Address(IpAddr::V4(addr)),
        ];
        want.extend(broadcast.map(AddressAttribute::Broadcast));
        prop_assert_eq!(a.attributes, want);
    }

    /// `Rtnl::add_address6`: no duplicate address detection, in the header and the attribute.
    #[test]
    fn ipv6_address_parses_in_the_oracle(
        index: u32,
        seq: u32,
        addr in v6(),
        prefix_len in 0u8..=128,
    ) {
        let msg = address6_message(index, addr, prefix_len);
        let m = oracle_parse(msg, seq, libc::RTM_NEWADDR, REPLACE)?;
        let RouteNetlinkMessage::NewAddress(a) = m else {
            return Err(TestCaseError::fail(format!("{m:?}")));
        };
        prop_assert_eq!(a.header.family, AddressFamily::Inet6);
        prop_assert_eq!(a.header.prefix_len, prefix_len);
        prop_assert_eq!(a.header.index, index);
        prop_assert_eq!(a.header.flags, AddressHeaderFlags::Nodad);
        prop_assert_eq!(a.attributes, vec![
            AddressAttribute::Address(IpAddr::V6(addr)),
            AddressAttribute::Flags(AddressFlags::Nodad),
        ]);
    }

    /// `Rtnl::add_route` and `add_default_route`: classless routes (RFC 3442) via a gateway or
    /// on the link, the default route, and the host route to an off-link gateway.
    #[test]
    fn ipv4_route_parses_in_the_oracle(
        index: u32,
        seq: u32,
        dst in v4(),
        prefix_len in 0u8..=32,
        gateway in proptest::option::of(v4()),
    ) {
        let msg = route_message(index, dst, prefix_len, gateway);
        let m = oracle_parse(msg, seq, libc::RTM_NEWROUTE, REPLACE)?;
        let RouteNetlinkMessage::NewRoute(r) = m else {
            return Err(TestCaseError::fail(format!("{m:?}")));
        };
        let h = &r.header;
        prop_assert_eq!(h.address_family, AddressFamily::Inet);
        prop_assert_eq!(h.destination_prefix_length, prefix_len);
        prop_assert_eq!((h.source_prefix_length, h.tos), (0, 0));
        prop_assert_eq!(h.table, libc::RT_TABLE_MAIN);
        prop_assert_eq!(h.protocol, RouteProtocol::Boot);
        // A gatewayless route reaches its destination directly.
        let scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        prop_assert_eq!(h.scope, scope);
        prop_assert_eq!(h.kind, RouteType::Unicast);
        prop_assert!(h.flags.is_empty());
        let mut want = Vec::new();
        if prefix_len > 0 {
            want.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        want.extend(gateway.map(|g| RouteAttribute::Gateway(RouteAddress::Inet(g))));
        want.push(RouteAttribute::Oif(index));
        prop_assert_eq!(r.attributes, want);
    }

    /// `Rtnl::add_default_route6`.
    #[test]
    fn ipv6_default_route_parses_in_the_oracle(index: u32, seq: u32, gateway in v6()) {
        let msg = default_route6_message(index, gateway);
        let m = oracle_parse(msg, seq, libc::RTM_NEWROUTE, REPLACE)?;
        let RouteNetlinkMessage::NewRoute(r) = m else {
            return Err(TestCaseError::fail(format!("{m:?}")));
        };
        let h = &r.header;
        prop_assert_eq!(h.address_family, AddressFamily::Inet6);
        prop_assert_eq!((h.destination_prefix_length, h.source_prefix_length, h.tos), (0, 0, 0));
        prop_assert_eq!(h.table, libc::RT_TABLE_MAIN);
        prop_assert_eq!(h.protocol, RouteProtocol::Boot);
        prop_assert_eq!(h.scope, RouteScope::Universe);
        prop_assert_eq!(h.kind, RouteType::Unicast);
        prop_assert_eq!(r.attributes, vec![
            RouteAttribute::Gateway(RouteAddress::Inet6(gateway)),
            RouteAttribute::Oif(index),
        ]);
    }
}

// ---------------------------------------------------------------------------------------------
// Replies the oracle writes, read with our decoder

/// A link as the kernel reports it in a dump.
#[derive(Debug, Clone)]
struct Link {
    index: u32,
    flags: u32,
    name: String,
    mac: Vec<u8>,
    mtu: u32,
    oper: u8,
    /// IFLA_LINKINFO, nested: IFLA_INFO_KIND.
    kind: Option<&'static str>,
    /// Attributes we do not read, of any type (with the nested and byte-order flag bits
    /// `flags`) and length: they must not throw the walk off.
    extra: Vec<(u16, (u16, Vec<u8>))>,
}

const KINDS: [(&str, InfoKind); 4] = [
    ("dummy", InfoKind::Dummy),
    ("bridge", InfoKind::Bridge),
    ("veth", InfoKind::Veth),
    ("vlan", InfoKind::Vlan),
];

fn link_strategy() -> impl Strategy<Value = Link> {
    let oper = 0u8..=6; // IF_OPER_UNKNOWN ..= IF_OPER_UP
    let known = [
        libc::IFLA_ADDRESS,
        libc::IFLA_IFNAME,
        libc::IFLA_MTU,
        libc::IFLA_OPERSTATE,
        libc::IFLA_LINKINFO,
    ];
    // Types 1..=0x3fff: the top two bits are the nested and byte-order flags.
    let extra_ty = (1u16..0x4000).prop_filter("read by us", move |t| !known.contains(t));
    (
        (any::<u32>(), any::<u32>(), ifname()),
        (vec(any::<u8>(), 0..=32), any::<u32>(), oper),
        proptest::option::of(proptest::sample::select(KINDS.map(|k| k.0).to_vec())),
        proptest::collection::btree_map(extra_ty, (0u16..4, vec(any::<u8>(), 0..40)), 0..6),
    )
        .prop_map(
            |((index, flags, name), (mac, mtu, oper), kind, extra)| Link {
                index,
                flags,
                name,
                mac,
                mtu,
                oper,
                kind,
                extra: extra.into_iter().collect(),
            },
        )
}

impl Link {
    fn message(&self, seq: u32) -> Parsed {
        let mut l = LinkMessage::default();
        l.header.index = self.index;
        l.header.flags = LinkFlags::from_bits_retain(self.flags);
        l.header.change_mask = LinkFlags::from_bits_retain(u32::MAX);
        l.attributes = vec![
            LinkAttribute::IfName(self.name.clone()),
            LinkAttribute::Address(self.mac.clone()),
            LinkAttribute::Mtu(self.mtu),
            LinkAttribute::OperState(State::from(self.oper)),
        ];
        if let Some(kind) = self.kind {
            let (_, k) = KINDS.into_iter().find(|k| k.0 == kind).unwrap();
            l.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]));
        }
        for (ty, (flags, v)) in &self.extra {
            let ty = ty | flags << 14;
            l.attributes
                .push(LinkAttribute::Other(DefaultNla::new(ty, v.clone())));
        }
        message(RouteNetlinkMessage::NewLink(l), seq, NLM_F_MULTI)
    }
}

fn message(m: RouteNetlinkMessage, seq: u32, flags: u16) -> Parsed {
    control(NetlinkPayload::InnerMessage(m), seq, flags)
}

fn control(payload: NetlinkPayload<RouteNetlinkMessage>, seq: u32, flags: u16) -> Parsed {
    let mut header = NetlinkHeader::default();
    header.sequence_number = seq;
    header.flags = flags;
    let mut m = Parsed::new(header, payload);
    m.finalize();
    m
}

/// The oracle's messages, one after another in one datagram, as the kernel sends a dump.
fn datagram(msgs: &[Parsed]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        // Netlink messages start 4-aligned; the oracle's lengths are already multiples of 4.
        assert_eq!(b.len() % 4, 0);
        out.extend_from_slice(&b);
    }
    out
}

fn done() -> NetlinkPayload<RouteNetlinkMessage> {
    NetlinkPayload::Done(DoneMessage::default())
}

proptest! {
    #![proptest_config(config())]

    /// A link dump: RTM_NEWLINK messages marked multipart, then NLMSG_DONE.
    #[test]
    fn link_dump_reads_back_with_our_decoder(links in vec(link_strategy(), 0..5), seq: u32) {
        let mut msgs: Vec<Parsed> = links.iter().map(|l| l.message(seq)).collect();
        msgs.push(control(done(), seq, NLM_F_MULTI));
        let bytes = datagram(&msgs);
        let got: Vec<_> = message::messages(&bytes).collect();
        prop_assert_eq!(got.len(), links.len() + 1);
        for (m, l) in got.iter().zip(&links) {
            prop_assert_eq!((m.ty, m.flags, m.seq), (libc::RTM_NEWLINK, NLM_F_MULTI, seq));
            prop_assert_eq!(m.error_code(), None);
            // struct ifinfomsg: family, pad, type, index, flags, change mask.
            prop_assert_eq!(m.payload[0], libc::AF_UNSPEC as u8);
            prop_assert_eq!(as_u32(&m.payload[4..8]), Some(l.index));
            prop_assert_eq!(as_u32(&m.payload[8..12]), Some(l.flags));
            let attrs: Vec<(u16, &[u8])> = message::attrs(&m.payload[16..]).collect();
            prop_assert_eq!(attrs.len(), 4 + usize::from(l.kind.is_some()) + l.extra.len());
            let find = |ty: u16| attrs.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p);
            prop_assert_eq!(find(libc::IFLA_IFNAME).and_then(as_str), Some(l.name.as_str()));
            prop_assert_eq!(find(libc::IFLA_ADDRESS), Some(&l.mac[..]));
            prop_assert_eq!(find(libc::IFLA_MTU).and_then(as_u32), Some(l.mtu));
            prop_assert_eq!(find(libc::IFLA_OPERSTATE), Some(&[l.oper][..]));
            // IFLA_LINKINFO holds IFLA_INFO_KIND (1), a string.
            let nested = find(libc::IFLA_LINKINFO)
                .map(|p| message::attrs(p).map(|(t, v)| (t, v.to_vec())).collect::<Vec<_>>());
            let want = l.kind.map(|k| vec![(1, format!("{k}\0").into_bytes())]);
            prop_assert_eq!(nested, want);
            // Our types come without the flag bits.
            for (ty, (_, v)) in &l.extra {
                prop_assert_eq!(find(*ty), Some(&v[..]));
            }
        }
        let last = got.last().unwrap();
        prop_assert_eq!((last.ty, last.seq, last.error_code()), (NLMSG_DONE, seq, None));
    }

    /// NLMSG_ERROR: an acknowledgement (code 0) or a refusal (a negative errno), quoting the
    /// request.
    #[test]
    fn acks_and_errors_read_back_with_our_decoder(
        errno in prop_oneof![Just(0i32), 1i32..4096],
        seq: u32,
        index: u32,
        quote_whole_request: bool,
    ) {
        // The kernel quotes the request's header, or the whole request without
        // NETLINK_CAP_ACK.
        let request = link_up_message(index).finish(seq);
        let quoted = if quote_whole_request { &request[..] } else { &request[..16] };
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(-errno);
        e.header = quoted.to_vec();
        let bytes = datagram(&[control(NetlinkPayload::Error(e), seq, 0)]);
        let got: Vec<_> = message::messages(&bytes).collect();
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!((got[0].ty, got[0].seq), (NLMSG_ERROR, seq));
        prop_assert_eq!(got[0].error_code(), Some(-errno));
        prop_assert_eq!(&got[0].payload[4..], quoted);
    }
}

/// NLMSG_DONE alone (an empty dump) and after an acknowledgement in the same datagram.
#[test]
fn done_and_ack_in_one_datagram() {
    let ack = control(NetlinkPayload::Error(ErrorMessage::default()), 9, 0);
    let bytes = datagram(&[ack, control(done(), 9, NLM_F_MULTI)]);
    let got: Vec<_> = message::messages(&bytes).collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].ty, got[0].error_code()), (NLMSG_ERROR, Some(0)));
    assert_eq!(
        (got[1].ty, got[1].flags, got[1].error_code()),
        (NLMSG_DONE, NLM_F_MULTI, None)
    );
    assert_eq!(&got[1].payload[..4], &0i32.to_ne_bytes());
}
