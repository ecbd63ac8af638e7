//! More rtnetlink requests: link attributes (MTU, MAC address, name) and IPv6 addresses and
//! routes. Every address is added without duplicate address detection: the boot cannot wait
//! for it, and a tentative address cannot be connected from.

use std::net::{IpAddr, Ipv6Addr};

use crate::netlink::message::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use crate::netlink::{MessageBuilder, NetlinkError};
use crate::plan::Mac;

use super::rtnl::Rtnl;

const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

/// Link attributes to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange<'a> {
    pub mtu: Option<u16>,
    pub mac: Option<Mac>,
    /// A new name; the link must be down.
    pub name: Option<&'a str>,
    /// Set the link up (true) or down (false).
    pub up: Option<bool>,
}

impl Rtnl {
    /// Changes link attributes in one request.
    pub fn set_link(&mut self, index: u32, c: &LinkChange<'_>) -> Result<(), NetlinkError> {
        self.0.request(set_link_message(index, c)).map(drop)
    }

    /// Adds an IPv6 address (no duplicate address detection).
    pub fn add_address6(
        &mut self,
        index: u32,
        addr: Ipv6Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        self.0
            .request(address6_message(index, addr, prefix_len))
            .map(drop)
    }

    /// Adds the IPv6 default route via `gateway` on the link.
    pub fn add_default_route6(
        &mut self,
        index: u32,
        gateway: Ipv6Addr,
    ) -> Result<(), NetlinkError> {
        self.0
            .request(default_route6_message(index, gateway))
            .map(drop)
    }

    /// Adds an address of either family.
    pub fn add_ip(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        match addr {
            IpAddr::V4(a) => self.add_address(index, a, prefix_len),
            IpAddr::V6(a) => self.add_address6(index, a, prefix_len),
        }
    }
}

/// RTM_SETLINK changing what `c` says on link `index`: what [`Rtnl::set_link`] sends.
pub fn set_link_message(index: u32, c: &LinkChange<'_>) -> MessageBuilder {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    if let Some(up) = c.up {
        let flags = if up { libc::IFF_UP as u32 } else { 0 };
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        h[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    }
    let mut msg = MessageBuilder::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK).header(&h);
    if let Some(mtu) = c.mtu {
        msg = msg.attr_u32(IFLA_MTU, mtu.into());
    }
    if let Some(mac) = c.mac {
        msg = msg.attr(IFLA_ADDRESS, &mac.0);
    }
    if let Some(name) = c.name {
        msg = msg.attr_str(IFLA_IFNAME, name);
    }
    msg
}

/// RTM_NEWADDR for the IPv6 `addr/prefix_len` on link `index`: what [`Rtnl::add_address6`]
/// sends.
pub fn address6_message(index: u32, addr: Ipv6Addr, prefix_len: u8) -> MessageBuilder {
    let mut h = [0u8; 8];
    h[0] = libc::AF_INET6 as u8;
    h[1] = prefix_len;
    h[2] = IFA_F_NODAD as u8;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    MessageBuilder::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .header(&h)
    .attr(IFA_ADDRESS, &addr.octets())
    .attr_u32(IFA_FLAGS, IFA_F_NODAD)
}

/// RTM_NEWROUTE for the IPv6 default route via `gateway` on link `index`: what
/// [`Rtnl::add_default_route6`] sends.
pub fn default_route6_message(index: u32, gateway: Ipv6Addr) -> MessageBuilder {
    let rtmsg = [libc::AF_INET6 as u8, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
    MessageBuilder::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .header(&rtmsg)
    .attr(RTA_GATEWAY, &gateway.octets())
    .attr_u32(RTA_OIF, index)
}
