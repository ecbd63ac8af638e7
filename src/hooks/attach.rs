//! `nbdroot attach`: the boot pipeline's network and NBD stages outside PID 1, for dracut's
//! initqueue; and the same as dracut's netroot handler, `nbdroot <netif> nbd:… <NEWROOT>`,
//! when dracut's own network modules configured the interface.
//!
//! Idempotent: dracut may call the handler once per interface that comes up, and the
//! initqueue runs its hooks until the root is there. Attaches are serialised by a lock, and an
//! attach that finds the recorded device connected does nothing.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::boot::{self, source, BootError};
use crate::cmdline::{self, root, CmdlineError};
use crate::kernel::device;
use crate::net::{self, NetState, Readiness};
use crate::plan::{BootPlan, DebianSpec, IpConfig, RootSource};

use super::rootenv::{self, RootEnv, RootEnvError};

const LOCK: &str = "/run/nbdroot/attach.lock";

/// dracut's netroot handler call: `nbdroot <netif> <netroot> <NEWROOT>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub netif: String,
    /// The `nbd:…` string (from `netroot=`, `root=`, or the DHCP root-path).
    pub netroot: String,
    pub new_root: String,
}

impl Handler {
    /// The handler form of the arguments after argv[0]: exactly three, the second `nbd:…`.
    /// No subcommand looks like that.
    pub fn from_args(args: &[OsString]) -> Option<Self> {
        let [netif, netroot, new_root] = args else {
            return None;
        };
        let (netif, netroot, new_root) = (netif.to_str()?, netroot.to_str()?, new_root.to_str()?);
        // dracut's `nbd:<server>:…`, never a URI, and an interface that is no subcommand:
        // `nbdroot connect nbd://host/export /dev/nbd1` has the same shape.
        let dracut_form = netroot.starts_with("nbd:") && !netroot.starts_with("nbd://");
        let subcommand = crate::cli::is_subcommand(netif);
        (dracut_form && !subcommand && !netif.is_empty() && !netif.starts_with('-')).then(|| {
            Handler {
                netif: netif.to_string(),
                netroot: netroot.to_string(),
                new_root: new_root.to_string(),
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachStepError {
    #[error("cannot read the command line: {0}")]
    ReadCmdline(io::Error),
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Env(#[from] RootEnvError),
    #[error("cannot take {LOCK}: {0}")]
    Lock(io::Error),
    #[error(
        "rd.nbdroot.overlay= needs nbdroot's own initramfs (nbdroot mkinitramfs): the dracut, \
         mkinitcpio and initramfs-tools hooks mount no overlay, and the root without one would \
         be written on the server"
    )]
    Overlay,
}

impl From<net::NetError> for AttachStepError {
    fn from(e: net::NetError) -> Self {
        AttachStepError::Boot(e.into())
    }
}

impl AttachStepError {
    /// Whether no network interface was ready (see [`net::NetError::interface_not_ready`]).
    pub fn interface_not_ready(&self) -> bool {
        matches!(self, AttachStepError::Boot(BootError::Net(e)) if e.interface_not_ready())
    }
}

/// What an attach did.
#[derive(Debug)]
pub enum Outcome {
    Attached(RootEnv),
    /// An earlier call attached the root; nothing was done.
    Already(RootEnv),
}

/// Which initramfs generator's hooks call the attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Dracut,
    /// `nbdroot attach --mkinitcpio`: a `root=` that names no NBD device, label or UUID
    /// (`/dev/mapper/root` for LUKS or LVM on the device) is another hook's business: the
    /// NBD device is attached whole and mkinitcpio mounts `root=`.
    Mkinitcpio,
}

/// Attaches the root the command line (or `handler`) describes, records it in
/// [`rootenv::PATH`], leaves the network hints and starts the supervisor.
pub fn attach(handler: Option<&Handler>) -> Result<Outcome, AttachStepError> {
    attach_as(handler, Flavour::Dracut, Readiness::Present)
}

/// The command line as a flavour reads it.
pub(crate) fn parse(line: &str, flavour: Flavour) -> Result<BootPlan, CmdlineError> {
    match cmdline::parse(line) {
        Err(CmdlineError::Value { param: "root", .. }) if flavour == Flavour::Mkinitcpio => {
            let rest: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with("root="))
                .collect();
            cmdline::parse(&rest.join(" "))
        }
        other => other,
    }
}

/// Refuses what only nbdroot's own /init does: an overlay root (without it the root would be
/// mounted writable on the server's shared image).
fn supported(plan: &BootPlan) -> Result<(), AttachStepError> {
    match plan.overlay {
        Some(_) => Err(AttachStepError::Overlay),
        None => Ok(()),
    }
}

/// [`attach`] for `flavour`'s hooks, configuring interfaces once they are `ready`.
pub fn attach_as(
    handler: Option<&Handler>,
    flavour: Flavour,
    ready: Readiness,
) -> Result<Outcome, AttachStepError> {
    let _lock = lock()?;
    let record = Path::new(rootenv::PATH);
    if let Some(env) = RootEnv::read(record)? {
        if device::is_connected(env.index) == Some(true) {
            return Ok(Outcome::Already(env));
        }
    }
    let line = super::read_cmdline().map_err(AttachStepError::ReadCmdline)?;
    let mut plan = parse(&line, flavour)?;
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    supported(&plan)?;
    if let Some(h) = handler {
        let spec = root::parse_nbd(&h.netroot).map_err(|source| CmdlineError::Root {
            param: "netroot",
            value: h.netroot.clone(),
            source,
        })?;
        plan.source = RootSource::Nbd(spec);
    }
    // The supervisor inherits the working directory: never one under the new root.
    let _ = std::env::set_current_dir("/");
    let net = network(&plan, handler, ready)?;
    let (resolved, spec) = source::resolve(&plan, &net).map_err(BootError::from)?;
    let plan = resolved;
    let index = plan.device.unwrap_or(super::DEFAULT_INDEX);
    let dev_root = root_param(&line) == Some("/dev/root");
    if dev_root {
        dev_root_rule(&rootenv::what(index, &plan.root));
    }
    let attached = boot::attach(&plan, &spec, Some(index))?;
    if plan.swap.is_some() {
        log::warn!(
            "rd.nbdroot.swap= is not supported in a {flavour:?} initramfs: no swap attached"
        );
    }
    let env = RootEnv {
        index: attached.index,
        root: plan.root.clone(),
        mount: plan.mount.resolve(&spec),
        device_read_only: attached.read_only,
        link_timeout: plan.tuning.link_timeout,
        server: spec.address(),
        export: spec.export.clone(),
    };
    env.write(record)?;
    if dev_root {
        link_dev_root(&env.what());
    }
    let dhcp = !plan
        .network
        .configs
        .iter()
        .any(|c| matches!(c, IpConfig::Static(_)));
    for iface in &net.configured {
        if let Err(e) = super::handoff::write(Path::new("/"), iface, dhcp) {
            log::warn!("cannot leave the network hints for {iface}: {e}");
        }
    }
    // `plan` is the resolved one: a root-path it came from is recorded, not its source.
    let from_lease = plan.from_dhcp.root_path.is_some();
    if from_lease
        && (spec.fstype.is_some() || spec.rootflags.is_some())
        && Path::new("/run/systemd/system").is_dir()
    {
        // The DHCP root-path gave the fstype or options, which sysroot.mount (written from
        // the command line) lacks: the generator reads them from the record. A reload costs
        // seconds under emulation, so only then.
        reload_systemd();
    }
    Ok(Outcome::Attached(env))
}

/// The last `root=` on the command line.
fn root_param(line: &str) -> Option<&str> {
    line.split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("root="))
        .map(|r| r.strip_prefix("block:").unwrap_or(r))
}

/// Where udev reads rules in the initramfs (gone with it at switch_root).
const DEV_ROOT_RULE: &str = "/etc/udev/rules.d/99-nbdroot-root.rules";

/// `root=/dev/root` (dracut's name for "the root device, whichever it is"): dracut waits for
/// that node, and under systemd for its device unit, so udev must make it. The rule is in
/// place before the attach, whose change event applies it.
fn dev_root_rule(what: &str) {
    let name = what.strip_prefix("/dev/").unwrap_or(what);
    let rule = format!(
        "# Written by nbdroot attach: root=/dev/root is the NBD root.\n\
         KERNEL==\"{name}\", SUBSYSTEM==\"block\", SYMLINK+=\"root\"\n"
    );
    let dir = Path::new(DEV_ROOT_RULE).parent().unwrap_or(Path::new("/"));
    if let Err(e) = fs::create_dir_all(dir).and_then(|_| fs::write(DEV_ROOT_RULE, rule)) {
        log::warn!("cannot write {DEV_ROOT_RULE}: {e}");
        return;
    }
    // A running udevd looks for new rules at most every 3 s, and an early attach writes this
    // one during the coldplug's stream of events: without a reload the attach's change event
    // could miss it, and systemd would wait for dev-root.device until rd.timeout. Without
    // udevd (not started yet, or no udev) there is nothing to reload: it reads the rules when
    // it starts.
    match Command::new("udevadm")
        .args(["control", "--reload", "--timeout=10"])
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => log::debug!("udevadm control --reload: {s}"),
        Err(e) => log::debug!("cannot run udevadm control --reload: {e}"),
    }
}

/// Without udev (or before it acted), /dev/root as a plain link, so dracut's own wait ends.
fn link_dev_root(what: &str) {
    // udev makes the link on the attach's change event; give it a moment first.
    for _ in 0..50 {
        if Path::new("/dev/root").exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let target = what.strip_prefix("/dev/").unwrap_or(what);
    match std::os::unix::fs::symlink(target, "/dev/root") {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => log::warn!("cannot link /dev/root to {what}: {e}"),
    }
}

fn lock() -> Result<Flock<File>, AttachStepError> {
    let file = fs::create_dir_all("/run/nbdroot")
        .and_then(|_| File::options().create(true).append(true).open(LOCK))
        .map_err(AttachStepError::Lock)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| AttachStepError::Lock(e.into()))
}

/// The network as the root needs it: dracut's interface in handler mode; an interface that
/// is configured already, unless the root comes from a DHCP lease; else nbdroot's own.
fn network(
    plan: &BootPlan,
    handler: Option<&Handler>,
    ready: Readiness,
) -> Result<NetState, AttachStepError> {
    if let Some(h) = handler {
        return Ok(NetState {
            configured: vec![h.netif.clone()],
            lease: None,
        });
    }
    if !needs_lease(&plan.source) {
        if let Some(iface) = configured_interface() {
            log::info!("{iface} is configured already: using it");
            return Ok(NetState {
                configured: vec![iface],
                lease: None,
            });
        }
    }
    Ok(net::bring_up(&plan.network, &plan.tuning, ready)?)
}

fn needs_lease(source: &RootSource) -> bool {
    match source {
        RootSource::Nbd(_) => false,
        RootSource::Dhcp => true,
        RootSource::Debian(DebianSpec::Given { host, .. }) => host.is_none(),
        RootSource::Debian(DebianSpec::FromRootPath) => true,
    }
}

/// The first interface (not loopback) that is up with a routable address.
fn configured_interface() -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if a.interface_name == "lo" || !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
            continue;
        }
        let ip: Option<IpAddr> = a.address.as_ref().and_then(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        let routable = match ip {
            Some(IpAddr::V4(v4)) => !v4.is_loopback() && !v4.is_link_local(),
            Some(IpAddr::V6(v6)) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
            None => false,
        };
        if routable {
            return Some(a.interface_name);
        }
    }
    None
}

/// `systemctl daemon-reload`: generators run again and see the record. Waited for, so that
/// sysroot.mount (ordered after the initqueue) starts with the new options.
fn reload_systemd() {
    match Command::new("systemctl").arg("daemon-reload").status() {
        Ok(s) if s.success() => {}
        Ok(s) => log::warn!("systemctl daemon-reload: {s}"),
        Err(e) => log::warn!("cannot run systemctl daemon-reload: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn mkinitcpio_leaves_a_foreign_root_to_other_hooks() {
        let line = "netroot=nbd:10.0.0.1:disk cryptdevice=/dev/nbd0p2:root root=/dev/mapper/root";
        for flavour in [Flavour::Dracut, Flavour::Mkinitcpio] {
            let plan = parse(line, flavour).unwrap();
            assert_eq!(
                plan.root,
                crate::plan::RootDevice::Stacked("/dev/mapper/root".into())
            );
        }
        // A root= that names no device at all is still left to other hooks by mkinitcpio.
        let line = "netroot=nbd:10.0.0.1:disk root=PARTUUID=1234";
        assert!(parse(line, Flavour::Dracut).is_err());
        let plan = parse(line, Flavour::Mkinitcpio).unwrap();
        assert_eq!(plan.root, crate::plan::RootDevice::Whole);
        assert!(matches!(plan.source, RootSource::Nbd(_)));
        // A malformed nbd: string is still refused.
        assert!(parse(
            "netroot=nbd:10.0.0.1 root=/dev/mapper/r",
            Flavour::Mkinitcpio
        )
        .is_err());
    }

    #[test]
    fn an_overlay_root_is_refused_with_a_line_naming_the_parameter() {
        let plan = parse("root=nbd:s:root rd.nbdroot.overlay=tmpfs", Flavour::Dracut).unwrap();
        let err = supported(&plan).unwrap_err().to_string();
        assert_eq!(
            err,
            "rd.nbdroot.overlay= needs nbdroot's own initramfs (nbdroot mkinitramfs): the dracut, \
             mkinitcpio and initramfs-tools hooks mount no overlay, and the root without one \
             would be written on the server"
        );
        let plan = parse("root=nbd:s:root", Flavour::Dracut).unwrap();
        assert!(supported(&plan).is_ok());
    }

    #[test]
    fn handler_form_is_three_arguments_with_nbd_in_the_middle() {
        assert_eq!(
            Handler::from_args(&args(&["eth0", "nbd:10.0.0.1:root", "/sysroot"])),
            Some(Handler {
                netif: "eth0".into(),
                netroot: "nbd:10.0.0.1:root".into(),
                new_root: "/sysroot".into()
            })
        );
        assert_eq!(
            Handler::from_args(&args(&["connect", "10.0.0.1", "/dev/nbd0"])),
            None
        );
        assert_eq!(Handler::from_args(&args(&["eth0", "nbd:x"])), None);
        // `connect` with an NBD URI and a device has the handler's shape.
        for argv in [
            ["connect", "nbd://10.0.2.2:10809/data", "/dev/nbd1"],
            ["eth0", "nbd://10.0.2.2/data", "/sysroot"],
            ["connect", "nbd:10.0.2.2:root", "/dev/nbd1"],
        ] {
            assert_eq!(Handler::from_args(&args(&argv)), None, "{argv:?}");
        }
        assert_eq!(
            Handler::from_args(&args(&["-v", "nbd:x:y", "/sysroot"])),
            None
        );
    }

    #[test]
    fn the_last_root_counts() {
        assert_eq!(
            root_param("root=x netroot=dhcp root=/dev/root rw"),
            Some("/dev/root")
        );
        assert_eq!(root_param("root=block:/dev/root"), Some("/dev/root"));
        assert_eq!(root_param("rootfstype=ext4"), None);
    }
}
