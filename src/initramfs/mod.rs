//! `nbdroot mkinitramfs`: the smallest initramfs that boots an NBD root — this binary as
//! /init, the kernel modules it needs with their dependencies, and the list of modules to load.

pub mod cpio;
pub mod elf;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::modules::{self, DepError, ModulesDep};
use cpio::CpioWriter;

/// Modules an NBD root needs on a virtual machine by default: the nbd driver, a NIC driver
/// and its transport (virtio_pci is not a symbol dependency of virtio_net, so it is named).
pub const DEFAULT_MODULES: [&str; 3] = ["nbd", "virtio_net", "virtio_pci"];

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Dep { path: PathBuf, source: DepError },
    #[error("{path} is dynamically linked (interpreter {interp}) and cannot run as /init; build nbdroot with --target x86_64-unknown-linux-musl")]
    Dynamic { path: PathBuf, interp: String },
    #[error("{path} is not an x86-64 ELF executable")]
    NotElf { path: PathBuf },
}

/// What to put in the image.
#[derive(Debug, Clone)]
pub struct Options {
    pub output: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub kver: String,
    /// The directory holding `<kver>/modules.dep` (normally /lib/modules).
    pub kmoddir: PathBuf,
    pub modules: Vec<String>,
    /// The static binary that becomes /init.
    pub binary: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    pub module_files: usize,
}

/// Builds the image. It is written to a temporary file and renamed into place, so a failure
/// leaves no partial output behind.
pub fn build(opts: &Options) -> Result<Summary, InitramfsError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|source| InitramfsError::Read {
            path: path.into(),
            source,
        })
    };
    let binary = read(&opts.binary)?;
    match elf::interpreter(&binary) {
        None => {
            return Err(InitramfsError::NotElf {
                path: opts.binary.clone(),
            })
        }
        Some(Some(interp)) => {
            return Err(InitramfsError::Dynamic {
                path: opts.binary.clone(),
                interp,
            })
        }
        Some(None) => {}
    }

    let kdir = opts.kmoddir.join(&opts.kver);
    let dep_path = kdir.join("modules.dep");
    let dep_text = String::from_utf8_lossy(&read(&dep_path)?).into_owned();
    let dep = ModulesDep::parse(&dep_text).map_err(|source| InitramfsError::Dep {
        path: dep_path.clone(),
        source,
    })?;
    let builtin = fs::read_to_string(kdir.join("modules.builtin"))
        .map(|t| modules::parse_builtin(&t))
        .unwrap_or_default();
    let files = dep
        .load_order(&opts.modules, &builtin)
        .map_err(|source| InitramfsError::Dep {
            path: dep_path.clone(),
            source,
        })?;
    // Modules to load at boot: the named ones that are not built in.
    let load: Vec<String> = opts
        .modules
        .iter()
        .map(|m| m.replace('-', "_"))
        .filter(|m| dep.path_of(m).is_some())
        .collect();

    let tmp = opts.output.with_extension("tmp");
    let write_err = |source| InitramfsError::Write {
        path: opts.output.clone(),
        source,
    };
    let result = (|| -> io::Result<()> {
        let out = BufWriter::new(File::create(&tmp)?);
        let mut w = CpioWriter::new(GzEncoder::new(out, Compression::best()));
        for d in [
            "dev",
            "proc",
            "sys",
            "run",
            "newroot",
            "etc",
            "etc/nbdroot",
            "lib",
            "lib/modules",
        ] {
            w.dir(d, 0o755)?;
        }
        w.char_device("dev/console", 0o600, 5, 1)?;
        w.file("init", 0o755, &binary)?;

        let base = format!("lib/modules/{}", opts.kver);
        let mut dirs = BTreeSet::new();
        for f in &files {
            let mut p = Path::new(f).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_path_buf());
                p = d.parent();
            }
        }
        w.dir(&base, 0o755)?;
        for d in &dirs {
            w.dir(&format!("{base}/{}", d.display()), 0o755)?;
        }
        for f in &files {
            w.file(&format!("{base}/{f}"), 0o644, &fs::read(kdir.join(f))?)?;
        }
        w.file(
            &format!("{base}/modules.dep"),
            0o644,
            dep.render_subset(&files).as_bytes(),
        )?;
        let mut list = load.join("\n");
        list.push('\n');
        w.file(modules::INITRAMFS_MODULE_LIST, 0o644, list.as_bytes())?;

        let mut out = w.finish()?.finish()?;
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        // Say which module file could not be read, when that is what failed.
        return Err(write_err(e));
    }
    fs::rename(&tmp, &opts.output).map_err(write_err)?;
    let bytes = fs::metadata(&opts.output).map_err(write_err)?.len();
    Ok(Summary {
        bytes,
        module_files: files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fake_kernel(dir: &Path) -> PathBuf {
        let kdir = dir.join("lib/modules/6.1.0-test");
        fs::create_dir_all(kdir.join("kernel/drivers/net")).unwrap();
        fs::create_dir_all(kdir.join("kernel/drivers/block")).unwrap();
        fs::write(
            kdir.join("modules.dep"),
            "kernel/drivers/block/nbd.ko:\nkernel/drivers/net/virtio_net.ko: kernel/drivers/net/failover.ko\nkernel/drivers/net/failover.ko:\nkernel/drivers/net/e1000.ko:\n",
        )
        .unwrap();
        fs::write(kdir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        for m in ["block/nbd", "net/virtio_net", "net/failover", "net/e1000"] {
            fs::write(kdir.join(format!("kernel/drivers/{m}.ko")), m).unwrap();
        }
        dir.join("lib/modules")
    }

    /// A minimal static ELF64 header with no program headers.
    fn static_elf() -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[18] = 62; // x86-64
        e
    }

    #[test]
    fn builds_image_with_dependencies_and_list() {
        let dir = std::env::temp_dir().join(format!("nbdroot-mkinitramfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let kmoddir = fake_kernel(&dir);
        fs::write(dir.join("bin"), static_elf()).unwrap();
        let opts = Options {
            output: dir.join("out.img"),
            kver: "6.1.0-test".into(),
            kmoddir,
            modules: vec!["nbd".into(), "virtio-net".into(), "ext4".into()],
            binary: dir.join("bin"),
        };
        let summary = build(&opts).unwrap();
        assert_eq!(summary.module_files, 3);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(&opts.output).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        let entries = cpio::tests::parse(&raw);
        let get = |name: &str| entries.iter().find(|e| e.0 == name).map(|e| e.3.clone());
        assert_eq!(get("init").unwrap(), static_elf());
        assert!(get("dev/console").is_some());
        let dep = String::from_utf8(get("lib/modules/6.1.0-test/modules.dep").unwrap()).unwrap();
        assert!(dep.contains("kernel/drivers/net/virtio_net.ko: kernel/drivers/net/failover.ko"));
        assert!(!dep.contains("e1000"));
        assert_eq!(get("etc/nbdroot/modules").unwrap(), b"nbd\nvirtio_net\n");
        assert!(get("lib/modules/6.1.0-test/kernel/drivers/net/failover.ko").is_some());
        assert!(get("lib/modules/6.1.0-test/kernel/drivers/net/e1000.ko").is_none());

        // An unknown module fails and leaves nothing behind.
        fs::remove_file(&opts.output).unwrap();
        let bad = Options {
            modules: vec!["nosuchmod".into()],
            ..opts.clone()
        };
        let err = build(&bad).unwrap_err().to_string();
        assert!(
            err.contains(
                "module \"nosuchmod\" is neither in modules.dep nor built into the kernel"
            ),
            "{err}"
        );
        assert!(!opts.output.exists());

        // A dynamically linked binary is refused with the reason.
        let bad = Options {
            binary: PathBuf::from("/bin/true"),
            ..opts.clone()
        };
        let err = build(&bad).unwrap_err().to_string();
        assert!(err.contains("is dynamically linked"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
