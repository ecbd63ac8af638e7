//! The command-line hook's question (`nbdroot dracut-cmdline`): is the root on the command
//! line ours, and what does dracut's `root=` become? Answered with the same grammar /init
//! uses, so a malformed `root=nbd:…` is refused here, at dracut's first step, with the one line
//! that names the value.

use std::fmt::Write as _;

use crate::cmdline::{self, CmdlineError};
use crate::net::dhcp::lease::sh_quote;
use crate::plan::{BootPlan, RootDevice};

/// What the hook is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Shell assignments for the hook to evaluate.
    Ours(String),
    /// No NBD root on the command line: the hook leaves everything alone.
    NotOurs,
}

/// Answers for the command line `line`.
pub fn answer(line: &str) -> Result<Answer, CmdlineError> {
    match cmdline::parse(line) {
        Ok(plan) => {
            let mut vars = assignments(&plan);
            if let Some(n) = nbd_string(line) {
                // For dracut's netroot, which calls the handler with it.
                let _ = writeln!(vars, "netroot={}", sh_quote(n));
            }
            Ok(Answer::Ours(vars))
        }
        Err(CmdlineError::NoRoot) => Ok(Answer::NotOurs),
        Err(e) => Err(e),
    }
}

/// The `nbd:` string the root is in, by dracut's precedence: `root=nbd:…`, else the first
/// `netroot=nbd:…`.
fn nbd_string(line: &str) -> Option<&str> {
    let words = || line.split_whitespace().take_while(|w| *w != "--");
    words()
        .filter_map(|w| w.strip_prefix("root="))
        .last()
        .filter(|r| r.starts_with("nbd:"))
        .or_else(|| {
            words()
                .filter_map(|w| w.strip_prefix("netroot="))
                .find(|r| r.starts_with("nbd:"))
        })
}

/// `rootok=1`, the device the finished-check waits for, and dracut's `root=`: the NBD device
/// or its partition (`block:/dev/nbd0p1`); a `LABEL=`/`UUID=` root is left to dracut, which
/// waits for it by udev's name.
fn assignments(plan: &BootPlan) -> String {
    let index = super::device_index(plan);
    let device = crate::kernel::device_path(index);
    let mut s = String::from("rootok=1\n");
    let _ = writeln!(s, "nbdroot_device={}", sh_quote(&device));
    match &plan.root {
        RootDevice::Whole | RootDevice::Partition(_) => {
            let what = super::rootenv::what(index, &plan.root);
            let _ = writeln!(s, "root={}", sh_quote(&format!("block:{what}")));
        }
        RootDevice::Label(_) | RootDevice::Uuid(_) => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(line: &str) -> String {
        match answer(line).unwrap() {
            Answer::Ours(s) => s,
            Answer::NotOurs => panic!("not ours: {line}"),
        }
    }

    #[test]
    fn root_becomes_the_device_dracut_waits_for() {
        assert_eq!(
            ours("root=nbd:10.0.0.1:exp:ext4 rw"),
            "rootok=1\nnbdroot_device='/dev/nbd0'\nroot='block:/dev/nbd0'\nnetroot='nbd:10.0.0.1:exp:ext4'\n"
        );
        assert!(ours("root=/dev/nbd2p1 nbdroot=10.0.0.1,exp,nbd2")
            .ends_with("nbdroot_device='/dev/nbd2'\nroot='block:/dev/nbd2p1'\n"));
        assert!(ours("root=/dev/root netroot=dhcp").contains("root='block:/dev/nbd0'"));
        assert_eq!(
            ours("root=LABEL=r netroot=nbd:10.0.0.1:exp"),
            "rootok=1\nnbdroot_device='/dev/nbd0'\nnetroot='nbd:10.0.0.1:exp'\n"
        );
        assert!(!ours("root=dhcp").contains("netroot="));
    }

    #[test]
    fn other_roots_are_left_alone_and_bad_ones_refused() {
        assert_eq!(answer("root=/dev/sda1 ro").unwrap(), Answer::NotOurs);
        let err = answer("root=nbd:10.0.0.1").unwrap_err().to_string();
        assert!(err.starts_with("root=nbd:10.0.0.1: "), "{err}");
    }
}
