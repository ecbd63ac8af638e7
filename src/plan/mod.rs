//! The boot plan: everything the boot needs to know, decided from the kernel command line (and
//! a DHCP root-path) before it touches the system. Pure data; [`render`] shows it to people.

pub mod render;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::address::Host;
use crate::settings::{ConnectPolicy, Tuning};

/// Everything the boot flow needs to know, decided before it touches the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub source: RootSource,
    /// The nbd device to attach to (`nbdroot=…,nbdX`, `root=/dev/nbdX`); `None` lets the
    /// kernel pick.
    pub device: Option<u32>,
    /// What to mount once the export is attached.
    pub root: RootDevice,
    pub network: NetPlan,
    pub mount: MountParams,
    /// `init=`; `None` means the kernel's search order.
    pub init: Option<String>,
    /// The arguments after `--`, which the kernel passes to /init and /init passes on.
    pub init_args: Vec<String>,
    pub connect: ConnectPolicy,
    pub tuning: Tuning,
    pub onfail: OnFail,
    /// `rd.nbdroot.swap=nbd:…`: an export to swap on.
    pub swap: Option<NbdSpec>,
    /// `rd.nbdroot.min_free_kbytes=<n>|off`: the reserve raised for swap over the network;
    /// `None` leaves the kernel's value.
    pub min_free_kbytes: MinFree,
    /// `rd.nbdroot.tls.*`: the TLS credentials and checks. Any of them turns TLS on for every
    /// NBD connection of the boot, as does `tls` in an nbdopts field ([`BootPlan::tls_for`]).
    pub tls: Option<crate::tls::TlsSettings>,
    /// `rd.nbdroot.overlay=`: the root mounted read-only under an overlayfs whose upper layer
    /// is here.
    pub overlay: Option<Overlay>,
    /// `rd.nbdroot.replicas=`: servers exporting the same image as the root's.
    pub replicas: Replicas,
    /// What the DHCP lease contributed to the root, once applied
    /// ([`crate::cmdline::apply_root_path`]).
    pub from_dhcp: FromDhcp,
    /// Conflicts resolved by precedence and unknown `rd.nbdroot.*` parameters, for the log.
    pub warnings: Vec<String>,
}

/// `rd.nbdroot.replicas=` and `rd.nbdroot.replicas.shared=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replicas {
    /// `host[:port]` of each replica, in the order given (port 10809 unless given).
    pub servers: Vec<(Host, u16)>,
    /// The servers share their storage: a writable export may fail over between them.
    pub shared_storage: bool,
}

/// The parts of the root's description a DHCP lease gave, for people reading the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromDhcp {
    /// The root-path (option 17) the server and export were read from.
    pub root_path: Option<String>,
    /// The server is the one the lease named (Debian's `nbdroot=dhcp,…`).
    pub server: bool,
}

/// Where the NBD root is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    Nbd(NbdSpec),
    /// `root=dhcp`, `netroot=dhcp`: the DHCP root-path holds an `nbd:` string.
    Dhcp,
    /// Debian's `nbdroot=dhcp[,…]`: the root-path holds Debian's form, or only the server
    /// comes from DHCP.
    Debian(DebianSpec),
}

impl RootSource {
    /// The export to attach, when the command line says all of it.
    pub fn nbd(&self) -> Option<NbdSpec> {
        match self {
            RootSource::Nbd(spec) => Some(spec.clone()),
            RootSource::Debian(d) => d.to_nbd(None).map(|(spec, _)| spec),
            RootSource::Dhcp => None,
        }
    }

    /// The parameter that waits for a DHCP lease, when one does.
    pub fn dhcp_param(&self) -> Option<&'static str> {
        match self {
            RootSource::Dhcp => Some("root=dhcp"),
            RootSource::Debian(DebianSpec::Given { host: Some(_), .. }) | RootSource::Nbd(_) => {
                None
            }
            RootSource::Debian(_) => Some("nbdroot=dhcp"),
        }
    }
}

/// What to mount: the attached device, one of its partitions, or a filesystem on it found
/// by label or UUID; or a device stacked on it (LVM, LUKS, md) that the initramfs's own
/// scripts assemble after the attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootDevice {
    Whole,
    Partition(u32),
    Label(String),
    Uuid(String),
    /// `root=/dev/mapper/vg-root`: a path under /dev that is no NBD device.
    Stacked(String),
}

/// Kernel-level mount parameters; the `nbd:` string's own fields win over them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountParams {
    /// Kernel `ro` (true) or `rw` (false), the last one given.
    pub kernel_ro: Option<bool>,
    pub rootfstype: Option<String>,
    pub rootflags: Option<String>,
}

/// How the root filesystem is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    pub fstype: Option<String>,
    /// Mount options without `ro`/`rw`.
    pub options: String,
    pub read_only: bool,
    /// What chose `read_only`.
    pub mode_from: ModeFrom,
}

/// What chose between read-only and read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeFrom {
    /// `ro` or `rw` on the kernel command line.
    Kernel,
    /// `ro` or `rw` among the mount options (the `nbd:` string's, else `rootflags=`).
    Flags,
    /// Neither: read-only, as the kernel mounts its root.
    Default,
}

impl MountParams {
    /// Kernel `ro`/`rw` win over the flags field, which wins over the default (read-only, as
    /// the kernel mounts its root).
    pub fn resolve(&self, spec: &NbdSpec) -> RootMount {
        self.resolve_fields(spec.fstype.as_deref(), spec.rootflags.as_deref())
    }

    /// [`resolve`](Self::resolve) with the `nbd:` string's fstype and rootflags fields.
    pub fn resolve_fields(&self, fstype: Option<&str>, rootflags: Option<&str>) -> RootMount {
        let flags = rootflags.or(self.rootflags.as_deref());
        let mut flag_ro = None;
        let mut options = Vec::new();
        for opt in flags
            .iter()
            .flat_map(|f| f.split(','))
            .filter(|o| !o.is_empty())
        {
            match opt {
                "ro" => flag_ro = Some(true),
                "rw" => flag_ro = Some(false),
                o => options.push(o),
            }
        }
        let (read_only, mode_from) = match (self.kernel_ro, flag_ro) {
            (Some(ro), _) => (ro, ModeFrom::Kernel),
            (None, Some(ro)) => (ro, ModeFrom::Flags),
            (None, None) => (true, ModeFrom::Default),
        };
        RootMount {
            fstype: fstype.or(self.rootfstype.as_deref()).map(str::to_string),
            options: options.join(","),
            read_only,
            mode_from,
        }
    }
}

/// Which interfaces to configure, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// One entry per `ip=`; with none, DHCP on the interfaces that get a link.
    pub configs: Vec<IpConfig>,
    /// `BOOTIF=`: the interface with this MAC is the one to boot from.
    pub bootif: Option<Mac>,
    /// `bootdev=`: the interface to boot from.
    pub bootdev: Option<String>,
    /// `ifname=<name>:<mac>`: interfaces to rename before anything else.
    pub ifnames: Vec<(String, Mac)>,
    /// `nameserver=`.
    pub nameservers: Vec<IpAddr>,
}

/// How vm.min_free_kbytes is set when swapping over NBD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MinFree {
    /// Raise it to RAM/64, between 8 and 64 MiB, unless it is already higher.
    #[default]
    Auto,
    Off,
    KiB(u64),
}

/// `rd.nbdroot.overlay=`: where the writable layer over the read-only root lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// `tmpfs[:<size>]`: in memory, gone at reboot; `size` as tmpfs takes it (`512m`, `25%`),
    /// `None` for tmpfs's default (half the RAM).
    Tmpfs { size: Option<String> },
    /// `nbd:…`: a filesystem on a second, per-machine export, kept across reboots.
    Nbd(NbdSpec),
}

/// `rd.nbdroot.onfail=`: what a failed boot does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFail {
    /// Print the reason and end PID 1 (the kernel panics, and reboots with `panic=N`).
    #[default]
    Panic,
    /// Start over from the network, forever, with a pause that grows to a minute.
    Retry,
    /// Run `/bin/sh` if the initramfs has one (for debugging), else panic.
    Shell,
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

impl BootPlan {
    /// The TLS settings for a connection to `spec`, or `None` for plain text: TLS when the
    /// spec asks for it or any `rd.nbdroot.tls.*` parameter was given, never silently off.
    pub fn tls_for(&self, spec: &NbdSpec) -> Option<crate::tls::TlsSettings> {
        match (&self.tls, spec.opts.tls) {
            (Some(t), _) => Some(t.clone()),
            (None, true) => Some(crate::tls::TlsSettings::default()),
            (None, false) => None,
        }
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
    /// Number of connections (`conns=`), which needs the server's CAN_MULTI_CONN.
    pub connections: Option<u16>,
    /// How long I/O waits for a dead connection to be replaced (`dead-timeout=` seconds).
    pub dead_timeout: Option<Duration>,
    /// For swap: write a fresh swap signature first (`mkswap`), and the priority (`prio=`).
    pub mkswap: bool,
    pub priority: Option<u16>,
    /// NBD over TLS (`tls`), with the credentials of the `rd.nbdroot.tls.*` parameters.
    pub tls: bool,
}

/// Debian initramfs-tools' `nbdroot=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebianSpec {
    /// `nbdroot=dhcp` (or empty): the whole value comes from the DHCP root-path.
    FromRootPath,
    Given {
        /// `None`: the DHCP server (next-server, else server identifier).
        host: Option<Host>,
        port: u16,
        export: String,
        /// `nbdX` in the third field.
        device: Option<u32>,
    },
}

impl DebianSpec {
    /// The NBD spec, once a DHCP-provided server is known (`dhcp_server`).
    pub fn to_nbd(&self, dhcp_server: Option<Host>) -> Option<(NbdSpec, Option<u32>)> {
        let DebianSpec::Given {
            host,
            port,
            export,
            device,
        } = self
        else {
            return None;
        };
        let spec = NbdSpec {
            host: host.clone().or(dhcp_server)?,
            port: *port,
            export: export.clone(),
            fstype: None,
            rootflags: None,
            opts: NbdOpts::default(),
        };
        Some((spec, *device))
    }
}

/// How one interface (or all) is to be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    /// `ip=off`/`none`: leave the network alone (the kernel may have configured it).
    Off,
    /// DHCPv4, on one device or on every device that gets a link.
    Dhcp {
        device: Option<String>,
        mtu: Option<u16>,
        mac: Option<Mac>,
    },
    Static(StaticIp),
}

/// A static address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub client: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub hostname: Option<String>,
    /// `None`: the first interface that appears.
    pub device: Option<String>,
    pub dns: Vec<IpAddr>,
    pub mtu: Option<u16>,
    pub mac: Option<Mac>,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}
