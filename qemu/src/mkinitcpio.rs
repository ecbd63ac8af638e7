//! mkinitcpio, the real tool, for the mkinitcpio-hook tests: v41 from the vendored source
//! archive (`$NBDROOT_VENDOR/mkinitcpio-41.tar.gz`, `NBDROOT_VENDOR` defaulting to
//! `<repo>/../shared/vendor`), unpacked once into the cache and run from there with bash,
//! never installed on the host.
//!
//! The upstream build (meson ≥ 1.4, newer than Debian 12's) only fills in placeholders; the
//! cache copy gets them by hand: the library, hooks and install directories are the tree
//! itself, `PATH` includes /usr/sbin (Debian keeps blkid, switch_root there). `install/base`
//! takes busybox from `/usr/lib/initcpio/busybox`; the cache copy takes Debian's dynamically
//! linked `busybox` package instead (`apt-get download`, unpacked beside the tree), as the
//! static build's ash prefers its own `modprobe` applet to kmod's. The host needs
//! `bsdtar`/`bsdcpio` (libarchive-tools) and the rest of a Debian 12 system (kmod, util-linux,
//! systemd's udev).
//!
//! Each build points `MKINITCPIO_INSTALL`/`MKINITCPIO_HOOKS` at the repository's `mkinitcpio/`
//! first, so images always hold the hooks as they are in the working tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command;
use crate::error::{Context, Error, Result};
use crate::lock::FileLock;
use crate::Kernel;

/// The source archive's name in the vendor directory.
pub const ARCHIVE: &str = "mkinitcpio-41.tar.gz";
/// The environment variable naming the vendor directory.
pub const VENDOR_ENV: &str = "NBDROOT_VENDOR";

/// `$NBDROOT_VENDOR`, else `<repo>/../shared/vendor`.
pub fn vendor_dir() -> PathBuf {
    std::env::var_os(VENDOR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("../shared/vendor"))
}

/// Bump when the cache copy's substitutions change: the tree is made again.
const TREE_STAMP: &str = "3";

/// The vendored archive, or an error that names it: the tier never passes without it.
pub fn archive() -> Result<PathBuf> {
    let path = vendor_dir().join(ARCHIVE);
    if path.is_file() {
        return Ok(path);
    }
    Err(Error::unexpected(
        "find mkinitcpio's source",
        format!(
            "no {} (the mkinitcpio tier needs the vendored archive: ../shared/vendor/ beside \
             the repository, or {VENDOR_ENV}=<dir>)",
            path.display()
        ),
    ))
}

/// A mkinitcpio ready to run.
#[derive(Debug, Clone)]
pub struct Mkinitcpio {
    /// The unpacked tree: `mkinitcpio`, `functions`, `init`, `init_functions`, `install/`,
    /// `hooks/`.
    pub tree: PathBuf,
    /// Debian's dynamically linked busybox, which `install/base` puts in images.
    pub busybox: PathBuf,
}

impl Mkinitcpio {
    /// The tree, made once (under a lock) in the cache.
    pub fn get() -> Result<Self> {
        let archive = archive()?;
        let root = crate::cache_dir()?.join("mkinitcpio-41");
        let tree = root.join("tree");
        let mk = Mkinitcpio {
            tree: tree.clone(),
            busybox: root.join("busybox/bin/busybox"),
        };
        fs::create_dir_all(&root).step(|| format!("create {}", root.display()))?;
        let _lock = FileLock::exclusive(&root.join(".lock"))?;
        if fs::read_to_string(tree.join(".done")).is_ok_and(|s| s == TREE_STAMP)
            && mk.busybox.is_file()
        {
            return Ok(mk);
        }
        if !command_exists("bsdtar") {
            return Err(Error::unexpected(
                "run mkinitcpio",
                "no bsdtar on the host (install Debian's libarchive-tools)",
            ));
        }
        // Debian's dynamic busybox, unpacked (the host may have busybox-static, which
        // conflicts with the package).
        let debs = root.join("debs");
        let _ = fs::remove_dir_all(&debs);
        fs::create_dir_all(&debs).step(|| format!("create {}", debs.display()))?;
        let mut get = Command::new("apt-get");
        get.args(["download", "-q", "busybox"]).current_dir(&debs);
        command::run("download Debian's busybox package", &mut get)?;
        let bb = root.join("busybox");
        let _ = fs::remove_dir_all(&bb);
        for deb in fs::read_dir(&debs).step(|| format!("list {}", debs.display()))? {
            let deb = deb.step(|| format!("list {}", debs.display()))?.path();
            let mut x = Command::new("dpkg-deb");
            x.arg("-x").arg(&deb).arg(&bb);
            command::run(&format!("unpack {}", deb.display()), &mut x)?;
        }

        let tmp = root.join("tree.tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).step(|| format!("create {}", tmp.display()))?;
        let mut tar = Command::new("tar");
        tar.arg("-xzf")
            .arg(&archive)
            .args(["--strip-components=1", "-C"])
            .arg(&tmp);
        command::run(&format!("unpack {}", archive.display()), &mut tar)?;
        let subst = placeholders(&tree, &mk.busybox);
        substitute_tree(&tmp, &subst)?;
        fs::write(tmp.join(".done"), TREE_STAMP).step(|| format!("mark {}", tmp.display()))?;
        let _ = fs::remove_dir_all(&tree);
        fs::rename(&tmp, &tree).step(|| format!("move {} into place", tree.display()))?;
        Ok(mk)
    }

    /// `init_functions`, for the runtime-hook tests.
    pub fn init_functions(&self) -> PathBuf {
        self.tree.join("init_functions")
    }
}

fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// What the upstream build fills in, for a tree at `tree`.
fn placeholders(tree: &Path, busybox: &Path) -> Vec<(String, String)> {
    let t = tree.display().to_string();
    [
        ("@VERSION@", "41".to_string()),
        ("@INITCPIO_LIBDIR@", t.clone()),
        ("@INITCPIO_SYSCONFDIR@", format!("{t}/etc/initcpio")),
        ("@SYSCONFDIR@", format!("{t}/etc")),
        ("@UDEVD_PATH@", "/usr/lib/systemd/systemd-udevd".into()),
        ("@TMPFILES_PATH@", "/usr/bin/systemd-tmpfiles".into()),
        ("@VCONSOLE_CONF@", "/etc/vconsole.conf".into()),
        (
            "@MKINITCPIO_HOOKS@",
            "base udev autodetect microcode modconf kms keyboard keymap consolefont block filesystems fsck".into(),
        ),
        (
            "@BINDIR@",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".into(),
        ),
        // Not placeholders, Arch's paths in install hooks: install/base's busybox (here
        // Debian's dynamic one), install/udev's libkmod and the hwdb Debian keeps only in /usr.
        ("/usr/lib/initcpio/busybox", busybox.display().to_string()),
        (
            "'/usr/lib/libkmod.so.2'",
            "'/usr/lib/x86_64-linux-gnu/libkmod.so.2'".into(),
        ),
        ("/etc/udev/hwdb.bin", "/usr/lib/udev/hwdb.bin".into()),
        // install/systemd's util-linux tools, which Debian keeps in /usr/sbin.
        ("/usr/bin/sulogin", "/usr/sbin/sulogin".into()),
        ("/usr/bin/swapon", "/usr/sbin/swapon".into()),
        ("/usr/bin/swapoff", "/usr/sbin/swapoff".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Replaces the placeholders in every text file under `dir`.
fn substitute_tree(dir: &Path, subst: &[(String, String)]) -> Result<()> {
    for e in fs::read_dir(dir).step(|| format!("list {}", dir.display()))? {
        let p = e.step(|| format!("list {}", dir.display()))?.path();
        let meta = fs::symlink_metadata(&p).step(|| format!("stat {}", p.display()))?;
        if meta.is_dir() {
            substitute_tree(&p, subst)?;
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        let mut new = text.clone();
        for (k, v) in subst {
            new = new.replace(k.as_str(), v);
        }
        if new != text {
            fs::write(&p, new).step(|| format!("write {}", p.display()))?;
        }
    }
    Ok(())
}

/// What goes into an image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `HOOKS=(…)`.
    pub hooks: Vec<String>,
    /// Directories holding further `install/` and `hooks/` (the tests' own hooks), searched
    /// after the repository's `mkinitcpio/` and before mkinitcpio's.
    pub hook_dirs: Vec<PathBuf>,
    /// The static nbdroot binary (`NBDROOT_BINARY`), when the image has nbdroot's hooks.
    pub nbdroot: Option<PathBuf>,
    /// `COMPRESSION=`; None: mkinitcpio's default (zstd).
    pub compression: Option<String>,
    /// Further lines for mkinitcpio.conf.
    pub conf: Vec<String>,
    /// Files an install hook may miss without failing the test (mkinitcpio then exits 1 with
    /// "file not found" errors but writes the image).
    pub may_miss: Vec<String>,
}

/// What `install/systemd` of v41 adds and Debian 12's systemd 252 does not have:
/// systemd-executor (v255), systemd-validatefs (v258), the stub's tmpfiles snippet (v254).
pub const NEWER_SYSTEMD: &[&str] = &[
    "/usr/lib/systemd/systemd-executor",
    "/usr/lib/systemd/systemd-validatefs",
    "/usr/lib/tmpfiles.d/20-systemd-stub.conf",
];

impl ImageSpec {
    /// A busybox image with `hooks`, nbdroot's binary built if need be.
    pub fn nbdroot(hooks: &[&str]) -> Result<Self> {
        Ok(ImageSpec {
            hooks: hooks.iter().map(|s| s.to_string()).collect(),
            hook_dirs: Vec::new(),
            nbdroot: Some(crate::nbdroot_binary()?),
            compression: None,
            conf: Vec::new(),
            may_miss: Vec::new(),
        })
    }

    /// A systemd image (`base systemd … sd-nbdroot …`), tolerating [`NEWER_SYSTEMD`].
    pub fn systemd(hooks: &[&str]) -> Result<Self> {
        let mut spec = Self::nbdroot(hooks)?;
        spec.may_miss = NEWER_SYSTEMD.iter().map(|s| s.to_string()).collect();
        Ok(spec)
    }

    /// The default HOOKS line of the tests: udev, block devices, nbdroot, filesystems.
    pub const BUSYBOX_HOOKS: &'static [&'static str] =
        &["base", "udev", "modconf", "block", "nbdroot", "filesystems"];
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: PathBuf,
    pub bytes: u64,
    /// mkinitcpio's output.
    pub log: String,
    /// The files of [`ImageSpec::may_miss`] that were missing.
    pub missed: Vec<String>,
}

/// Runs mkinitcpio for `kernel` with `spec`, writing `out`.
pub fn build_image(
    mk: &Mkinitcpio,
    kernel: &Kernel,
    spec: &ImageSpec,
    out: &Path,
) -> Result<Built> {
    let work = out.with_extension("mkinitcpio");
    let _ = fs::remove_dir_all(&work);
    let tmp = work.join("tmp");
    fs::create_dir_all(&tmp).step(|| format!("create {}", tmp.display()))?;
    let mut conf = vec![
        format!("HOOKS=({})", spec.hooks.join(" ")),
        "MODULES=()".into(),
        "BINARIES=()".into(),
        "FILES=()".into(),
    ];
    if let Some(c) = &spec.compression {
        conf.push(format!("COMPRESSION=\"{c}\""));
    }
    conf.extend(spec.conf.iter().cloned());
    let conf_path = work.join("mkinitcpio.conf");
    fs::write(&conf_path, conf.join("\n") + "\n")
        .step(|| format!("write {}", conf_path.display()))?;

    let ours = crate::repo_root().join("mkinitcpio");
    let search = |sub: &str| -> String {
        let mut dirs = vec![ours.join(sub)];
        dirs.extend(spec.hook_dirs.iter().map(|d| d.join(sub)));
        dirs.push(mk.tree.join(sub));
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    // -r: the root above lib/modules/<kver>.
    let module_root = kernel
        .moddir
        .ancestors()
        .nth(2)
        .ok_or_else(|| Error::unexpected("find the module root", kernel.moddir.display()))?;
    let mut cmd = Command::new("bash");
    cmd.arg(mk.tree.join("mkinitcpio"))
        .env("MKINITCPIO_LIBRARY", &mk.tree)
        .env("MKINITCPIO_INSTALL", search("install"))
        .env("MKINITCPIO_HOOKS", search("hooks"))
        .env("MKINITCPIO_POST_HOOKS", work.join("post"))
        .env("TMPDIR", &tmp)
        .arg("-c")
        .arg(&conf_path)
        .args(["-k", &kernel.version])
        .arg("-r")
        .arg(module_root)
        .arg("-g")
        .arg(out);
    if let Some(bin) = &spec.nbdroot {
        cmd.env("NBDROOT_BINARY", bin);
    }
    cmd.env("NBDROOT_UNITDIR", ours.join("systemd"));
    let step = format!("build {} with mkinitcpio 41", out.display());
    let output = cmd.output().step(|| step.clone())?;
    let log = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
    let _ = fs::write(work.join("mkinitcpio.log"), &log);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR:")).collect();
    let missed: Vec<String> = spec
        .may_miss
        .iter()
        .filter(|m| {
            errors
                .iter()
                .any(|e| e.contains(&format!("file not found: '{m}'")))
        })
        .cloned()
        .collect();
    let unexpected = errors
        .iter()
        .any(|e| !missed.iter().any(|m| e.contains(&format!("'{m}'"))));
    if unexpected || (!output.status.success() && errors.is_empty()) {
        return Err(Error::unexpected(
            format!("{step}: `{}`", command::describe(&cmd)),
            format!("exited with {}\n{log}", output.status),
        ));
    }
    let _ = fs::remove_dir_all(&tmp);
    let bytes = fs::metadata(out)
        .step(|| format!("stat {}", out.display()))?
        .len();
    Ok(Built {
        path: out.to_path_buf(),
        bytes,
        log,
        missed,
    })
}

/// The main (compressed) archive of an image: mkinitcpio prepends an uncompressed early cpio
/// when there are files to keep uncompressed, which `bsdtar` would read alone.
fn main_archive(image: &Path) -> Result<PathBuf> {
    let data = fs::read(image).step(|| format!("read {}", image.display()))?;
    if !data.starts_with(b"070701") {
        return Ok(image.to_path_buf());
    }
    let trailer = b"TRAILER!!!";
    let end = data
        .windows(trailer.len())
        .position(|w| w == trailer)
        .ok_or_else(|| Error::unexpected("read the early cpio", image.display()))?;
    let next = data[end + trailer.len()..]
        .iter()
        .position(|&b| b != 0)
        .map(|p| end + trailer.len() + p);
    let Some(next) = next else {
        return Ok(image.to_path_buf());
    };
    // Written aside and renamed: tests reading the same image side by side never see a
    // half-written file.
    let out = image.with_extension("main");
    let tmp = image.with_extension(format!("main.{}.{}", std::process::id(), crate::unique()));
    fs::write(&tmp, &data[next..]).step(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, &out).step(|| format!("move {} into place", out.display()))?;
    Ok(out)
}

/// Unpacks an image's main archive into `dir`.
pub fn unpack_image(image: &Path, dir: &Path) -> Result<()> {
    let main = main_archive(image)?;
    fs::create_dir_all(dir).step(|| format!("create {}", dir.display()))?;
    let mut cmd = Command::new("bsdtar");
    cmd.arg("-xf").arg(&main).arg("-C").arg(dir);
    command::run(&format!("unpack {}", image.display()), &mut cmd).map(drop)
}

/// The paths in an image's main archive (`bsdtar -t`, decompressing), without `./`.
pub fn list_image(image: &Path) -> Result<Vec<String>> {
    let main = main_archive(image)?;
    let mut cmd = Command::new("bsdtar");
    cmd.arg("-tf").arg(&main);
    let out = command::run(&format!("list {}", image.display()), &mut cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect())
}

/// One file's content in an image's main archive.
pub fn read_from_image(image: &Path, path: &str) -> Result<Vec<u8>> {
    let main = main_archive(image)?;
    let mut cmd = Command::new("bsdtar");
    cmd.arg("-xOf").arg(&main).arg(path);
    Ok(command::run(&format!("read {path} from {}", image.display()), &mut cmd)?.stdout)
}

/// The tests' own hooks, for what Debian cannot supply: `net`, a stand-in for Arch's `net`
/// hook (mkinitcpio-nfs-utils, built on klibc's ipconfig) that configures a static `ip=`
/// with busybox; and `nbdclient`, the AUR NBD hook's shape (`add_module nbd`, `add_binary
/// nbd-client`, a run_hook calling `nbd-client … -persist` for `root=/dev/nbd0`), the
/// benchmark's reference. Written once into `<cache>/mkinitcpio-41/test-hooks`, which goes in
/// [`ImageSpec::hook_dirs`].
pub fn test_hooks() -> Result<PathBuf> {
    let root = crate::cache_dir()?.join("mkinitcpio-41");
    let dir = root.join("test-hooks");
    fs::create_dir_all(&root).step(|| format!("create {}", root.display()))?;
    let _lock = FileLock::exclusive(&root.join(".test-hooks.lock"))?;
    let files = [
        ("install/net", NET_INSTALL),
        ("hooks/net", NET_RUNTIME),
        ("install/nbdclient", NBDCLIENT_INSTALL),
        ("hooks/nbdclient", NBDCLIENT_RUNTIME),
    ];
    for (rel, text) in files {
        let p = dir.join(rel);
        if fs::read_to_string(&p).is_ok_and(|t| t == text) {
            continue;
        }
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).step(|| format!("create {}", parent.display()))?;
        }
        fs::write(&p, text).step(|| format!("write {}", p.display()))?;
    }
    Ok(dir)
}

const NET_INSTALL: &str = r#"#!/bin/bash
# Test stand-in for Arch's net hook: busybox's ifconfig and route do the work.
build() {
    add_runscript
}
"#;

const NET_RUNTIME: &str = r#"#!/usr/bin/ash
# Test stand-in for Arch's net hook: ip=<client>:<server>:<gw>:<netmask>:<host>:<dev>:off.
run_hook() {
    local spec client gw mask dev n
    spec=$(getarg ip)
    client=${spec%%:*}; spec=${spec#*:}
    spec=${spec#*:}
    gw=${spec%%:*}; spec=${spec#*:}
    mask=${spec%%:*}; spec=${spec#*:}
    spec=${spec#*:}
    dev=${spec%%:*}
    [ -n "$client" ] && [ -n "$dev" ] || return 0
    n=0
    while [ ! -e "/sys/class/net/$dev" ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    ifconfig "$dev" "$client" netmask "$mask" up
    [ -n "$gw" ] && route add default gw "$gw"
    echo "net: $dev $client/$mask via $gw"
}
"#;

const NBDCLIENT_INSTALL: &str = r#"#!/bin/bash
# The AUR NBD hook's shape, for the benchmark: nbd module, nbd-client, a runtime script.
build() {
    add_module nbd
    add_binary nbd-client
    add_runscript
}
"#;

const NBDCLIENT_RUNTIME: &str = r#"#!/usr/bin/ash
# nbd_host=<ip> nbd_port=<port> with the net hook before it and root=/dev/nbd0.
run_hook() {
    local host port
    host=$(getarg nbd_host)
    port=$(getarg nbd_port 10809)
    [ -n "$host" ] || return 0
    modprobe -q nbd
    nbd-client "$host" "$port" /dev/nbd0 -persist -systemd-mark || err "nbd-client failed"
}
"#;
