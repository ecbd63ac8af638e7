//! Runs a parsed command line: turns the arguments into the library's options, calls the
//! command and prints its answer.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::args::{
    CheckArgs, Command, ConnectArgs, InfoArgs, ListArgs, MkinitramfsArgs, NetArgs, PlanArgs,
};
use crate::cli::commands::{self, Check, CommandError};
use crate::cli::nbdtab;
use crate::kernel::attach::{self, AttachError, AttachOptions, Interface};
use crate::settings::{self, ConnectPolicy, SocketOptions};
use crate::{address, cmdline, initramfs, plan, supervise};

/// Why a command failed: printed as one line, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Serve(#[from] AttachError),
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
    #[error("supervise: {0}")]
    SuperviseConfig(#[from] supervise::config::ConfigError),
    #[error("{}: {why}", path.display())]
    Nbdtab { path: PathBuf, why: String },
    #[error("cannot read /proc/cmdline: {0}")]
    ProcCmdline(io::Error),
    #[error("cannot tell the running kernel's release: {0}; give --kver")]
    Uname(nix::Error),
    #[error("cannot find this program's binary: {0}; give --binary")]
    CurrentExe(io::Error),
    #[error("boot runs only as PID 1 (the /init of an initramfs)")]
    NotPid1,
    /// The only bare I/O errors here are those of writing the answer; others say what failed.
    #[error("cannot write to standard output: {0}")]
    Stdout(#[from] io::Error),
}

impl From<address::TargetError> for RunError {
    fn from(e: address::TargetError) -> Self {
        Self::Command(e.into())
    }
}

/// Runs `command`; the exit status is the command's own (`check`, `status`) or 0.
pub fn run(command: Command) -> Result<ExitCode, RunError> {
    // Not locked: serve and supervise run for long, and connect may fork.
    let mut out = io::stdout();
    match command {
        Command::Connect(c) => connect(&c, &mut out)?,
        Command::Disconnect(d) => commands::disconnect(&d.device)?,
        Command::Check(c) => return check(&c, &mut out),
        Command::List(l) => list(&l, &mut out)?,
        Command::Info(i) => info(i, &mut out)?,
        Command::Mkinitramfs(m) => mkinitramfs(m)?,
        Command::Plan(p) => plan(p, &mut out)?,
        Command::Boot => return Err(RunError::NotPid1),
        Command::Status => return status(&mut out),
        Command::Serve { device } => attach::serve(&device)?,
        Command::Supervise { config, ready_fd } => {
            let cfg = supervise::Config::decode(&config)?;
            supervise::run(cfg, ready_fd.and_then(|fd| fd.parse().ok()))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The TLS settings the options ask for: `None` when no TLS option was given (an `nbds://`
/// URI may still ask for TLS).
fn tls_settings(net: &NetArgs) -> Option<crate::tls::TlsSettings> {
    let t = &net.tls;
    let verify = crate::tls::Verify::parse(&t.tls_verify).unwrap_or_default();
    let any = t.tls
        || t.tls_ca.is_some()
        || t.tls_cert.is_some()
        || t.tls_key.is_some()
        || t.tls_hostname.is_some()
        || verify != crate::tls::Verify::Full;
    any.then(|| crate::tls::TlsSettings {
        ca: t.tls_ca.clone(),
        cert: t.tls_cert.clone(),
        key: t.tls_key.clone(),
        hostname: t.tls_hostname.clone(),
        verify,
    })
}

fn policy(net: &NetArgs) -> ConnectPolicy {
    ConnectPolicy {
        attempt_timeout: Duration::from_secs(net.connect_timeout),
        retries: net.retries,
    }
}

/// What `connect` attaches: from the arguments, or from the nbdtab entry the lone device
/// argument names.
struct ConnectSpec {
    endpoint: address::Endpoint,
    /// `nbds://`: the URI asks for TLS.
    uri_tls: bool,
    export: String,
    device: Option<u32>,
    from_table: nbdtab::Options,
}

fn connect_spec(c: &ConnectArgs) -> Result<ConnectSpec, RunError> {
    if c.device.is_none() {
        if let Some(index) = nbdtab::device_name(&c.server) {
            return table_entry(c, index);
        }
    }
    let target = address::parse_target(&c.server)?;
    Ok(ConnectSpec {
        endpoint: target.endpoint,
        uri_tls: target.tls,
        export: c.export.clone().or(target.export).unwrap_or_default(),
        device: c
            .device
            .as_deref()
            .map(commands::device_index)
            .transpose()?,
        from_table: nbdtab::Options::default(),
    })
}

/// The table `connect nbdN` reads: `--nbdtab`, `$NBDROOT_NBDTAB`, else /etc/nbdtab.
fn table_path(c: &ConnectArgs) -> PathBuf {
    c.nbdtab
        .clone()
        .or_else(|| std::env::var_os(nbdtab::PATH_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(nbdtab::PATH))
}

fn table_entry(c: &ConnectArgs, index: u32) -> Result<ConnectSpec, RunError> {
    let path = table_path(c);
    let nbdtab_err = |why: String| RunError::Nbdtab {
        path: path.clone(),
        why,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        nbdtab_err(format!(
            "cannot read it ({e}); \"{}\" alone names a device listed there, or give a server",
            c.server
        ))
    })?;
    let entries = nbdtab::parse(&text).map_err(|e| nbdtab_err(e.to_string()))?;
    let entry = nbdtab::lookup(&entries, index).map_err(|e| nbdtab_err(e.to_string()))?;
    for note in &entry.options.notes {
        log::warn!("{}: line {}: {note}", path.display(), entry.line);
    }
    if entry.options.ioctl && entry.options.persist {
        return Err(nbdtab_err(format!(
            "line {}: \"persist\" needs the netlink interface, and \"nonetlink\" asks for ioctls",
            entry.line
        )));
    }
    log::debug!(
        "{}: line {}: nbd{index} is {} export \"{}\"",
        path.display(),
        entry.line,
        entry.endpoint,
        entry.export
    );
    Ok(ConnectSpec {
        endpoint: entry.endpoint.clone(),
        uri_tls: false,
        export: c.export.clone().unwrap_or_else(|| entry.export.clone()),
        device: Some(index),
        from_table: entry.options.clone(),
    })
}

fn connect(c: &ConnectArgs, out: &mut impl Write) -> Result<(), RunError> {
    let spec = connect_spec(c)?;
    let table = &spec.from_table;
    let ioctl = c.ioctl || table.ioctl;
    let swap = c.swap || c.mkswap || c.priority.is_some();
    let persist = c.persist || table.persist || swap;
    if ioctl && persist {
        return Err(RunError::Command(
            commands::CommandError::PersistNeedsNetlink,
        ));
    }
    let secs = |s: Option<u64>| s.map(Duration::from_secs);
    // TLS options on the command line replace the entry's as a whole: a CA from one place and
    // a key from another is not a configuration anyone wrote.
    let tls = commands::tls_client(
        &address::Target {
            endpoint: spec.endpoint.clone(),
            export: None,
            tls: spec.uri_tls,
        },
        tls_settings(&c.net).or_else(|| table.tls.clone()).as_ref(),
    )?;
    let opts = AttachOptions {
        export: spec.export,
        device: spec.device,
        connections: c
            .connections
            .or(table.connections)
            .unwrap_or(settings::CONNECTIONS)
            .into(),
        block_size: c.block_size.or(table.block_size),
        timeout: secs(c.timeout.or(table.timeout)),
        dead_conn_timeout: secs(c.dead_timeout).or(persist.then_some(settings::DEAD_TIMEOUT)),
        supervised: persist,
        read_only: c.readonly || table.read_only,
        identifier: c.identifier.clone(),
        policy: policy(&c.net),
        socket: SocketOptions {
            keepalive: c.keepalive.0,
            user_timeout: (c.tcp_user_timeout > 0).then(|| Duration::from_secs(c.tcp_user_timeout)),
        },
        tls,
        replicas: c
            .replicas
            .iter()
            .filter_map(|(host, port)| {
                let endpoint = address::Endpoint::Tcp {
                    host: host.clone(),
                    port: *port,
                };
                // One whose name does not resolve is one that does not answer: left out.
                crate::connect::resolve(&endpoint)
                    .map_err(|e| log::warn!("replica {endpoint} left out: {e}"))
                    .ok()
            })
            .collect(),
        shared_storage: c.replicas_shared,
    };
    let interface = if ioctl {
        Interface::Ioctl
    } else {
        Interface::Netlink
    };
    let attached = commands::connect(&spec.endpoint, &opts, interface, c.foreground)?;
    if persist {
        commands::supervise(&attached, &opts)?;
    }
    if swap {
        commands::swap_on(&attached, c.mkswap, c.priority)?;
    }
    writeln!(out, "{}", attached.device)?;
    Ok(())
}

fn check(c: &CheckArgs, out: &mut impl Write) -> Result<ExitCode, RunError> {
    Ok(match commands::check(&c.device) {
        Check::Connected(pid) => {
            match pid {
                Some(pid) => writeln!(out, "{pid}")?,
                None => writeln!(out, "connected")?,
            }
            ExitCode::SUCCESS
        }
        Check::NotConnected => ExitCode::from(1),
        Check::Error(e) => {
            log::error!("{e}");
            ExitCode::from(2)
        }
    })
}

fn list(l: &ListArgs, out: &mut impl Write) -> Result<(), RunError> {
    for entry in commands::list(&l.server, &policy(&l.net), tls_settings(&l.net).as_ref())? {
        if entry.description.is_empty() {
            writeln!(out, "{}", entry.name)?;
        } else {
            writeln!(out, "{}\t{}", entry.name, entry.description)?;
        }
    }
    Ok(())
}

fn info(i: InfoArgs, out: &mut impl Write) -> Result<(), RunError> {
    let policy = policy(&i.net);
    write!(
        out,
        "{}",
        commands::info(&i.server, i.export, &policy, tls_settings(&i.net).as_ref())?
    )?;
    Ok(())
}

fn mkinitramfs(m: MkinitramfsArgs) -> Result<(), RunError> {
    let kver = match m.kver {
        Some(kver) => kver,
        None => nix::sys::utsname::uname()
            .map_err(RunError::Uname)?
            .release()
            .to_string_lossy()
            .into_owned(),
    };
    let binary = match m.binary {
        Some(binary) => binary,
        None => std::env::current_exe().map_err(RunError::CurrentExe)?,
    };
    let mut modules: Vec<String> = m.modules.into_iter().filter(|m| !m.is_empty()).collect();
    if modules.is_empty() {
        modules = initramfs::DEFAULT_MODULES.map(String::from).to_vec();
    }
    let opts = initramfs::Options {
        output: m.output,
        kver,
        kmoddir: m.kmoddir,
        modules,
        nic_modules: m.nic_modules,
        binary,
        tls: initramfs::TlsFiles {
            enabled: m.tls || m.tls_ca.is_some() || m.tls_cert.is_some() || m.tls_key.is_some(),
            ca: m.tls_ca,
            cert: m.tls_cert,
            key: m.tls_key,
        },
    };
    let s = initramfs::build(&opts)?;
    log::info!(
        "wrote {} ({} bytes, {} module files for {})",
        opts.output.display(),
        s.bytes,
        s.module_files,
        opts.kver
    );
    Ok(())
}

fn plan(p: PlanArgs, out: &mut impl Write) -> Result<(), RunError> {
    let line = match p.cmdline {
        Some(line) => line,
        None => std::fs::read_to_string("/proc/cmdline").map_err(RunError::ProcCmdline)?,
    };
    let mut plan = cmdline::parse(&line)?;
    if let Some(root_path) = &p.root_path {
        cmdline::apply_root_path(&mut plan, Some(root_path), None)?;
    }
    write!(out, "{}", plan::render::render(&plan))?;
    Ok(())
}

fn status(out: &mut impl Write) -> Result<ExitCode, RunError> {
    let all = supervise::status::read_all(supervise::status_dir());
    if all.is_empty() {
        writeln!(
            out,
            "no nbdroot supervisor is running (no {}/*.status)",
            supervise::STATUS_DIR
        )?;
        return Ok(ExitCode::from(1));
    }
    for (name, text) in all {
        writeln!(out, "{}:", name.trim_end_matches(".status"))?;
        for line in text.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
