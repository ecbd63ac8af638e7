//! Every boot parameter nbdroot reads, with its form, default and meaning: the source of the
//! nbdroot-boot(7) man page, and what an unknown `rd.nbdroot.*` name is checked against.
//!
//! A parameter with several forms (`root=`, `ip=`) has one entry per form. Defaults are the
//! values the parser falls back to; a test sets each one explicitly and checks that the plan
//! does not change, so the table cannot drift from the code.

/// Which table of the documentation a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Where the root is and how to mount it.
    Root,
    /// The options in the nbdopts field of an `nbd:` string (`root=`, `netroot=`, a DHCP
    /// root-path, `rd.nbdroot.swap=`): not boot parameters themselves.
    NbdOpts,
    /// The network.
    Network,
    /// nbdroot's own `rd.nbdroot.*` knobs, and dracut's `rd.debug`.
    Knobs,
}

impl Section {
    /// The heading of its table in the documentation.
    pub fn title(self) -> &'static str {
        match self {
            Section::Root => "ROOT FILESYSTEM",
            Section::NbdOpts => "NBD OPTIONS",
            Section::Network => "NETWORK",
            Section::Knobs => "NBDROOT KNOBS",
        }
    }
}

/// One boot parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The name before `=` (`root`, `rd.nbdroot.timeout`), or the flag itself (`ro`).
    pub name: &'static str,
    /// The forms it takes, as written on the command line.
    pub form: &'static str,
    /// The value assumed when the parameter is absent, as it would be written.
    pub default: Option<&'static str>,
    /// What it does, in a sentence or two.
    pub doc: &'static str,
    pub section: Section,
}

/// nbdroot's own namespace: a parameter under it that is not in [`PARAMS`] is a mistake.
pub const NAMESPACE: &str = "rd.nbdroot.";

const fn param(
    section: Section,
    name: &'static str,
    form: &'static str,
    default: Option<&'static str>,
    doc: &'static str,
) -> Param {
    Param {
        name,
        form,
        default,
        doc,
        section,
    }
}

use Section::{Knobs, NbdOpts, Network, Root};

/// The table, in documentation order.
pub const PARAMS: &[Param] = &[
    // Where the root is.
    param(
        Root,
        "root",
        "root=nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]]",
        None,
        "dracut's grammar. A numeric second field is a port (default export), anything else an \
         export name on port 10809. <server> is an IPv4 address, [IPv6] or a name. Empty fields \
         keep their defaults; a field equal to the one before it is kept. Wins over netroot= \
         and nbdroot=, with a warning.",
    ),
    param(
        Root,
        "root",
        "root=/dev/nbdN[pM] | LABEL=<label> | UUID=<uuid> | /dev/root | block:/dev/root | /dev/mapper/<name> | /dev/<vg>/<lv> | /dev/mdN",
        Some("/dev/root"),
        "with netroot=, root=dhcp's DHCP root-path or nbdroot=: what to mount on the NBD \
         device: the whole device, partition M, or the filesystem with that label or UUID (ext2/3/4, \
         xfs, btrfs, vfat, swap). /dev/nbdN also picks the device, and wins over nbdroot='s nbdX. \
         A device-mapper or md name (LUKS, LVM, RAID on the NBD device): the hooks attach the whole \
         device and leave the root to the initramfs's own scripts (cryptroot, lvm2); nbdroot's own \
         init refuses it.",
    ),
    param(
        Root,
        "root",
        "root=dhcp",
        None,
        "the DHCP root-path (option 17) holds the nbd: string, fstype, rootflags and nbdopts \
         included.",
    ),
    param(
        Root,
        "netroot",
        "netroot=nbd:<server>:<port|export>[:<fstype>[:<rootflags>[:<nbdopts>]]] | netroot=dhcp",
        None,
        "the same as root=nbd:… or root=dhcp, with root= naming what to mount. The first \
         netroot=nbd: wins.",
    ),
    param(
        Root,
        "nbdroot",
        "nbdroot=<server>,<port|export>[,nbdX] | nbdroot=<server>[:<port>]/<export>",
        None,
        "Debian's form; [IPv6]:<port>/<export> too. nbdX picks the device.",
    ),
    param(
        Root,
        "nbdroot",
        "nbdroot=dhcp | nbdroot=dhcp,<port|export>[,nbdX]",
        None,
        "Debian's form with DHCP: the whole value from the DHCP root-path, or only the server \
         (next-server, else the DHCP server).",
    ),
    param(
        Root,
        "ro",
        "ro",
        None,
        "mount the root read-only (the default, as the kernel does); wins over rw in \
         rootflags.",
    ),
    param(
        Root,
        "rw",
        "rw",
        None,
        "mount the root read-write; wins over ro in rootflags. The last of ro and rw counts.",
    ),
    param(
        Root,
        "rootfstype",
        "rootfstype=<type>",
        None,
        "the root's filesystem type when the nbd: string has none. Without any, every block \
         filesystem in /proc/filesystems is tried.",
    ),
    param(
        Root,
        "rootflags",
        "rootflags=<options>",
        None,
        "mount options when the nbd: string has none. Generic options (noatime, nodev, …) \
         become mount flags, the rest goes to the filesystem.",
    ),
    param(
        Root,
        "init",
        "init=<path>",
        None,
        "the root's init, an absolute path; without it the first of /sbin/init, /etc/init, \
         /bin/init and /bin/sh. Arguments after -- on the command line are passed to it.",
    ),
    // The nbdopts field.
    param(
        NbdOpts,
        "export",
        "export=<name>",
        None,
        "the export name, when the second field is a port.",
    ),
    param(
        NbdOpts,
        "bs",
        "bs=<512|1024|2048|4096>",
        None,
        "the kernel block size; without it the server's minimum block size, at least 512.",
    ),
    param(
        NbdOpts,
        "timeout",
        "timeout=<s>",
        None,
        "the kernel's I/O timeout, in whole seconds (at least 1): a request unanswered that \
         long goes again on a new connection, or fails after the dead timeout. Default 1 s, \
         which the supervisor doubles (up to 30) when requests outlast it on a live link; a \
         value given here is kept as it is.",
    ),
    param(
        NbdOpts,
        "conns",
        "conns=<1-64>",
        None,
        "the number of connections, instead of rd.nbdroot.connections; more than one needs the \
         server's CAN_MULTI_CONN flag.",
    ),
    param(
        NbdOpts,
        "dead-timeout",
        "dead-timeout=<s>",
        None,
        "how long I/O waits for a dead connection to be replaced, instead of \
         rd.nbdroot.dead_timeout.",
    ),
    param(
        NbdOpts,
        "readonly",
        "readonly | ro",
        None,
        "attach the device read-only, whatever the server allows; the root is then mounted \
         read-only.",
    ),
    param(
        NbdOpts,
        "mkswap",
        "mkswap",
        None,
        "rd.nbdroot.swap= only: write a fresh swap signature before swapon.",
    ),
    param(
        NbdOpts,
        "tls",
        "tls",
        None,
        "NBD over TLS (NBD_OPT_STARTTLS, then kernel TLS), with the rd.nbdroot.tls.* \
         credentials; never falls back to plain text.",
    ),
    param(
        NbdOpts,
        "prio",
        "prio=<0-32767>",
        None,
        "rd.nbdroot.swap= only: the swap priority; without it the kernel's default.",
    ),
    // The network.
    param(
        Network,
        "ip",
        "ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:off[:<dns0>[:<dns1>]]",
        None,
        "the kernel's static form; IPv6 addresses in brackets. The netmask may be dotted or a \
         prefix length; without it the address class decides (IPv6: /64). An empty device means \
         the boot interface, else the first interface. <server> is not used.",
    ),
    param(
        Network,
        "ip",
        "ip=<client>:[<peer>]:<gw>:<netmask>:<hostname>:<device>:none[:<mtu>[:<mac>]]",
        None,
        "dracut's static form, with the MTU and a MAC address to set.",
    ),
    param(
        Network,
        "ip",
        "ip=dhcp | on | any",
        Some("dhcp"),
        "DHCPv4 on the boot interface, else on every interface that gets a link (the first \
         lease wins). Without any ip=, this is what happens.",
    ),
    param(
        Network,
        "ip",
        "ip=<device>:dhcp[:<mtu>[:<mac>]]",
        None,
        "DHCPv4 on one interface, optionally with an MTU and a MAC address to set. Several ip= \
         configure several interfaces; IPv6 autoconfiguration (dhcp6, auto6) is refused.",
    ),
    param(
        Network,
        "ip",
        "ip=off | none",
        None,
        "leave the network as it is.",
    ),
    param(
        Network,
        "BOOTIF",
        "BOOTIF=01-<mac with dashes>",
        None,
        "PXE's boot interface: the one with this MAC address gets ip= without a device.",
    ),
    param(
        Network,
        "bootdev",
        "bootdev=<device>",
        None,
        "the boot interface by name; wins over BOOTIF=.",
    ),
    param(
        Network,
        "ifname",
        "ifname=<name>:<mac>",
        None,
        "rename the interface with that MAC address first; may be repeated.",
    ),
    param(
        Network,
        "nameserver",
        "nameserver=<ip>",
        None,
        "a DNS server for /etc/resolv.conf (also filled from DHCP and ip=); may be repeated.",
    ),
    // nbdroot's own knobs.
    param(
        Knobs,
        "rd.nbdroot.tls.ca",
        "rd.nbdroot.tls.ca=<path>",
        None,
        "PEM file in the initramfs with the CA that signed the server's certificate. Any \
         rd.nbdroot.tls.* parameter turns TLS on for every NBD connection of the boot.",
    ),
    param(
        Knobs,
        "rd.nbdroot.tls.cert",
        "rd.nbdroot.tls.cert=<path>",
        None,
        "PEM client certificate in the initramfs, for servers that ask for one; needs \
         rd.nbdroot.tls.key.",
    ),
    param(
        Knobs,
        "rd.nbdroot.tls.key",
        "rd.nbdroot.tls.key=<path>",
        None,
        "PEM private key of the client certificate, in the initramfs.",
    ),
    param(
        Knobs,
        "rd.nbdroot.tls.hostname",
        "rd.nbdroot.tls.hostname=<name>",
        None,
        "the name (or address) the server's certificate must carry; default: the server as \
         written in root=.",
    ),
    param(
        Knobs,
        "rd.nbdroot.tls.verify",
        "rd.nbdroot.tls.verify=full | none",
        Some("full"),
        "full: the server's certificate must chain to rd.nbdroot.tls.ca and carry the name; \
         none: encrypt without authenticating the server (must be said by name).",
    ),
    param(
        Knobs,
        "rd.nbdroot.timeout",
        "rd.nbdroot.timeout=<s>",
        Some("10"),
        "bound on one attempt to reach the server (TCP connect, then the handshake), 1 to 3600.",
    ),
    param(
        Knobs,
        "rd.nbdroot.retries",
        "rd.nbdroot.retries=<n>",
        Some("5"),
        "attempts after the first fails (connection refused, timeout, server closed), 0 to \
         1000, with pauses from 0.25 s doubling to 5 s. A definite answer (unknown export, TLS \
         required) is not retried.",
    ),
    param(
        Knobs,
        "rd.nbdroot.connections",
        "rd.nbdroot.connections=<n>",
        Some("1"),
        "connections per device when conns= is not given, 1 to 64.",
    ),
    param(
        Knobs,
        "rd.nbdroot.link_timeout",
        "rd.nbdroot.link_timeout=<s>",
        Some("10"),
        "how long to wait for an interface, its link, partitions or a labelled filesystem.",
    ),
    param(
        Knobs,
        "rd.nbdroot.dhcp_timeout",
        "rd.nbdroot.dhcp_timeout=<s>",
        Some("30"),
        "bound on getting a DHCP lease on one interface.",
    ),
    param(
        Knobs,
        "rd.nbdroot.keepalive",
        "rd.nbdroot.keepalive=<idle>,<interval>,<count> | off",
        Some("10,5,3"),
        "TCP keepalive of the sockets handed to the kernel: seconds idle before the first \
         probe, seconds between probes, probes before the connection is dead.",
    ),
    param(
        Knobs,
        "rd.nbdroot.user_timeout",
        "rd.nbdroot.user_timeout=<s>",
        Some("30"),
        "TCP_USER_TIMEOUT of the sockets handed to the kernel: how long sent data may stay \
         unacknowledged; 0 turns it off.",
    ),
    param(
        Knobs,
        "rd.nbdroot.dead_timeout",
        "rd.nbdroot.dead_timeout=<s>",
        Some("120"),
        "how long I/O waits for the supervisor to replace a dead connection, when dead-timeout= \
         is not given; 0 for none (I/O fails at once).",
    ),
    param(
        Knobs,
        "rd.nbdroot.onfail",
        "rd.nbdroot.onfail=panic | retry | shell",
        Some("panic"),
        "what a failed boot does: print the reason and panic, start over from the network \
         forever (pauses doubling from 1 s to a minute), or run /bin/sh if the initramfs has \
         one.",
    ),
    param(
        Knobs,
        "rd.nbdroot.swap",
        "rd.nbdroot.swap=nbd:<server>:<port|export>[:::<nbdopts>]",
        None,
        "swap on this export, attached with its own supervisor before the switch; nbdopts \
         mkswap and prio= apply.",
    ),
    param(
        Knobs,
        "rd.nbdroot.min_free_kbytes",
        "rd.nbdroot.min_free_kbytes=<KiB> | off",
        None,
        "with swap: the vm.min_free_kbytes to raise the kernel's reserve to (128 to 4194304), \
         or off; without it RAM/64, between 8 and 64 MiB. Never lowered.",
    ),
    param(
        Knobs,
        "rd.nbdroot.overlay",
        "rd.nbdroot.overlay=tmpfs[:<size>] | nbd:<server>:<port|export>[:<fstype>[:<flags>[:<nbdopts>]]]",
        None,
        "mount the root read-only (the device attached read-only, so the server's copy is never \
         written) under an overlayfs, mounted read-write: the writable layer on a tmpfs of that \
         size (512m, 2g, 25%; default half the RAM), or on the filesystem of a second, \
         per-machine export, which must hold one already (nothing is formatted) and keeps the \
         writes across reboots. The layers stay under /run/nbdroot/overlay. nbdroot's own \
         initramfs only.",
    ),
    param(
        Knobs,
        "rd.nbdroot.replicas",
        "rd.nbdroot.replicas=<host>[:<port>][,…]",
        None,
        "servers exporting the same image as the root's (port 10809 unless given). Each must \
         serve the same size, flags and data (blocks sampled through each); one that differs is \
         refused, one that does not answer is left out and retried by the supervisor. The \
         connections (at least one per server) are spread over them, and a dead one moves to \
         a live server. A writable export needs rd.nbdroot.replicas.shared=1.",
    ),
    param(
        Knobs,
        "rd.nbdroot.replicas.shared",
        "rd.nbdroot.replicas.shared=0 | 1",
        Some("0"),
        "1 declares that the replicas share their storage (one disk behind them), so a \
         writable export may fail over between them; without it a writable export with \
         replicas is refused.",
    ),
    param(
        Knobs,
        "rd.nbdroot.debug",
        "rd.nbdroot.debug",
        None,
        "debug messages, with the time of each boot step and the resolved plan.",
    ),
    param(Knobs, "rd.debug", "rd.debug", None, "the same as rd.nbdroot.debug."),
];

/// Whether nbdroot reads a parameter of this name.
pub fn known(name: &str) -> bool {
    PARAMS.iter().any(|p| p.name == name)
}

/// The `rd.nbdroot.*` name nearest to `name`, when it is near enough for `name` to be a typo
/// of it: at most half the characters of the longer of the two differ.
pub fn nearest(name: &str) -> Option<&'static str> {
    let typed = name.strip_prefix(NAMESPACE).unwrap_or(name);
    PARAMS
        .iter()
        .filter_map(|p| Some((p.name, p.name.strip_prefix(NAMESPACE)?)))
        .map(|(full, suffix)| {
            let longer = typed.chars().count().max(suffix.chars().count());
            (edit_distance(typed, suffix), longer, full)
        })
        .min_by_key(|&(distance, _, _)| distance)
        .filter(|&(distance, longer, _)| distance * 2 <= longer)
        .map(|(_, _, full)| full)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters each cost 1 (so "timout" and "tiemout" are both 1 from "timeout").
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // rows[i][j]: the distance between a[..i] and b[..j].
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("tiemout", "timeout"), 1);
        assert_eq!(edit_distance("retry", "retries"), 3);
        assert_eq!(edit_distance("", "swap"), 4);
        assert_eq!(edit_distance("swap", "swap"), 0);
    }

    #[test]
    fn nearest_names_only_when_close() {
        assert!(known("rd.nbdroot.timeout") && known("root") && known("rd.debug"));
        assert!(!known("rd.nbdroot.timout"));
        for (typo, want) in [
            ("rd.nbdroot.timout", Some("rd.nbdroot.timeout")),
            ("rd.nbdroot.tiemout", Some("rd.nbdroot.timeout")),
            ("rd.nbdroot.retry", Some("rd.nbdroot.retries")),
            ("rd.nbdroot.Debug", Some("rd.nbdroot.debug")),
            ("rd.nbdroot.dhcptimeout", Some("rd.nbdroot.dhcp_timeout")),
            ("rd.nbdroot.min_free_kb", Some("rd.nbdroot.min_free_kbytes")),
            ("rd.nbdroot.frobnicate", None),
            ("rd.nbdroot.", None),
        ] {
            assert_eq!(nearest(typo), want, "{typo}");
        }
    }

    #[test]
    fn every_entry_is_complete() {
        for p in PARAMS {
            assert!(p.form.starts_with(p.name), "{p:?}");
            assert!(!p.doc.is_empty() && p.doc.ends_with('.'), "{p:?}");
            assert!(!p.doc.contains("  "), "{p:?}");
        }
    }
}
