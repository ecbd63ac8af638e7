//! Where a server is, as users write it on the command line: `host`, `host:port`,
//! `[v6addr]:port`, `nbd://host[:port][/export]`, `nbds://…` (the same over TLS),
//! `nbd+unix:///export?socket=PATH`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::proto::consts::DEFAULT_PORT;

/// The expected forms, quoted in errors.
pub const TARGET_FORMS: &str =
    "host[:port], [ipv6]:port, nbd[s]://host[:port][/export] or nbd+unix:///export?socket=/path";

/// A server's name or address, as written.
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

/// How to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: Host, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A server and, when the URI names one, an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    pub export: Option<String>,
    /// `nbds://`: the URI itself asks for TLS.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server \"{value}\": {why}; expected {TARGET_FORMS}")]
pub struct TargetError {
    pub value: String,
    pub why: &'static str,
}

pub fn parse_target(value: &str) -> Result<Target, TargetError> {
    let err = |why| TargetError {
        value: value.to_string(),
        why,
    };
    if let Some(rest) = value.strip_prefix("nbd+unix://") {
        let (path_part, query) = rest
            .split_once('?')
            .ok_or_else(|| err("no ?socket= path"))?;
        let socket = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("socket="))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err("no ?socket= path"))?;
        let export = path_part.strip_prefix('/').unwrap_or(path_part);
        return Ok(Target {
            endpoint: Endpoint::Unix(PathBuf::from(percent_decode(socket))),
            export: Some(percent_decode(export)),
            tls: false,
        });
    }
    if value.starts_with("nbds+") {
        return Err(err("TLS over a Unix socket is not supported"));
    }
    let (uri, tls) = match (value.strip_prefix("nbd://"), value.strip_prefix("nbds://")) {
        (Some(rest), _) => (Some(rest), false),
        (_, Some(rest)) => (Some(rest), true),
        _ => (None, false),
    };
    let (authority, export) = match uri {
        Some(rest) => match rest.split_once('/') {
            Some((a, e)) => (a, Some(percent_decode(e))),
            None => (rest, None),
        },
        None if value.contains("://") => return Err(err("unknown URI scheme")),
        None => (value, None),
    };
    let (host, port) = split_host_port(authority).ok_or_else(|| err("malformed host or port"))?;
    Ok(Target {
        endpoint: Endpoint::Tcp { host, port },
        export,
        tls,
    })
}

fn split_host_port(s: &str) -> Option<(Host, u16)> {
    let parse_port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
    if let Some(inner) = s.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']')?;
        let ip = addr.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match rest {
            "" => DEFAULT_PORT,
            r => parse_port(r.strip_prefix(':')?)?,
        };
        return Some((Host::Ip(IpAddr::V6(ip)), port));
    }
    // A bare IPv6 address has several colons and no port.
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((Host::Ip(ip), DEFAULT_PORT));
    }
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) => (n, parse_port(p)?),
        None => (s, DEFAULT_PORT),
    };
    if name.is_empty() || name.contains(':') {
        return None;
    }
    let host = match name.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(name.to_string()),
    };
    Some((host, port))
}

/// Decodes %XX escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.into()),
        };
        Endpoint::Tcp { host, port }
    }

    #[test]
    fn forms() {
        let cases: &[(&str, Endpoint, Option<&str>)] = &[
            ("server", tcp("server", 10809), None),
            ("10.0.0.1:10900", tcp("10.0.0.1", 10900), None),
            ("::1", tcp("::1", 10809), None),
            ("[fd00::1]:99", tcp("fd00::1", 99), None),
            ("nbd://srv", tcp("srv", 10809), None),
            (
                "nbd://srv:1234/disk%20one",
                tcp("srv", 1234),
                Some("disk one"),
            ),
            ("nbd://[::1]/", tcp("::1", 10809), Some("")),
            (
                "nbd+unix:///root?socket=/run/nbd.sock",
                Endpoint::Unix("/run/nbd.sock".into()),
                Some("root"),
            ),
        ];
        for (input, endpoint, export) in cases {
            let t = parse_target(input).unwrap();
            assert_eq!(&t.endpoint, endpoint, "{input}");
            assert_eq!(t.export.as_deref(), *export, "{input}");
            assert!(!t.tls, "{input}");
        }
        let t = parse_target("nbds://srv:1234/root").unwrap();
        assert_eq!(
            (t.endpoint, t.export.as_deref(), t.tls),
            (tcp("srv", 1234), Some("root"), true)
        );
        assert_eq!(tcp("fd00::1", 99).to_string(), "[fd00::1]:99");
        assert_eq!(percent_decode("a%2fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent_decode("é%"), "é%");
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "srv:0",
            "srv:x",
            "srv:70000",
            "[::1",
            "nbds+unix:///x?socket=/s",
            "nbds://srv:0/x",
            "http://srv",
            "nbd+unix:///x",
        ] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("server \"{bad}\": ")), "{e}");
            assert!(e.ends_with(TARGET_FORMS), "{e}");
        }
    }
}
