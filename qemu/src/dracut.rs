//! dracut, the real tool, for the dracut-module tests: Debian 12's packaged dracut 059 and
//! dracut-ng 111 built from the vendored source, each run from its own tree in the cache,
//! never installed on the host (Debian's dracut package conflicts with initramfs-tools, which
//! the host keeps).
//!
//! - 059: `apt-get download dracut dracut-core dracut-network` and `dpkg-deb -x`, like the
//!   kernel; dracut-core's `dracut-install` is linked against the host's libkmod (same
//!   release). Run as `dracutbasedir=<tree>/usr/lib/dracut bash <tree>/usr/bin/dracut`.
//! - dracut-ng 111: `../shared/vendor/dracut-ng-111.tar.gz` from the repository root (or
//!   `NBDROOT_DRACUT_NG_TARBALL`), built once with `./configure --prefix=/usr
//!   --disable-documentation && make` (needs pkg-config and libkmod-dev), run from the build
//!   tree as `dracutbasedir=<tree> bash <tree>/dracut.sh`.
//!
//! dracut takes systemd, udev, kmod and the rest from the host, as it does on a real system.
//! Where dracut-ng relies on files its `make install` puts on the host, the image gets them
//! with `--include` (see [`build_image`]).
//! Each build copies the repository's `dracut/50nbdroot` into the tree's `modules.d` under a
//! lock, so builds see the module as it is in the working tree.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::artifact::{self, Key};
use crate::command;
use crate::error::{Context, Error, Result};
use crate::lock::FileLock;
use crate::Kernel;

/// Where the tests look for dracut-ng's source archive, relative to the repository root.
pub const NG_TARBALL: &str = "dracut-ng-111.tar.gz";
/// The environment variable naming the archive elsewhere.
pub const NG_TARBALL_ENV: &str = "NBDROOT_DRACUT_NG_TARBALL";

/// Which dracut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Release {
    /// Debian 12's packaged dracut 059 (`dracut-core` 059-4).
    Debian059,
    /// dracut-ng 111 built from the vendored source.
    Ng111,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Release::Debian059 => "dracut 059 (Debian 12)",
            Release::Ng111 => "dracut-ng 111",
        })
    }
}

/// A dracut ready to run.
#[derive(Debug, Clone)]
pub struct Dracut {
    pub release: Release,
    /// `dracutbasedir`: the directory holding `modules.d`, `dracut-functions.sh`, ….
    pub basedir: PathBuf,
    /// The script to run with bash.
    pub script: PathBuf,
}

impl Dracut {
    /// The tree for `release`, made once (under a lock) in the cache.
    pub fn get(release: Release) -> Result<Self> {
        match release {
            Release::Debian059 => debian_059(),
            Release::Ng111 => ng_111(),
        }
    }
}

/// Debian 12's dracut 059, downloaded and unpacked once.
fn debian_059() -> Result<Dracut> {
    let root = crate::cache_dir()?.join("dracut-059");
    let tree = root.join("tree");
    let dracut = Dracut {
        release: Release::Debian059,
        basedir: tree.join("usr/lib/dracut"),
        script: tree.join("usr/bin/dracut"),
    };
    fs::create_dir_all(&root).step(|| format!("create {}", root.display()))?;
    let _lock = FileLock::exclusive(&root.join(".lock"))?;
    if tree.join(".done").exists() {
        return Ok(dracut);
    }
    let debs = root.join("debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs).step(|| format!("create {}", debs.display()))?;
    let mut get = Command::new("apt-get");
    get.args(["download", "-q", "dracut", "dracut-core", "dracut-network"])
        .current_dir(&debs);
    command::run("download Debian's dracut 059 packages", &mut get)?;
    let tmp = root.join("tree.tmp");
    let _ = fs::remove_dir_all(&tmp);
    for deb in fs::read_dir(&debs).step(|| format!("list {}", debs.display()))? {
        let deb = deb.step(|| format!("list {}", debs.display()))?.path();
        let mut x = Command::new("dpkg-deb");
        x.arg("-x").arg(&deb).arg(&tmp);
        command::run(&format!("unpack {}", deb.display()), &mut x)?;
    }
    fs::write(tmp.join(".done"), "").step(|| format!("mark {}", tmp.display()))?;
    let _ = fs::remove_dir_all(&tree);
    fs::rename(&tmp, &tree).step(|| format!("move {} into place", tree.display()))?;
    Ok(dracut)
}

/// dracut-ng's source archive: [`NG_TARBALL_ENV`], else [`NG_TARBALL`] in the vendor directory
/// (`$NBDROOT_VENDOR`, else `../shared/vendor` beside the repository).
pub fn ng_tarball() -> Result<PathBuf> {
    let path = std::env::var_os(NG_TARBALL_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::mkinitcpio::vendor_dir().join(NG_TARBALL));
    if path.is_file() {
        return Ok(path);
    }
    Err(Error::unexpected(
        "find dracut-ng's source",
        format!(
            "no {} (the dracut-ng tier needs the vendored archive: ../shared/vendor/ beside the \
             repository, or {NG_TARBALL_ENV}=<path>)",
            path.display()
        ),
    ))
}

/// dracut-ng 111, unpacked and built once.
fn ng_111() -> Result<Dracut> {
    let tarball = ng_tarball()?;
    let root = crate::cache_dir()?.join("dracut-ng-111");
    let tree = root.join("tree");
    let dracut = Dracut {
        release: Release::Ng111,
        basedir: tree.clone(),
        script: tree.join("dracut.sh"),
    };
    fs::create_dir_all(&root).step(|| format!("create {}", root.display()))?;
    let _lock = FileLock::exclusive(&root.join(".lock"))?;
    if tree.join(".done").exists() {
        return Ok(dracut);
    }
    let tmp = root.join("tree.tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).step(|| format!("create {}", tmp.display()))?;
    let mut tar = Command::new("tar");
    tar.arg("-xzf")
        .arg(&tarball)
        .args(["--strip-components=1", "-C"])
        .arg(&tmp);
    command::run(&format!("unpack {}", tarball.display()), &mut tar)?;
    let mut configure = Command::new("./configure");
    configure
        .args(["--prefix=/usr", "--disable-documentation"])
        .current_dir(&tmp);
    command::run(
        "configure dracut-ng (needs pkg-config and libkmod-dev)",
        &mut configure,
    )?;
    let mut make = Command::new("make");
    make.current_dir(&tmp);
    command::run("build dracut-ng", &mut make)?;
    fs::write(tmp.join(".done"), "").step(|| format!("mark {}", tmp.display()))?;
    let _ = fs::remove_dir_all(&tree);
    fs::rename(&tmp, &tree).step(|| format!("move {} into place", tree.display()))?;
    Ok(dracut)
}

/// Which NBD module does the root, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdModule {
    /// nbdroot's module with this static binary.
    Nbdroot(PathBuf),
    /// dracut's own `nbd` module with the host's nbd-client, and its network stack.
    Stock,
    /// Neither: the benchmark's floor, an image of the same base booting a local disk.
    Neither,
}

/// What goes into an image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub nbd: NbdModule,
    /// systemd in the initrd (dracut's `systemd-initrd` and `dracut-systemd`), else dracut's
    /// own shell init.
    pub systemd: bool,
    /// Further dracut modules.
    pub extra_modules: Vec<String>,
    /// Lines for a dracut.conf (`nbdroot_network=dracut`, …).
    pub conf: Vec<String>,
    /// gzip the image, as distributions do. Off for functional tests: under TCG the kernel
    /// takes over a second to unpack it, and the host seconds to pack it.
    pub compress: bool,
}

impl ImageSpec {
    pub fn nbdroot(systemd: bool) -> Result<Self> {
        Ok(ImageSpec {
            nbd: NbdModule::Nbdroot(crate::nbdroot_binary()?),
            systemd,
            extra_modules: Vec::new(),
            conf: Vec::new(),
            compress: false,
        })
    }

    /// The dracut modules (`-m`): a small generic image, the same base for both NBD modules.
    pub fn modules(&self) -> Vec<String> {
        let mut m: Vec<String> = ["base", "rootfs-block", "kernel-modules", "fs-lib"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.systemd {
            m.extend(["systemd", "systemd-initrd", "dracut-systemd"].map(String::from));
        }
        match self.nbd {
            NbdModule::Nbdroot(_) => m.push("nbdroot".into()),
            NbdModule::Stock => m.push("nbd".into()),
            NbdModule::Neither => {}
        }
        m.extend(self.extra_modules.iter().cloned());
        m
    }
}

/// One run of dracut beyond [`ImageSpec`]'s: for the tests of the module's `check()` and
/// `install()` (hostonly, a plain `-a nbdroot`, both NBD modules requested).
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// Lines for the dracut.conf.
    pub conf: Vec<String>,
    /// Put nbdroot's `dracut.conf.d/50-nbdroot.conf` in the conf directory, as
    /// `scripts/install` does.
    pub conf_snippet: bool,
    /// Arguments after the common ones (`--kver`, `--kmoddir`, …), before the output file.
    pub args: Vec<String>,
    /// A command to run dracut under (`unshare -m …`), dracut's own command line last.
    pub wrapper: Vec<String>,
}

/// Runs dracut to write `out`, with the working tree's module in place; the output, whatever
/// dracut's exit status (the callers assert it).
pub fn invoke(
    dracut: &Dracut,
    kernel: &Kernel,
    inv: &Invocation,
    out: &Path,
) -> Result<std::process::Output> {
    let modules_d = dracut.basedir.join("modules.d");
    // One build at a time per tree: each puts the working tree's module in place.
    let _lock = FileLock::exclusive(&dracut.basedir.join(".build.lock"))?;
    let ours = modules_d.join("50nbdroot");
    let _ = fs::remove_dir_all(&ours);
    fs::create_dir_all(&ours).step(|| format!("create {}", ours.display()))?;
    let src = crate::repo_root().join("dracut/50nbdroot");
    for f in fs::read_dir(&src).step(|| format!("list {}", src.display()))? {
        let f = f.step(|| format!("list {}", src.display()))?.path();
        let dst = ours.join(f.file_name().unwrap_or_default());
        fs::copy(&f, &dst).step(|| format!("copy {} into {}", f.display(), ours.display()))?;
    }
    let work = out.with_extension("dracut");
    let _ = fs::remove_dir_all(&work);
    let confdir = work.join("conf.d");
    fs::create_dir_all(&confdir).step(|| format!("create {}", confdir.display()))?;
    if inv.conf_snippet {
        let snippet = crate::repo_root().join("dracut/dracut.conf.d/50-nbdroot.conf");
        fs::copy(&snippet, confdir.join("50-nbdroot.conf"))
            .step(|| format!("copy {}", snippet.display()))?;
    }
    let conf_path = work.join("dracut.conf");
    fs::write(&conf_path, inv.conf.join("\n") + "\n")
        .step(|| format!("write {}", conf_path.display()))?;
    let tmp = work.join("tmp");
    fs::create_dir_all(&tmp).step(|| format!("create {}", tmp.display()))?;
    let mut line: Vec<std::ffi::OsString> = inv.wrapper.iter().map(Into::into).collect();
    line.push("bash".into());
    line.push(dracut.script.clone().into());
    for a in [
        "--force",
        "--no-early-microcode",
        "--compress",
        "gzip",
        "--conf",
    ] {
        line.push(a.into());
    }
    line.push(conf_path.into());
    line.push("--confdir".into());
    line.push(confdir.into());
    line.push("--tmpdir".into());
    line.push(tmp.clone().into());
    line.push("--kver".into());
    line.push(kernel.version.clone().into());
    line.push("--kmoddir".into());
    line.push(kernel.moddir.join(&kernel.version).into());
    line.extend(inv.args.iter().map(Into::into));
    line.push(out.into());
    let mut cmd = Command::new(&line[0]);
    cmd.args(&line[1..]).env("dracutbasedir", &dracut.basedir);
    let output = cmd
        .output()
        .step(|| format!("run {}", crate::command::describe(&cmd)))?;
    let log = work.join("dracut.log");
    let _ = fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat());
    let _ = fs::remove_dir_all(&tmp);
    Ok(output)
}

/// The dracut modules an image holds (its `lib/dracut/modules.txt`).
pub fn image_modules(img: &Path) -> Result<Vec<String>> {
    let text = image_file(img, "usr/lib/dracut/modules.txt")
        .or_else(|_| image_file(img, "lib/dracut/modules.txt"))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// One file of an initramfs (gzip-compressed or not), as text.
pub fn image_file(img: &Path, path: &str) -> Result<String> {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("zcat -f \"$1\" | cpio -i --quiet --to-stdout \"$2\"")
        .arg("sh")
        .arg(img)
        .arg(path);
    let output = command::run(&format!("read {path} from {}", img.display()), &mut sh)?;
    if output.stdout.is_empty() {
        return Err(Error::unexpected(
            format!("read {path} from {}", img.display()),
            "no such file in the image",
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Builds an initramfs for `kernel` at `out` and returns its size in bytes; an image
/// of the same inputs built before (by this run or an earlier one) is taken from the cache.
pub fn build_image(dracut: &Dracut, kernel: &Kernel, spec: &ImageSpec, out: &Path) -> Result<u64> {
    let shape = format!("{:?} {spec:?}", dracut.release);
    let slot = format!("dracut-{}", Key::default().text(&shape).hex());
    let mut key = Key::default()
        .text(&shape)
        .text(&kernel.version)
        .text(&dracut.basedir.display().to_string())
        .dir(&crate::repo_root().join("dracut"))?
        // dracut copies the host's systemd, udev and tools into the image.
        .file(Path::new("/var/lib/dpkg/status"))?;
    if let NbdModule::Nbdroot(bin) = &spec.nbd {
        key = key.file(bin)?;
    }
    artifact::cached(&slot, &key, out, |out| {
        build_uncached(dracut, kernel, spec, out)
    })?;
    let bytes = fs::metadata(out)
        .step(|| format!("stat {}", out.display()))?
        .len();
    Ok(bytes)
}

fn build_uncached(dracut: &Dracut, kernel: &Kernel, spec: &ImageSpec, out: &Path) -> Result<()> {
    let mut inv = Invocation {
        conf: spec.conf.clone(),
        // What scripts/install puts in dracut.conf.d.
        conf_snippet: matches!(spec.nbd, NbdModule::Nbdroot(_)),
        args: vec![
            "--no-hostonly".into(),
            "-m".into(),
            spec.modules().join(" "),
        ],
        wrapper: Vec::new(),
    };
    if let NbdModule::Nbdroot(bin) = &spec.nbd {
        inv.conf
            .push(format!("nbdroot_binary=\"{}\"", bin.display()));
    }
    if !spec.compress {
        inv.args.push("--no-compress".into());
    }
    // What `make install` of dracut-ng puts on the host and a build tree lacks: the initqueue
    // service's wants link (its unit has no [Install] section, so `systemctl enable` in the
    // module does nothing). Without it the initqueue never runs under systemd.
    let include = out.with_extension("include");
    let _ = fs::remove_dir_all(&include);
    if spec.systemd && dracut.release == Release::Ng111 {
        let wants = include.join("usr/lib/systemd/system/initrd.target.wants");
        fs::create_dir_all(&wants).step(|| format!("create {}", wants.display()))?;
        std::os::unix::fs::symlink(
            "../dracut-initqueue.service",
            wants.join("dracut-initqueue.service"),
        )
        .step(|| format!("link in {}", wants.display()))?;
        inv.args.push("--include".into());
        inv.args.push(include.display().to_string());
        inv.args.push("/".into());
    }
    let output = invoke(dracut, kernel, &inv, out)?;
    if !output.status.success() {
        return Err(Error::Command {
            step: format!("build an initramfs with {}", dracut.release),
            command: format!("dracut {}", inv.args.join(" ")),
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// What a real root needs for dracut's return to the initramfs at shutdown, from `dracut`'s
/// own files (Debian's dracut-core package for 059, the build tree for dracut-ng), as
/// (source, path in the root): `dracut-shutdown.service`, whose stop unpacks the root's
/// initramfs into /run/initramfs (systemd-shutdown then execs its /shutdown), the script it
/// runs, and `skipcpio`.
pub fn shutdown_files(dracut: &Dracut) -> Vec<(PathBuf, &'static str)> {
    let unit = "usr/lib/systemd/system/dracut-shutdown.service";
    let restore = "usr/lib/dracut/dracut-initramfs-restore";
    let skipcpio = "usr/lib/dracut/skipcpio";
    match dracut.release {
        Release::Debian059 => {
            let tree = dracut.basedir.join("../../..");
            vec![
                // The package's lib/systemd/system/dracut-shutdown.service links to this.
                (
                    dracut
                        .basedir
                        .join("modules.d/98dracut-systemd/dracut-shutdown.service"),
                    unit,
                ),
                (tree.join(restore), restore),
                (tree.join(skipcpio), skipcpio),
            ]
        }
        Release::Ng111 => vec![
            (
                dracut
                    .basedir
                    .join("modules.d/77dracut-systemd/dracut-shutdown.service"),
                unit,
            ),
            (dracut.basedir.join("dracut-initramfs-restore.sh"), restore),
            (dracut.basedir.join("src/skipcpio/skipcpio"), skipcpio),
        ],
    }
}
