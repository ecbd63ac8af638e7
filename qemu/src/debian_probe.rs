//! The guest side of the Debian boots: a systemd unit that runs once the boot is over,
//! reports on the console (`NBDT-DEB key=value` lines), optionally writes to the root and to
//! a second NBD filesystem while the host restarts the server, and powers off with
//! `systemctl poweroff`. Also the reading of those lines on the host.

use crate::debian_boot::Extras;
use crate::error::{Error, Result};
use crate::vm::VmOutcome;

/// The console prefix of every report line.
pub const PREFIX: &str = "NBDT-DEB ";
/// Where the writer puts its files on the second export.
pub const DATA_MOUNT: &str = "/mnt/data";
/// Files the writer writes to each filesystem, 128 KiB each, 0.2 s apart.
pub const FILES: usize = 30;

/// The report: systemd's state, boot timestamps, mounts, `nbdroot status` when installed.
const REPORT: &str = r#"#!/bin/sh
# nbdroot's Debian probe, started by systemd after multi-user.target.
say() { echo "NBDT-DEB $*" > /dev/console; }
say "state=$(timeout 300 systemctl is-system-running --wait)"
say "failed=$(systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')"
say "userspace_us=$(systemctl show -P UserspaceTimestampMonotonic)"
say "multi_user_us=$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)"
systemd-analyze 2>&1 | while read -r l; do say "analyze $l"; done
say "root=$(grep ' / ' /proc/mounts)"
if command -v nbdroot >/dev/null; then
  nbdroot status 2>&1 | while read -r l; do say "status $l"; done
fi
"#;

/// The writer: a file named after this boot on the second export, then files on both
/// filesystems with fsync while the host restarts the server, their sums and the kernel's
/// I/O error count.
const WRITER: &str = r#"say "data=$(grep ' /mnt/data ' /proc/mounts)"
say "nbd1_unit=$(systemctl is-active nbdroot@nbd1.service)"
boot=$(cat /proc/sys/kernel/random/boot_id)
echo "written by boot $boot" > /mnt/data/guest-wrote && sync /mnt/data/guest-wrote
say "boot_id=$boot"
say "WRITING"
i=0; errors=0
while [ $i -lt @FILES@ ]; do
  for d in /var/tmp /mnt/data; do
    dd if=/dev/urandom of=$d/nbdt-$i bs=64k count=2 conv=fsync 2>/dev/null \
      || { errors=$((errors+1)); say "io-error $d/nbdt-$i"; }
  done
  i=$((i+1)); sleep 0.2
done
say "errors=$errors"
md5sum /var/tmp/nbdt-* /mnt/data/nbdt-* | while read -r sum f; do say "SUM $sum $f"; done
say "kernel_io_errors=$(dmesg | grep -ci 'i/o error')"
if command -v nbdroot >/dev/null; then
  nbdroot status 2>&1 | while read -r l; do say "after $l"; done
fi
"#;

const END: &str = r#"sync
say "DONE"
systemctl --no-block poweroff
"#;

/// `Type=exec`: the unit counts as started at once, so the boot finishes and
/// `is-system-running --wait` inside it sees the final state.
const UNIT: &str = "[Unit]\nDescription=nbdroot Debian probe\nAfter=multi-user.target\n\n\
[Service]\nType=exec\nExecStart=/usr/local/sbin/nbdt-probe\n\n\
[Install]\nWantedBy=multi-user.target\n";

/// Adds the probe (and with `writer`, the writes) to `extras`.
pub fn add_probe(extras: &mut Extras, writer: bool) {
    let mut script = REPORT.to_string();
    if writer {
        script.push_str(&WRITER.replace("@FILES@", &FILES.to_string()));
    }
    script.push_str(END);
    extras
        .file("usr/local/sbin/nbdt-probe", &script, 0o755)
        .file("etc/systemd/system/nbdt-probe.service", UNIT, 0o644)
        .link(
            "etc/systemd/system/multi-user.target.wants/nbdt-probe.service",
            "../nbdt-probe.service",
        );
}

/// The report lines after their prefix, which may follow other text on the same console
/// line (the serial getty's `login:` prompt shares the console).
pub fn reports(out: &VmOutcome) -> Vec<&str> {
    out.log
        .lines()
        .filter_map(|l| l.find(PREFIX).map(|i| l[i + PREFIX.len()..].trim_end()))
        .collect()
}

/// The report lines starting with `tag`, without it.
pub fn tagged<'a>(out: &'a VmOutcome, tag: &str) -> Vec<&'a str> {
    reports(out)
        .into_iter()
        .filter_map(|l| l.strip_prefix(tag))
        .collect()
}

/// The value of the first `NBDT-DEB <key>=` line; an error quoting the console when missing.
pub fn value(out: &VmOutcome, key: &str) -> Result<String> {
    tagged(out, &format!("{key}="))
        .first()
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            Error::unexpected(
                format!("read the probe's {key}= line"),
                format!("not on the console:\n{out}"),
            )
        })
}

/// Boot milestones, as systemd recorded them (microseconds since the kernel started, the
/// clock `systemd-analyze` reports from).
#[derive(Debug, Clone, Copy)]
pub struct Milestones {
    /// The root's init (systemd after switch_root) started.
    pub root_init_s: f64,
    /// multi-user.target became active.
    pub multi_user_s: f64,
}

/// Reads [`Milestones`] from the probe's report.
pub fn milestones(out: &VmOutcome) -> Result<Milestones> {
    let secs = |key: &str| -> Result<f64> {
        let v = value(out, key)?;
        v.parse::<u64>()
            .ok()
            .filter(|us| *us > 0)
            .map(|us| us as f64 / 1e6)
            .ok_or_else(|| {
                Error::unexpected(
                    format!("read {key}"),
                    format!("{v:?} is no positive number of microseconds"),
                )
            })
    };
    Ok(Milestones {
        root_init_s: secs("userspace_us")?,
        multi_user_s: secs("multi_user_us")?,
    })
}

/// `nbdroot status` as reported (prefix `status ` or `after `): per device, its `key=value`
/// lines, e.g. `[("nbd0", ["pid=…", "state=connected", …])]`.
pub fn status_blocks(out: &VmOutcome, tag: &str) -> Vec<(String, Vec<String>)> {
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for line in tagged(out, &format!("{tag} ")) {
        let line = line.trim();
        if let Some(dev) = line.strip_suffix(':') {
            blocks.push((dev.to_string(), Vec::new()));
        } else if let Some((_, lines)) = blocks.last_mut() {
            lines.push(line.to_string());
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn outcome(log: &str) -> VmOutcome {
        VmOutcome {
            log: log.into(),
            log_path: "/dev/null".into(),
            stderr: String::new(),
            status: std::process::ExitStatus::from_raw(0),
            elapsed: std::time::Duration::ZERO,
            timed_out: false,
            stopped: false,
        }
    }

    #[test]
    fn reads_reports_behind_other_console_text() {
        let out = outcome(
            "vm login: NBDT-DEB state=running\r\nNBDT-DEB userspace_us=17143124\n\
             [ 1.0] kernel line\nNBDT-DEB multi_user_us=96002370\nNBDT-DEB failed=\n",
        );
        assert_eq!(value(&out, "state").unwrap(), "running");
        assert_eq!(value(&out, "failed").unwrap(), "");
        let m = milestones(&out).unwrap();
        assert_eq!((m.root_init_s, m.multi_user_s), (17.143124, 96.00237));
        let err = value(&out, "errors").unwrap_err().to_string();
        assert!(err.starts_with("read the probe's errors= line: not on the console"));
        let zero = outcome("NBDT-DEB userspace_us=0\nNBDT-DEB multi_user_us=1\n");
        assert!(milestones(&zero)
            .unwrap_err()
            .to_string()
            .contains("\"0\" is no positive number"));
    }

    #[test]
    fn status_per_device() {
        let out = outcome(
            "NBDT-DEB status nbd0:\nNBDT-DEB status state=connected\nNBDT-DEB status nbd1:\n\
             NBDT-DEB status state=reconnecting\nNBDT-DEB after nbd0:\nNBDT-DEB after reconnects=1\n",
        );
        assert_eq!(
            status_blocks(&out, "status"),
            vec![
                ("nbd0".to_string(), vec!["state=connected".to_string()]),
                ("nbd1".to_string(), vec!["state=reconnecting".to_string()]),
            ]
        );
        assert_eq!(
            status_blocks(&out, "after"),
            vec![("nbd0".to_string(), vec!["reconnects=1".to_string()])]
        );
    }
}
