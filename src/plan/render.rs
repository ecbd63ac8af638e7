//! The plan as people read it (`nbdroot plan`, and the boot's debug output): one section per
//! pipeline stage, aligned `key: value` lines, warnings last. A plan completed from a DHCP
//! root-path reads the same as one given on the command line, but for the line that says
//! where the root's description came from.

use std::fmt::Write;

use super::{
    BootPlan, DebianSpec, FromDhcp, IpConfig, Mac, MinFree, ModeFrom, NbdOpts, NbdSpec, OnFail,
    Overlay, RootDevice, RootSource, StaticIp,
};
use crate::settings::{FIRST_BACKOFF, FIRST_RETRY_PAUSE, MAX_BACKOFF, MAX_RETRY_PAUSE};
use crate::switch_root::INIT_CANDIDATES;
use crate::text::{plural, secs};

/// The plan as text, one section per pipeline stage, warnings last.
pub fn render(plan: &BootPlan) -> String {
    let mut sections = vec![
        ("network", network(plan)),
        ("server", server(plan)),
        ("device", device(plan)),
        ("connections", connections(plan)),
        ("mount", mount(plan)),
    ];
    if let Some(o) = &plan.overlay {
        sections.push(("overlay", overlay(plan, o)));
    }
    sections.extend([("init", init(plan)), ("supervisor", supervisor(plan))]);
    if !plan.replicas.servers.is_empty() {
        sections.insert(2, ("replicas", replicas(plan)));
    }
    if let Some(swap) = &plan.swap {
        sections.push(("swap", self::swap(plan, swap)));
    }
    sections.push(("on failure", onfail(plan.onfail)));

    let width = sections
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|(key, _)| key.chars().count()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (title, rows) in &sections {
        let _ = writeln!(out, "{title}");
        for (key, value) in rows {
            let _ = writeln!(out, "  {:<w$} {value}", format!("{key}:"), w = width + 1);
        }
        out.push('\n');
    }
    if plan.warnings.is_empty() {
        out.pop();
    } else {
        out.push_str("warnings\n");
        for w in &plan.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

/// `key: value` lines; keys are mostly fixed words, but interface names too.
type Rows = Vec<(String, String)>;

fn row(key: impl Into<String>, value: impl Into<String>) -> (String, String) {
    (key.into(), value.into())
}

fn network(plan: &BootPlan) -> Rows {
    let net = &plan.network;
    let mut rows: Rows = Vec::new();
    for (name, mac) in &net.ifnames {
        rows.push(row(
            "rename",
            format!("the interface with MAC {mac} becomes {name}"),
        ));
    }
    match (&net.bootdev, net.bootif) {
        (Some(dev), bootif) => {
            let ignored = if bootif.is_some() {
                "; BOOTIF= is ignored"
            } else {
                ""
            };
            rows.push(row(
                "boot interface",
                format!("{dev} (bootdev={dev}{ignored})"),
            ));
        }
        (None, Some(mac)) => rows.push(row(
            "boot interface",
            format!("the one with MAC {mac} (BOOTIF=)"),
        )),
        (None, None) => {}
    }
    let boot_iface = net.bootdev.is_some() || net.bootif.is_some();
    let every = IpConfig::Dhcp {
        device: None,
        mtu: None,
        mac: None,
    };
    let configs = if net.configs.is_empty() {
        std::slice::from_ref(&every)
    } else {
        &net.configs[..]
    };
    let mut dhcp = false;
    for config in configs {
        dhcp |= matches!(config, IpConfig::Dhcp { .. });
        rows.push(ip_config(config, boot_iface));
    }
    if !net.nameservers.is_empty() {
        rows.push(row("nameservers", join(&net.nameservers, ", ")));
    }
    rows.push(row(
        "link timeout",
        format!(
            "{} for each interface and its link",
            secs(plan.tuning.link_timeout)
        ),
    ));
    if dhcp {
        rows.push(row(
            "DHCP timeout",
            format!(
                "{} for a lease on one interface",
                secs(plan.tuning.dhcp_timeout)
            ),
        ));
    }
    rows
}

/// One `ip=`: the interface it names (or the one it means), and how that gets its address.
fn ip_config(config: &IpConfig, boot_iface: bool) -> (String, String) {
    let unnamed = if boot_iface {
        "boot interface"
    } else {
        "first interface"
    };
    match config {
        IpConfig::Off => row("interfaces", "left as the kernel set them up (ip=off)"),
        IpConfig::Static(s) => row(s.device.as_deref().unwrap_or(unnamed), static_ip(s)),
        IpConfig::Dhcp {
            device: None,
            mtu,
            mac,
        } if !boot_iface => row(
            "interfaces",
            "DHCP on every one that gets a link (the first lease wins)".to_string()
                + &link_settings(*mtu, *mac),
        ),
        IpConfig::Dhcp { device, mtu, mac } => row(
            device.as_deref().unwrap_or(unnamed),
            "DHCP".to_string() + &link_settings(*mtu, *mac),
        ),
    }
}

fn static_ip(s: &StaticIp) -> String {
    let mut v = format!("static {}/{}", s.client, s.prefix_len);
    if let Some(gw) = s.gateway {
        let _ = write!(v, ", gateway {gw}");
    }
    if let Some(h) = &s.hostname {
        let _ = write!(v, ", hostname {h}");
    }
    if !s.dns.is_empty() {
        let _ = write!(v, ", DNS {}", join(&s.dns, " and "));
    }
    v + &link_settings(s.mtu, s.mac)
}

/// The MTU and MAC address an `ip=` sets, as a tail to its description.
fn link_settings(mtu: Option<u16>, mac: Option<Mac>) -> String {
    let mut v = String::new();
    if let Some(mtu) = mtu {
        let _ = write!(v, ", MTU {mtu}");
    }
    if let Some(mac) = mac {
        let _ = write!(v, ", MAC set to {mac}");
    }
    v
}

fn server(plan: &BootPlan) -> Rows {
    let from_root_path = "from the DHCP root-path".to_string();
    let (address, export) = match &plan.source {
        RootSource::Nbd(spec) => (spec.address(), export(&spec.export)),
        RootSource::Debian(DebianSpec::Given {
            host, port, export, ..
        }) => (
            match host {
                Some(h) => format!("{h}:{port}"),
                None => {
                    format!("the DHCP server's next-server (else the DHCP server), port {port}")
                }
            },
            self::export(export),
        ),
        RootSource::Dhcp | RootSource::Debian(DebianSpec::FromRootPath) => {
            (from_root_path.clone(), from_root_path)
        }
    };
    vec![
        row("address", address),
        row("export", export),
        row("given by", given_by(&plan.source, &plan.from_dhcp)),
    ]
}

fn export(name: &str) -> String {
    if name.is_empty() {
        "the server's default export".into()
    } else {
        format!("\"{name}\"")
    }
}

/// Where the server and export were read: the only line that tells a plan completed from a
/// DHCP root-path from the same plan given on the command line.
fn given_by(source: &RootSource, from_dhcp: &FromDhcp) -> String {
    let mut v = match (&from_dhcp.root_path, source) {
        (Some(rp), _) => format!("the DHCP root-path \"{rp}\""),
        (None, RootSource::Dhcp) => {
            "the DHCP root-path (option 17); its fstype, rootflags and nbdopts override what \
             is below"
                .into()
        }
        (None, RootSource::Debian(DebianSpec::FromRootPath)) => {
            "the DHCP root-path (option 17), in Debian's nbdroot= form".into()
        }
        (None, _) => "the kernel command line".into(),
    };
    let server_from_dhcp = matches!(
        source,
        RootSource::Debian(DebianSpec::Given { host: None, .. })
    );
    if from_dhcp.server || server_from_dhcp {
        v.push_str(", with the server from DHCP");
    }
    v
}

fn device(plan: &BootPlan) -> Rows {
    let value = match plan.device {
        Some(n) => format!("/dev/nbd{n}"),
        None if plan.source == RootSource::Debian(DebianSpec::FromRootPath) => {
            "the first free one, unless the root-path names one".into()
        }
        None => "the first free one".into(),
    };
    vec![row("nbd device", value)]
}

/// The `nbd:` string's options, once known: a DHCP root-path may still bring its own.
fn opts(plan: &BootPlan) -> NbdOpts {
    match &plan.source {
        RootSource::Nbd(spec) => spec.opts.clone(),
        _ => NbdOpts::default(),
    }
}

fn connections(plan: &BootPlan) -> Rows {
    let opts = opts(plan);
    let socket = plan.tuning.socket;
    vec![
        row("connections", connection_count(&opts, plan)),
        row("connecting", attempts(plan)),
        row(
            "I/O timeout",
            opts.timeout.map_or("the kernel's default".into(), secs),
        ),
        row("dead timeout", dead_timeout(&opts, plan)),
        row(
            "keepalive",
            socket.keepalive.map_or("off".into(), |k| {
                format!(
                    "after {} idle, {} {} apart",
                    secs(k.idle),
                    plural(k.count, "probe"),
                    secs(k.interval)
                )
            }),
        ),
        row(
            "TCP_USER_TIMEOUT",
            socket.user_timeout.map_or("off".into(), secs),
        ),
        row(
            "block size",
            opts.block_size.map_or(
                "the server's minimum block size, at least 512 bytes".into(),
                |bs| format!("{bs} bytes"),
            ),
        ),
        row("TLS", tls(&opts, plan)),
    ]
}

/// Whether the root's connections use TLS, and what is checked.
fn tls(opts: &NbdOpts, plan: &BootPlan) -> String {
    use crate::tls::Verify;
    let t = match (&plan.tls, opts.tls) {
        (None, false) => return "off (plain text)".into(),
        (t, _) => t.clone().unwrap_or_default(),
    };
    let path = |p: &Option<std::path::PathBuf>, default: &str| {
        p.as_ref()
            .map_or(format!("/{default} if the image has it"), |p| {
                p.display().to_string()
            })
    };
    let verify = match t.verify {
        Verify::Full => format!(
            "the server's certificate against {}, for {}",
            path(&t.ca, crate::initramfs::TLS_CA),
            t.hostname.as_deref().unwrap_or("the server as written")
        ),
        Verify::None => "the server is NOT verified (rd.nbdroot.tls.verify=none)".into(),
    };
    let client = match &t.cert {
        Some(c) => format!("; client certificate {}", c.display()),
        None => String::new(),
    };
    if !crate::tls::BUILT {
        return "asked for, but this nbdroot was built without TLS: the boot will refuse it".into();
    }
    format!("on, then kernel TLS; checks {verify}{client}")
}

fn replicas(plan: &BootPlan) -> Rows {
    let r = &plan.replicas;
    let servers: Vec<String> = r.servers.iter().map(|(h, p)| format!("{h}:{p}")).collect();
    let n = opts(plan).connections.unwrap_or(plan.tuning.connections);
    let count = crate::replica::connection_count(n.into(), r.servers.len() + 1);
    vec![
        row("servers", servers.join(", ")),
        row(
            "checked",
            "same size, flags and sampled blocks as the first server that answers; one that \
             differs is refused, one that does not answer is left out until it does",
        ),
        row(
            "connections",
            format!(
                "{} spread over the servers that answer; a dead one moves to a live server",
                plural(count, "connection")
            ),
        ),
        row(
            "failover",
            if r.shared_storage {
                "also for a writable export (rd.nbdroot.replicas.shared=1: shared storage)"
            } else {
                "read-only exports only (a writable one is refused without rd.nbdroot.replicas.shared=1)"
            },
        ),
    ]
}

fn connection_count(opts: &NbdOpts, plan: &BootPlan) -> String {
    let n = opts.connections.unwrap_or(plan.tuning.connections);
    let mut v = plural(n, "connection");
    if n > 1 {
        v.push_str(" (the server must allow several: CAN_MULTI_CONN)");
    }
    v
}

fn attempts(plan: &BootPlan) -> String {
    let c = plan.connect;
    let each = format!("of at most {}", secs(c.attempt_timeout));
    match c.retries {
        0 => format!("1 attempt {each}"),
        retries => {
            let doublings = (retries - 1).min(31);
            let last = FIRST_BACKOFF
                .saturating_mul(1 << doublings)
                .min(MAX_BACKOFF);
            let pauses = if last == FIRST_BACKOFF {
                format!("pausing {}", secs(FIRST_BACKOFF))
            } else {
                format!("pausing {} doubling to {}", secs(FIRST_BACKOFF), secs(last))
            };
            format!(
                "up to {} {each}, {pauses}",
                plural(u64::from(retries) + 1, "attempt")
            )
        }
    }
}

fn dead_timeout(opts: &NbdOpts, plan: &BootPlan) -> String {
    match opts.dead_timeout.or(plan.tuning.dead_timeout) {
        Some(d) if !d.is_zero() => {
            format!(
                "{} (I/O waits that long for a dead connection to be replaced)",
                secs(d)
            )
        }
        _ => "none (I/O fails while a connection is dead)".into(),
    }
}

fn mount(plan: &BootPlan) -> Rows {
    let (fstype, rootflags, read_only_device) = match &plan.source {
        RootSource::Nbd(spec) => (
            spec.fstype.as_deref(),
            spec.rootflags.as_deref(),
            spec.opts.read_only,
        ),
        _ => (None, None, false),
    };
    let m = plan.mount.resolve_fields(fstype, rootflags);
    let wait = format!("waiting up to {} for it", secs(plan.tuning.link_timeout));
    let what = match &plan.root {
        RootDevice::Whole => "the whole device".to_string(),
        RootDevice::Partition(n) => match plan.device {
            Some(d) => format!("partition {n} (/dev/nbd{d}p{n}), {wait}"),
            None => format!("partition {n}, {wait}"),
        },
        RootDevice::Label(l) => format!("the one labelled \"{l}\", {wait}"),
        RootDevice::Uuid(u) => format!("the one with UUID {u}, {wait}"),
        RootDevice::Stacked(p) => {
            format!("{p}, stacked on the device: the initramfs's own scripts assemble it")
        }
    };
    let mode = |ro: bool| if ro { "read-only" } else { "read-write" };
    let mode = match (read_only_device && !m.read_only, m.mode_from) {
        (true, _) => "read-only (readonly in nbdopts attaches the device read-only)".into(),
        (false, ModeFrom::Kernel) => {
            let flag = if m.read_only { "ro" } else { "rw" };
            format!("{} ({flag} on the kernel command line)", mode(m.read_only))
        }
        (false, ModeFrom::Flags) => {
            let flag = if m.read_only { "ro" } else { "rw" };
            format!("{} ({flag} in the mount options)", mode(m.read_only))
        }
        (false, ModeFrom::Default) => "read-only (the default; rw makes it read-write)".into(),
    };
    vec![
        row("filesystem", what),
        row(
            "type",
            m.fstype.unwrap_or_else(|| {
                "detected: every block filesystem in /proc/filesystems is tried".into()
            }),
        ),
        row(
            "options",
            if m.options.is_empty() {
                "none".into()
            } else {
                m.options
            },
        ),
        row("mode", mode),
    ]
}

fn init(plan: &BootPlan) -> Rows {
    let path = match &plan.init {
        Some(p) => p.clone(),
        None => format!("the first of {}", INIT_CANDIDATES.join(", ")),
    };
    let mut rows = vec![row("init", path)];
    if !plan.init_args.is_empty() {
        rows.push(row("arguments", plan.init_args.join(" ")));
    }
    rows
}

fn supervisor(plan: &BootPlan) -> Rows {
    let upper = matches!(plan.overlay, Some(Overlay::Nbd(_)));
    let whose = match (plan.swap.is_some(), upper) {
        (false, false) => "the root's",
        (true, false) => "the root's and the swap's",
        (false, true) => "the root's and the overlay's",
        (true, true) => "the root's, the swap's and the overlay's",
    };
    vec![row(
        "state",
        format!("on: @nbdroot replaces {whose} dead connections, also after the switch"),
    )]
}

fn swap(plan: &BootPlan, spec: &NbdSpec) -> Rows {
    let min_free = match plan.min_free_kbytes {
        MinFree::Auto => format!(
            "raised to RAM/64, between {} and {} MiB, unless it is higher",
            crate::swap::reserve_for(0) / 1024,
            crate::swap::reserve_for(u64::MAX) / 1024
        ),
        MinFree::KiB(k) => format!("raised to {k} KiB, unless it is higher"),
        MinFree::Off => "left as it is".into(),
    };
    vec![
        row("address", spec.address()),
        row("export", export(&spec.export)),
        row("nbd device", "the first free one"),
        row("connections", connection_count(&spec.opts, plan)),
        row(
            "mkswap",
            if spec.opts.mkswap {
                "yes: a fresh swap signature is written first"
            } else {
                "no: the export must hold a swap signature"
            },
        ),
        row(
            "priority",
            spec.opts
                .priority
                .map_or("the kernel's default".into(), |p| p.to_string()),
        ),
        row("min_free_kbytes", min_free),
    ]
}

fn overlay(plan: &BootPlan, overlay: &Overlay) -> Rows {
    let mut rows =
        vec![
        row(
            "lower layer",
            "the root above, attached and mounted read-only: the server's copy is never written",
        ),
        row(
            "root",
            format!("overlay, read-write; the layers under {}", crate::mount::overlay::DIR),
        ),
    ];
    match overlay {
        Overlay::Tmpfs { size } => rows.push(row(
            "upper layer",
            format!(
                "tmpfs of {}, gone at reboot",
                size.as_deref().unwrap_or("half the RAM (tmpfs's default)")
            ),
        )),
        Overlay::Nbd(spec) => rows.extend([
            row(
                "upper layer",
                "the filesystem on this export, kept across reboots (never formatted)",
            ),
            row("address", spec.address()),
            row("export", export(&spec.export)),
            row("nbd device", "the first free one"),
            row("connections", connection_count(&spec.opts, plan)),
            row(
                "type",
                spec.fstype.clone().unwrap_or_else(|| "detected".into()),
            ),
        ]),
    }
    rows
}

fn onfail(onfail: OnFail) -> Rows {
    let action = match onfail {
        OnFail::Panic => "print the reason and panic (with panic=N the kernel reboots)".into(),
        OnFail::Retry => format!(
            "start over from the network, forever, pausing {} doubling to {}",
            secs(FIRST_RETRY_PAUSE),
            secs(MAX_RETRY_PAUSE)
        ),
        OnFail::Shell => "run /bin/sh if the initramfs has one, else panic".into(),
    };
    vec![row("action", action)]
}

fn join<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Host;
    use crate::cmdline::{apply_root_path, parse};

    fn plan(line: &str) -> BootPlan {
        parse(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_says_what_is_checked() {
        let text = render(&plan(
            "root=nbd:10.0.0.1:10809:::tls ip=dhcp rd.nbdroot.tls.ca=/ca.pem \
             rd.nbdroot.tls.cert=/c.pem rd.nbdroot.tls.key=/k.pem",
        ));
        assert!(
            text.contains(
                "  TLS:              on, then kernel TLS; checks the server's certificate \
                 against /ca.pem, for the server as written; client certificate /c.pem\n"
            ),
            "{text}"
        );
        let text = render(&plan("root=nbd:10.0.0.1:10809 rd.nbdroot.tls.verify=none"));
        assert!(text.contains("the server is NOT verified"), "{text}");
    }

    /// One section of a rendered plan, its heading included.
    fn section<'a>(text: &'a str, title: &str) -> &'a str {
        let heading = format!("{title}\n");
        let start = if text.starts_with(&heading) {
            0
        } else {
            let at = text.find(&format!("\n{heading}"));
            at.unwrap_or_else(|| panic!("no {title} in\n{text}")) + 1
        };
        let rest = &text[start..];
        rest.find("\n\n").map_or(rest, |end| &rest[..end + 1])
    }

    #[test]
    fn overlay_section_follows_mount() {
        let text = render(&plan("root=nbd:s:1 rd.nbdroot.overlay=tmpfs:1g"));
        assert!(text.find("\nmount\n").unwrap() < text.find("\noverlay\n").unwrap());
        let o = section(&text, "overlay");
        assert!(o.contains("the server's copy is never written"), "{o}");
        assert!(o.contains("tmpfs of 1g, gone at reboot"), "{o}");
        assert!(o.contains("/run/nbdroot/overlay"), "{o}");
        let text = render(&plan("root=nbd:s:1 rd.nbdroot.overlay=nbd:u:upper-m1:ext4"));
        let o = section(&text, "overlay");
        assert!(o.contains("kept across reboots (never formatted)"), "{o}");
        assert!(o.contains("\"upper-m1\""), "{o}");
        assert!(o.contains("u:10809"), "{o}");
        assert!(
            text.contains("on: @nbdroot replaces the root's and the overlay's dead connections")
        );
        assert!(!render(&plan("root=nbd:s:1")).contains("\noverlay\n"));
    }

    #[test]
    fn static_address_and_named_export() {
        let text = render(&plan(
            "root=nbd:10.0.0.1:root:ext4:noatime ip=10.0.0.5::10.0.0.1:255.255.255.0:box:eth0:off:1.1.1.1 \
             nameserver=10.0.0.53 rw rd.nbdroot.retries=1",
        ));
        assert_eq!(
            text,
            "\
network
  eth0:             static 10.0.0.5/24, gateway 10.0.0.1, hostname box, DNS 1.1.1.1
  nameservers:      10.0.0.53
  link timeout:     10 s for each interface and its link

server
  address:          10.0.0.1:10809
  export:           \"root\"
  given by:         the kernel command line

device
  nbd device:       the first free one

connections
  connections:      1 connection
  connecting:       up to 2 attempts of at most 10 s, pausing 0.25 s
  I/O timeout:      the kernel's default
  dead timeout:     120 s (I/O waits that long for a dead connection to be replaced)
  keepalive:        after 10 s idle, 3 probes 5 s apart
  TCP_USER_TIMEOUT: 30 s
  block size:       the server's minimum block size, at least 512 bytes
  TLS:              off (plain text)

mount
  filesystem:       the whole device
  type:             ext4
  options:          noatime
  mode:             read-write (rw on the kernel command line)

init
  init:             the first of /sbin/init, /etc/init, /bin/init, /bin/sh

supervisor
  state:            on: @nbdroot replaces the root's dead connections, also after the switch

on failure
  action:           print the reason and panic (with panic=N the kernel reboots)
"
        );
    }

    #[test]
    fn root_from_dhcp() {
        let text = render(&plan("root=dhcp rd.nbdroot.onfail=retry"));
        assert_eq!(
            text,
            "\
network
  interfaces:       DHCP on every one that gets a link (the first lease wins)
  link timeout:     10 s for each interface and its link
  DHCP timeout:     30 s for a lease on one interface

server
  address:          from the DHCP root-path
  export:           from the DHCP root-path
  given by:         the DHCP root-path (option 17); its fstype, rootflags and nbdopts override what is below

device
  nbd device:       the first free one

connections
  connections:      1 connection
  connecting:       up to 6 attempts of at most 10 s, pausing 0.25 s doubling to 4 s
  I/O timeout:      the kernel's default
  dead timeout:     120 s (I/O waits that long for a dead connection to be replaced)
  keepalive:        after 10 s idle, 3 probes 5 s apart
  TCP_USER_TIMEOUT: 30 s
  block size:       the server's minimum block size, at least 512 bytes
  TLS:              off (plain text)

mount
  filesystem:       the whole device
  type:             detected: every block filesystem in /proc/filesystems is tried
  options:          none
  mode:             read-only (the default; rw makes it read-write)

init
  init:             the first of /sbin/init, /etc/init, /bin/init, /bin/sh

supervisor
  state:            on: @nbdroot replaces the root's dead connections, also after the switch

on failure
  action:           start over from the network, forever, pausing 1 s doubling to 60 s
"
        );
    }

    #[test]
    fn a_root_path_reads_like_the_command_line() {
        let rp = "nbd:10.0.0.1:root:ext4:noatime";
        let mut from_dhcp = plan("root=dhcp");
        apply_root_path(
            &mut from_dhcp,
            Some(rp),
            Some(Host::Ip([10, 0, 0, 9].into())),
        )
        .unwrap();
        let given = render(&plan(&format!("root={rp}")));
        let from_dhcp = render(&from_dhcp);
        let differ: Vec<(&str, &str)> = given
            .lines()
            .zip(from_dhcp.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(given.lines().count(), from_dhcp.lines().count());
        assert_eq!(
            differ,
            [(
                "  given by:         the kernel command line",
                "  given by:         the DHCP root-path \"nbd:10.0.0.1:root:ext4:noatime\""
            )]
        );
    }

    #[test]
    fn replicas_have_their_section() {
        let p = plan("root=nbd:10.0.0.1:root rd.nbdroot.replicas=10.0.0.2,[fd00::3]:10900");
        assert_eq!(
            section(&render(&p), "replicas"),
            "\
replicas
  servers:          10.0.0.2:10809, [fd00::3]:10900
  checked:          same size, flags and sampled blocks as the first server that answers; one that differs is refused, one that does not answer is left out until it does
  connections:      3 connections spread over the servers that answer; a dead one moves to a live server
  failover:         read-only exports only (a writable one is refused without rd.nbdroot.replicas.shared=1)
"
        );
        let p = plan("root=nbd:a:1 rd.nbdroot.replicas=b rd.nbdroot.replicas.shared=1 rd.nbdroot.connections=4");
        let text = render(&p);
        assert!(
            text.contains("\n  connections:      4 connections spread over"),
            "{text}"
        );
        assert!(
            text.contains("\n  failover:         also for a writable export"),
            "{text}"
        );
        // No replicas, no section.
        assert!(!render(&plan("root=nbd:a:1")).contains("\nreplicas\n"));
    }

    #[test]
    fn debian_form_with_device() {
        let p = plan(
            "nbdroot=dhcp,disk,nbd1 root=/dev/nbd1p2 ip=eth1:dhcp:9000 BOOTIF=01-52-54-00-12-34-56 \
             ifname=boot0:52:54:00:12:34:56 rd.nbdroot.retries=0 -- single",
        );
        let text = render(&p);
        assert_eq!(
            section(&text, "network"),
            "\
network
  rename:           the interface with MAC 52:54:00:12:34:56 becomes boot0
  boot interface:   the one with MAC 52:54:00:12:34:56 (BOOTIF=)
  eth1:             DHCP, MTU 9000
  link timeout:     10 s for each interface and its link
  DHCP timeout:     30 s for a lease on one interface
"
        );
        assert_eq!(
            section(&text, "server"),
            "\
server
  address:          the DHCP server's next-server (else the DHCP server), port 10809
  export:           \"disk\"
  given by:         the kernel command line, with the server from DHCP
"
        );
        assert_eq!(
            section(&text, "device"),
            "device\n  nbd device:       /dev/nbd1\n"
        );
        assert!(text.contains("\n  connecting:       1 attempt of at most 10 s\n"));
        assert!(text.contains(
            "\n  filesystem:       partition 2 (/dev/nbd1p2), waiting up to 10 s for it\n"
        ));
        assert!(text.contains("\n  arguments:        single\n"));

        // Once the lease names the server, it is shown with where it came from.
        let mut p = p;
        apply_root_path(&mut p, None, Some(Host::Ip([10, 0, 0, 9].into()))).unwrap();
        assert_eq!(
            section(&render(&p), "server"),
            "\
server
  address:          10.0.0.9:10809
  export:           \"disk\"
  given by:         the kernel command line, with the server from DHCP
"
        );
        let p = plan("nbdroot=dhcp root=LABEL=root rd.nbdroot.link_timeout=20");
        let text = render(&p);
        assert!(text.contains(
            "\n  given by:         the DHCP root-path (option 17), in Debian's nbdroot= form\n"
        ));
        assert!(text.contains(
            "\n  nbd device:       the first free one, unless the root-path names one\n"
        ));
        assert!(text.contains(
            "\n  filesystem:       the one labelled \"root\", waiting up to 20 s for it\n"
        ));
    }

    #[test]
    fn swap_and_tuned_connections() {
        let text = render(&plan(
            "root=nbd:[fd00::1]:10900:xfs:rw:conns=4,readonly,timeout=30,bs=4096 \
             rd.nbdroot.swap=nbd:srv:swap:::mkswap,prio=5 rd.nbdroot.min_free_kbytes=16384 \
             rd.nbdroot.keepalive=20,2,1 rd.nbdroot.user_timeout=0 rd.nbdroot.dead_timeout=0",
        ));
        assert_eq!(
            section(&text, "connections"),
            "\
connections
  connections:      4 connections (the server must allow several: CAN_MULTI_CONN)
  connecting:       up to 6 attempts of at most 10 s, pausing 0.25 s doubling to 4 s
  I/O timeout:      30 s
  dead timeout:     none (I/O fails while a connection is dead)
  keepalive:        after 20 s idle, 1 probe 2 s apart
  TCP_USER_TIMEOUT: off
  block size:       4096 bytes
  TLS:              off (plain text)
"
        );
        assert_eq!(
            section(&text, "mount"),
            "\
mount
  filesystem:       the whole device
  type:             xfs
  options:          none
  mode:             read-only (readonly in nbdopts attaches the device read-only)
"
        );
        assert_eq!(
            section(&text, "swap"),
            "\
swap
  address:          srv:10809
  export:           \"swap\"
  nbd device:       the first free one
  connections:      1 connection
  mkswap:           yes: a fresh swap signature is written first
  priority:         5
  min_free_kbytes:  raised to 16384 KiB, unless it is higher
"
        );
        assert!(text.contains("on: @nbdroot replaces the root's and the swap's dead connections"));
        let text = render(&plan("root=nbd:s:1 rd.nbdroot.swap=nbd:s:2"));
        assert!(text.contains("\n  mkswap:           no: the export must hold a swap signature\n  priority:         the kernel's default\n  min_free_kbytes:  raised to RAM/64, between 8 and 64 MiB, unless it is higher\n"), "{text}");
    }

    #[test]
    fn warnings_come_last() {
        let text = render(&plan(
            "root=nbd:srv:1:::export=root netroot=nbd:x:1 rd.nbdroot.timout=3 rd.nbdroot.onfail=shell",
        ));
        assert!(
            text.ends_with(
                "\
on failure
  action:           run /bin/sh if the initramfs has one, else panic

warnings
  root=nbd:srv:1:::export=root takes precedence over netroot=nbd:x:1: ignoring netroot
  unknown parameter rd.nbdroot.timout=3: did you mean rd.nbdroot.timeout?
"
            ),
            "{text}"
        );
        assert!(text.contains("\n  export:           \"root\"\n"));
    }

    #[test]
    fn no_debug_syntax() {
        for line in [
            "root=dhcp",
            "nbdroot=srv,disk",
            "root=nbd:s:1 ip=off ip=[fd00::5]::[fd00::1]:64::eth0:none:[fd00::53] bootdev=eth0 BOOTIF=01-52-54-00-12-34-56",
            "root=nbd:s:1 ip=10.1.2.3 rd.nbdroot.min_free_kbytes=off rd.nbdroot.swap=nbd:s:2",
        ] {
            let text = render(&plan(line));
            for bad in ["Some(", "None", "{", "}", "[]", "\"\"", "Duration", "::"] {
                let bad_here = text.lines().any(|l| l.contains(bad) && !l.contains("fd00::"));
                assert!(!bad_here, "{bad} in the plan of {line}:\n{text}");
            }
        }
        let text = render(&plan(
            "root=nbd:s:1 ip=off ip=[fd00::5]::[fd00::1]:64::eth0:none:[fd00::53] bootdev=eth0 BOOTIF=01-52-54-00-12-34-56 ip=10.1.2.3",
        ));
        assert_eq!(
            section(&text, "network"),
            "\
network
  boot interface:   eth0 (bootdev=eth0; BOOTIF= is ignored)
  interfaces:       left as the kernel set them up (ip=off)
  eth0:             static fd00::5/64, gateway fd00::1, DNS fd00::53
  boot interface:   static 10.1.2.3/8
  link timeout:     10 s for each interface and its link
"
        );
    }
}
