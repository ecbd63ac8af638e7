//! The `nbdroot` command: /init in an initramfs when it runs as PID 1, a tool otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use log::LevelFilter;

use nbdroot::{boot, cmdline, initramfs, logger};

#[derive(Parser)]
#[command(
    name = "nbdroot",
    version,
    about = "Boot Linux from a root filesystem served over NBD",
    long_about = "Boot Linux from a root filesystem served over NBD.\n\n\
        As PID 1 (the /init of an initramfs) nbdroot reads root=nbd:<server>:<port|export> and ip= \
        from the kernel command line, brings the network up, attaches the export to /dev/nbdN, \
        mounts it and switches to it. As a command it builds such an initramfs and checks \
        boot parameters.",
    after_help = "Examples:\n  \
        nbdroot mkinitramfs -o /boot/nbdroot.img\n  \
        nbdroot mkinitramfs -o img --kver 6.1.0-56-cloud-amd64 --modules nbd,virtio_net,virtio_pci,e1000\n  \
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
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
        Command::Boot => {
            if std::process::id() != 1 {
                return Err("boot runs only as PID 1 (the /init of an initramfs)".into());
            }
        }
    }
    Ok(())
}
