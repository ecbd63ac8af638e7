//! The kernel command line → a [`BootPlan`]: pure data, no I/O.

pub mod ip;
pub mod root;

use std::time::Duration;

pub use ip::{IpConfig, StaticIp};
pub use root::{Host, NbdOpts, NbdSpec};

/// Everything the boot flow needs to know, decided before it touches the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub nbd: NbdSpec,
    pub network: IpConfig,
    pub mount: RootMount,
    /// `init=`; `None` means the kernel's search order.
    pub init: Option<String>,
    pub connect: ConnectPolicy,
}

/// How the root filesystem is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    pub fstype: Option<String>,
    /// Mount options without `ro`/`rw`.
    pub options: String,
    pub read_only: bool,
}

/// Bounds on reaching the server at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// Bound on one attempt: TCP connect plus handshake (`rd.nbdroot.timeout=`).
    pub attempt_timeout: Duration,
    /// Attempts after the first one fails (`rd.nbdroot.retries=`).
    pub retries: u32,
}

impl Default for ConnectPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            retries: 5,
        }
    }
}

/// A kernel command line that does not describe a bootable NBD root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error(
        "no NBD root on the kernel command line: expected root={}",
        root::NBD_ROOT_FORM
    )]
    NoRoot,
    #[error("{param}={value}: {source}; expected {param}={}", root::NBD_ROOT_FORM)]
    Root {
        param: &'static str,
        value: String,
        source: root::RootError,
    },
    #[error("ip={value}: {source}; expected ip={}", ip::IP_FORM)]
    Ip { value: String, source: ip::IpError },
    #[error("{param}={value}: expected {expected}")]
    Value {
        param: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Splits a command line into `(key, value)` pairs the way the kernel does: on whitespace,
/// with double quotes protecting spaces (and removed).
pub fn tokenize(line: &str) -> Vec<(String, Option<String>)> {
    let mut params = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return params;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next_if(|c| quoted || !c.is_whitespace()) {
            if c == '"' {
                quoted = !quoted;
            } else {
                word.push(c);
            }
        }
        params.push(match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word, None),
        });
    }
}

/// Builds the boot plan from the kernel command line.
pub fn parse(line: &str) -> Result<BootPlan, CmdlineError> {
    let params = tokenize(line);
    // The kernel stops at "--": the rest belongs to init.
    let params = params
        .split(|(k, v)| k == "--" && v.is_none())
        .next()
        .unwrap_or(&[]);
    // The last occurrence of a parameter wins, as in the kernel.
    let last = |key: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    };

    let root = last("root").ok_or(CmdlineError::NoRoot)?;
    if !root.starts_with("nbd:") {
        return Err(CmdlineError::NoRoot);
    }
    let nbd = root::parse_nbd(root).map_err(|source| CmdlineError::Root {
        param: "root",
        value: root.to_string(),
        source,
    })?;

    let network = match last("ip") {
        Some(v) => ip::parse_ip(v).map_err(|source| CmdlineError::Ip {
            value: v.to_string(),
            source,
        })?,
        // A network root without ip= means automatic configuration.
        None => IpConfig::Auto { device: None },
    };

    // Kernel ro/rw win over the rootflags field, which wins over the default (read-only, as
    // the kernel mounts its root).
    let flags = nbd
        .rootflags
        .clone()
        .or_else(|| last("rootflags").map(str::to_string));
    let mut read_only = true;
    let mut options = Vec::new();
    for opt in flags
        .iter()
        .flat_map(|f| f.split(','))
        .filter(|o| !o.is_empty())
    {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            o => options.push(o),
        }
    }
    let kernel_rw = params
        .iter()
        .rev()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("ro", None) => Some(true),
            ("rw", None) => Some(false),
            _ => None,
        });
    if let Some(ro) = kernel_rw {
        read_only = ro;
    }
    let fstype = nbd.fstype.clone().or_else(|| {
        last("rootfstype")
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    });

    let init = match last("init") {
        Some(p) if p.starts_with('/') => Some(p.to_string()),
        Some(p) => {
            return Err(CmdlineError::Value {
                param: "init",
                value: p.to_string(),
                expected: "an absolute path such as /sbin/init",
            })
        }
        None => None,
    };

    let mut connect = ConnectPolicy::default();
    if let Some(v) = last("rd.nbdroot.timeout") {
        connect.attempt_timeout = Duration::from_secs(number(
            "rd.nbdroot.timeout",
            v,
            1..=3600,
            "whole seconds from 1 to 3600",
        )?);
    }
    if let Some(v) = last("rd.nbdroot.retries") {
        connect.retries =
            number("rd.nbdroot.retries", v, 0..=1000, "a count from 0 to 1000")? as u32;
    }

    Ok(BootPlan {
        nbd,
        network,
        mount: RootMount {
            fstype,
            options: options.join(","),
            read_only,
        },
        init,
        connect,
    })
}

fn number(
    param: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
    expected: &'static str,
) -> Result<u64, CmdlineError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| CmdlineError::Value {
            param,
            value: value.to_string(),
            expected,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";

    #[test]
    fn tokenizer_handles_quotes() {
        let t = tokenize(r#"  root=nbd:a:1 quiet "init=/bin/my init" x="a b"c  "#);
        let want: Vec<(String, Option<String>)> = vec![
            ("root".into(), Some("nbd:a:1".into())),
            ("quiet".into(), None),
            ("init".into(), Some("/bin/my init".into())),
            ("x".into(), Some("a bc".into())),
        ];
        assert_eq!(t, want);
    }

    #[test]
    fn full_plan() {
        let plan = parse(&format!(
            "console=ttyS0 root=nbd:10.0.2.2:10810:ext4:errors=panic,rw,noatime {IP} ro init=/bin/sh rd.nbdroot.timeout=3 rd.nbdroot.retries=0"
        ))
        .unwrap();
        assert_eq!(plan.nbd.address(), "10.0.2.2:10810");
        assert_eq!(plan.mount.fstype.as_deref(), Some("ext4"));
        assert_eq!(plan.mount.options, "errors=panic,noatime");
        assert!(
            plan.mount.read_only,
            "kernel ro overrides rw in the flags field"
        );
        assert_eq!(plan.init.as_deref(), Some("/bin/sh"));
        assert_eq!(plan.connect.attempt_timeout, Duration::from_secs(3));
        assert_eq!(plan.connect.retries, 0);
        assert!(matches!(plan.network, IpConfig::Static(_)));
    }

    #[test]
    fn defaults_and_fallbacks() {
        let plan = parse(&format!(
            "root=nbd:srv:disk {IP} rootfstype=xfs rootflags=rw,discard"
        ))
        .unwrap();
        assert_eq!(plan.nbd.export, "disk");
        assert_eq!(plan.mount.fstype.as_deref(), Some("xfs"));
        assert_eq!(plan.mount.options, "discard");
        assert!(!plan.mount.read_only);
        assert_eq!(plan.init, None);
        assert_eq!(plan.connect, ConnectPolicy::default());

        let plan = parse("root=nbd:srv:1 rw").unwrap();
        assert_eq!(plan.network, IpConfig::Auto { device: None });
        assert!(!plan.mount.read_only);
        assert!(parse("root=nbd:srv:1").unwrap().mount.read_only);
        // The last root= wins; arguments after "--" are init's.
        let plan = parse("root=/dev/sda root=nbd:srv:2 -- root=nbd:other:3").unwrap();
        assert_eq!(plan.nbd.port, 2);
    }

    #[test]
    fn errors_name_parameter_value_and_form() {
        let cases = [
            ("quiet", "no NBD root on the kernel command line: expected root=nbd:<server>"),
            ("root=/dev/sda1", "no NBD root"),
            ("root=nbd:srv", "root=nbd:srv: the port or export name is missing; expected root=nbd:<server>:<port|export>"),
            ("root=nbd:srv:1 ip=10.0.0.300", "ip=10.0.0.300: client \"10.0.0.300\" is not an IPv4 address; expected ip=<client>:"),
            ("root=nbd:srv:1 init=sbin/init", "init=sbin/init: expected an absolute path"),
            ("root=nbd:srv:1 rd.nbdroot.timeout=0", "rd.nbdroot.timeout=0: expected whole seconds from 1 to 3600"),
            ("root=nbd:srv:1 rd.nbdroot.retries=-1", "rd.nbdroot.retries=-1: expected a count"),
        ];
        for (line, want) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{line}\n  got:  {err}\n  want: {want}…"
            );
        }
    }
}
