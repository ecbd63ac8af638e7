//! The dracut network root grammar: `nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]]`.
//!
//! Unlike dracut, an empty field keeps its default and a field equal to the one before it is
//! kept as written; nbd options are applied, not dropped, and unknown ones are refused.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::proto::consts::DEFAULT_PORT;

/// The expected form, quoted in every error about this grammar.
pub const NBD_ROOT_FORM: &str = "nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]]";

/// An NBD server host: an address, or a name that needs resolving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Where the root export lives and how to attach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdSpec {
    pub host: Host,
    pub port: u16,
    /// Export name; empty means the server's default export.
    pub export: String,
    /// Filesystem type; `None` means detect it.
    pub fstype: Option<String>,
    /// Mount options as written, `ro`/`rw` included (the caller resolves those).
    pub rootflags: Option<String>,
    pub opts: NbdOpts,
}

impl NbdSpec {
    /// `host:port`, with brackets around IPv6 addresses.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The nbdopts field: comma-separated options for the NBD connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NbdOpts {
    /// Kernel block size (`bs=`), overriding what the server prefers.
    pub block_size: Option<u32>,
    /// Kernel I/O timeout (`timeout=` seconds).
    pub timeout: Option<Duration>,
    /// Attach read-only whatever the server allows (`readonly` or `ro`).
    pub read_only: bool,
}

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
    #[error("nbd option \"{opt}\": {why}")]
    BadOpt { opt: String, why: &'static str },
}

const KNOWN_OPTS: &str =
    "expected bs=<512|1024|2048|4096>, timeout=<seconds>, export=<name> or readonly";

/// Parses `nbd:…` (the part after `root=`, `netroot=` or a DHCP root-path).
pub fn parse_nbd(value: &str) -> Result<NbdSpec, RootError> {
    let rest = value.strip_prefix("nbd:").ok_or(RootError::NotNbd)?;
    let (host, rest) = split_host(rest)?;
    let mut fields = rest.splitn(4, ':');
    let port_or_export = fields.next().unwrap_or("");
    let fstype = non_empty(fields.next());
    let rootflags = non_empty(fields.next());
    let nbdopts = fields.next().unwrap_or("");

    let (mut port, mut export) = (DEFAULT_PORT, String::new());
    if port_or_export.is_empty() {
        return Err(RootError::NoPortOrExport);
    } else if port_or_export.bytes().all(|b| b.is_ascii_digit()) {
        port = match port_or_export.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(RootError::BadPort(port_or_export.to_string())),
        };
    } else {
        export = port_or_export.to_string();
    }

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
            None if opt == "readonly" || opt == "ro" => opts.read_only = true,
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

        let p = parse_nbd("nbd:10.0.0.1:10900:::bs=4096,timeout=30,export=disk,readonly").unwrap();
        assert_eq!(p.port, 10900);
        assert_eq!(p.export, "disk");
        assert_eq!(
            p.opts,
            NbdOpts {
                block_size: Some(4096),
                timeout: Some(Duration::from_secs(30)),
                read_only: true
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
        for opt in ["bs=1000", "timeout=0", "timeout=x", "frobnicate", "-swap"] {
            let err = parse_nbd(&format!("nbd:srv:1:::{opt}")).unwrap_err();
            assert!(matches!(err, RootError::BadOpt { .. }), "{opt}: {err}");
        }
    }
}
