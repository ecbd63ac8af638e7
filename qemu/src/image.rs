//! Root filesystem images: a directory tree staged on the host and turned into ext4 with
//! `mkfs.ext4 -d`, so no mount (and no root) is needed; results are read back with `debugfs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command;
use crate::error::{Context, Error, Result};
use crate::floor::BUSYBOX;

/// An ext4 image file on the host.
#[derive(Debug, Clone)]
pub struct RootImage {
    pub path: PathBuf,
}

/// Stages a root filesystem in a host directory.
#[derive(Debug)]
pub struct RootFs {
    dir: PathBuf,
    /// `Some` once the probe init is wanted: the extra shell lines it runs.
    probe_steps: Option<Vec<String>>,
    /// The probe leaves the root clean: remounted read-only before it powers off.
    clean_poweroff: bool,
}

/// The directories every root has; /proc, /sys, /dev and /run are mount points the initramfs
/// moves its own mounts onto, so they must exist.
const ROOT_DIRS: &[&str] = &[
    "proc", "sys", "dev", "run", "tmp", "etc", "bin", "sbin", "root",
];

impl RootFs {
    /// Starts a root tree in `dir` (emptied first) with the standard directories and busybox.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .step(|| format!("empty root staging dir {}", dir.display()))?;
        }
        for d in ROOT_DIRS {
            let path = dir.join(d);
            fs::create_dir_all(&path).step(|| format!("create {}", path.display()))?;
        }
        let mut root = RootFs {
            dir,
            probe_steps: None,
            clean_poweroff: false,
        };
        let busybox = fs::read(BUSYBOX).step(|| format!("read {BUSYBOX}"))?;
        root.add_file("bin/busybox", busybox, 0o755)?;
        Ok(root)
    }

    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `rel_path` inside the root (parents created) with `mode` bits.
    pub fn add_file(
        &mut self,
        rel_path: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        mode: u32,
    ) -> Result<&mut Self> {
        let rel = rel_path.as_ref();
        let path = self.dir.join(rel.strip_prefix("/").unwrap_or(rel));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).step(|| format!("create {}", parent.display()))?;
        }
        fs::write(&path, contents).step(|| format!("write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .step(|| format!("chmod {mode:o} {}", path.display()))?;
        Ok(self)
    }

    /// Adds the static nbdroot binary as `/bin/nbdroot`, for guests that run the client.
    pub fn add_nbdroot(&mut self) -> Result<&mut Self> {
        let path = crate::nbdroot_binary()?;
        let bin = fs::read(&path).step(|| format!("read {}", path.display()))?;
        self.add_file("bin/nbdroot", bin, 0o755)
    }

    /// Makes `/sbin/init` the standard probe (see [`probe_init`]).
    pub fn with_probe(&mut self) -> &mut Self {
        self.probe_steps.get_or_insert_with(Vec::new);
        self
    }

    /// Adds shell lines the probe runs after its reports and before it writes `/probe-result`
    /// (implies [`RootFs::with_probe`]).
    pub fn add_probe_step(&mut self, shell_snippet: &str) -> &mut Self {
        self.probe_steps
            .get_or_insert_with(Vec::new)
            .push(shell_snippet.to_string());
        self
    }

    /// Makes the probe remount the root read-only before it powers off, as a system's shutdown
    /// does: the next boot finds a clean filesystem with no journal to replay (benchmarks, where
    /// a replay at every mount would be time no real boot spends). Off by default: a probe whose
    /// server is gone at the end would block in the remount.
    pub fn clean_poweroff(&mut self) -> &mut Self {
        self.clean_poweroff = true;
        self
    }

    /// Writes the image: `mkfs.ext4 -q -F -d <dir> [-L label] <path> <size_mib>M`.
    pub fn build_ext4(
        &mut self,
        path: &Path,
        size_mib: u32,
        label: Option<&str>,
    ) -> Result<RootImage> {
        if let Some(steps) = &self.probe_steps {
            let script = probe_init(steps, self.clean_poweroff);
            self.add_file("sbin/init", script, 0o755)?;
        }
        ext4_from_dir(&self.dir, path, size_mib, label)
    }
}

/// Makes the ext4 image `path` of `size_mib` holding the tree `dir` (no mounting).
pub fn ext4_from_dir(
    dir: &Path,
    path: &Path,
    size_mib: u32,
    label: Option<&str>,
) -> Result<RootImage> {
    // mkfs.ext4 -F reuses an existing file's size if larger: start from a fresh file.
    if path.exists() {
        fs::remove_file(path).step(|| format!("remove old image {}", path.display()))?;
    }
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-d"]).arg(dir);
    if let Some(label) = label {
        cmd.args(["-L", label]);
    }
    cmd.arg(path).arg(format!("{size_mib}M"));
    command::run(&format!("build ext4 image {}", path.display()), &mut cmd)?;
    Ok(RootImage {
        path: path.to_path_buf(),
    })
}

/// Builds a root in `dir` whose `/sbin/init` is the standard probe, as image `img`.
pub fn probe_root(dir: &Path, img: &Path, size_mib: u32) -> Result<RootImage> {
    RootFs::new(dir)?
        .with_probe()
        .build_ext4(img, size_mib, None)
}

/// The probe init: reports on the console how the root came up (`NBDROOT-PROBE`, one
/// `NBDROOT-MOUNT` per mount, `NBDROOT-CMDLINE`), runs `steps`, records `/probe-result` in the
/// root itself (proof the root is writable and the data reaches the server), and powers off,
/// after remounting the root read-only when `clean` (see [`RootFs::clean_poweroff`]).
pub fn probe_init(steps: &[String], clean: bool) -> String {
    let mut script = String::from(
        r#"#!/bin/busybox sh
# nbdroot probe: the root filesystem's init, run after switch_root.
bb=/bin/busybox
[ -e /proc/mounts ] || $bb mount -t proc proc /proc
[ -c /dev/console ] && exec >/dev/console 2>&1
read up _ < /proc/uptime
echo "NBDROOT-PROBE pid=$$ uptime=$up"
while read -r line; do echo "NBDROOT-MOUNT $line"; done < /proc/mounts
echo "NBDROOT-CMDLINE $($bb cat /proc/cmdline)"
"#,
    );
    for step in steps {
        script.push_str(step);
        script.push('\n');
    }
    script.push_str(
        r#"{ echo "ok uptime=$up"; $bb cat /proc/mounts; } > /probe-result || echo "NBDROOT-PROBE-WRITE-FAILED"
$bb sync
"#,
    );
    if clean {
        script.push_str("$bb mount -o remount,ro / || echo \"NBDROOT-PROBE-REMOUNT-FAILED\"\n");
    }
    script.push_str("echo \"NBDROOT-PROBE-DONE\"\n$bb poweroff -f\n");
    script
}

/// Reads `path` out of the ext4 image `img` with `debugfs` (no mount needed).
pub fn debugfs_cat(img: &Path, path: &str) -> Result<Vec<u8>> {
    let step = format!("read {path} from {}", img.display());
    let mut cmd = Command::new("debugfs");
    cmd.arg("-R").arg(format!("cat {path}")).arg(img);
    let out = command::run(&step, &mut cmd)?;
    // debugfs exits 0 even when the file is missing; it only says so on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("File not found by ext2_lookup") || stderr.contains("Bad magic number") {
        return Err(Error::unexpected(step, stderr.trim()));
    }
    Ok(out.stdout)
}

/// The md5 of `bytes` in hex, as a guest's `md5sum` prints it: what a test compares with the
/// sums the guest reported for files it wrote.
pub fn md5_hex(bytes: &[u8]) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let step = "hash with md5sum";
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .step(|| step)?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::unexpected(step, "no stdin"))?;
    stdin.write_all(bytes).step(|| step)?;
    drop(stdin);
    let out = child.wait_with_output().step(|| step)?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(sum) if out.status.success() => Ok(sum.to_string()),
        _ => Err(Error::unexpected(
            step,
            format!("{} printed {text:?}", out.status),
        )),
    }
}

/// Checks `img` with `e2fsck -fn` (forced, read-only); anything but a clean result is an error.
pub fn e2fsck_clean(img: &Path) -> Result<()> {
    let mut cmd = Command::new("e2fsck");
    cmd.arg("-fn").arg(img);
    command::run(&format!("check {}", img.display()), &mut cmd)?;
    Ok(())
}
