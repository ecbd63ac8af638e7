//! rtnetlink requests: bring a link up, add an address, add a route.

use std::net::Ipv4Addr;

use crate::netlink::message::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use crate::netlink::{MessageBuilder, NetlinkError, NetlinkSocket, NETLINK_ROUTE};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// `struct ifinfomsg` setting IFF_UP.
fn ifinfomsg_up(index: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes()); // flags
    h[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes()); // change mask
    h
}

/// `struct ifaddrmsg`.
fn ifaddrmsg(prefix_len: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = libc::AF_INET as u8;
    h[1] = prefix_len;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

/// `struct rtmsg` for an IPv4 unicast route in the main table.
fn rtmsg(dst_len: u8, scope: u8) -> [u8; 12] {
    [
        libc::AF_INET as u8,
        dst_len,
        0, // src_len
        0, // tos
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        scope,
        RTN_UNICAST,
        0,
        0,
        0,
        0, // flags
    ]
}

fn broadcast(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(prefix_len as u32).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) | host_bits)
}

/// An rtnetlink connection.
#[derive(Debug)]
pub struct Rtnl(pub(super) NetlinkSocket);

impl Rtnl {
    pub fn open() -> Result<Self, NetlinkError> {
        NetlinkSocket::open(NETLINK_ROUTE).map(Self)
    }

    pub fn link_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.0.request(link_up_message(index)).map(drop)
    }

    /// Adds (or replaces) `addr/prefix_len` on the link.
    pub fn add_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let brd = (prefix_len < 31).then(|| broadcast(addr, prefix_len));
        self.0
            .request(address_message(index, addr, prefix_len, brd))
            .map(drop)
    }

    /// Adds (or replaces) the default route via `gateway`. A gateway outside the link's
    /// subnet first gets a link-scope host route, as `ip route add … onlink` users expect.
    pub fn add_default_route(
        &mut self,
        index: u32,
        gateway: Ipv4Addr,
        on_link: bool,
    ) -> Result<(), NetlinkError> {
        self.add_route(index, Ipv4Addr::UNSPECIFIED, 0, Some(gateway), on_link)
    }
}

/// Whether `gateway` is inside `addr/prefix_len`.
pub fn same_subnet(addr: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix_len as u32).unwrap_or(0);
    u32::from(addr) & mask == u32::from(gateway) & mask
}

/// RTM_NEWLINK setting IFF_UP on link `index`: what [`Rtnl::link_up`] sends.
pub fn link_up_message(index: u32) -> MessageBuilder {
    MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfomsg_up(index))
}

/// RTM_NEWADDR for `addr/prefix_len` on link `index`, with `broadcast` if given: what
/// [`Rtnl::add_address`] and [`Rtnl::add_address_with_broadcast`] send.
pub fn address_message(
    index: u32,
    addr: Ipv4Addr,
    prefix_len: u8,
    broadcast: Option<Ipv4Addr>,
) -> MessageBuilder {
    let msg = MessageBuilder::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .header(&ifaddrmsg(prefix_len, index))
    .attr(IFA_LOCAL, &addr.octets())
    .attr(IFA_ADDRESS, &addr.octets());
    match broadcast {
        Some(b) => msg.attr(IFA_BROADCAST, &b.octets()),
        None => msg,
    }
}

/// A route to `dst/prefix_len` through the link: via `gateway`, or directly without one.
/// What [`Rtnl::add_route`] and [`Rtnl::add_default_route`] send.
pub fn route_message(
    index: u32,
    dst: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
) -> MessageBuilder {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let scope = if gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    let mut msg = MessageBuilder::new(RTM_NEWROUTE, flags).header(&rtmsg(prefix_len, scope));
    if prefix_len > 0 {
        msg = msg.attr(RTA_DST, &dst.octets());
    }
    if let Some(gw) = gateway {
        msg = msg.attr(RTA_GATEWAY, &gw.octets());
    }
    msg.attr_u32(RTA_OIF, index)
}

impl Rtnl {
    /// Adds (or replaces) `addr/prefix_len` with the given broadcast address (a DHCP server
    /// may name one that differs from the subnet's).
    pub fn add_address_with_broadcast(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        self.0
            .request(address_message(index, addr, prefix_len, Some(broadcast)))
            .map(drop)
    }

    /// Adds (or replaces) a route to `dst/prefix_len` via `gateway`, or on the link without
    /// one. A gateway that is not `on_link` first gets a link-scope host route, as in
    /// [`Self::add_default_route`]. `dst` must have no bits set past the prefix.
    pub fn add_route(
        &mut self,
        index: u32,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        on_link: bool,
    ) -> Result<(), NetlinkError> {
        if let Some(gw) = gateway.filter(|_| !on_link) {
            self.0.request(route_message(index, gw, 32, None))?;
        }
        self.0
            .request(route_message(index, dst, prefix_len, gateway))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(broadcast(a, 24), Ipv4Addr::new(10, 0, 2, 255));
        assert_eq!(broadcast(a, 8), Ipv4Addr::new(10, 255, 255, 255));
        assert!(same_subnet(a, 24, Ipv4Addr::new(10, 0, 2, 2)));
        assert!(!same_subnet(a, 24, Ipv4Addr::new(10, 0, 3, 1)));
        assert!(same_subnet(a, 0, Ipv4Addr::new(1, 2, 3, 4)));
        assert!(!same_subnet(a, 32, Ipv4Addr::new(10, 0, 2, 2)));
    }

    #[test]
    fn route_messages() {
        use crate::netlink::message;
        let route = |dst: &str, len, gw: Option<&str>| {
            let b = route_message(7, dst.parse().unwrap(), len, gw.map(|g| g.parse().unwrap()))
                .finish(1);
            let m = message::messages(&b).next().unwrap();
            let attrs: Vec<(u16, Vec<u8>)> = message::attrs(&m.payload[12..])
                .map(|(t, p)| (t, p.to_vec()))
                .collect();
            (m.payload[..12].to_vec(), attrs)
        };
        let (hdr, attrs) = route("192.168.7.0", 24, None);
        assert_eq!(hdr, rtmsg(24, RT_SCOPE_LINK));
        assert_eq!(
            attrs,
            [
                (RTA_DST, vec![192, 168, 7, 0]),
                (RTA_OIF, 7u32.to_ne_bytes().to_vec())
            ]
        );
        let (hdr, attrs) = route("0.0.0.0", 0, Some("10.0.0.1"));
        assert_eq!(hdr, rtmsg(0, RT_SCOPE_UNIVERSE));
        assert_eq!(
            attrs,
            [
                (RTA_GATEWAY, vec![10, 0, 0, 1]),
                (RTA_OIF, 7u32.to_ne_bytes().to_vec())
            ]
        );
    }
}
