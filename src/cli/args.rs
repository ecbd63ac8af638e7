//! The command line of the `nbdroot` tool, as clap definitions: `main` parses with them, and
//! `xtask` renders the man pages and shell completions from them. The doc comments are the
//! help text.

use std::path::PathBuf;

use clap::builder::ValueHint;
use clap::{Args, Parser, Subcommand};

use crate::cli::values::{self, KeepaliveSetting};
use crate::initramfs::{NicModules, DEFAULT_MODULES};
use crate::settings::{self, ConnectPolicy, SocketOptions};

/// Boot Linux from a root filesystem served over NBD
///
/// As PID 1 (the /init of an initramfs) nbdroot reads root=nbd:<server>:<port|export> and ip=
/// from the kernel command line, brings the network up, attaches the export to /dev/nbdN,
/// mounts it and switches to it; see nbdroot-boot(7) for the parameters. As a command it
/// attaches exports like nbd-client, builds such an initramfs and checks boot parameters.
#[derive(Debug, Parser)]
#[command(
    name = "nbdroot",
    // Keep the line breaks of long descriptions: without the `wrap_help` feature clap does
    // not wrap them.
    verbatim_doc_comment,
    // Fixed: the program starts itself as `@nbdroot`, which usage lines must not show.
    bin_name = "nbdroot",
    version,
    subcommand_required = true,
    after_help = MAIN_AFTER_HELP
)]
pub struct Cli {
    /// Print debug messages
    // Shown with every command, after the command's own options.
    #[arg(short, long, global = true, display_order = 900)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

const MAIN_AFTER_HELP: &str = "\
Examples:
  nbdroot connect 10.0.0.1 -N root            attach export \"root\" to a free /dev/nbdN
  nbdroot connect nbd://10.0.0.1:10809/root /dev/nbd1 -C 4
  nbdroot check /dev/nbd1 && nbdroot disconnect /dev/nbd1
  nbdroot list 10.0.0.1
  nbdroot info nbd://10.0.0.1/root
  nbdroot mkinitramfs -o /boot/nbdroot.img
  nbdroot plan 'root=nbd:10.0.2.2:10809 ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw'

Exit status: 0 on success, 1 on failure, 2 for bad arguments; check answers 1 for \"not
connected\" and 2 for an error, status 1 when no supervisor runs.";

#[derive(Debug, Subcommand)]
pub enum Command {
    Connect(Box<ConnectArgs>),
    Disconnect(DisconnectArgs),
    Check(CheckArgs),
    List(ListArgs),
    Info(InfoArgs),
    Mkinitramfs(MkinitramfsArgs),
    Plan(PlanArgs),
    /// Run the boot as /init does (only as PID 1)
    ///
    /// The kernel starts nbdroot as /init of its initramfs, and as PID 1 nbdroot boots without
    /// being asked, reading its parameters from the kernel command line (see nbdroot-boot(7)).
    /// Anywhere else this command only refuses: `nbdroot plan` shows what a boot would do.
    #[command(verbatim_doc_comment, after_help = BOOT_AFTER_HELP)]
    Boot,
    /// Show the reconnect supervisors: state, reconnects, last error
    ///
    /// Each supervisor (`connect --persist`, `connect --swap`, or the root's, started by the
    /// boot) keeps a status file under /run/nbdroot.
    #[command(verbatim_doc_comment, after_help = STATUS_AFTER_HELP)]
    Status,
    /// Serve an nbd device through the ioctl interface until it is disconnected.
    // Started by `connect --ioctl` as `@nbdroot serve /dev/nbdN`: the arguments are ours.
    #[command(hide = true, disable_help_flag = true)]
    Serve {
        #[arg(allow_hyphen_values = true)]
        device: String,
    },
    /// Replace an nbd device's dead connections.
    // Started as `@nbdroot supervise <config> [<ready fd>]`: the arguments are ours, and a
    // ready fd that is not a number means none.
    #[command(hide = true, disable_help_flag = true)]
    Supervise {
        #[arg(allow_hyphen_values = true)]
        config: String,
        #[arg(allow_hyphen_values = true)]
        ready_fd: Option<String>,
    },
}

const BOOT_AFTER_HELP: &str = "\
Examples:
  On the kernel command line of a machine whose initramfs is nbdroot's:
    root=nbd:10.0.0.1:root:ext4 ip=dhcp rw
  and to see what a boot with this machine's command line would do:
    nbdroot plan

Exit status: 1 (this is not PID 1).";

const STATUS_AFTER_HELP: &str = "\
Examples:
  nbdroot status

Exit status:
  0  at least one supervisor runs; each is shown
  1  none runs";

/// How to reach a server: shared by connect, list and info.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct NetArgs {
    /// Bound on connecting and on the handshake, in seconds
    #[arg(
        long,
        value_name = "SECS",
        value_parser = values::connect_timeout,
        default_value_t = ConnectPolicy::COMMAND.attempt_timeout.as_secs()
    )]
    pub connect_timeout: u64,

    /// Attempts after the first fails (refused, timed out)
    #[arg(
        long,
        value_name = "N",
        value_parser = values::retries,
        default_value_t = ConnectPolicy::COMMAND.retries
    )]
    pub retries: u32,

    #[command(flatten)]
    pub tls: TlsArgs,
}

/// NBD over TLS: shared by connect, list and info.
#[derive(Debug, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Use TLS (NBD_OPT_STARTTLS); connect hands kernel TLS sockets to the driver. Never falls
    /// back to plain text. Implied by nbds:// and by any --tls-* option
    #[arg(long)]
    pub tls: bool,

    /// PEM file with the CA that signed the server's certificate
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate, for servers that ask for one (with --tls-key)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the client certificate
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Name the server's certificate must carry [default: the server as written]
    #[arg(long, value_name = "NAME")]
    pub tls_hostname: Option<String>,

    /// full: check the certificate against --tls-ca and the name; none: do not authenticate
    /// the server at all
    #[arg(long, value_name = "full|none", value_parser = ["full", "none"], default_value = "full")]
    pub tls_verify: String,
}

/// Attach an export to an nbd device (like nbd-client)
///
/// Attaches the export to DEVICE, or to a free nbd device, and prints the device. Over the
/// netlink interface unless asked for ioctls or the kernel lacks it. Given only a device
/// (nbdN or /dev/nbdN), attaches what /etc/nbdtab lists for it, as `nbd-client nbdN` does;
/// options given here add to the entry's, and win where both set a value.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, after_help = CONNECT_AFTER_HELP)]
pub struct ConnectArgs {
    /// host[:port], [ipv6]:port, nbd://host[:port]/export or nbd+unix:///export?socket=PATH;
    /// or, alone, nbdN or /dev/nbdN: its entry in the nbdtab
    #[arg(value_hint = ValueHint::Hostname)]
    pub server: String,

    /// /dev/nbdN, nbdN or N [default: a free one]
    #[arg(value_hint = ValueHint::FilePath)]
    pub device: Option<String>,

    /// Export name [default: from the URI, else the server's default]
    #[arg(short = 'N', long = "name", value_name = "EXPORT")]
    pub export: Option<String>,

    /// Kernel block size: 512, 1024, 2048 or 4096 [default: the server's minimum, at least 512]
    #[arg(short, long, value_name = "BYTES", value_parser = values::block_size)]
    pub block_size: Option<u32>,

    /// Kernel I/O timeout in seconds [default: 1 with --persist, doubled by the supervisor on a slow link up to 30; 30 without; none with --ioctl]
    #[arg(short, long, value_name = "SECS", value_parser = values::io_timeout)]
    pub timeout: Option<u64>,

    #[arg(
        short = 'C',
        long,
        value_name = "N",
        value_parser = values::connections,
        help = format!(
            "Number of connections; more than 1 needs the server's CAN_MULTI_CONN [default: {}]",
            settings::CONNECTIONS
        )
    )]
    pub connections: Option<u16>,

    /// Attach read-only
    #[arg(short = 'R', long)]
    pub readonly: bool,

    /// Use the ioctl interface: a daemon (@nbdroot serve) stays to serve the device
    #[arg(short = 'L', long, visible_alias = "nonetlink")]
    pub ioctl: bool,

    /// With --ioctl: serve the device from this process until it is disconnected
    #[arg(long, requires = "ioctl")]
    pub foreground: bool,

    /// Backend identifier shown in /sys/block/nbdN/backend (netlink, Linux >= 5.14)
    #[arg(short, long, value_name = "ID", conflicts_with = "ioctl")]
    pub identifier: Option<String>,

    /// Keep a supervisor (@nbdroot) that replaces dead connections (netlink)
    #[arg(
        short,
        long,
        conflicts_with = "ioctl",
        help_heading = "Supervisor and swap"
    )]
    pub persist: bool,

    #[arg(
        long,
        value_name = "SECS",
        value_parser = values::seconds,
        help = format!(
            "How long I/O waits for a dead connection to be replaced \
             [default with --persist or --swap: {}]",
            settings::DEAD_TIMEOUT.as_secs()
        ),
        help_heading = "Supervisor and swap"
    )]
    pub dead_timeout: Option<u64>,

    /// Swap on the device (implies --persist)
    #[arg(long, conflicts_with = "ioctl", help_heading = "Supervisor and swap")]
    pub swap: bool,

    /// Write a swap signature first (implies --swap)
    #[arg(long, conflicts_with = "ioctl", help_heading = "Supervisor and swap")]
    pub mkswap: bool,

    /// Swap priority, 0 to 32767 (implies --swap) [default: the kernel's]
    #[arg(
        long,
        value_name = "N",
        value_parser = values::priority,
        conflicts_with = "ioctl",
        help_heading = "Supervisor and swap"
    )]
    pub priority: Option<u16>,

    /// TCP keepalive: idle seconds, seconds between probes, probes; or off
    #[arg(
        long,
        value_name = "IDLE,INTERVAL,COUNT|off",
        value_parser = values::keepalive,
        default_value_t = KeepaliveSetting(SocketOptions::default().keepalive),
        help_heading = "Connection"
    )]
    pub keepalive: KeepaliveSetting,

    /// TCP_USER_TIMEOUT in seconds: how long sent data may stay unacknowledged; 0 turns it off
    #[arg(
        long,
        value_name = "SECS",
        value_parser = values::seconds,
        default_value_t = SocketOptions::default().user_timeout.map_or(0, |t| t.as_secs()),
        help_heading = "Connection"
    )]
    pub tcp_user_timeout: u64,

    /// A server exporting the same image (same size, flags and data, checked); repeatable
    #[arg(
        long = "replica",
        value_name = "HOST[:PORT]",
        value_parser = values::replica,
        help_heading = "Replicas"
    )]
    pub replicas: Vec<(crate::address::Host, u16)>,

    /// The replicas share their storage, so a writable export may fail over between them
    #[arg(long, requires = "replicas", help_heading = "Replicas")]
    pub replicas_shared: bool,

    /// The table read for `connect nbdN` [default: $NBDROOT_NBDTAB, else /etc/nbdtab]
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub nbdtab: Option<PathBuf>,

    #[command(flatten)]
    pub net: NetArgs,
}

const CONNECT_AFTER_HELP: &str = "\
Examples:
  nbdroot connect 10.0.0.1 -N root
  nbdroot connect 10.0.0.1:10900 /dev/nbd2 --readonly
  nbdroot connect nbd+unix:///disk?socket=/run/nbd.sock -b 4096
  nbdroot connect 10.0.0.1 -N data -C 4 --persist --keepalive 5,2,3
  nbdroot connect 10.0.0.1 -N swap --mkswap --priority 10
  nbdroot connect nbd1 --persist              attach nbd1 as /etc/nbdtab lists it

Exit status:
  0  attached; the device is printed
  1  failed (server unreachable, export refused, no free device, the kernel refused)
  2  bad arguments";

/// An nbd device, as disconnect and check take it.
const DEVICE_HELP: &str = "/dev/nbdN, nbdN or N";

/// Disconnect an nbd device
#[derive(Debug, Args)]
#[command(after_help = DISCONNECT_AFTER_HELP)]
pub struct DisconnectArgs {
    #[arg(help = DEVICE_HELP, value_hint = ValueHint::FilePath)]
    pub device: String,
}

const DISCONNECT_AFTER_HELP: &str = "\
Examples:
  nbdroot disconnect /dev/nbd1
  nbdroot disconnect nbd1

Exit status:
  0  disconnected
  1  failed (not an nbd device, no such device, the kernel refused)
  2  bad arguments";

/// Tell whether an nbd device is connected
///
/// Prints the pid the driver reports for a connected device ("connected" when it reports
/// none), like `nbd-client -c`.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, after_help = CHECK_AFTER_HELP)]
pub struct CheckArgs {
    #[arg(help = DEVICE_HELP, value_hint = ValueHint::FilePath)]
    pub device: String,
}

const CHECK_AFTER_HELP: &str = "\
Examples:
  nbdroot check /dev/nbd1 && nbdroot disconnect /dev/nbd1

Exit status:
  0  connected
  1  not connected
  2  no such device, not an nbd device, or bad arguments";

/// List the exports a server offers
///
/// Prints one export a line: its name, and its description after a tab.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, after_help = LIST_AFTER_HELP)]
pub struct ListArgs {
    /// host[:port], [ipv6]:port or nbd://host[:port]
    #[arg(value_hint = ValueHint::Hostname)]
    pub server: String,

    #[command(flatten)]
    pub net: NetArgs,
}

const LIST_AFTER_HELP: &str = "\
Examples:
  nbdroot list 10.0.0.1
  nbdroot list [fd00::1]:10900 --retries 3

Exit status:
  0  listed
  1  failed (server unreachable, listing refused)
  2  bad arguments";

/// Show an export: size, protocol, flags, block sizes, description
///
/// Prints what nbdinfo prints, as `key: value` lines under the export's name.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, after_help = INFO_AFTER_HELP)]
pub struct InfoArgs {
    /// host[:port], nbd://host[:port]/export or nbd+unix:///export?socket=PATH
    #[arg(value_hint = ValueHint::Hostname)]
    pub server: String,

    /// Export name [default: from the URI, else the server's default]
    #[arg(short = 'N', long = "name", value_name = "EXPORT")]
    pub export: Option<String>,

    #[command(flatten)]
    pub net: NetArgs,
}

const INFO_AFTER_HELP: &str = "\
Examples:
  nbdroot info nbd://10.0.0.1/root
  nbdroot info 10.0.0.1 -N root --connect-timeout 3

Exit status:
  0  shown
  1  failed (server unreachable, no such export)
  2  bad arguments";

/// Write an initramfs whose /init is this binary
///
/// Writes a gzip-compressed newc cpio holding this (static) binary as /init and the kernel
/// modules it needs: those it always loads, and the NIC drivers it loads for the devices it
/// finds.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, after_help = MKINITRAMFS_AFTER_HELP)]
pub struct MkinitramfsArgs {
    /// The image to write
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub output: PathBuf,

    /// Kernel release whose modules to include [default: the running kernel's]
    #[arg(long, value_name = "VERSION")]
    pub kver: Option<String>,

    /// Directory holding <kver>/modules.dep
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/lib/modules",
        value_hint = ValueHint::DirPath
    )]
    pub kmoddir: PathBuf,

    #[arg(
        long,
        value_name = "A,B,...",
        value_delimiter = ',',
        default_values_t = DEFAULT_MODULES.map(String::from),
        // Shown as written, with commas, rather than as clap lists values.
        hide_default_value = true,
        help = format!(
            "Modules /init always loads, with their dependencies [default: {}]",
            DEFAULT_MODULES.join(",")
        )
    )]
    pub modules: Vec<String>,

    /// NIC drivers /init loads for the devices it finds: default, none, or A,B,...
    #[arg(
        long,
        value_name = "SET",
        value_parser = values::nic_modules,
        default_value = "default"
    )]
    pub nic_modules: NicModules,

    /// The static binary to use as /init [default: this one]
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub binary: Option<PathBuf>,

    /// Include kernel TLS: the tls module and the crypto modules its ciphers need. Implied
    /// by --tls-ca, --tls-cert and --tls-key
    #[arg(long, help_heading = "TLS")]
    pub tls: bool,

    /// CA certificate for the boot's TLS, copied to /etc/nbdroot/tls/ca.pem
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, help_heading = "TLS")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate, copied to /etc/nbdroot/tls/client-cert.pem
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,

    /// Client key, copied to /etc/nbdroot/tls/client-key.pem (mode 0600)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
}

const MKINITRAMFS_AFTER_HELP: &str = "\
Examples:
  nbdroot mkinitramfs -o /boot/nbdroot.img
  nbdroot mkinitramfs -o nbdroot.img --kver 6.1.0-18-amd64 --nic-modules e1000e,igb

Exit status:
  0  written
  1  failed (a module is missing, the binary is not static); no image is left behind
  2  bad arguments";

/// Show what a kernel command line asks for, without doing it
///
/// Parses the command line as the boot does and shows the plan: the export, the network
/// setup, the mount, the knobs. See nbdroot-boot(7) for every parameter.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, after_help = PLAN_AFTER_HELP)]
pub struct PlanArgs {
    /// The kernel command line [default: /proc/cmdline]
    pub cmdline: Option<String>,

    /// Show the plan as if DHCP had sent this root-path (option 17), for root=dhcp and
    /// nbdroot=dhcp
    #[arg(long, value_name = "STRING")]
    pub root_path: Option<String>,
}

const PLAN_AFTER_HELP: &str = "\
Examples:
  nbdroot plan
  nbdroot plan 'root=nbd:10.0.2.2:10809 ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rw'
  nbdroot plan 'root=dhcp ip=dhcp' --root-path nbd:10.0.2.2:root:ext4

Exit status:
  0  the command line describes an NBD root; the plan is printed
  1  it does not, or a parameter is malformed (named, with the form it takes)
  2  bad arguments";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_come_from_the_settings() {
        let cli = Cli::try_parse_from(["nbdroot", "connect", "srv"]).unwrap();
        let Command::Connect(c) = cli.command else {
            panic!("not connect")
        };
        assert_eq!(c.keepalive, KeepaliveSetting(Some(settings::KEEPALIVE)));
        assert_eq!(c.tcp_user_timeout, settings::USER_TIMEOUT.as_secs());
        assert_eq!(c.connections, None);
        assert_eq!(c.net.connect_timeout, settings::ATTEMPT_TIMEOUT.as_secs());
        assert_eq!(c.net.retries, ConnectPolicy::COMMAND.retries);
    }

    #[test]
    fn internal_commands_take_their_arguments_raw() {
        let cli = Cli::try_parse_from(["@nbdroot", "supervise", "index=0;peer=x", "-1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Supervise { ref config, ready_fd: Some(ref fd) } if config == "index=0;peer=x" && fd == "-1"
        ));
        let cli = Cli::try_parse_from(["@nbdroot", "serve", "/dev/nbd0"]).unwrap();
        assert!(matches!(cli.command, Command::Serve { ref device } if device == "/dev/nbd0"));
    }
}
