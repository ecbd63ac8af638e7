//! The kernel's `ip=` parameter (Documentation/admin-guide/nfs/nfsroot.rst):
//! `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>[:<dns0>[:<dns1>]]`,
//! plus the one-word forms `off`, `none`, `dhcp`, `on`, `any`.

use std::net::Ipv4Addr;

/// The expected form, quoted in errors.
pub const IP_FORM: &str = "<client>:<server>:<gw>:<netmask>:<hostname>:<device>:off, or off";

/// How the network is to be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    /// `ip=off`/`none`: leave interfaces alone (the kernel may have configured them).
    Off,
    /// Automatic configuration (`dhcp`, `on`, `any`, …), optionally on one device.
    Auto {
        device: Option<String>,
    },
    Static(StaticIp),
}

/// A static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub client: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    /// `None`: the first interface that appears.
    pub device: Option<String>,
    pub dns: Vec<Ipv4Addr>,
}

/// What is wrong with an `ip=` value. The caller adds the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("{field} \"{value}\" is not an IPv4 address")]
    BadAddr { field: &'static str, value: String },
    #[error("netmask \"{0}\" is not a contiguous IPv4 mask or prefix length")]
    BadNetmask(String),
    #[error("autoconf \"{0}\" is not one of off, none, static, dhcp, on, any")]
    BadAutoconf(String),
    #[error("the client address is missing")]
    NoClient,
    #[error("too many fields ({0}, at most 9)")]
    TooManyFields(usize),
}

fn is_auto(word: &str) -> bool {
    matches!(
        word,
        "dhcp" | "on" | "any" | "both" | "bootp" | "rarp" | "dhcp6" | "auto6"
    )
}

pub fn parse_ip(value: &str) -> Result<IpConfig, IpError> {
    match value {
        "off" | "none" => return Ok(IpConfig::Off),
        v if is_auto(v) => return Ok(IpConfig::Auto { device: None }),
        _ => {}
    }
    let fields: Vec<&str> = value.split(':').collect();
    if fields.len() > 9 {
        return Err(IpError::TooManyFields(fields.len()));
    }
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let device = field(5).map(str::to_string);

    match field(6) {
        None | Some("off" | "none" | "static") => {}
        Some(a) if is_auto(a) => return Ok(IpConfig::Auto { device }),
        Some(a) => return Err(IpError::BadAutoconf(a.to_string())),
    }

    let addr = |name: &'static str, i: usize| -> Result<Option<Ipv4Addr>, IpError> {
        field(i)
            .map(|v| {
                v.parse().map_err(|_| IpError::BadAddr {
                    field: name,
                    value: v.to_string(),
                })
            })
            .transpose()
    };
    let client = addr("client", 0)?.ok_or(IpError::NoClient)?;
    // Field 1 (the boot server) is only used by the kernel's NFS root; the NBD server comes
    // from root=.
    addr("server", 1)?;
    let gateway = addr("gateway", 2)?;
    let prefix_len = match field(3) {
        Some(mask) => parse_netmask(mask)?,
        None => classful_prefix(client),
    };
    let dns = [addr("dns0", 7)?, addr("dns1", 8)?]
        .into_iter()
        .flatten()
        .collect();
    Ok(IpConfig::Static(StaticIp {
        client,
        prefix_len,
        gateway,
        hostname: field(4).map(str::to_string),
        device,
        dns,
    }))
}

/// A dotted netmask (`255.255.255.0`) or a prefix length (`24`).
fn parse_netmask(mask: &str) -> Result<u8, IpError> {
    let bad = || IpError::BadNetmask(mask.to_string());
    if let Ok(len) = mask.parse::<u8>() {
        return if len <= 32 { Ok(len) } else { Err(bad()) };
    }
    let bits = u32::from(mask.parse::<Ipv4Addr>().map_err(|_| bad())?);
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 {
        return Err(bad());
    }
    Ok(len as u8)
}

/// The kernel's default when no netmask is given: the address class.
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_forms() {
        let c = parse_ip("10.0.2.15::10.0.2.2:255.255.255.0::eth0:off").unwrap();
        assert_eq!(
            c,
            IpConfig::Static(StaticIp {
                client: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                hostname: None,
                device: Some("eth0".into()),
                dns: vec![],
            })
        );
        let IpConfig::Static(c) =
            parse_ip("192.168.1.5:192.168.1.1:192.168.1.1:16:box:enp1s0:none:1.1.1.1:8.8.8.8")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!((c.prefix_len, c.hostname.as_deref()), (16, Some("box")));
        assert_eq!(c.dns.len(), 2);
        // Only the client: classful mask, no gateway, any device.
        let IpConfig::Static(c) = parse_ip("10.1.2.3").unwrap() else {
            panic!()
        };
        assert_eq!((c.prefix_len, c.gateway, c.device), (8, None, None));
        let IpConfig::Static(c) = parse_ip("192.168.0.9::::::").unwrap() else {
            panic!()
        };
        assert_eq!(c.prefix_len, 24);
    }

    #[test]
    fn auto_and_off() {
        assert_eq!(parse_ip("off"), Ok(IpConfig::Off));
        assert_eq!(parse_ip("dhcp"), Ok(IpConfig::Auto { device: None }));
        assert_eq!(
            parse_ip(":::::eth1:dhcp"),
            Ok(IpConfig::Auto {
                device: Some("eth1".into())
            })
        );
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
            parse_ip("10.0.0.1::::::sometimes"),
            Err(IpError::BadAutoconf("sometimes".into()))
        );
        assert_eq!(
            parse_ip("1:2:3:4:5:6:7:8:9:10"),
            Err(IpError::TooManyFields(10))
        );
    }
}
