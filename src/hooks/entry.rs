//! The command lines dracut's hooks use, recognised before the tool's own argument parsing:
//!
//! - argv[0] `nbdroot-generator`, arguments `normal early late`: the systemd generator;
//! - `nbdroot <netif> nbd:… <NEWROOT>`: dracut's netroot handler;
//! - `nbdroot attach`, `nbdroot mount <NEWROOT>`, `nbdroot dracut-cmdline`: the hooks' steps;
//! - `nbdroot attach --udev`: dracut's attach, on interfaces udev has finished with;
//! - `nbdroot attach --mkinitcpio`: the attach for mkinitcpio's hooks (`mkinitcpio/`).
//!
//! Each prints at most nbdroot's one line on failure (`nbdroot: …`, the hooks pass it to
//! dracut's `die`) and exits 1; `dracut-cmdline` exits 1 for "not an NBD root" and 2 for a
//! malformed one; `attach --udev` exits 3 when no network interface was ready in time.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use log::LevelFilter;

use crate::logger;
use crate::net::Readiness;

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
        Form::Handler(h) => {
            // Says which path attached the root: dracut's network, not nbdroot's own.
            log::info!(
                "netroot handler: {} configured by dracut, {}",
                h.netif,
                h.netroot
            );
            report(attach::attach(Some(&h)).map(|o| said(&o)))
        }
        Form::Attach(flavour, ready) => {
            let result = attach::attach_as(None, flavour, ready);
            // dracut starts `--udev` before udev's coldplug: a driver that came late is not the
            // boot's failure yet, and the settled hook tries again once udev has settled.
            let early = ready == Readiness::UdevInitialised
                && result.as_ref().is_err_and(|e| e.interface_not_ready());
            let code = report(result.map(|o| said(&o)));
            if early {
                ExitCode::from(NOT_READY)
            } else {
                code
            }
        }
        Form::Mount(new_root) => report(super::mount::mount(Path::new(new_root))),
        Form::Cmdline => dracut_cmdline(),
    })
}

/// The hook forms for nbdroot(8)'s INITRAMFS HOOK FORMS section: the command line, and what
/// it does. Kept beside [`form`], which recognises them.
pub const FORMS: &[(&str, &str)] = &[
    (
        "nbdroot <netif> nbd:<server>:<port|export>[:<fstype>[:<options>]] <NEWROOT>",
        "dracut's netroot handler (images built with nbdroot_network=dracut): dracut's network \
         modules configured <netif>; attach the root the nbd: string names, once (a second call \
         finds it attached and does nothing).",
    ),
    (
        "nbdroot attach [--udev | --mkinitcpio]",
        "The hooks' attach (dracut, initramfs-tools, mkinitcpio): bring the network up as ip= \
         says, attach the root of the command line (/etc/cmdline.d/*.conf, then /proc/cmdline), \
         record it in /run/nbdroot/root.env and start the @nbdroot supervisor. Idempotent. \
         --udev (dracut's hooks): configure only interfaces udev has finished with (its \
         database has them, or renamed), waiting for them; dracut starts it before udev's \
         coldplug. Exit status 3 with --udev: no interface was ready in time (dracut's \
         settled hook then tries again, once udev has settled); 1 for any other failure.",
    ),
    (
        "nbdroot mount <NEWROOT>",
        "dracut's mount hook in the shell initrd: mount the attached root with the fstype and \
         options of root=nbd:... or the DHCP root-path.",
    ),
    (
        "nbdroot dracut-cmdline",
        "dracut's command-line hook: print shell assignments (rootok, root=block:/dev/nbdN, \
         netroot) and exit 0 for an NBD root; exit 1 for another root; print nbdroot's line and \
         exit 2 for a malformed one.",
    ),
    (
        "nbdroot-generator <normal> <early> <late>",
        "Called by that name (a link): systemd's generator in the initrd, writing sysroot.mount \
         and the device's dependencies into the early directory.",
    ),
];

enum Form<'a> {
    Generator(&'a OsString),
    Handler(Handler),
    Attach(Flavour, Readiness),
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
        ("attach", []) => Some(Form::Attach(Flavour::Dracut, Readiness::Present)),
        ("attach", [f]) if f == "--udev" => {
            Some(Form::Attach(Flavour::Dracut, Readiness::UdevInitialised))
        }
        ("attach", [f]) if f == "--mkinitcpio" => {
            Some(Form::Attach(Flavour::Mkinitcpio, Readiness::Present))
        }
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

/// `attach --udev`'s exit status when no network interface was ready within the bound.
pub const NOT_READY: u8 = 3;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn recognised(argv: &[&str]) -> bool {
        let args: Vec<OsString> = argv.iter().map(OsString::from).collect();
        form(&args).is_some()
    }

    #[test]
    fn every_documented_form_is_recognised_and_commands_are_not() {
        assert_eq!(FORMS.len(), 5);
        for argv in [
            &[
                "nbdroot",
                "eth0",
                "nbd:10.0.2.2:root:ext4:noatime",
                "/sysroot",
            ][..],
            &["nbdroot", "attach"],
            &["nbdroot", "attach", "--mkinitcpio"],
            &["nbdroot", "mount", "/sysroot"],
            &["nbdroot", "dracut-cmdline"],
            &[
                "/usr/lib/systemd/system-generators/nbdroot-generator",
                "/run/g",
                "/run/e",
                "/run/l",
            ],
        ] {
            assert!(recognised(argv), "{argv:?}");
        }
        for argv in [
            &["nbdroot", "connect", "nbd://h/e", "/dev/nbd1"][..],
            &["nbdroot", "attach", "x"],
            &["nbdroot", "mount"],
            &["nbdroot"],
        ] {
            assert!(!recognised(argv), "{argv:?}");
        }
    }
}
