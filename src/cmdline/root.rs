//! The dracut network root grammar: `nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]]`.
//!
//! Unlike dracut, an empty field keeps its default and a field equal to the one before it is
//! kept as written; nbd options are applied, not dropped, and unknown ones are refused.

use std::net::IpAddr;
use std::time::Duration;

use crate::address::Host;
use crate::plan::{DebianSpec, NbdOpts, NbdSpec};
use crate::proto::consts::DEFAULT_PORT;

/// The expected form, quoted in every error about this grammar.
pub const NBD_ROOT_FORM: &str = "nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]]";

/// An NBD server host: an address, or a name that needs resolving.
/// What is wrong with an `nbd:` string. The caller adds the parameter name and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    #[error("does not start with \"nbd:\"")]
    NotNbd,
    #[error("the server is missing")]
    NoServer,
    #[error("unclosed \"[\" around an IPv6 server")]
    UnclosedBracket,
    #[error("\"{0}\" in brackets is not an IPv6 address")]
    BadIpv6(String),
    #[error("the port or export name is missing")]
    NoPortOrExport,
    #[error("port {0} is out of range 1-65535")]
    BadPort(String),
    #[error("\"{0}\" is not an nbd device; expected nbdN or /dev/nbdN")]
    BadDevice(String),
    #[error("nbd option \"{opt}\": {why}")]
    BadOpt { opt: String, why: &'static str },
}

const KNOWN_OPTS: &str =
    "expected bs=<512|1024|2048|4096>, timeout=<seconds>, export=<name>, readonly or tls";

/// Parses `nbd:…` (the part after `root=`, `netroot=` or a DHCP root-path).
pub fn parse_nbd(value: &str) -> Result<NbdSpec, RootError> {
    let rest = value.strip_prefix("nbd:").ok_or(RootError::NotNbd)?;
    let (host, rest) = split_host(rest)?;
    let mut fields = rest.splitn(4, ':');
    let port_or_export = fields.next().unwrap_or("");
    let fstype = non_empty(fields.next());
    let rootflags = non_empty(fields.next());
    let nbdopts = fields.next().unwrap_or("");

    let (port, mut export) = self::port_or_export(port_or_export)?;

    let mut opts = NbdOpts::default();
    for opt in nbdopts.split(',').filter(|o| !o.is_empty()) {
        let bad = |why| RootError::BadOpt {
            opt: opt.to_string(),
            why,
        };
        match opt.split_once('=') {
            Some(("bs", v)) => match v.parse::<u32>() {
                Ok(bs @ (512 | 1024 | 2048 | 4096)) => opts.block_size = Some(bs),
                _ => return Err(bad("expected a block size of 512, 1024, 2048 or 4096")),
            },
            Some(("timeout", v)) => match v.parse::<u64>() {
                Ok(s) if s > 0 => opts.timeout = Some(Duration::from_secs(s)),
                _ => return Err(bad("expected a timeout in whole seconds, at least 1")),
            },
            Some(("export", v)) => export = v.to_string(),
            Some(("conns", v)) => match v.parse::<u16>() {
                Ok(n @ 1..=64) => opts.connections = Some(n),
                _ => return Err(bad("expected a connection count from 1 to 64")),
            },
            Some(("dead-timeout", v)) => match v.parse::<u64>() {
                Ok(s) => opts.dead_timeout = Some(Duration::from_secs(s)),
                _ => return Err(bad("expected a timeout in whole seconds")),
            },
            Some(("prio", v)) => match v.parse::<u16>() {
                Ok(p @ 0..=32767) => opts.priority = Some(p),
                _ => return Err(bad("expected a swap priority from 0 to 32767")),
            },
            None if opt == "readonly" || opt == "ro" => opts.read_only = true,
            None if opt == "mkswap" => opts.mkswap = true,
            None if opt == "tls" => opts.tls = true,
            _ => return Err(bad(KNOWN_OPTS)),
        }
    }

    Ok(NbdSpec {
        host,
        port,
        export,
        fstype: fstype.map(str::to_string),
        rootflags: rootflags.map(str::to_string),
        opts,
    })
}

/// The expected forms of Debian's `nbdroot=`, quoted in errors.
pub const DEBIAN_FORM: &str =
    "<server>,<port|export>[,nbdX], dhcp[,<port|export>[,nbdX]], or <server>[:<port>]/<export>";

/// Parses Debian's `nbdroot=` value (also the form of a DHCP root-path it reads).
pub fn parse_debian(value: &str) -> Result<DebianSpec, RootError> {
    if value.is_empty() || value == "dhcp" {
        return Ok(DebianSpec::FromRootPath);
    }
    let host_of = |s: &str| -> Result<Option<Host>, RootError> {
        if s.is_empty() || s == "dhcp" {
            return Ok(None);
        }
        let (host, rest) = split_host(s)?;
        if !rest.is_empty() {
            return Err(RootError::NoServer);
        }
        Ok(Some(host))
    };
    if let Some((server, rest)) = value.split_once(',') {
        let mut fields = rest.splitn(2, ',');
        let (port, export) = port_or_export(fields.next().unwrap_or(""))?;
        let device = match fields.next() {
            None | Some("") => None,
            Some(d) => Some(nbd_index(d).ok_or_else(|| RootError::BadDevice(d.to_string()))?),
        };
        return Ok(DebianSpec::Given {
            host: host_of(server)?,
            port,
            export,
            device,
        });
    }
    // URL-like: `[v6]:port/name`, `srv:port/name`, `srv:/name`, `srv/name`, `/name`.
    let (authority, export) = value.split_once('/').ok_or(RootError::NoPortOrExport)?;
    let (server, port) = match authority.strip_prefix('[') {
        Some(_) => match authority.rfind("]:") {
            Some(i) => (&authority[..i + 1], &authority[i + 2..]),
            None => (authority, ""),
        },
        None => authority.split_once(':').unwrap_or((authority, "")),
    };
    let port = match port {
        "" => DEFAULT_PORT,
        p => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| RootError::BadPort(p.to_string()))?,
    };
    Ok(DebianSpec::Given {
        host: host_of(server)?,
        port,
        export: export.to_string(),
        device: None,
    })
}

/// `nbd3` or `/dev/nbd3` → 3.
pub fn nbd_index(s: &str) -> Option<u32> {
    s.strip_prefix("/dev/")
        .unwrap_or(s)
        .strip_prefix("nbd")?
        .parse()
        .ok()
}

/// A port (numeric) or an export name on the default port.
fn port_or_export(field: &str) -> Result<(u16, String), RootError> {
    if field.is_empty() {
        Err(RootError::NoPortOrExport)
    } else if field.bytes().all(|b| b.is_ascii_digit()) {
        match field.parse::<u16>() {
            Ok(p) if p > 0 => Ok((p, String::new())),
            _ => Err(RootError::BadPort(field.to_string())),
        }
    } else {
        Ok((DEFAULT_PORT, field.to_string()))
    }
}

fn non_empty(field: Option<&str>) -> Option<&str> {
    field.filter(|f| !f.is_empty())
}

/// Splits off the server: `[v6addr]` or everything up to the next colon.
fn split_host(s: &str) -> Result<(Host, &str), RootError> {
    let (host, rest) = if let Some(inner) = s.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']').ok_or(RootError::UnclosedBracket)?;
        let ip = addr
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| RootError::BadIpv6(addr.to_string()))?;
        (
            Host::Ip(IpAddr::V6(ip)),
            rest.strip_prefix(':').unwrap_or(rest),
        )
    } else {
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        if name.is_empty() {
            return Err(RootError::NoServer);
        }
        let host = match name.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(name.to_string()),
        };
        (host, rest)
    };
    Ok((host, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_forms() {
        let given = |host: Option<&str>, port, export: &str, device| DebianSpec::Given {
            host: host.map(|h| match h.parse() {
                Ok(ip) => Host::Ip(ip),
                Err(_) => Host::Name(h.into()),
            }),
            port,
            export: export.into(),
            device,
        };
        let cases = [
            ("dhcp", DebianSpec::FromRootPath),
            ("", DebianSpec::FromRootPath),
            (
                "192.168.1.1,export,nbd0",
                given(Some("192.168.1.1"), 10809, "export", Some(0)),
            ),
            (
                "192.168.1.1,10900",
                given(Some("192.168.1.1"), 10900, "", None),
            ),
            (
                "192.168.1.1,mydebian,/dev/nbd2",
                given(Some("192.168.1.1"), 10809, "mydebian", Some(2)),
            ),
            ("dhcp,root", given(None, 10809, "root", None)),
            ("dhcp,10900,nbd1", given(None, 10900, "", Some(1))),
            (
                "10.0.2.2/myvm",
                given(Some("10.0.2.2"), 10809, "myvm", None),
            ),
            ("srv:10900/disk", given(Some("srv"), 10900, "disk", None)),
            ("srv:/disk", given(Some("srv"), 10809, "disk", None)),
            ("/disk", given(None, 10809, "disk", None)),
            (
                "[fd00::1]:10900/disk",
                given(Some("fd00::1"), 10900, "disk", None),
            ),
            (
                "[fd00::1]/disk",
                given(Some("fd00::1"), 10809, "disk", None),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_debian(input), Ok(want), "{input}");
        }
        for (input, err) in [
            ("srv,", RootError::NoPortOrExport),
            ("srv,0", RootError::BadPort("0".into())),
            ("srv,x,sda", RootError::BadDevice("sda".into())),
            ("srv", RootError::NoPortOrExport),
            ("srv:99999/x", RootError::BadPort("99999".into())),
        ] {
            assert_eq!(parse_debian(input), Err(err), "{input}");
        }
        let (spec, dev) = parse_debian("dhcp,root,nbd1")
            .unwrap()
            .to_nbd(Some(Host::Name("s".into())))
            .unwrap();
        assert_eq!(
            (spec.address(), spec.export.as_str(), dev),
            ("s:10809".into(), "root", Some(1))
        );
        assert_eq!(parse_debian("dhcp,root").unwrap().to_nbd(None), None);
    }

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn forms() {
        let p = parse_nbd("nbd:10.0.2.2:10810").unwrap();
        assert_eq!(
            (p.host.clone(), p.port, p.export.as_str()),
            (ip("10.0.2.2"), 10810, "")
        );
        assert_eq!(p.address(), "10.0.2.2:10810");

        let p = parse_nbd("nbd:srv:root:ext4:errors=panic,noatime").unwrap();
        assert_eq!(p.host, Host::Name("srv".into()));
        assert_eq!((p.port, p.export.as_str()), (DEFAULT_PORT, "root"));
        assert_eq!(p.fstype.as_deref(), Some("ext4"));
        assert_eq!(p.rootflags.as_deref(), Some("errors=panic,noatime"));

        // Empty fields keep their defaults; equal neighbouring fields are both kept.
        let p = parse_nbd("nbd:srv:exp::errors=panic").unwrap();
        assert_eq!(
            (p.fstype, p.rootflags.as_deref()),
            (None, Some("errors=panic"))
        );
        let p = parse_nbd("nbd:srv:ext4:ext4").unwrap();
        assert_eq!(
            (p.export.as_str(), p.fstype.as_deref()),
            ("ext4", Some("ext4"))
        );

        let p = parse_nbd("nbd:[fd00::1]:10809:xfs").unwrap();
        assert_eq!(p.host, ip("fd00::1"));
        assert_eq!(p.address(), "[fd00::1]:10809");

        let p = parse_nbd(
            "nbd:10.0.0.1:10900:::bs=4096,timeout=30,export=disk,readonly,conns=4,dead-timeout=60,tls",
        )
        .unwrap();
        assert_eq!(p.port, 10900);
        assert_eq!(p.export, "disk");
        assert_eq!(
            p.opts,
            NbdOpts {
                block_size: Some(4096),
                timeout: Some(Duration::from_secs(30)),
                read_only: true,
                connections: Some(4),
                dead_timeout: Some(Duration::from_secs(60)),
                mkswap: false,
                priority: None,
                tls: true,
            }
        );
    }

    #[test]
    fn errors() {
        let cases = [
            ("10.0.2.2:10809", RootError::NotNbd),
            ("nbd:", RootError::NoServer),
            ("nbd::10809", RootError::NoServer),
            ("nbd:srv", RootError::NoPortOrExport),
            ("nbd:srv:", RootError::NoPortOrExport),
            ("nbd:srv:0", RootError::BadPort("0".into())),
            ("nbd:srv:70000", RootError::BadPort("70000".into())),
            ("nbd:[fd00::1:10809", RootError::UnclosedBracket),
            (
                "nbd:[10.0.0.1]:10809",
                RootError::BadIpv6("10.0.0.1".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_nbd(input), Err(want), "{input}");
        }
        for opt in [
            "bs=1000",
            "timeout=0",
            "timeout=x",
            "frobnicate",
            "-swap",
            "conns=0",
            "conns=65",
            "dead-timeout=x",
        ] {
            let err = parse_nbd(&format!("nbd:srv:1:::{opt}")).unwrap_err();
            assert!(matches!(err, RootError::BadOpt { .. }), "{opt}: {err}");
        }
    }
}
