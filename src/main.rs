//! The `nbdroot` command: /init in an initramfs when it runs as PID 1, a tool otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use log::LevelFilter;

use nbdroot::attach::{AttachOptions, Interface};
use nbdroot::cmdline::ConnectPolicy;
use nbdroot::commands::{self, Check};
use nbdroot::connect::{Keepalive, SocketOptions};
use nbdroot::{boot, cmdline, initramfs, logger};

#[derive(Parser)]
#[command(
    name = "nbdroot",
    version,
    about = "Boot Linux from a root filesystem served over NBD",
    long_about = "Boot Linux from a root filesystem served over NBD.\n\n\
        As PID 1 (the /init of an initramfs) nbdroot reads root=nbd:<server>:<port|export> and ip= \
        from the kernel command line, brings the network up, attaches the export to /dev/nbdN, \
        mounts it and switches to it. As a command it attaches exports like nbd-client, builds \
        such an initramfs and checks boot parameters.",
    after_help = "Examples:\n  \
        nbdroot connect 10.0.0.1 -N root            attach export \"root\" to a free /dev/nbdN\n  \
        nbdroot connect nbd://10.0.0.1:10809/root /dev/nbd1 -C 4\n  \
        nbdroot check /dev/nbd1 && nbdroot disconnect /dev/nbd1\n  \
        nbdroot list 10.0.0.1\n  \
        nbdroot info nbd://10.0.0.1/root\n  \
        nbdroot mkinitramfs -o /boot/nbdroot.img\n  \
        nbdroot plan 'root=nbd:10.0.2.2:10809 ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw'"
)]
struct Cli {
    /// Print debug messages.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach an export to an nbd device (like nbd-client).
    #[command(after_help = "Examples:\n  \
        nbdroot connect 10.0.0.1 -N root\n  \
        nbdroot connect 10.0.0.1:10900 /dev/nbd2 --readonly\n  \
        nbdroot connect nbd+unix:///disk?socket=/run/nbd.sock -b 4096\n  \
        nbdroot connect 10.0.0.1 -N data -C 4 --keepalive 5,2,3\n\n\
        Prints the device on success. Exit status: 0 attached, 1 failed.")]
    Connect(ConnectArgs),
    /// Disconnect an nbd device.
    Disconnect {
        /// The device, e.g. /dev/nbd0.
        device: String,
    },
    /// Tell whether a device is connected: exit 0 connected (prints the serving pid),
    /// 1 not connected, 2 error.
    Check {
        /// The device, e.g. /dev/nbd0.
        device: String,
    },
    /// List the exports a server offers.
    List {
        /// host[:port], [ipv6]:port or nbd://host[:port]
        server: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Show an export: size, flags, block sizes, description.
    Info {
        /// host[:port], nbd://host[:port]/export or nbd+unix:///export?socket=PATH
        server: String,
        /// Export name (overrides the one in the URI).
        #[arg(short = 'N', long = "name")]
        export: Option<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Write an initramfs whose /init is this binary.
    Mkinitramfs {
        /// The image to write (gzip-compressed newc cpio).
        #[arg(short, long)]
        output: PathBuf,
        /// Kernel release whose modules to include [default: the running kernel].
        #[arg(long)]
        kver: Option<String>,
        /// Directory holding <kver>/modules.dep.
        #[arg(long, default_value = "/lib/modules")]
        kmoddir: PathBuf,
        /// Modules /init loads at boot, with their dependencies [default: nbd,virtio_net,virtio_pci].
        #[arg(long, value_delimiter = ',')]
        modules: Vec<String>,
        /// The static binary to use as /init [default: this one].
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Show what a kernel command line asks for, without doing it.
    Plan {
        /// The kernel command line [default: /proc/cmdline].
        cmdline: Option<String>,
    },
    /// Run the boot as /init does (only useful as PID 1).
    Boot,
}

#[derive(Args)]
struct NetArgs {
    /// Bound on connecting and on the handshake, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    connect_timeout: u64,
    /// Attempts after the first fails (refused, timed out, closed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
}

impl NetArgs {
    fn policy(&self) -> ConnectPolicy {
        ConnectPolicy {
            attempt_timeout: Duration::from_secs(self.connect_timeout),
            retries: self.retries,
        }
    }
}

#[derive(Args)]
struct ConnectArgs {
    /// host[:port], [ipv6]:port, nbd://host[:port]/export or nbd+unix:///export?socket=PATH
    server: String,
    /// The device to use [default: a free one].
    device: Option<String>,
    /// Export name (overrides the one in the URI) [default: the server's default export].
    #[arg(short = 'N', long = "name")]
    export: Option<String>,
    /// Kernel block size [default: the server's minimum, at least 512].
    #[arg(short, long, value_name = "BYTES", value_parser = ["512", "1024", "2048", "4096"])]
    block_size: Option<String>,
    /// Kernel I/O timeout in seconds [default: none].
    #[arg(short, long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// How long I/O waits for a dead connection to be replaced, in seconds.
    #[arg(long, value_name = "SECS")]
    dead_timeout: Option<u64>,
    /// Number of connections (needs the server's CAN_MULTI_CONN when more than 1).
    #[arg(short = 'C', long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: u16,
    /// Attach read-only.
    #[arg(short = 'R', long)]
    readonly: bool,
    /// Use the ioctl interface (a process stays to serve the device) instead of netlink.
    #[arg(short = 'L', long, visible_alias = "nonetlink")]
    ioctl: bool,
    /// With --ioctl: serve the device from this process until it is disconnected.
    #[arg(long, requires = "ioctl")]
    foreground: bool,
    /// Backend identifier shown in /sys/block/nbdN/backend (netlink, Linux ≥ 5.14).
    #[arg(short, long, value_name = "ID", conflicts_with = "ioctl")]
    identifier: Option<String>,
    /// TCP keepalive: idle seconds, interval seconds, probe count; or "off".
    #[arg(long, value_name = "IDLE,INTERVAL,COUNT", default_value = "10,5,3", value_parser = parse_keepalive)]
    keepalive: KeepaliveArg,
    /// TCP_USER_TIMEOUT in seconds; 0 turns it off.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    tcp_user_timeout: u64,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Clone, Copy)]
struct KeepaliveArg(Option<Keepalive>);

fn parse_keepalive(s: &str) -> std::result::Result<KeepaliveArg, String> {
    if s == "off" {
        return Ok(KeepaliveArg(None));
    }
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.parse().ok().filter(|&n: &u32| n > 0))
        .collect::<Option<_>>()
        .ok_or("expected IDLE,INTERVAL,COUNT (positive whole numbers) or off")?;
    match parts[..] {
        [idle, interval, count] => Ok(KeepaliveArg(Some(Keepalive {
            idle: Duration::from_secs(idle.into()),
            interval: Duration::from_secs(interval.into()),
            count,
        }))),
        _ => Err("expected IDLE,INTERVAL,COUNT (positive whole numbers) or off".into()),
    }
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        logger::init_pid1();
        // PID 1 must never print a backtrace: one line, then the kernel's panic.
        std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
        boot::run(boot::init_args_from_env());
    }
    let cli = Cli::parse();
    logger::init_host(if cli.verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Connect(a) => {
            let target = nbdroot::uri::parse_target(&a.server)?;
            let device = a
                .device
                .as_deref()
                .map(commands::device_index)
                .transpose()?;
            let opts = AttachOptions {
                export: a.export.or(target.export.clone()).unwrap_or_default(),
                device,
                connections: a.connections.into(),
                block_size: a.block_size.map(|b| b.parse().expect("validated by clap")),
                timeout: a.timeout.map(Duration::from_secs),
                dead_conn_timeout: a.dead_timeout.map(Duration::from_secs),
                read_only: a.readonly,
                identifier: a.identifier,
                policy: a.net.policy(),
                socket: SocketOptions {
                    keepalive: a.keepalive.0,
                    user_timeout: (a.tcp_user_timeout > 0)
                        .then(|| Duration::from_secs(a.tcp_user_timeout)),
                },
            };
            let interface = if a.ioctl {
                Interface::Ioctl
            } else {
                Interface::Netlink
            };
            let attached = commands::connect(&target.endpoint, &opts, interface, a.foreground)?;
            println!("{}", attached.device);
        }
        Command::Disconnect { device } => commands::disconnect(&device)?,
        Command::Check { device } => {
            return Ok(match commands::check(&device) {
                Check::Connected(pid) => {
                    println!("{}", pid.map_or("connected".to_string(), |p| p.to_string()));
                    ExitCode::SUCCESS
                }
                Check::NotConnected => ExitCode::from(1),
                Check::Error(e) => {
                    log::error!("{e}");
                    ExitCode::from(2)
                }
            });
        }
        Command::List { server, net } => {
            for entry in commands::list(&server, &net.policy())? {
                if entry.description.is_empty() {
                    println!("{}", entry.name);
                } else {
                    println!("{}\t{}", entry.name, entry.description);
                }
            }
        }
        Command::Info {
            server,
            export,
            net,
        } => print!("{}", commands::info(&server, export, &net.policy())?),
        Command::Mkinitramfs {
            output,
            kver,
            kmoddir,
            modules,
            binary,
        } => {
            let kver = match kver {
                Some(k) => k,
                None => nix::sys::utsname::uname()?
                    .release()
                    .to_string_lossy()
                    .into_owned(),
            };
            let modules = if modules.is_empty() {
                initramfs::DEFAULT_MODULES
                    .iter()
                    .map(|m| m.to_string())
                    .collect()
            } else {
                modules
            };
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            let opts = initramfs::Options {
                output,
                kver,
                kmoddir,
                modules,
                binary,
            };
            let s = initramfs::build(&opts)?;
            log::info!(
                "wrote {} ({} bytes, {} module files for {})",
                opts.output.display(),
                s.bytes,
                s.module_files,
                opts.kver
            );
        }
        Command::Plan { cmdline } => {
            let line = match cmdline {
                Some(l) => l,
                None => std::fs::read_to_string("/proc/cmdline")?,
            };
            let plan = cmdline::parse(&line)?;
            println!("{plan:#?}");
        }
        Command::Boot => return Err("boot runs only as PID 1 (the /init of an initramfs)".into()),
    }
    Ok(ExitCode::SUCCESS)
}
