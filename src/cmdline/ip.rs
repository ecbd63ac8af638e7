//! `ip=` in the kernel's form (Documentation/admin-guide/nfs/nfsroot.rst) and dracut's:
//!
//! - `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>[:<dns0>[:<dns1>]]`
//! - `ip=<client>:[<peer>]:<gw>:<netmask>:<hostname>:<device>:<autoconf>[:[<mtu>][:<macaddr>]]`
//! - `ip=<device>:<autoconf>[:[<mtu>][:<macaddr>]]`
//! - `ip=<autoconf>`: `off`, `none`, `dhcp`, `on`, `any`, …
//!
//! IPv6 addresses are written in brackets: `ip=[fd00::15]::[fd00::1]:64::eth0:none`.

use std::net::{IpAddr, Ipv4Addr};

use super::mac::parse_mac;
use crate::plan::{IpConfig, Mac, StaticIp};

/// The expected forms, quoted in errors.
pub const IP_FORM: &str =
    "<client>:[<server>]:<gw>:<netmask>:<hostname>:<device>:{off|none|dhcp}[:<mtu>|<dns0>[:<mac>|<dns1>]], <device>:dhcp, dhcp or off";

/// What is wrong with an `ip=` value. The caller adds the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("{field} \"{value}\" is not an IP address")]
    BadAddr { field: &'static str, value: String },
    #[error("netmask \"{0}\" is not a contiguous netmask or prefix length")]
    BadNetmask(String),
    #[error("autoconf \"{0}\" is not one of off, none, static, dhcp, on, any")]
    BadAutoconf(String),
    #[error("\"{0}\" (IPv6 autoconfiguration) is not supported; give a static [address]")]
    Ipv6Auto(String),
    #[error("the client address is missing")]
    NoClient,
    #[error("the client {client} and the gateway {gateway} are not the same IP version")]
    MixedFamilies { client: IpAddr, gateway: IpAddr },
    #[error(
        "field {index} \"{value}\" is neither an MTU (68-65535), a MAC address nor a DNS server"
    )]
    BadExtra { index: usize, value: String },
    #[error("unclosed \"[\"")]
    UnclosedBracket,
    #[error("too many fields ({0}, at most 9)")]
    TooManyFields(usize),
}

enum Auto {
    Off,
    Dhcp,
}

fn autoconf(word: &str) -> Result<Auto, IpError> {
    match word {
        "" | "off" | "none" | "static" => Ok(Auto::Off),
        "dhcp" | "on" | "any" | "both" | "bootp" | "single-dhcp" => Ok(Auto::Dhcp),
        "dhcp6" | "auto6" | "either6" | "link6" | "ibft" | "rarp" => {
            Err(IpError::Ipv6Auto(word.to_string()))
        }
        w => Err(IpError::BadAutoconf(w.to_string())),
    }
}

/// Splits on `:` except inside `[...]`, and removes the brackets.
fn fields(value: &str) -> Result<Vec<&str>, IpError> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner.split_once(']').ok_or(IpError::UnclosedBracket)?;
            out.push(addr);
            match after.strip_prefix(':') {
                Some(r) => rest = r,
                None if after.is_empty() => return Ok(out),
                None => return Err(IpError::UnclosedBracket),
            }
        } else {
            match rest.split_once(':') {
                Some((f, r)) => {
                    out.push(f);
                    rest = r;
                }
                None => {
                    out.push(rest);
                    return Ok(out);
                }
            }
        }
    }
}

fn addr(field: &'static str, value: &str) -> Result<Option<IpAddr>, IpError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| IpError::BadAddr {
        field,
        value: value.to_string(),
    })
}

/// The MTU and MAC fields of dracut's forms.
fn mtu_mac(f: &[&str], at: usize) -> Result<(Option<u16>, Option<Mac>), IpError> {
    let mtu = match f.get(at).copied().filter(|v| !v.is_empty()) {
        Some(v) => Some(parse_mtu(v).ok_or_else(|| IpError::BadExtra {
            index: at + 1,
            value: v.to_string(),
        })?),
        None => None,
    };
    let mac = match f.get(at + 1).copied().filter(|v| !v.is_empty()) {
        Some(v) => Some(parse_mac(v).ok_or_else(|| IpError::BadExtra {
            index: at + 2,
            value: v.to_string(),
        })?),
        None => None,
    };
    Ok((mtu, mac))
}

fn parse_mtu(v: &str) -> Option<u16> {
    v.parse().ok().filter(|m| *m >= 68)
}

fn is_keyword(word: &str) -> bool {
    !word.is_empty() && !matches!(autoconf(word), Err(IpError::BadAutoconf(_)))
}

pub fn parse_ip(value: &str) -> Result<IpConfig, IpError> {
    if is_keyword(value) {
        return match autoconf(value)? {
            Auto::Off => Ok(IpConfig::Off),
            Auto::Dhcp => Ok(IpConfig::Dhcp {
                device: None,
                mtu: None,
                mac: None,
            }),
        };
    }
    let mut f = fields(value)?;
    // A trailing MAC address written with colons spans six fields: join them back.
    if f.len() >= 8 {
        let tail = &f[f.len() - 6..];
        if tail
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            let start = value.len() - tail.iter().map(|p| p.len() + 1).sum::<usize>() + 1;
            let mac = &value[start..];
            f.truncate(f.len() - 6);
            f.push(mac);
        }
    }
    if f.len() > 9 {
        return Err(IpError::TooManyFields(f.len()));
    }
    // `<device>:<autoconf>[:<mtu>[:<mac>]]`: the second field is an autoconf keyword.
    if (2..=4).contains(&f.len()) && is_keyword(f[1]) && f[0].parse::<IpAddr>().is_err() {
        // An empty device is none, as in the kernel's form: DHCP wherever a link comes up.
        let device = Some(f[0]).filter(|d| !d.is_empty()).map(str::to_string);
        return match autoconf(f.get(1).copied().unwrap_or(""))? {
            Auto::Off => Err(IpError::NoClient),
            Auto::Dhcp => {
                let (mtu, mac) = mtu_mac(&f, 2)?;
                Ok(IpConfig::Dhcp { device, mtu, mac })
            }
        };
    }
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    let device = Some(get(5)).filter(|d| !d.is_empty()).map(str::to_string);
    // Fields 8 and 9: DNS servers (kernel) or MTU and MAC (dracut), told apart by their form.
    let (mut dns, mut mtu, mut mac) = (Vec::new(), None, None);
    for i in [7, 8] {
        let v = get(i);
        if v.is_empty() {
            continue;
        }
        if let Ok(ip) = v.parse::<IpAddr>() {
            dns.push(ip);
        } else if let (7, Some(m)) = (i, parse_mtu(v)) {
            mtu = Some(m);
        } else if let (8, Some(m)) = (i, parse_mac(v)) {
            mac = Some(m);
        } else {
            return Err(IpError::BadExtra {
                index: i + 1,
                value: v.to_string(),
            });
        }
    }
    if let Auto::Dhcp = autoconf(get(6))? {
        return Ok(IpConfig::Dhcp { device, mtu, mac });
    }
    let client = addr("client", get(0))?.ok_or(IpError::NoClient)?;
    // Field 2 (the boot server) is only for the kernel's NFS root; the NBD server is in root=.
    addr("server", get(1))?;
    let gateway = addr("gateway", get(2))?;
    if let Some(gw) = gateway {
        if gw.is_ipv4() != client.is_ipv4() {
            return Err(IpError::MixedFamilies {
                client,
                gateway: gw,
            });
        }
    }
    let prefix_len = match get(3) {
        "" => default_prefix(client),
        mask => parse_netmask(mask, client.is_ipv4())?,
    };
    Ok(IpConfig::Static(StaticIp {
        client,
        prefix_len,
        gateway,
        hostname: Some(get(4)).filter(|h| !h.is_empty()).map(str::to_string),
        device,
        dns,
        mtu,
        mac,
    }))
}

/// A dotted netmask (`255.255.255.0`) or a prefix length (`24`, `64`).
fn parse_netmask(mask: &str, v4: bool) -> Result<u8, IpError> {
    let bad = || IpError::BadNetmask(mask.to_string());
    let max = if v4 { 32 } else { 128 };
    if let Ok(len) = mask.parse::<u8>() {
        return if len <= max { Ok(len) } else { Err(bad()) };
    }
    if !v4 {
        return Err(bad());
    }
    let bits = u32::from(mask.parse::<Ipv4Addr>().map_err(|_| bad())?);
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 {
        return Err(bad());
    }
    Ok(len as u8)
}

/// The kernel's default when no netmask is given: the address class (IPv6: /64).
fn default_prefix(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(a) => match a.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
        IpAddr::V6(_) => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn stat(value: &str) -> StaticIp {
        match parse_ip(value) {
            Ok(IpConfig::Static(s)) => s,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn kernel_static_forms() {
        let s = stat("10.0.2.15::10.0.2.2:255.255.255.0::eth0:off");
        assert_eq!(
            s,
            StaticIp {
                client: ip("10.0.2.15"),
                prefix_len: 24,
                gateway: Some(ip("10.0.2.2")),
                hostname: None,
                device: Some("eth0".into()),
                dns: vec![],
                mtu: None,
                mac: None,
            }
        );
        let s = stat("192.168.1.5:192.168.1.1:192.168.1.1:16:box:enp1s0:none:1.1.1.1:8.8.8.8");
        assert_eq!((s.prefix_len, s.hostname.as_deref()), (16, Some("box")));
        assert_eq!(s.dns, [ip("1.1.1.1"), ip("8.8.8.8")]);
        let s = stat("10.1.2.3");
        assert_eq!((s.prefix_len, s.gateway, s.device), (8, None, None));
        assert_eq!(stat("192.168.0.9::::::").prefix_len, 24);
    }

    #[test]
    fn dracut_static_forms_with_mtu_and_mac() {
        let s = stat("10.0.0.5::10.0.0.1:24:host:eth1:none:9000:52:54:00:12:34:56");
        assert_eq!(s.mtu, Some(9000));
        assert_eq!(
            s.mac.map(|m| m.to_string()).as_deref(),
            Some("52:54:00:12:34:56")
        );
        // MTU alone, DNS alone.
        assert_eq!(stat("10.0.0.5::10.0.0.1:24::eth1:off:1400").mtu, Some(1400));
        assert_eq!(
            stat("10.0.0.5::10.0.0.1:24::eth1:off:10.0.0.53").dns,
            [ip("10.0.0.53")]
        );
    }

    #[test]
    fn ipv6_static() {
        let s = stat("[fd00::15]::[fd00::1]:64::eth0:none");
        assert_eq!(
            (s.client, s.gateway, s.prefix_len),
            (ip("fd00::15"), Some(ip("fd00::1")), 64)
        );
        assert_eq!(stat("[fd00::15]:::::eth0:off").prefix_len, 64);
        assert_eq!(
            stat("[2001:db8::2]::[2001:db8::1]:48::eth0:none:[2001:db8::53]").dns,
            [ip("2001:db8::53")]
        );
    }

    #[test]
    fn auto_and_off() {
        let dhcp = |device: Option<&str>, mtu| IpConfig::Dhcp {
            device: device.map(str::to_string),
            mtu,
            mac: None,
        };
        assert_eq!(parse_ip("off"), Ok(IpConfig::Off));
        assert_eq!(parse_ip("none"), Ok(IpConfig::Off));
        for w in ["dhcp", "on", "any"] {
            assert_eq!(parse_ip(w), Ok(dhcp(None, None)), "{w}");
        }
        assert_eq!(parse_ip("eth1:dhcp"), Ok(dhcp(Some("eth1"), None)));
        assert_eq!(
            parse_ip("eth1:dhcp:1500"),
            Ok(dhcp(Some("eth1"), Some(1500)))
        );
        let with_mac = parse_ip("eth1:dhcp:1500:52:54:00:12:34:56");
        assert!(
            matches!(
                with_mac,
                Ok(IpConfig::Dhcp {
                    mac: Some(_),
                    mtu: Some(1500),
                    ..
                })
            ),
            "{with_mac:?}"
        );
        assert_eq!(parse_ip(":::::eth1:dhcp"), Ok(dhcp(Some("eth1"), None)));
        // Found by the cmdline fuzz target: an empty device was Some(""), and the boot
        // then waited for an interface named "".
        assert_eq!(parse_ip(":dhcp"), Ok(dhcp(None, None)));
        assert_eq!(parse_ip(":dhcp:1500"), Ok(dhcp(None, Some(1500))));
    }

    #[test]
    fn errors() {
        assert_eq!(parse_ip("::::::off"), Err(IpError::NoClient));
        assert!(matches!(
            parse_ip("10.0.2.300"),
            Err(IpError::BadAddr {
                field: "client",
                ..
            })
        ));
        assert!(matches!(
            parse_ip("10.0.2.300::"),
            Err(IpError::BadAddr {
                field: "client",
                ..
            })
        ));
        assert!(matches!(
            parse_ip("10.0.0.1::gw"),
            Err(IpError::BadAddr {
                field: "gateway",
                ..
            })
        ));
        assert_eq!(
            parse_ip("10.0.0.1:::255.0.255.0"),
            Err(IpError::BadNetmask("255.0.255.0".into()))
        );
        assert_eq!(
            parse_ip("10.0.0.1:::33"),
            Err(IpError::BadNetmask("33".into()))
        );
        assert_eq!(
            parse_ip("[fd00::1]:::129"),
            Err(IpError::BadNetmask("129".into()))
        );
        assert_eq!(
            parse_ip("10.0.0.1::::::sometimes"),
            Err(IpError::BadAutoconf("sometimes".into()))
        );
        assert_eq!(parse_ip("dhcp6"), Err(IpError::Ipv6Auto("dhcp6".into())));
        assert_eq!(
            parse_ip("eth0:auto6"),
            Err(IpError::Ipv6Auto("auto6".into()))
        );
        assert_eq!(
            parse_ip("1:2:3:4:5:6:7:8:9:10"),
            Err(IpError::TooManyFields(10))
        );
        assert_eq!(parse_ip("[fd00::1:::"), Err(IpError::UnclosedBracket));
        assert!(matches!(
            parse_ip("10.0.0.1::[fd00::1]"),
            Err(IpError::MixedFamilies { .. })
        ));
        assert!(matches!(
            parse_ip("10.0.0.1:::::eth0:off:huge"),
            Err(IpError::BadExtra { index: 8, .. })
        ));
        assert!(matches!(
            parse_ip("10.0.0.1:::::eth0:off:1400:notamac"),
            Err(IpError::BadExtra { index: 9, .. })
        ));
    }
}
