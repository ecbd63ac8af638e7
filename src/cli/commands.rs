//! The `nbdroot` subcommands that talk to servers and devices, as library functions:
//! `main.rs` only parses arguments and prints.

use std::fmt::Write as _;

use crate::address::{self, Endpoint, Target, TargetError};
use crate::connect::{self, ConnectError, Peer};
use crate::kernel::attach::{self, AttachError, AttachOptions, Attached, Interface};
use crate::kernel::{self, device};
use crate::proto::consts::*;
use crate::proto::{self, ExportEntry, HandshakeError, Style};
use crate::settings::ConnectPolicy;
use crate::settings::SocketOptions;
use crate::tls::{self, TlsError, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("\"{0}\" is not an nbd device; expected /dev/nbdN, nbdN or N")]
    BadDevice(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{peer}: {source}")]
    Handshake {
        peer: String,
        source: HandshakeError,
    },
    #[error(transparent)]
    Supervise(#[from] crate::supervise::SuperviseError),
    #[error(transparent)]
    Swap(#[from] crate::swap::SwapError),
    #[error("TLS with {server}: {source}")]
    Tls { server: String, source: TlsError },
    #[error("a supervisor (--persist, --swap, nbdtab's persist) needs the netlink interface, not ioctls (--ioctl, nbdtab's nonetlink)")]
    PersistNeedsNetlink,
}

/// The TLS client for `target`: when `settings` asks for TLS or the URI does (`nbds://`).
/// Credentials are read here, so a missing file fails before any connection.
pub fn tls_client(
    target: &Target,
    settings: Option<&TlsSettings>,
) -> Result<Option<tls::Client>, CommandError> {
    let settings = match (settings, target.tls) {
        (Some(s), _) => s.clone(),
        (None, true) => TlsSettings::default(),
        (None, false) => return Ok(None),
    };
    let err = |source| CommandError::Tls {
        server: target.endpoint.to_string(),
        source,
    };
    let host = match &target.endpoint {
        Endpoint::Tcp { host, .. } => host.to_string(),
        Endpoint::Unix(_) => return Err(err(TlsError::NotTcp)),
    };
    tls::Client::new(&settings, &host).map(Some).map_err(err)
}

/// `3` from `/dev/nbd3`, `nbd3` or `3`.
pub fn device_index(name: &str) -> Result<u32, CommandError> {
    device::parse_index(name).ok_or_else(|| CommandError::BadDevice(name.to_string()))
}

/// `nbdroot connect`. Over netlink unless asked for ioctls, or the kernel has no netlink family.
pub fn connect(
    endpoint: &Endpoint,
    opts: &AttachOptions,
    interface: Interface,
    foreground: bool,
) -> Result<Attached, CommandError> {
    let peer = connect::resolve(endpoint)?;
    let interface = match interface {
        Interface::Netlink if !kernel::netlink::available() => {
            log::warn!("the kernel has no nbd netlink interface (nbd module not loaded, or Linux < 4.12): using ioctls");
            Interface::Ioctl
        }
        i => i,
    };
    Ok(match interface {
        Interface::Ioctl => attach::attach_ioctl(&peer, opts, foreground)?,
        Interface::Netlink => attach::attach_netlink(&peer, opts)?,
    })
}

/// `nbdroot disconnect`.
pub fn disconnect(device: &str) -> Result<(), CommandError> {
    Ok(attach::detach(device_index(device)?)?)
}

/// The answer of `nbdroot check`.
#[derive(Debug)]
pub enum Check {
    /// Connected; the pid the driver reports, when it does.
    Connected(Option<u32>),
    NotConnected,
    Error(CommandError),
}

/// `nbdroot check`: the driver publishes /sys/block/nbdN/pid while a device is connected.
pub fn check(device: &str) -> Check {
    let index = match device_index(device) {
        Ok(i) => i,
        Err(e) => return Check::Error(e),
    };
    match device::is_connected(index) {
        Some(true) => Check::Connected(
            std::fs::read_to_string(format!("/sys/block/nbd{index}/pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok()),
        ),
        Some(false) => Check::NotConnected,
        None => Check::Error(CommandError::Attach(AttachError::NoSuchDevice(index))),
    }
}

/// A bounded connection for an option-only session (list, info): with TLS, the session is
/// in userspace and the greeting behind it.
struct Session {
    peer: Peer,
    stream: connect::Stream,
    export: Option<String>,
    tls: Option<proto::TlsStarted>,
}

fn session(
    server: &str,
    policy: &ConnectPolicy,
    tls: Option<&TlsSettings>,
) -> Result<Session, CommandError> {
    let target = address::parse_target(server)?;
    let client = tls_client(&target, tls)?;
    let peer = connect::resolve(&target.endpoint)?;
    let mut stream = connect::open(&peer, policy, &SocketOptions::default())?;
    let mut started = None;
    if let Some(client) = &client {
        let (s, t) = stream
            .start_tls(&peer, client)
            .map_err(|e| attempt_error(&peer, e))?;
        (stream, started) = (s, Some(t));
    }
    Ok(Session {
        peer,
        stream,
        export: target.export,
        tls: started,
    })
}

/// One failed attempt as a command's error (list and info do not retry a handshake).
fn attempt_error(peer: &Peer, e: connect::AttemptError) -> CommandError {
    match e {
        connect::AttemptError::Fatal(e) => e.into(),
        connect::AttemptError::Transient(source) => CommandError::Handshake {
            peer: peer.to_string(),
            source,
        },
        connect::AttemptError::Connect(e) => CommandError::Tls {
            server: peer.to_string(),
            source: TlsError::Io(e),
        },
    }
}

/// `nbdroot list`.
pub fn list(
    server: &str,
    policy: &ConnectPolicy,
    tls: Option<&TlsSettings>,
) -> Result<Vec<ExportEntry>, CommandError> {
    let mut s = session(server, policy, tls)?;
    match s.tls {
        None => proto::list(&mut s.stream),
        Some(started) => proto::list_in_tls(&mut s.stream, started),
    }
    .map_err(|source| CommandError::Handshake {
        peer: s.peer.to_string(),
        source,
    })
}

/// `nbdroot info`: what nbdinfo prints, as text.
pub fn info(
    server: &str,
    export: Option<String>,
    policy: &ConnectPolicy,
    tls: Option<&TlsSettings>,
) -> Result<String, CommandError> {
    let mut s = session(server, policy, tls)?;
    let name = export.or(s.export.take()).unwrap_or_default();
    let peer = s.peer.clone();
    let handshake = |source| CommandError::Handshake {
        peer: peer.to_string(),
        source,
    };
    let mut info = match s.tls {
        None => proto::info(&mut s.stream, &name),
        Some(started) => proto::info_in_tls(&mut s.stream, started, &name),
    }
    .map_err(handshake)?;
    if info.export.size == 0 {
        // nbd-server 3.24 answers NBD_OPT_INFO with size 0; NBD_OPT_GO has the real size.
        // Go, then disconnect at once without any I/O.
        let mut s = session(server, policy, tls)?;
        let export = match s.tls {
            None => proto::negotiate(&mut s.stream, &name),
            Some(started) => proto::negotiate_in_tls(&mut s.stream, started, &name),
        }
        .map_err(handshake)?;
        let stream = s.stream;
        let _ = proto::Client::new(stream, export.clone()).disconnect();
        info.export.size = export.size;
    }
    let e = &info.export;
    let mut out = String::new();
    let _ = writeln!(out, "export=\"{}\":", info.name.as_deref().unwrap_or(&name));
    let _ = writeln!(out, "\texport-size: {}", e.size);
    if let Some(d) = info.description.as_deref().filter(|d| !d.is_empty()) {
        let _ = writeln!(out, "\tdescription: {d}");
    }
    let style = match e.style {
        Style::Oldstyle => "oldstyle",
        Style::Newstyle => "newstyle",
        Style::FixedNewstyle => "newstyle-fixed",
    };
    let _ = writeln!(out, "\tprotocol: {style}");
    for (name, flag) in [
        ("is_read_only", TFLAG_READ_ONLY),
        ("is_rotational", TFLAG_ROTATIONAL),
        ("can_flush", TFLAG_SEND_FLUSH),
        ("can_fua", TFLAG_SEND_FUA),
        ("can_trim", TFLAG_SEND_TRIM),
        ("can_zero", TFLAG_SEND_WRITE_ZEROES),
        ("can_fast_zero", TFLAG_SEND_FAST_ZERO),
        ("can_df", TFLAG_SEND_DF),
        ("can_multi_conn", TFLAG_CAN_MULTI_CONN),
        ("can_cache", TFLAG_SEND_CACHE),
    ] {
        let _ = writeln!(out, "\t{name}: {}", e.flags & flag != 0);
    }
    if let Some(b) = e.block_sizes {
        let _ = writeln!(out, "\tblock_size_minimum: {}", b.minimum);
        let _ = writeln!(out, "\tblock_size_preferred: {}", b.preferred);
        let _ = writeln!(out, "\tblock_size_maximum: {}", b.maximum);
    }
    Ok(out)
}

/// `connect --persist`: a reconnect supervisor for the attached device.
pub fn supervise(attached: &Attached, opts: &AttachOptions) -> Result<(), CommandError> {
    let cfg = crate::supervise::Config::new(attached, opts);
    let pid = crate::supervise::spawn(cfg)?;
    log::info!("{}: supervisor @nbdroot is pid {pid}", attached.device);
    Ok(())
}

/// `connect --swap`: swap on the attached device.
pub fn swap_on(
    attached: &Attached,
    mkswap: bool,
    priority: Option<u16>,
) -> Result<(), CommandError> {
    if mkswap {
        crate::swap::mkswap(&attached.device, attached.export.size)?;
    }
    crate::swap::swapon(&attached.device, priority)?;
    if let Some(k) = crate::swap::raise_min_free(crate::plan::MinFree::Auto)? {
        log::info!("vm.min_free_kbytes raised to {k} for swap over the network");
    }
    Ok(())
}
