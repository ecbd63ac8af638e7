//! The `nbdroot` command: /init in an initramfs when it runs as PID 1, a tool otherwise.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use log::LevelFilter;

use nbdroot::cli::args::Command;
use nbdroot::cli::run::{self, RunError};
use nbdroot::cli::Cli;
use nbdroot::{boot, logger};

fn main() -> ExitCode {
    if std::process::id() == 1 {
        logger::init_pid1();
        // PID 1 must never print a backtrace: one line, then the kernel's panic.
        std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
        boot::run(boot::init_args_from_env());
    }
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    // The hooks of initramfs generators (src/hooks/entry.rs): the generator (argv[0]), dracut's
    // netroot handler (`<netif> nbd:… <NEWROOT>`), `attach`, `mount <NEWROOT>`, `dracut-cmdline`.
    if let Some(code) = nbdroot::hooks::entry::run(&std::env::args_os().collect::<Vec<_>>()) {
        return code;
    }
    // Usage errors exit 2 with clap's message; --help and --version exit 0.
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Supervise { .. } | Command::Serve { .. }
    ) {
        logger::init_daemon();
    } else {
        logger::init_host(if cli.verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
    match run::run(cli.command) {
        Ok(code) => code,
        // The reader (`| head`) has all it wanted.
        Err(RunError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
