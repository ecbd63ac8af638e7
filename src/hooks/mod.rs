//! nbdroot inside dracut's initramfs: the steps dracut's hooks call, each a short process
//! rather than PID 1. The hook scripts live in `dracut/50nbdroot/`; this is what they run:
//!
//! - [`cmdline`]: the command-line hook asks whether the root is ours and what dracut's
//!   `root=` becomes (`nbdroot dracut-cmdline`);
//! - [`attach`]: network, negotiation, netlink attach and the supervisor (`nbdroot attach`, and
//!   dracut's netroot handler form `nbdroot <netif> nbd:… <NEWROOT>`); it records the outcome
//!   in [`rootenv`] and leaves the root's network manager its hints ([`handoff`]);
//! - [`mount`]: the shell initrd's mount hook (`nbdroot mount <NEWROOT>`);
//! - [`generator`]: `sysroot.mount` for systemd in the initrd (`nbdroot-generator`).
//!
//! Every step reads the command line as dracut's `getarg` does: `/etc/cmdline.d/*.conf` first,
//! then `/proc/cmdline`, so the kernel's own line wins.

pub mod attach;
pub mod cmdline;
pub mod entry;
pub mod generator;
pub mod handoff;
pub mod mount;
pub mod rootenv;

use std::fs;
use std::io;
use std::path::Path;

use crate::plan::BootPlan;

/// dracut's hostonly command line (`rd.cmdline`, `20-root-dev.conf`, …).
pub const CMDLINE_D: &str = "/etc/cmdline.d";

/// The device dracut's hooks wait for when the command line names none: the stock module's
/// `/dev/nbd0`, so `root=` can be written before anything is attached.
pub const DEFAULT_INDEX: u32 = 0;

/// The command line as dracut sees it: `dir/*.conf` in name order, then `proc_cmdline`.
pub fn read_cmdline_from(dir: &Path, proc_cmdline: &Path) -> io::Result<String> {
    // By name, as Strings: the binary's one sort of strings, not a second one for paths
    // (the same order in one directory). A name that is not UTF-8 is not a dracut conf file.
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| Path::new(n).extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut line = String::new();
    for f in names.iter().map(|n| dir.join(n)) {
        // A conf file may hold several lines; the kernel's line has none.
        for l in fs::read_to_string(&f)?.lines() {
            let l = l.trim();
            if !l.is_empty() && !l.starts_with('#') {
                line.push_str(l);
                line.push(' ');
            }
        }
    }
    line.push_str(fs::read_to_string(proc_cmdline)?.trim());
    Ok(line)
}

/// [`read_cmdline_from`] on the running system.
pub fn read_cmdline() -> io::Result<String> {
    read_cmdline_from(Path::new(CMDLINE_D), Path::new("/proc/cmdline"))
}

/// The nbd device the hooks use for `plan`.
pub fn device_index(plan: &BootPlan) -> u32 {
    plan.device.unwrap_or(DEFAULT_INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_files_come_first_so_the_kernel_line_wins() {
        let dir = std::env::temp_dir().join(format!("nbdroot-cmdline-d-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("d")).unwrap();
        fs::write(
            dir.join("d/20-root.conf"),
            "root=UUID=abc rootflags=x\n# c\n",
        )
        .unwrap();
        fs::write(dir.join("d/10-net.conf"), "ip=dhcp\n").unwrap();
        fs::write(dir.join("d/ignored.txt"), "junk").unwrap();
        fs::write(dir.join("cmdline"), "root=nbd:h:e rw\n").unwrap();
        let line = read_cmdline_from(&dir.join("d"), &dir.join("cmdline")).unwrap();
        assert_eq!(line, "ip=dhcp root=UUID=abc rootflags=x root=nbd:h:e rw");
        let line = read_cmdline_from(&dir.join("none"), &dir.join("cmdline")).unwrap();
        assert_eq!(line, "root=nbd:h:e rw");
        fs::remove_dir_all(&dir).unwrap();
    }
}
