//! The kernel command line → a [`BootPlan`]: the grammar, pure, no I/O.
//!
//! Understands dracut's `root=nbd:…`/`netroot=`/`root=dhcp`, Debian's `nbdroot=`, the
//! kernel's and dracut's `ip=`, `BOOTIF=`, `ifname=`, `bootdev=`, `nameserver=`, and nbdroot's
//! own `rd.nbdroot.*` knobs; [`apply_root_path`] completes the plan with a DHCP root-path.

pub mod ip;
pub mod mac;
pub mod overlay;
pub mod params;
pub mod root;

use std::time::Duration;

use crate::address::Host;
use crate::plan::{
    BootPlan, DebianSpec, FromDhcp, MinFree, MountParams, NetPlan, OnFail, Replicas, RootDevice,
    RootSource,
};
use crate::settings::{self, ConnectPolicy, Tuning, KEEPALIVE_FORM};

/// A kernel command line that does not describe a bootable NBD root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("no NBD root on the kernel command line: expected root={}, netroot=nbd:…, root=dhcp or nbdroot={}", root::NBD_ROOT_FORM, root::DEBIAN_FORM)]
    NoRoot,
    #[error("{param}={value}: {source}; expected {param}={}", root::NBD_ROOT_FORM)]
    Root {
        param: &'static str,
        value: String,
        source: root::RootError,
    },
    #[error("nbdroot={value}: {source}; expected nbdroot={}", root::DEBIAN_FORM)]
    Debian {
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
    #[error("root-path \"{value}\": {source}; expected {expected}")]
    RootPath {
        value: String,
        source: root::RootError,
        expected: &'static str,
    },
    #[error("the DHCP lease has no root-path (option 17), which {param} needs")]
    NoRootPath { param: &'static str },
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

/// The parameters before `--` (the rest belongs to init).
struct Params(Vec<(String, Option<String>)>);

impl Params {
    /// The last value of `key`, as in the kernel.
    fn last(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

/// Builds the boot plan from the kernel command line.
pub fn parse(line: &str) -> Result<BootPlan, CmdlineError> {
    let mut tokens = tokenize(line);
    let mut init_args = Vec::new();
    if let Some(end) = tokens.iter().position(|(k, v)| k == "--" && v.is_none()) {
        init_args = tokens.drain(end..).skip(1).map(join).collect();
    }
    let p = Params(tokens);
    let mut warnings = Vec::new();

    let (source, root, mut device) = root_source(&p, &mut warnings)?;
    if let Some(dev) = p
        .last("root")
        .and_then(|r| root::nbd_index(r.split('p').next().unwrap_or(r)))
    {
        // Debian: "root=/dev/nbdX is only examined for the device name", and wins.
        device = Some(dev);
    }

    let mut configs = Vec::new();
    for v in p.all("ip") {
        configs.push(ip::parse_ip(v).map_err(|source| CmdlineError::Ip {
            value: v.to_string(),
            source,
        })?);
    }
    let mut ifnames = Vec::new();
    for v in p.all("ifname") {
        let pair = v
            .split_once(':')
            .and_then(|(n, m)| Some((n.to_string(), mac::parse_mac(m)?)));
        ifnames.push(
            pair.filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| CmdlineError::Value {
                    param: "ifname",
                    value: v.to_string(),
                    expected: "<name>:<MAC address>, e.g. ifname=boot0:52:54:00:12:34:56",
                })?,
        );
    }
    let bootif = match p.last("BOOTIF") {
        Some(v) => Some(mac::parse_bootif(v).ok_or_else(|| CmdlineError::Value {
            param: "BOOTIF",
            value: v.to_string(),
            expected: "01-<MAC address with dashes>, e.g. BOOTIF=01-52-54-00-12-34-56",
        })?),
        None => None,
    };
    let mut nameservers = Vec::new();
    for v in p.all("nameserver") {
        nameservers.push(v.parse().map_err(|_| CmdlineError::Value {
            param: "nameserver",
            value: v.to_string(),
            expected: "an IP address",
        })?);
    }
    let network = NetPlan {
        configs,
        bootif,
        bootdev: p
            .last("bootdev")
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        ifnames,
        nameservers,
    };

    let kernel_ro = p.0.iter().rev().find_map(|(k, v)| match (k.as_str(), v) {
        ("ro", None) => Some(true),
        ("rw", None) => Some(false),
        _ => None,
    });
    let mount = MountParams {
        kernel_ro,
        rootfstype: p
            .last("rootfstype")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        rootflags: p
            .last("rootflags")
            .filter(|f| !f.is_empty())
            .map(str::to_string),
    };

    let init = match p.last("init") {
        Some(path) if path.starts_with('/') => Some(path.to_string()),
        Some(path) => {
            return Err(CmdlineError::Value {
                param: "init",
                value: path.to_string(),
                expected: "an absolute path such as /sbin/init",
            })
        }
        None => None,
    };

    let mut connect = ConnectPolicy::BOOT;
    if let Some(v) = p.last("rd.nbdroot.timeout") {
        connect.attempt_timeout = secs("rd.nbdroot.timeout", v, 1..=3600)?;
    }
    if let Some(v) = p.last("rd.nbdroot.retries") {
        connect.retries =
            number("rd.nbdroot.retries", v, 0..=1000, "a count from 0 to 1000")? as u32;
    }
    let tuning = tuning(&p)?;
    let onfail = match p.last("rd.nbdroot.onfail") {
        None | Some("panic") => OnFail::Panic,
        Some("retry") => OnFail::Retry,
        Some("shell") => OnFail::Shell,
        Some(v) => {
            return Err(CmdlineError::Value {
                param: "rd.nbdroot.onfail",
                value: v.to_string(),
                expected: "panic, retry or shell",
            })
        }
    };
    let swap = match p.last("rd.nbdroot.swap") {
        Some(v) => Some(root::parse_nbd(v).map_err(|source| CmdlineError::Root {
            param: "rd.nbdroot.swap",
            value: v.to_string(),
            source,
        })?),
        None => None,
    };
    let overlay = p
        .last("rd.nbdroot.overlay")
        .map(overlay::parse)
        .transpose()?;
    let min_free_kbytes = match p.last("rd.nbdroot.min_free_kbytes") {
        None => MinFree::Auto,
        Some("off") => MinFree::Off,
        Some(v) => MinFree::KiB(number(
            "rd.nbdroot.min_free_kbytes",
            v,
            128..=4 * 1024 * 1024,
            "KiB from 128 to 4194304, or off",
        )?),
    };

    let tls = tls(&p)?;
    let replicas = replicas(&p)?;

    // A typo in nbdroot's own namespace would otherwise silently leave a default in place.
    for (key, value) in &p.0 {
        if key.starts_with(params::NAMESPACE) && !params::known(key) {
            let written = join((key.clone(), value.clone()));
            warnings.push(match params::nearest(key) {
                Some(near) => format!("unknown parameter {written}: did you mean {near}?"),
                None => format!("unknown parameter {written}: ignored"),
            });
        }
    }

    Ok(BootPlan {
        tls,
        swap,
        min_free_kbytes,
        overlay,
        source,
        device,
        root,
        network,
        mount,
        init,
        init_args,
        connect,
        tuning,
        onfail,
        replicas,
        from_dhcp: FromDhcp::default(),
        warnings,
    })
}

/// `rd.nbdroot.replicas=<host[:port]>[,…]` and `rd.nbdroot.replicas.shared=0|1`.
fn replicas(p: &Params) -> Result<Replicas, CmdlineError> {
    let mut r = Replicas::default();
    if let Some(list) = p.last("rd.nbdroot.replicas") {
        for item in list.split(',') {
            r.servers
                .push(replica_server(item).ok_or_else(|| CmdlineError::Value {
                    param: "rd.nbdroot.replicas",
                    value: list.to_string(),
                    expected: REPLICAS_FORM,
                })?);
        }
    }
    r.shared_storage = match p.last("rd.nbdroot.replicas.shared") {
        None | Some("0") => false,
        Some("1" | "") => true,
        Some(v) => {
            return Err(CmdlineError::Value {
                param: "rd.nbdroot.replicas.shared",
                value: v.to_string(),
                expected: "0 or 1",
            })
        }
    };
    Ok(r)
}

/// What `rd.nbdroot.replicas=` takes, for errors.
pub const REPLICAS_FORM: &str =
    "a comma-separated list of <host>[:<port>] ([<IPv6>]:<port>), e.g. 10.0.0.2,10.0.0.3:10900";

/// One replica: `host[:port]` or `[v6]:port`, no URI and no export.
pub fn replica_server(item: &str) -> Option<(Host, u16)> {
    if item.is_empty() || item.contains("://") || item.contains('/') {
        return None;
    }
    let name_ok = |n: &str| {
        n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    match crate::address::parse_target(item).ok()?.endpoint {
        crate::address::Endpoint::Tcp {
            host: Host::Name(n),
            ..
        } if !name_ok(&n) => None,
        crate::address::Endpoint::Tcp { host, port } => Some((host, port)),
        crate::address::Endpoint::Unix(_) => None,
    }
}

/// A parameter as written: `key=value` or `key`.
fn join((key, value): (String, Option<String>)) -> String {
    match value {
        Some(v) => format!("{key}={v}"),
        None => key,
    }
}

/// Completes a plan whose root comes from DHCP with what the lease says, as the boot does once
/// the network is up: `root_path` is the lease's root-path (option 17), `dhcp_server` the
/// server Debian's form falls back to when it names none (next-server, else the DHCP server).
///
/// `root=dhcp` reads dracut's `nbd:` form from the root-path, `nbdroot=dhcp` Debian's form;
/// a device the root-path names yields to `root=/dev/nbdX`. With `dhcp_server`, success
/// leaves `plan.source` a [`RootSource::Nbd`]; without it, a Debian spec that names no server
/// stays as it is. A root the command line gives whole ignores the root-path, as dracut does.
pub fn apply_root_path(
    plan: &mut BootPlan,
    root_path: Option<&str>,
    dhcp_server: Option<Host>,
) -> Result<(), CmdlineError> {
    let needed = |param| root_path.ok_or(CmdlineError::NoRootPath { param });
    let bad = |value: &str, expected| {
        let value = value.to_string();
        move |source| CmdlineError::RootPath {
            value,
            source,
            expected,
        }
    };
    let debian = match &plan.source {
        RootSource::Nbd(_) => return Ok(()),
        RootSource::Dhcp => {
            let rp = needed("root=dhcp")?;
            let spec = root::parse_nbd(rp).map_err(bad(rp, root::NBD_ROOT_FORM))?;
            plan.source = RootSource::Nbd(spec);
            plan.from_dhcp.root_path = Some(rp.to_string());
            return Ok(());
        }
        RootSource::Debian(DebianSpec::FromRootPath) => {
            let rp = needed("nbdroot=dhcp")?;
            let spec = match root::parse_debian(rp) {
                // "dhcp" again, or nothing: the root-path cannot defer to itself.
                Ok(DebianSpec::FromRootPath) => Err(root::RootError::NoPortOrExport),
                other => other,
            }
            .map_err(bad(rp, root::DEBIAN_FORM))?;
            plan.from_dhcp.root_path = Some(rp.to_string());
            spec
        }
        RootSource::Debian(given) => given.clone(),
    };
    if let DebianSpec::Given { host, device, .. } = &debian {
        plan.device = plan.device.or(*device);
        plan.from_dhcp.server = host.is_none() && dhcp_server.is_some();
    }
    plan.source = match debian.to_nbd(dhcp_server) {
        Some((spec, _)) => RootSource::Nbd(spec),
        None => RootSource::Debian(debian),
    };
    Ok(())
}

/// Where the NBD root comes from and what to mount on it, by dracut's precedence: `root=nbd:`
/// beats `netroot=`, the first `netroot=nbd:` wins, then `root=`/`netroot=dhcp`, then
/// Debian's `nbdroot=`.
fn root_source(
    p: &Params,
    warnings: &mut Vec<String>,
) -> Result<(RootSource, RootDevice, Option<u32>), CmdlineError> {
    let root_param = p.last("root").unwrap_or("");
    let netroot_nbd = p.all("netroot").find(|v| v.starts_with("nbd:"));
    let netroot_dhcp = p.all("netroot").any(|v| v == "dhcp");
    let nbd = |param: &'static str, value: &str| {
        root::parse_nbd(value).map_err(|source| CmdlineError::Root {
            param,
            value: value.to_string(),
            source,
        })
    };

    if root_param.starts_with("nbd:") {
        if let Some(n) = netroot_nbd {
            warnings.push(format!(
                "root={root_param} takes precedence over netroot={n}: ignoring netroot"
            ));
        }
        if let Some(d) = p.last("nbdroot") {
            warnings.push(format!(
                "root={root_param} takes precedence over nbdroot={d}: ignoring nbdroot"
            ));
        }
        return Ok((
            RootSource::Nbd(nbd("root", root_param)?),
            RootDevice::Whole,
            None,
        ));
    }
    if netroot_nbd.is_none() && !netroot_dhcp && root_param != "dhcp" && p.last("nbdroot").is_none()
    {
        return Err(CmdlineError::NoRoot);
    }
    let device = root_device(root_param)?;
    if let Some(n) = netroot_nbd {
        return Ok((RootSource::Nbd(nbd("netroot", n)?), device, None));
    }
    if root_param == "dhcp" || netroot_dhcp {
        return Ok((RootSource::Dhcp, device, None));
    }
    if let Some(v) = p.last("nbdroot") {
        let spec = root::parse_debian(v).map_err(|source| CmdlineError::Debian {
            value: v.to_string(),
            source,
        })?;
        let index = match &spec {
            DebianSpec::Given { device, .. } => *device,
            DebianSpec::FromRootPath => None,
        };
        return Ok((RootSource::Debian(spec), device, index));
    }
    Err(CmdlineError::NoRoot)
}

/// `root=` naming the filesystem on the NBD device.
fn root_device(value: &str) -> Result<RootDevice, CmdlineError> {
    if let Some(l) = value.strip_prefix("LABEL=") {
        return Ok(RootDevice::Label(l.to_string()));
    }
    if let Some(u) = value.strip_prefix("UUID=") {
        return Ok(RootDevice::Uuid(u.to_string()));
    }
    if matches!(value, "" | "dhcp" | "/dev/root" | "block:/dev/root") {
        return Ok(RootDevice::Whole);
    }
    // /dev/nbdX or /dev/nbdXpN.
    let dev = value.strip_prefix("/dev/").unwrap_or(value);
    if let Some(rest) = dev.strip_prefix("nbd") {
        let mut parts = rest.splitn(2, 'p');
        let whole = parts.next().is_some_and(|n| n.parse::<u32>().is_ok());
        match (whole, parts.next().map(str::parse::<u32>)) {
            (true, None) => return Ok(RootDevice::Whole),
            (true, Some(Ok(n))) if n > 0 => return Ok(RootDevice::Partition(n)),
            _ => {}
        }
    }
    if stacked(value) {
        return Ok(RootDevice::Stacked(value.to_string()));
    }
    Err(CmdlineError::Value {
        param: "root",
        value: value.to_string(),
        expected: "nbd:<server>:<port|export>…, /dev/nbdN[pM], LABEL=<label>, UUID=<uuid>, /dev/root, dhcp, or a device stacked on the NBD device such as /dev/mapper/<vg>-<lv>",
    })
}

/// A device-mapper or md device (`/dev/mapper/<name>`, `/dev/<vg>/<lv>`, `/dev/mdN`,
/// `/dev/md/<name>`): LVM, LUKS or RAID on the NBD device. nbdroot attaches the whole device
/// and the initramfs's own scripts assemble the root. A disk name (`/dev/sda1`) is not one.
fn stacked(value: &str) -> bool {
    let Some(name) = value.strip_prefix("/dev/") else {
        return false;
    };
    let parts: Vec<&str> = name.split('/').collect();
    let plain = |c: &str| !c.is_empty() && c != "." && c != "..";
    match parts.as_slice() {
        [md] => md
            .strip_prefix("md")
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        [dir, _] if dir.starts_with("nbd") || *dir == "disk" => false,
        [dir, leaf] => plain(dir) && plain(leaf),
        _ => false,
    }
}

fn tuning(p: &Params) -> Result<Tuning, CmdlineError> {
    let mut t = Tuning::default();
    if let Some(v) = p.last("rd.nbdroot.connections") {
        t.connections = number("rd.nbdroot.connections", v, 1..=64, "a count from 1 to 64")? as u16;
    }
    if let Some(v) = p.last("rd.nbdroot.link_timeout") {
        t.link_timeout = secs("rd.nbdroot.link_timeout", v, 1..=3600)?;
    }
    if let Some(v) = p.last("rd.nbdroot.dhcp_timeout") {
        t.dhcp_timeout = secs("rd.nbdroot.dhcp_timeout", v, 1..=3600)?;
    }
    if let Some(v) = p.last("rd.nbdroot.keepalive") {
        t.socket.keepalive = settings::parse_keepalive(v).map_err(|_| CmdlineError::Value {
            param: "rd.nbdroot.keepalive",
            value: v.to_string(),
            expected: KEEPALIVE_FORM,
        })?;
    }
    if let Some(v) = p.last("rd.nbdroot.dead_timeout") {
        let s = number(
            "rd.nbdroot.dead_timeout",
            v,
            0..=86400,
            "whole seconds from 0 (none) to 86400",
        )?;
        t.dead_timeout = (s > 0).then(|| Duration::from_secs(s));
    }
    if let Some(v) = p.last("rd.nbdroot.user_timeout") {
        let s = number(
            "rd.nbdroot.user_timeout",
            v,
            0..=86400,
            "whole seconds from 0 (off) to 86400",
        )?;
        t.socket.user_timeout = (s > 0).then(|| Duration::from_secs(s));
    }
    Ok(t)
}

fn secs(
    param: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, CmdlineError> {
    number(param, value, range, "whole seconds from 1 to 3600").map(Duration::from_secs)
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
mod tests;

/// `rd.nbdroot.tls.*`: `None` when none is given (`verify=full` alone is the default, and
/// asks for nothing).
fn tls(p: &Params) -> Result<Option<crate::tls::TlsSettings>, CmdlineError> {
    use crate::tls::{TlsSettings, Verify};
    let path = |param: &'static str| match p.last(param) {
        None => Ok(None),
        Some(v) if v.starts_with('/') => Ok(Some(std::path::PathBuf::from(v))),
        Some(v) => Err(CmdlineError::Value {
            param,
            value: v.to_string(),
            expected: "an absolute path in the initramfs, such as /etc/nbdroot/tls/ca.pem",
        }),
    };
    let verify = match p.last("rd.nbdroot.tls.verify") {
        None => Verify::Full,
        Some(v) => Verify::parse(v).ok_or_else(|| CmdlineError::Value {
            param: "rd.nbdroot.tls.verify",
            value: v.to_string(),
            expected: "full or none",
        })?,
    };
    let hostname = match p.last("rd.nbdroot.tls.hostname") {
        None => None,
        Some(v) if crate::tls::plausible_name(v) => Some(v.to_string()),
        Some(v) => {
            return Err(CmdlineError::Value {
                param: "rd.nbdroot.tls.hostname",
                value: v.to_string(),
                expected: "a DNS name or an IP address",
            })
        }
    };
    let settings = TlsSettings {
        ca: path("rd.nbdroot.tls.ca")?,
        cert: path("rd.nbdroot.tls.cert")?,
        key: path("rd.nbdroot.tls.key")?,
        hostname,
        verify,
    };
    Ok((settings != TlsSettings::default()).then_some(settings))
}
