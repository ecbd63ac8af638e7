//! The lease a server's ACK describes, and what is written from it: /etc/resolv.conf and the
//! shell-sourceable lease file. Pure.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::packet::Reply;

/// The configuration a server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub root_path: Option<String>,
    pub server_id: Ipv4Addr,
    /// `siaddr`: the boot server, and the NBD server for Debian's `nbdroot=dhcp` when the
    /// root-path names none.
    pub next_server: Option<Ipv4Addr>,
    pub broadcast: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    /// Option 121 as (destination, prefix length, router); router 0.0.0.0 is on-link.
    pub classless_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
}

pub(super) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().filter(|p| p.len() == 2)?;
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `255.255.255.0` → 24; `None` for a mask with holes.
fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// The classful default for an address without a subnet mask, as the kernel's ipconfig does.
fn class_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

impl Lease {
    /// The lease an ACK describes; `Err(mask)` when its subnet mask is not a prefix.
    pub fn from_ack(ack: &Reply) -> Result<Self, Ipv4Addr> {
        let prefix_len = match ack.subnet_mask {
            Some(mask) => prefix_len(mask).ok_or(mask)?,
            None => class_prefix(ack.yiaddr),
        };
        Ok(Lease {
            address: ack.yiaddr,
            prefix_len,
            routers: ack.routers.clone(),
            dns: ack.dns.clone(),
            hostname: ack.hostname.clone().filter(|h| !h.is_empty()),
            domain: ack.domain.clone().filter(|d| !d.is_empty()),
            mtu: ack.mtu,
            root_path: ack.root_path.clone().filter(|r| !r.is_empty()),
            server_id: ack.server_id.unwrap_or(Ipv4Addr::UNSPECIFIED),
            next_server: Some(ack.siaddr).filter(|a| !a.is_unspecified()),
            broadcast: ack.broadcast,
            lease_secs: ack.lease_secs,
            classless_routes: ack.classless_routes.clone(),
        })
    }

    /// The subnet mask, dotted.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        )
    }

    /// The routes to add: option 121 when present (RFC 3442: it then replaces option 3),
    /// else a default route via the first router. (destination, prefix length, gateway).
    pub fn routes(&self) -> Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
        if !self.classless_routes.is_empty() {
            return self
                .classless_routes
                .iter()
                .map(|&(dst, len, gw)| (dst, len, Some(gw).filter(|g| !g.is_unspecified())))
                .collect();
        }
        self.routers
            .first()
            .map(|&gw| vec![(Ipv4Addr::UNSPECIFIED, 0, Some(gw))])
            .unwrap_or_default()
    }
}

/// /etc/resolv.conf for `lease`. The domain comes from the network: only name characters
/// pass, so it cannot add lines.
pub fn resolv_conf(iface: &str, lease: &Lease) -> String {
    let mut s = format!("# from DHCP on {iface} (server {})\n", lease.server_id);
    let domains: Vec<String> = lease
        .domain
        .iter()
        .flat_map(|d| d.split_whitespace())
        .map(|d| {
            d.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .collect::<String>()
        })
        .filter(|d| !d.is_empty())
        .collect();
    if !domains.is_empty() {
        let _ = writeln!(s, "search {}", domains.join(" "));
    }
    for ns in &lease.dns {
        let _ = writeln!(s, "nameserver {ns}");
    }
    s
}

/// Single-quotes `value` for the shell: every `'` becomes `'\''`, everything else (newlines,
/// `$(…)`) stays literal inside the quotes.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The lease as shell assignments (`new_ip_address='…'`, …), in the spirit of dracut's
/// dhcpopts. Absent options are left out.
pub fn lease_env(lease: &Lease) -> String {
    let list = |a: &[Ipv4Addr]| {
        a.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut vars: Vec<(&str, String)> = vec![
        ("new_ip_address", lease.address.to_string()),
        ("new_subnet_mask", lease.netmask().to_string()),
        ("new_prefix_length", lease.prefix_len.to_string()),
    ];
    let mut opt = |name, v: Option<String>| vars.extend(v.map(|v| (name, v)));
    opt(
        "new_broadcast_address",
        lease.broadcast.map(|b| b.to_string()),
    );
    opt(
        "new_routers",
        Some(list(&lease.routers)).filter(|s| !s.is_empty()),
    );
    opt(
        "new_domain_name_servers",
        Some(list(&lease.dns)).filter(|s| !s.is_empty()),
    );
    opt("new_host_name", lease.hostname.clone());
    opt("new_domain_name", lease.domain.clone());
    opt("new_interface_mtu", lease.mtu.map(|m| m.to_string()));
    opt("new_root_path", lease.root_path.clone());
    opt("new_next_server", lease.next_server.map(|a| a.to_string()));
    opt(
        "new_dhcp_server_identifier",
        Some(lease.server_id.to_string()),
    );
    opt(
        "new_dhcp_lease_time",
        lease.lease_secs.map(|s| s.to_string()),
    );
    let mut s = String::new();
    for (name, value) in vars {
        let _ = writeln!(s, "{name}={}", sh_quote(&value));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dhcp::packet;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn lease() -> Lease {
        Lease {
            address: ip("10.0.2.15"),
            prefix_len: 24,
            routers: vec![ip("10.0.2.2"), ip("10.0.2.3")],
            dns: vec![ip("10.0.2.3"), ip("1.1.1.1")],
            hostname: Some("node1".into()),
            domain: Some("example.org".into()),
            mtu: Some(1400),
            root_path: Some("nbd:10.0.2.2:root:ext4".into()),
            server_id: ip("10.0.2.2"),
            next_server: Some(ip("10.0.2.4")),
            broadcast: Some(ip("10.0.2.255")),
            lease_secs: Some(3600),
            classless_routes: vec![],
        }
    }

    fn ack() -> Reply {
        Reply {
            kind: packet::MessageType::Ack,
            xid: 1,
            yiaddr: ip("10.0.2.15"),
            siaddr: ip("10.0.2.4"),
            sname: None,
            file: None,
            subnet_mask: Some(ip("255.255.255.0")),
            routers: vec![ip("10.0.2.2"), ip("10.0.2.3")],
            dns: vec![ip("10.0.2.3"), ip("1.1.1.1")],
            hostname: Some("node1".into()),
            domain: Some("example.org".into()),
            mtu: Some(1400),
            root_path: Some("nbd:10.0.2.2:root:ext4".into()),
            broadcast: Some(ip("10.0.2.255")),
            lease_secs: Some(3600),
            server_id: Some(ip("10.0.2.2")),
            message: None,
            classless_routes: vec![],
        }
    }

    #[test]
    fn lease_from_ack() {
        assert_eq!(Lease::from_ack(&ack()), Ok(lease()));
        let mut a = ack();
        a.siaddr = Ipv4Addr::UNSPECIFIED;
        a.subnet_mask = None;
        a.root_path = Some(String::new());
        let l = Lease::from_ack(&a).unwrap();
        assert_eq!((l.next_server, l.prefix_len, l.root_path), (None, 8, None));
        a.subnet_mask = Some(ip("255.0.255.0"));
        assert_eq!(Lease::from_ack(&a), Err(ip("255.0.255.0")));
    }

    #[test]
    fn masks_and_macs() {
        for (mask, len) in [
            ("0.0.0.0", 0),
            ("128.0.0.0", 1),
            ("255.255.252.0", 22),
            ("255.255.255.255", 32),
        ] {
            assert_eq!(prefix_len(ip(mask)), Some(len), "{mask}");
            let l = Lease {
                prefix_len: len,
                ..lease()
            };
            assert_eq!(l.netmask(), ip(mask));
        }
        assert_eq!(prefix_len(ip("255.255.0.255")), None);
        assert_eq!(prefix_len(ip("0.0.0.1")), None);
        assert_eq!(class_prefix(ip("10.1.2.3")), 8);
        assert_eq!(class_prefix(ip("172.16.0.1")), 16);
        assert_eq!(class_prefix(ip("192.168.1.1")), 24);
        assert_eq!(
            parse_mac("52:54:00:ab:CD:0f"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0f])
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn classless_routes_replace_the_router_option() {
        let l = lease();
        assert_eq!(l.routes(), [(ip("0.0.0.0"), 0, Some(ip("10.0.2.2")))]);
        let l = Lease {
            classless_routes: vec![
                (ip("192.168.7.0"), 24, ip("0.0.0.0")),
                (ip("0.0.0.0"), 0, ip("10.0.2.9")),
            ],
            ..lease()
        };
        assert_eq!(
            l.routes(),
            [
                (ip("192.168.7.0"), 24, None),
                (ip("0.0.0.0"), 0, Some(ip("10.0.2.9")))
            ]
        );
        let l = Lease {
            routers: vec![],
            ..lease()
        };
        assert_eq!(l.routes(), []);
    }

    #[test]
    fn resolv_conf_lines() {
        assert_eq!(
            resolv_conf("eth0", &lease()),
            "# from DHCP on eth0 (server 10.0.2.2)\nsearch example.org\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
        let l = Lease {
            domain: Some("a.example b.example\nnameserver 6.6.6.6".into()),
            dns: vec![],
            ..lease()
        };
        assert_eq!(
            resolv_conf("eth0", &l),
            "# from DHCP on eth0 (server 10.0.2.2)\nsearch a.example b.example nameserver 6.6.6.6\n",
            "words stay on the search line"
        );
    }

    #[test]
    fn lease_file_lists_the_options() {
        let l = Lease {
            broadcast: None,
            ..lease()
        };
        assert_eq!(
            lease_env(&l),
            "new_ip_address='10.0.2.15'\n\
             new_subnet_mask='255.255.255.0'\n\
             new_prefix_length='24'\n\
             new_routers='10.0.2.2 10.0.2.3'\n\
             new_domain_name_servers='10.0.2.3 1.1.1.1'\n\
             new_host_name='node1'\n\
             new_domain_name='example.org'\n\
             new_interface_mtu='1400'\n\
             new_root_path='nbd:10.0.2.2:root:ext4'\n\
             new_next_server='10.0.2.4'\n\
             new_dhcp_server_identifier='10.0.2.2'\n\
             new_dhcp_lease_time='3600'\n"
        );
        let bare = Lease {
            routers: vec![],
            dns: vec![],
            hostname: None,
            domain: None,
            mtu: None,
            root_path: None,
            next_server: None,
            broadcast: None,
            lease_secs: None,
            ..lease()
        };
        assert_eq!(lease_env(&bare).lines().count(), 4);
    }
}
