//! The command lines dracut's hooks use, recognised before the tool's own argument parsing:
//!
//! - argv[0] `nbdroot-generator`, arguments `normal early late`: the systemd generator;
//! - `nbdroot <netif> nbd:… <NEWROOT>`: dracut's netroot handler;
//! - `nbdroot attach`, `nbdroot mount <NEWROOT>`, `nbdroot dracut-cmdline`: the hooks' steps;
//! - `nbdroot attach --mkinitcpio`: the attach for mkinitcpio's hooks (`mkinitcpio/`).
//!
//! Each prints at most nbdroot's one line on failure (`nbdroot: …`, the hooks pass it to
//! dracut's `die`) and exits 1; `dracut-cmdline` exits 1 for "not an NBD root" and 2 for a
//! malformed one.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use log::LevelFilter;

use crate::logger;

use super::attach::{self, Flavour, Handler, Outcome};
use super::cmdline::{self, Answer};

/// Runs the hook form `args` (argv[0] included) names; `None` when it is none of them.
pub fn run(args: &[OsString]) -> Option<ExitCode> {
    let form = form(args)?;
    logger::init_host(LevelFilter::Info);
    // As in /init: to the kernel log (and the console), with rd.debug honoured.
    logger::reopen_console();
    Some(match form {
        Form::Generator(early) => report(super::generator::generate(Path::new(early))),
        Form::Handler(h) => report(attach::attach(Some(&h)).map(|o| said(&o))),
        Form::Attach(flavour) => report(attach::attach_as(None, flavour).map(|o| said(&o))),
        Form::Mount(new_root) => report(super::mount::mount(Path::new(new_root))),
        Form::Cmdline => dracut_cmdline(),
    })
}

enum Form<'a> {
    Generator(&'a OsString),
    Handler(Handler),
    Attach(Flavour),
    Mount(&'a OsString),
    Cmdline,
}

fn form(args: &[OsString]) -> Option<Form<'_>> {
    let (argv0, rest) = args.split_first()?;
    if Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "nbdroot-generator")
    {
        // normal, early, late; a generator run by hand may get only the first.
        return rest.get(1).or(rest.first()).map(Form::Generator);
    }
    if let Some(h) = Handler::from_args(rest) {
        return Some(Form::Handler(h));
    }
    let (cmd, rest) = rest.split_first()?;
    match (cmd.to_str()?, rest) {
        ("attach", []) => Some(Form::Attach(Flavour::Dracut)),
        ("attach", [f]) if f == "--mkinitcpio" => Some(Form::Attach(Flavour::Mkinitcpio)),
        ("mount", [new_root]) => Some(Form::Mount(new_root)),
        ("dracut-cmdline", []) => Some(Form::Cmdline),
        _ => None,
    }
}

fn said(outcome: &Outcome) {
    match outcome {
        Outcome::Attached(env) => log::info!(
            "{} attached ({} export \"{}\")",
            env.device(),
            env.server,
            env.export
        ),
        Outcome::Already(env) => log::debug!("{} is attached already", env.device()),
    }
}

/// Where a failed step leaves its line, for the hook to hand to dracut's `die`.
pub const ERROR_PATH: &str = "/run/nbdroot/error";

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            let _ = std::fs::create_dir_all("/run/nbdroot")
                .and_then(|_| std::fs::write(ERROR_PATH, format!("nbdroot: {e}\n")));
            ExitCode::FAILURE
        }
    }
}

/// Prints shell assignments for the command-line hook (exit 0), nothing (exit 1: not an NBD
/// root), or nbdroot's one line about a malformed root (exit 2).
fn dracut_cmdline() -> ExitCode {
    let line = match super::read_cmdline() {
        Ok(l) => l,
        Err(e) => {
            println!("nbdroot: cannot read the command line: {e}");
            return ExitCode::from(2);
        }
    };
    match cmdline::answer(&line) {
        Ok(Answer::Ours(vars)) => {
            print!("{vars}");
            ExitCode::SUCCESS
        }
        Ok(Answer::NotOurs) => ExitCode::from(1),
        Err(e) => {
            println!("nbdroot: {e}");
            ExitCode::from(2)
        }
    }
}
