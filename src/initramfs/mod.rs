//! `nbdroot mkinitramfs`: the smallest initramfs that boots an NBD root — this binary as
//! /init, the kernel modules it needs with their dependencies, and the list of modules to load.
//! NIC drivers are carried with a trimmed `modules.alias` so that /init loads only the ones the
//! machine's devices need (coldplug).

pub mod cpio;
pub mod elf;
mod gzip;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::modules::{self, AliasError, AliasTable, DepError, ModulesDep};
use cpio::CpioWriter;

/// Modules an NBD root needs on a virtual machine by default: the nbd driver, a NIC driver
/// and its transport (virtio_pci is not a symbol dependency of virtio_net, so it is named).
pub const DEFAULT_MODULES: [&str; 3] = ["nbd", "virtio_net", "virtio_pci"];

/// Modules the image carries when the kernel has them, for /init to load only when a boot
/// parameter needs them (overlay for `rd.nbdroot.overlay=`).
pub const ON_DEMAND_MODULES: [&str; 1] = ["overlay"];

/// `--nic-modules default`: common virtual and physical NIC drivers, those the kernel has.
// Not Mellanox (mlx4_en, mlx5_core): together they would triple the image (~1 MB);
// name them with --nic-modules where they are needed.
pub const DEFAULT_NIC_MODULES: [&str; 17] = [
    "virtio_net",
    "virtio_pci",
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "r8169",
    "tg3",
    "bnx2",
    "bnxt_en",
    "vmxnet3",
    "hv_netvsc",
    "xen_netfront",
    "ena",
    "gve",
];

/// NIC drivers the image carries for coldplug: with their dependencies and the lines of
/// `modules.alias` that name them, but not in the list loaded at every boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NicModules {
    /// [`DEFAULT_NIC_MODULES`], skipping those the kernel lacks.
    #[default]
    Default,
    None,
    /// These, each of which the kernel must have.
    Named(Vec<String>),
}

/// `default`, `none` or `a,b,…`.
impl FromStr for NicModules {
    type Err = InitramfsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "default" => Self::Default,
            "none" => Self::None,
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(|m| m.trim().replace('-', "_"))
                    .filter(|m| !m.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err(InitramfsError::NicSet(s.to_string()));
                }
                Self::Named(names)
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Dep { path: PathBuf, source: DepError },
    #[error("{path}: {source}")]
    Alias { path: PathBuf, source: AliasError },
    #[error("--nic-modules {0:?}: expected default, none or a comma-separated list of modules")]
    NicSet(String),
    #[error(
        "--nic-modules: NIC module \"{module}\" is neither in {path} nor built into the kernel"
    )]
    NicUnknown { module: String, path: PathBuf },
    #[error("{path} is dynamically linked (interpreter {interp}) and cannot run as /init; build nbdroot with --target x86_64-unknown-linux-musl")]
    Dynamic { path: PathBuf, interp: String },
    #[error("{path} is not an x86-64 ELF executable")]
    NotElf { path: PathBuf },
    #[error("TLS: the kernel {kver} has no tls module ({path} lists none and it is not built in): kernel TLS needs CONFIG_TLS")]
    NoKernelTls { kver: String, path: PathBuf },
}

/// Where the image keeps TLS credentials: the boot uses them when `rd.nbdroot.tls.*` does
/// not name others.
pub const TLS_CA: &str = "etc/nbdroot/tls/ca.pem";
pub const TLS_CERT: &str = "etc/nbdroot/tls/client-cert.pem";
pub const TLS_KEY: &str = "etc/nbdroot/tls/client-key.pem";

/// TLS in the image: the kernel-TLS and crypto modules, and the credentials to copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub enabled: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What to put in the image.
#[derive(Debug, Clone)]
pub struct Options {
    pub output: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub kver: String,
    /// The directory holding `<kver>/modules.dep` (normally /lib/modules).
    pub kmoddir: PathBuf,
    /// Modules /init always loads.
    pub modules: Vec<String>,
    /// NIC drivers /init loads only for the devices present.
    pub nic_modules: NicModules,
    /// The static binary that becomes /init.
    pub binary: PathBuf,
    /// Kernel TLS modules and credentials.
    pub tls: TlsFiles,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    pub module_files: usize,
    /// NIC drivers in the image (as files or built in).
    pub nic_modules: Vec<String>,
    /// Drivers of [`DEFAULT_NIC_MODULES`] this kernel does not have.
    pub nic_missing: Vec<String>,
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
    let known = |m: &String| dep.path_of(m).is_some() || builtin.contains(m);
    let (nic, nic_missing): (Vec<String>, Vec<String>) = match &opts.nic_modules {
        NicModules::Default => DEFAULT_NIC_MODULES
            .iter()
            .map(|m| m.to_string())
            .partition(known),
        NicModules::None => Default::default(),
        NicModules::Named(names) => {
            let names: Vec<String> = names.iter().map(|m| m.replace('-', "_")).collect();
            if let Some(module) = names.iter().find(|m| !known(m)) {
                return Err(InitramfsError::NicUnknown {
                    module: module.clone(),
                    path: dep_path,
                });
            }
            (names, Vec::new())
        }
    };
    // Kernel TLS: the tls module, and whichever of the crypto modules its ciphers need this
    // kernel has as modules (the others are built in, or absent on this architecture, where
    // the generic code serves).
    let mut modules = opts.modules.clone();
    if opts.tls.enabled {
        if !known(&"tls".to_string()) {
            return Err(InitramfsError::NoKernelTls {
                kver: opts.kver.clone(),
                path: dep_path,
            });
        }
        for m in crate::tls::MODULES {
            let m = m.replace('-', "_");
            if dep.path_of(&m).is_some() && !modules.contains(&m) {
                modules.push(m);
            }
        }
    }
    let tls_files: Vec<(&str, u32, Vec<u8>)> = [
        (TLS_CA, 0o644, &opts.tls.ca),
        (TLS_CERT, 0o644, &opts.tls.cert),
        (TLS_KEY, 0o600, &opts.tls.key),
    ]
    .into_iter()
    .filter_map(|(to, mode, from)| Some((to, mode, from.as_ref()?)))
    .map(|(to, mode, from)| Ok((to, mode, read(from)?)))
    .collect::<Result<_, InitramfsError>>()?;
    // The TLS modules are loaded at boot with the named ones; the on-demand ones only ride
    // along, for /init to load when a parameter asks.
    let on_demand: Vec<String> = ON_DEMAND_MODULES
        .iter()
        .map(|m| m.to_string())
        .filter(|m| dep.path_of(m).is_some() && !modules.contains(m))
        .collect();
    let wanted: Vec<&String> = modules.iter().chain(&nic).chain(&on_demand).collect();
    let files = dep
        .load_order(&wanted, &builtin)
        .map_err(|source| InitramfsError::Dep {
            path: dep_path.clone(),
            source,
        })?;
    // The alias lines of every module in the image: a NIC driver's dependency can be the one
    // that matches first (hv_vmbus creates the devices hv_netvsc drives).
    let aliases = if nic.is_empty() {
        String::new()
    } else {
        let path = kdir.join("modules.alias");
        let text = String::from_utf8_lossy(&read(&path)?).into_owned();
        let table =
            AliasTable::parse(&text).map_err(|source| InitramfsError::Alias { path, source })?;
        let mut text =
            table.render_subset(&files.iter().map(|f| modules::module_name(f)).collect());
        // A driver with no aliases of its own is loaded by its core module with request_module
        // (mlx4_core → mlx4_en), which needs a modprobe the image lacks: it takes the aliases of
        // its dependencies, so that coldplug loads both.
        for m in nic.iter().filter(|m| table.patterns_of(m).next().is_none()) {
            for d in dep.load_order(&[m], &builtin).unwrap_or_default() {
                for p in table.patterns_of(&modules::module_name(&d)) {
                    text.push_str(&format!("alias {p} {m}\n"));
                }
            }
        }
        text
    };
    // Modules to load at boot: the named ones that are not built in.
    let load: Vec<String> = modules
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
        let mut w = CpioWriter::new(Vec::new());
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
        if !tls_files.is_empty() {
            w.dir("etc/nbdroot/tls", 0o700)?;
        }
        for (to, mode, data) in &tls_files {
            w.file(to, *mode, data)?;
        }

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
        if !aliases.is_empty() {
            w.file(&format!("{base}/modules.alias"), 0o644, aliases.as_bytes())?;
        }
        let mut list = load.join("\n");
        list.push('\n');
        w.file(modules::INITRAMFS_MODULE_LIST, 0o644, list.as_bytes())?;

        let mut out = File::create(&tmp)?;
        out.write_all(&gzip::compress(&w.finish()?))?;
        out.sync_all()?;
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
        nic_modules: nic,
        nic_missing,
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
        fs::create_dir_all(kdir.join("kernel/fs/overlayfs")).unwrap();
        fs::write(kdir.join("kernel/fs/overlayfs/overlay.ko"), "overlay").unwrap();
        fs::write(
            kdir.join("modules.dep"),
            "kernel/drivers/block/nbd.ko:\nkernel/drivers/net/virtio_net.ko: kernel/drivers/net/failover.ko\nkernel/drivers/net/failover.ko:\nkernel/drivers/net/e1000.ko:\n\
             kernel/drivers/net/mlx4_en.ko: kernel/drivers/net/mlx4_core.ko\nkernel/drivers/net/mlx4_core.ko:\n\
             kernel/fs/overlayfs/overlay.ko:\n",
        )
        .unwrap();
        fs::write(kdir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        fs::write(
            kdir.join("modules.alias"),
            "alias virtio:d00000001v* virtio_net\nalias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\nalias pci:v000015ADd000007B0sv*sd*bc*sc*i* vmxnet3\nalias pci:v000015B3d00001003sv*sd*bc*sc*i* mlx4_core\nalias block-major-43-* nbd\n",
        )
        .unwrap();
        for m in [
            "block/nbd",
            "net/virtio_net",
            "net/failover",
            "net/e1000",
            "net/mlx4_core",
            "net/mlx4_en",
        ] {
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
    fn tls_adds_its_modules_and_credentials_with_a_private_key() {
        let dir =
            std::env::temp_dir().join(format!("nbdroot-mkinitramfs-tls-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let kmoddir = fake_kernel(&dir);
        fs::write(dir.join("bin"), static_elf()).unwrap();
        let opts = Options {
            output: dir.join("out.img"),
            kver: "6.1.0-test".into(),
            kmoddir: kmoddir.clone(),
            modules: vec!["nbd".into()],
            nic_modules: NicModules::None,
            binary: dir.join("bin"),
            tls: TlsFiles {
                enabled: true,
                ..TlsFiles::default()
            },
        };
        // A kernel without the tls module: refused, not an image that cannot do TLS.
        let err = build(&opts).unwrap_err();
        assert!(matches!(err, InitramfsError::NoKernelTls { .. }), "{err}");

        // With tls and some of the crypto modules (the rest built in or absent); gcm is not
        // one nbdroot's ChaCha20-Poly1305 needs.
        let kdir = kmoddir.join("6.1.0-test");
        fs::create_dir_all(kdir.join("kernel/net/tls")).unwrap();
        fs::create_dir_all(kdir.join("kernel/crypto")).unwrap();
        let mut dep = fs::read_to_string(kdir.join("modules.dep")).unwrap();
        dep.push_str(
            "kernel/net/tls/tls.ko:\nkernel/crypto/gcm.ko:\nkernel/crypto/chacha20poly1305.ko:\n",
        );
        fs::write(kdir.join("modules.dep"), dep).unwrap();
        for m in ["net/tls/tls", "crypto/gcm", "crypto/chacha20poly1305"] {
            fs::write(kdir.join(format!("kernel/{m}.ko")), m).unwrap();
        }
        for (f, text) in [("ca.pem", "CA"), ("c.pem", "CERT"), ("k.pem", "KEY")] {
            fs::write(dir.join(f), text).unwrap();
        }
        let opts = Options {
            tls: TlsFiles {
                enabled: true,
                ca: Some(dir.join("ca.pem")),
                cert: Some(dir.join("c.pem")),
                key: Some(dir.join("k.pem")),
            },
            ..opts
        };
        let summary = build(&opts).unwrap();
        // nbd, tls, chacha20poly1305, and overlay on demand (in the image, not in the list).
        assert_eq!(summary.module_files, 4);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(&opts.output).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        let entries = cpio::tests::parse(&raw);
        let get = |name: &str| entries.iter().find(|e| e.0 == name).cloned();
        assert_eq!(
            get("etc/nbdroot/modules").unwrap().3,
            b"nbd\ntls\nchacha20poly1305\n"
        );
        assert!(entries.iter().any(|e| e.0.ends_with("/overlay.ko")));
        for (path, mode, data) in [
            (TLS_CA, 0o100644, "CA"),
            (TLS_CERT, 0o100644, "CERT"),
            (TLS_KEY, 0o100600, "KEY"),
        ] {
            let (_, m, _, d) = get(path).unwrap();
            assert_eq!((m, d.as_slice()), (mode, data.as_bytes()), "{path}");
        }
        assert_eq!(get("etc/nbdroot/tls").unwrap().1, 0o040700);

        // A credential that cannot be read fails the build, naming it.
        let opts = Options {
            tls: TlsFiles {
                key: Some(dir.join("absent.pem")),
                ..opts.tls.clone()
            },
            ..opts
        };
        let err = build(&opts).unwrap_err().to_string();
        assert!(err.contains("absent.pem"), "{err}");
        let _ = fs::remove_dir_all(&dir);
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
            nic_modules: NicModules::None,
            binary: dir.join("bin"),
            tls: TlsFiles::default(),
        };
        let summary = build(&opts).unwrap();
        assert_eq!(
            summary.module_files, 4,
            "nbd, virtio_net, failover, overlay"
        );
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
        // overlay: carried for rd.nbdroot.overlay=, loaded only then (not in the list above).
        assert!(get("lib/modules/6.1.0-test/kernel/fs/overlayfs/overlay.ko").is_some());
        assert!(get("lib/modules/6.1.0-test/kernel/drivers/net/e1000.ko").is_none());
        assert!(
            get("lib/modules/6.1.0-test/modules.alias").is_none(),
            "no NIC modules, nothing to coldplug"
        );
        assert_eq!(
            (summary.nic_modules.len(), summary.nic_missing.len()),
            (0, 0)
        );

        // NIC drivers: in the image with an alias file of the modules present, never in the
        // always-load list. The default set takes what the kernel has and counts the rest.
        let (virtio, e1000) = (
            "alias virtio:d00000001v* virtio_net\n",
            "alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n",
        );
        let (mlx4, nbd) = (
            "alias pci:v000015B3d00001003sv*sd*bc*sc*i* mlx4_core\n",
            "alias block-major-43-* nbd\n",
        );
        let cases = [
            (
                NicModules::Named(vec!["e1000".into()]),
                vec!["e1000"],
                0,
                5,
                format!("{virtio}{e1000}{nbd}"),
            ),
            (
                NicModules::Named(vec!["virtio_net".into(), "e1000".into(), "mlx4_en".into()]),
                vec!["virtio_net", "e1000", "mlx4_en"],
                0,
                7,
                // mlx4_en has no aliases: it takes mlx4_core's.
                format!(
                    "{virtio}{e1000}{mlx4}{nbd}{}",
                    mlx4.replace("mlx4_core", "mlx4_en")
                ),
            ),
        ];
        for (nic, want_nic, missing, files, want_alias) in cases {
            let opts = Options {
                nic_modules: nic,
                ..opts.clone()
            };
            let summary = build(&opts).unwrap();
            assert_eq!(summary.nic_modules, want_nic);
            assert_eq!(summary.nic_missing.len(), missing);
            assert!(!summary.nic_missing.contains(&"e1000".to_string()));
            assert_eq!(summary.module_files, files);
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(File::open(&opts.output).unwrap())
                .read_to_end(&mut raw)
                .unwrap();
            let entries = cpio::tests::parse(&raw);
            let get = |name: &str| entries.iter().find(|e| e.0 == name).map(|e| e.3.clone());
            assert!(get("lib/modules/6.1.0-test/kernel/drivers/net/e1000.ko").is_some());
            assert_eq!(get("etc/nbdroot/modules").unwrap(), b"nbd\nvirtio_net\n");
            let alias = get("lib/modules/6.1.0-test/modules.alias").unwrap();
            assert_eq!(
                String::from_utf8(alias).unwrap(),
                want_alias,
                "only modules in the image (vmxnet3 is not)"
            );
        }
        let err = build(&Options {
            nic_modules: "e1000,igb".parse().unwrap(),
            ..opts.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("--nic-modules: NIC module \"igb\" is neither in ")
                && err.ends_with("/lib/modules/6.1.0-test/modules.dep nor built into the kernel"),
            "{err}"
        );

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

    #[test]
    fn nic_module_sets_parse() {
        assert_eq!(
            "default".parse::<NicModules>().unwrap(),
            NicModules::Default
        );
        assert_eq!("none".parse::<NicModules>().unwrap(), NicModules::None);
        assert_eq!(
            "e1000, virtio-net,".parse::<NicModules>().unwrap(),
            NicModules::Named(vec!["e1000".into(), "virtio_net".into()])
        );
        assert_eq!(NicModules::default(), NicModules::Default);
        for bad in ["", ",", " , "] {
            let err = bad.parse::<NicModules>().unwrap_err().to_string();
            assert!(err.starts_with("--nic-modules \""), "{err}");
        }
    }
}
