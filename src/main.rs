//! The `nbdroot` command: /init in an initramfs when it runs as PID 1, a tool otherwise.
//!
//! Arguments are parsed with lexopt and a hand-written help: clap cost 150 KB of the
//! static binary's 1 MiB budget.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use lexopt::prelude::*;
use log::LevelFilter;

use nbdroot::cli::commands::{self, Check};
use nbdroot::kernel::attach::{AttachOptions, Interface};
use nbdroot::settings::{ConnectPolicy, Keepalive, SocketOptions};
use nbdroot::{boot, cmdline, initramfs, logger};

const HELP: &str = "\
nbdroot: boot Linux from a root filesystem served over NBD

As PID 1 (the /init of an initramfs) nbdroot reads root=nbd:<server>:<port|export> and ip=
from the kernel command line, brings the network up, attaches the export to /dev/nbdN, mounts
it and switches to it. As a command it attaches exports like nbd-client, builds such an
initramfs and checks boot parameters.

Usage: nbdroot [-v] <command> [options]

Commands:
  connect      attach an export to an nbd device (like nbd-client)
  disconnect   disconnect an nbd device
  check        tell whether a device is connected (exit 0 yes, 1 no, 2 error)
  list         list the exports a server offers
  info         show an export: size, flags, block sizes, description
  mkinitramfs  write an initramfs whose /init is this binary
  plan         show what a kernel command line asks for, without doing it
  boot         run the boot as /init does (only as PID 1)
  status       show the reconnect supervisors: state, reconnects, last error

Options:
  -v, --verbose  print debug messages
  -h, --help     this help; `nbdroot <command> --help` for a command's
  -V, --version  print the version

Examples:
  nbdroot connect 10.0.0.1 -N root            attach export \"root\" to a free /dev/nbdN
  nbdroot connect nbd://10.0.0.1:10809/root /dev/nbd1 -C 4
  nbdroot check /dev/nbd1 && nbdroot disconnect /dev/nbd1
  nbdroot list 10.0.0.1
  nbdroot info nbd://10.0.0.1/root
  nbdroot mkinitramfs -o /boot/nbdroot.img
  nbdroot plan 'root=nbd:10.0.2.2:10809 ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw'
";

const NET_HELP: &str = "\
  --connect-timeout <SECS>  bound on connecting and on the handshake [default: 10]
  --retries <N>             attempts after the first fails (refused, timed out) [default: 0]";

fn connect_help() -> String {
    format!(
        "\
Usage: nbdroot connect <SERVER> [DEVICE] [options]

Attach an export to an nbd device (DEVICE, e.g. /dev/nbd1, or a free one) and print the device.
SERVER is host[:port], [ipv6]:port, nbd://host[:port]/export or nbd+unix:///export?socket=PATH.

Options:
  -N, --name <EXPORT>       export name [default: from the URI, else the server's default]
  -b, --block-size <BYTES>  kernel block size: 512, 1024, 2048 or 4096 [default: the server's minimum, at least 512]
  -t, --timeout <SECS>      kernel I/O timeout [default: none]
      --dead-timeout <SECS> how long I/O waits for a dead connection to be replaced
  -C, --connections <N>     number of connections, 1-64; more than 1 needs the server's CAN_MULTI_CONN [default: 1]
  -R, --readonly            attach read-only
  -L, --ioctl, --nonetlink  use the ioctl interface (a daemon stays to serve the device)
      --foreground          with --ioctl: serve the device from this process until it is disconnected
  -i, --identifier <ID>     backend identifier in /sys/block/nbdN/backend (netlink, Linux >= 5.14)
  -p, --persist             keep a supervisor (@nbdroot) that replaces dead connections; I/O waits
                            for it up to --dead-timeout [default with --persist: 120]
      --swap                swap on the device (implies --persist); --mkswap writes a swap
                            signature first, --priority <N> sets its priority
      --keepalive <IDLE,INTERVAL,COUNT|off>  TCP keepalive [default: 10,5,3]
      --tcp-user-timeout <SECS>  TCP_USER_TIMEOUT; 0 turns it off [default: 30]
{NET_HELP}

Examples:
  nbdroot connect 10.0.0.1 -N root
  nbdroot connect 10.0.0.1:10900 /dev/nbd2 --readonly
  nbdroot connect nbd+unix:///disk?socket=/run/nbd.sock -b 4096
  nbdroot connect 10.0.0.1 -N data -C 4 --keepalive 5,2,3

Exit status: 0 attached, 1 failed, 2 bad arguments.
"
    )
}

const DEVICE_HELP: &str = "Usage: nbdroot {cmd} <DEVICE>   (e.g. /dev/nbd0, nbd0 or 0)\n";

const MKINITRAMFS_HELP: &str = "\
Usage: nbdroot mkinitramfs -o <FILE> [options]

Write a gzip-compressed newc cpio whose /init is this (static) binary, with kernel modules.

Options:
  -o, --output <FILE>       the image to write
      --kver <VERSION>      kernel release whose modules to include [default: the running kernel]
      --kmoddir <DIR>       directory holding <kver>/modules.dep [default: /lib/modules]
      --modules <A,B,...>   modules /init always loads, with their dependencies [default: nbd,virtio_net,virtio_pci]
      --nic-modules <SET>   NIC drivers /init loads for the devices it finds: default, none, or A,B,... [default: default]
      --binary <FILE>       the static binary to use as /init [default: this one]
";

const PLAN_HELP: &str = "\
Usage: nbdroot plan [CMDLINE]

Show what a kernel command line (default: /proc/cmdline) asks for, without doing it.
";

/// A command line that cannot be run: shown with a pointer to the help, exit status 2.
#[derive(Debug)]
struct Usage(String);

enum Command {
    Connect(Box<ConnectArgs>),
    Disconnect(String),
    Check(String),
    List {
        server: String,
        policy: ConnectPolicy,
    },
    Info {
        server: String,
        export: Option<String>,
        policy: ConnectPolicy,
    },
    Mkinitramfs(initramfs::Options, bool),
    Plan(Option<String>),
    Boot,
    Status,
    Supervise(String, Option<i32>),
    Serve(String),
    Help(String),
}

struct ConnectArgs {
    server: String,
    opts: AttachOptions,
    device: Option<String>,
    export: Option<String>,
    ioctl: bool,
    foreground: bool,
    /// Start a reconnect supervisor (netlink only).
    persist: bool,
    /// Swap on the device: (write a signature first, priority).
    swap: Option<(bool, Option<u16>)>,
}

fn value<T: FromStr>(
    parser: &mut lexopt::Parser,
    opt: &str,
    expected: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, Usage> {
    let raw = parser
        .value()
        .map_err(|_| Usage(format!("{opt} needs a value: {expected}")))?;
    let text = raw.to_string_lossy().into_owned();
    text.parse::<T>()
        .ok()
        .filter(|v| ok(v))
        .ok_or_else(|| Usage(format!("{opt} \"{text}\": expected {expected}")))
}

fn string(parser: &mut lexopt::Parser, opt: &str) -> Result<String, Usage> {
    parser
        .value()
        .map(|v| v.to_string_lossy().into_owned())
        .map_err(|_| Usage(format!("{opt} needs a value")))
}

fn unexpected(cmd: &str, arg: lexopt::Arg<'_>) -> Usage {
    let what = match arg {
        Short(c) => format!("unknown option -{c}"),
        Long(l) => format!("unknown option --{l}"),
        Value(v) => format!("unexpected argument \"{}\"", v.to_string_lossy()),
    };
    Usage(format!("{cmd}: {what}; see nbdroot {cmd} --help"))
}

fn keepalive(text: &str) -> Result<Option<Keepalive>, Usage> {
    if text == "off" {
        return Ok(None);
    }
    let parts: Option<Vec<u32>> = text
        .split(',')
        .map(|p| p.parse().ok().filter(|&n| n > 0))
        .collect();
    match parts.as_deref() {
        Some([idle, interval, count]) => Ok(Some(Keepalive {
            idle: Duration::from_secs((*idle).into()),
            interval: Duration::from_secs((*interval).into()),
            count: *count,
        })),
        _ => Err(Usage(format!(
            "--keepalive \"{text}\": expected IDLE,INTERVAL,COUNT (positive whole numbers) or off"
        ))),
    }
}

/// `--connect-timeout`, shared by list, info and connect.
fn connect_timeout(parser: &mut lexopt::Parser) -> Result<Duration, Usage> {
    value(
        parser,
        "--connect-timeout",
        "whole seconds from 1 to 3600",
        |s| (1..=3600).contains(s),
    )
    .map(Duration::from_secs)
}

/// `--retries`, shared by list, info and connect.
fn retries(parser: &mut lexopt::Parser) -> Result<u32, Usage> {
    value(parser, "--retries", "a count from 0 to 1000", |n: &u32| {
        *n <= 1000
    })
}

fn parse_args(args: Vec<OsString>) -> Result<(bool, Command), Usage> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut verbose = false;
    let cmd = loop {
        match parser.next().map_err(|e| Usage(e.to_string()))? {
            Some(Short('v') | Long("verbose")) => verbose = true,
            Some(Short('h') | Long("help")) => return Ok((verbose, Command::Help(HELP.into()))),
            Some(Short('V') | Long("version")) => {
                return Ok((
                    verbose,
                    Command::Help(format!("nbdroot {}\n", env!("CARGO_PKG_VERSION"))),
                ))
            }
            Some(Value(v)) => break v.to_string_lossy().into_owned(),
            Some(other) => return Err(unexpected("nbdroot", other)),
            None => return Err(Usage("no command given; see nbdroot --help".into())),
        }
    };
    let mut positional = Vec::new();
    let mut policy = ConnectPolicy {
        retries: 0,
        ..ConnectPolicy::default()
    };
    match cmd.as_str() {
        "connect" => {
            let mut c = ConnectArgs {
                server: String::new(),
                opts: AttachOptions::default(),
                device: None,
                export: None,
                ioctl: false,
                foreground: false,
                persist: false,
                swap: None,
            };
            let mut user_timeout = 30u64;
            let mut ka = SocketOptions::default().keepalive;
            while let Some(arg) = parser.next().map_err(|e| Usage(e.to_string()))? {
                match arg {
                    Long("connect-timeout") => {
                        policy.attempt_timeout = connect_timeout(&mut parser)?
                    }
                    Long("retries") => policy.retries = retries(&mut parser)?,
                    Short('h') | Long("help") => {
                        return Ok((verbose, Command::Help(connect_help())))
                    }
                    Short('v') | Long("verbose") => verbose = true,
                    Short('N') | Long("name") => c.export = Some(string(&mut parser, "--name")?),
                    Short('b') | Long("block-size") => {
                        c.opts.block_size = Some(value(
                            &mut parser,
                            "--block-size",
                            "512, 1024, 2048 or 4096",
                            |b: &u32| matches!(b, 512 | 1024 | 2048 | 4096),
                        )?)
                    }
                    Short('t') | Long("timeout") => {
                        let s: u64 =
                            value(&mut parser, "--timeout", "whole seconds, at least 1", |s| {
                                *s >= 1
                            })?;
                        c.opts.timeout = Some(Duration::from_secs(s));
                    }
                    Long("dead-timeout") => {
                        let s: u64 =
                            value(&mut parser, "--dead-timeout", "whole seconds", |_| true)?;
                        c.opts.dead_conn_timeout = Some(Duration::from_secs(s));
                    }
                    Short('C') | Long("connections") => {
                        c.opts.connections =
                            value(&mut parser, "--connections", "a count from 1 to 64", |n| {
                                (1..=64).contains(n)
                            })?
                    }
                    Short('R') | Long("readonly") => c.opts.read_only = true,
                    Short('L') | Long("ioctl") | Long("nonetlink") => c.ioctl = true,
                    Long("foreground") => c.foreground = true,
                    Short('p') | Long("persist") => c.persist = true,
                    Long("swap") => c.swap = Some(c.swap.unwrap_or((false, None))),
                    Long("mkswap") => c.swap = Some((true, c.swap.and_then(|s| s.1))),
                    Long("priority") => {
                        let p = value(
                            &mut parser,
                            "--priority",
                            "a swap priority from 0 to 32767",
                            |p: &u16| *p <= 32767,
                        )?;
                        c.swap = Some((c.swap.is_some_and(|s| s.0), Some(p)));
                    }
                    Short('i') | Long("identifier") => {
                        c.opts.identifier = Some(string(&mut parser, "--identifier")?)
                    }
                    Long("keepalive") => ka = keepalive(&string(&mut parser, "--keepalive")?)?,
                    Long("tcp-user-timeout") => {
                        user_timeout = value(
                            &mut parser,
                            "--tcp-user-timeout",
                            "whole seconds (0: off)",
                            |_| true,
                        )?
                    }
                    Value(v) if positional.len() < 2 => {
                        positional.push(v.to_string_lossy().into_owned())
                    }
                    other => return Err(unexpected("connect", other)),
                }
            }
            c.server = positional.first().cloned().ok_or_else(|| {
                Usage("connect: no server given; see nbdroot connect --help".into())
            })?;
            c.device = positional.get(1).cloned();
            if c.foreground && !c.ioctl {
                return Err(Usage("connect: --foreground needs --ioctl".into()));
            }
            if c.ioctl && (c.persist || c.swap.is_some()) {
                return Err(Usage(
                    "connect: --persist and --swap need netlink, not --ioctl".into(),
                ));
            }
            if c.ioctl && c.opts.identifier.is_some() {
                return Err(Usage(
                    "connect: --identifier needs netlink, not --ioctl".into(),
                ));
            }
            c.opts.policy = policy;
            c.opts.socket = SocketOptions {
                keepalive: ka,
                user_timeout: (user_timeout > 0).then(|| Duration::from_secs(user_timeout)),
            };
            Ok((verbose, Command::Connect(Box::new(c))))
        }
        "disconnect" | "check" => {
            while let Some(arg) = parser.next().map_err(|e| Usage(e.to_string()))? {
                match arg {
                    Short('h') | Long("help") => {
                        return Ok((verbose, Command::Help(DEVICE_HELP.replace("{cmd}", &cmd))))
                    }
                    Value(v) if positional.is_empty() => {
                        positional.push(v.to_string_lossy().into_owned())
                    }
                    other => return Err(unexpected(&cmd, other)),
                }
            }
            let dev = positional.pop().ok_or_else(|| {
                Usage(format!("{cmd}: no device given; see nbdroot {cmd} --help"))
            })?;
            Ok((
                verbose,
                if cmd == "check" {
                    Command::Check(dev)
                } else {
                    Command::Disconnect(dev)
                },
            ))
        }
        "list" | "info" => {
            let mut export = None;
            while let Some(arg) = parser.next().map_err(|e| Usage(e.to_string()))? {
                match arg {
                    Long("connect-timeout") => {
                        policy.attempt_timeout = connect_timeout(&mut parser)?
                    }
                    Long("retries") => policy.retries = retries(&mut parser)?,
                    Short('h') | Long("help") => {
                        let usage = if cmd == "list" {
                            "Usage: nbdroot list <SERVER> [options]\n\nList the exports a server offers (names, and descriptions after a tab).\nSERVER is host[:port], [ipv6]:port or nbd://host[:port].\n"
                        } else {
                            "Usage: nbdroot info <SERVER> [-N <EXPORT>] [options]\n\nShow an export: size, protocol, flags, block sizes, description.\nSERVER is host[:port], nbd://host[:port]/export or nbd+unix:///export?socket=PATH.\n"
                        };
                        return Ok((
                            verbose,
                            Command::Help(format!("{usage}\nOptions:\n{NET_HELP}\n")),
                        ));
                    }
                    Short('N') | Long("name") if cmd == "info" => {
                        export = Some(string(&mut parser, "--name")?)
                    }
                    Value(v) if positional.is_empty() => {
                        positional.push(v.to_string_lossy().into_owned())
                    }
                    other => return Err(unexpected(&cmd, other)),
                }
            }
            let server = positional.pop().ok_or_else(|| {
                Usage(format!("{cmd}: no server given; see nbdroot {cmd} --help"))
            })?;
            Ok((
                verbose,
                if cmd == "list" {
                    Command::List { server, policy }
                } else {
                    Command::Info {
                        server,
                        export,
                        policy,
                    }
                },
            ))
        }
        "mkinitramfs" => {
            let mut output = None;
            let mut kver = None;
            let mut kmoddir = PathBuf::from("/lib/modules");
            let mut modules: Vec<String> = Vec::new();
            let mut nic_modules = initramfs::NicModules::default();
            let mut binary = None;
            while let Some(arg) = parser.next().map_err(|e| Usage(e.to_string()))? {
                match arg {
                    Short('h') | Long("help") => {
                        return Ok((verbose, Command::Help(MKINITRAMFS_HELP.into())))
                    }
                    Short('o') | Long("output") => {
                        output = Some(PathBuf::from(
                            parser
                                .value()
                                .map_err(|_| Usage("--output needs a value".into()))?,
                        ))
                    }
                    Long("kver") => kver = Some(string(&mut parser, "--kver")?),
                    Long("kmoddir") => kmoddir = PathBuf::from(string(&mut parser, "--kmoddir")?),
                    Long("modules") => modules.extend(
                        string(&mut parser, "--modules")?
                            .split(',')
                            .filter(|m| !m.is_empty())
                            .map(str::to_string),
                    ),
                    Long("nic-modules") => {
                        let v = string(&mut parser, "--nic-modules")?;
                        nic_modules = v
                            .parse()
                            .map_err(|e| Usage(format!("--nic-modules \"{v}\": {e}")))?;
                    }
                    Long("binary") => {
                        binary = Some(PathBuf::from(string(&mut parser, "--binary")?))
                    }
                    other => return Err(unexpected("mkinitramfs", other)),
                }
            }
            let output = output.ok_or_else(|| {
                Usage(
                    "mkinitramfs: --output <FILE> is required; see nbdroot mkinitramfs --help"
                        .into(),
                )
            })?;
            let kver_given = kver.is_some();
            let opts = initramfs::Options {
                output,
                kver: kver.unwrap_or_default(),
                kmoddir,
                modules: if modules.is_empty() {
                    initramfs::DEFAULT_MODULES
                        .iter()
                        .map(|m| m.to_string())
                        .collect()
                } else {
                    modules
                },
                nic_modules,
                binary: binary.unwrap_or_default(),
            };
            Ok((verbose, Command::Mkinitramfs(opts, kver_given)))
        }
        "plan" => {
            while let Some(arg) = parser.next().map_err(|e| Usage(e.to_string()))? {
                match arg {
                    Short('h') | Long("help") => {
                        return Ok((verbose, Command::Help(PLAN_HELP.into())))
                    }
                    Value(v) if positional.is_empty() => {
                        positional.push(v.to_string_lossy().into_owned())
                    }
                    other => return Err(unexpected("plan", other)),
                }
            }
            Ok((verbose, Command::Plan(positional.pop())))
        }
        "boot" => Ok((verbose, Command::Boot)),
        "status" => Ok((verbose, Command::Status)),
        // Started by `connect --ioctl` as `@nbdroot serve /dev/nbdN`; not for users.
        "serve" => {
            let dev = parser
                .raw_args()
                .map_err(|e| Usage(e.to_string()))?
                .next()
                .map(|a| a.to_string_lossy().into_owned())
                .ok_or_else(|| Usage("serve: no device".into()))?;
            Ok((verbose, Command::Serve(dev)))
        }
        // Started by the boot as `@nbdroot supervise <config> <ready fd>`; not for users.
        "supervise" => {
            let rest: Vec<String> = parser
                .raw_args()
                .map_err(|e| Usage(e.to_string()))?
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let config = rest
                .first()
                .cloned()
                .ok_or_else(|| Usage("supervise: no configuration".into()))?;
            Ok((
                verbose,
                Command::Supervise(config, rest.get(1).and_then(|f| f.parse().ok())),
            ))
        }
        other => Err(Usage(format!(
            "unknown command \"{other}\"; see nbdroot --help"
        ))),
    }
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        logger::init_pid1();
        // PID 1 must never print a backtrace: one line, then the kernel's panic.
        std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
        boot::run(boot::init_args_from_env());
    }
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    // dracut's hooks (src/hooks/entry.rs): the generator (argv[0]), the netroot handler
    // (`<netif> nbd:… <NEWROOT>`), `attach`, `mount <NEWROOT>`, `dracut-cmdline`.
    if let Some(code) = nbdroot::hooks::entry::run(&std::env::args_os().collect::<Vec<_>>()) {
        return code;
    }
    let (verbose, command) = match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(parsed) => parsed,
        Err(Usage(msg)) => {
            logger::init_host(LevelFilter::Info);
            log::error!("{msg}");
            return ExitCode::from(2);
        }
    };
    if matches!(command, Command::Supervise(..) | Command::Serve(..)) {
        logger::init_daemon();
    } else {
        logger::init_host(if verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn run(command: Command) -> BoxResult<ExitCode> {
    match command {
        Command::Help(text) => print!("{text}"),
        Command::Connect(c) => {
            let target = nbdroot::address::parse_target(&c.server)?;
            let mut opts = c.opts;
            opts.device = c
                .device
                .as_deref()
                .map(commands::device_index)
                .transpose()?;
            opts.export = c.export.or(target.export.clone()).unwrap_or_default();
            let interface = if c.ioctl {
                Interface::Ioctl
            } else {
                Interface::Netlink
            };
            let persist = c.persist || c.swap.is_some();
            if persist && opts.dead_conn_timeout.is_none() {
                opts.dead_conn_timeout = Some(Duration::from_secs(120));
            }
            let attached = commands::connect(&target.endpoint, &opts, interface, c.foreground)?;
            if persist {
                commands::supervise(&attached, &opts)?;
            }
            if let Some((mkswap, priority)) = c.swap {
                commands::swap_on(&attached, mkswap, priority)?;
            }
            println!("{}", attached.device);
        }
        Command::Disconnect(device) => commands::disconnect(&device)?,
        Command::Check(device) => {
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
        Command::List { server, policy } => {
            for entry in commands::list(&server, &policy)? {
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
            policy,
        } => print!("{}", commands::info(&server, export, &policy)?),
        Command::Mkinitramfs(mut opts, kver_given) => {
            if !kver_given {
                opts.kver = nix::sys::utsname::uname()?
                    .release()
                    .to_string_lossy()
                    .into_owned();
            }
            if opts.binary.as_os_str().is_empty() {
                opts.binary = std::env::current_exe()?;
            }
            let s = initramfs::build(&opts)?;
            log::info!(
                "wrote {} ({} bytes, {} module files for {})",
                opts.output.display(),
                s.bytes,
                s.module_files,
                opts.kver
            );
        }
        Command::Plan(line) => {
            let line = match line {
                Some(l) => l,
                None => std::fs::read_to_string("/proc/cmdline")?,
            };
            print!("{}", nbdroot::plan::render::render(&cmdline::parse(&line)?));
        }
        Command::Boot => return Err("boot runs only as PID 1 (the /init of an initramfs)".into()),
        Command::Status => {
            let all = nbdroot::supervise::status::read_all(nbdroot::supervise::status_dir());
            if all.is_empty() {
                println!(
                    "no nbdroot supervisor is running (no {}/*.status)",
                    nbdroot::supervise::STATUS_DIR
                );
                return Ok(ExitCode::from(1));
            }
            for (name, text) in all {
                println!("{}:", name.trim_end_matches(".status"));
                for line in text.lines() {
                    println!("  {line}");
                }
            }
        }
        Command::Serve(device) => nbdroot::kernel::attach::serve(&device)?,
        Command::Supervise(config, ready) => {
            let cfg = nbdroot::supervise::Config::decode(&config)?;
            nbdroot::supervise::run(cfg, ready)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
