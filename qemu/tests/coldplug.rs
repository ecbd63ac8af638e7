//! Coldplug of NIC drivers: an image made with `--modules nbd` and a NIC set carries the NIC
//! drivers and a trimmed modules.alias; /init loads only the drivers of the NIC the VM has.
//!
//! Debian's cloud kernel has no e1000 (nor most physical NIC drivers), so the PCI NIC here is
//! QEMU's vmxnet3, a driver of the default set that this kernel does have.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use nbdroot::initramfs::{self, NicModules, Options, Summary};
use nbdroot::modules::{module_name, AliasTable, ModulesDep};
use nbdroot_qemu::{
    debian_cloud_kernel, nbdroot_binary, qemu_nbd, run, Kernel, RootFs, VmConfig, VmOutcome,
};

const IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off";

fn scratch(name: &str) -> nbdroot_qemu::Scratch {
    nbdroot_qemu::scratch("coldplug-tests", name)
}

fn kernel() -> Kernel {
    debian_cloud_kernel().expect("Debian cloud kernel")
}

/// An image that always loads nbd only; NIC drivers come from `nic`.
fn image(kernel: &Kernel, out: &Path, nic: NicModules) -> Summary {
    initramfs::build(&Options {
        output: out.to_path_buf(),
        kver: kernel.version.clone(),
        kmoddir: kernel.moddir.clone(),
        modules: vec!["nbd".into()],
        nic_modules: nic,
        binary: nbdroot_binary().expect("static nbdroot"),
        tls: Default::default(),
    })
    .expect("nbdroot initramfs")
}

/// The files of a gzip-compressed newc archive, by name.
fn unpack(img: &Path) -> Vec<(String, Vec<u8>)> {
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(img)
        .output()
        .expect("gzip");
    assert!(out.status.success(), "gzip -dc {}", img.display());
    let (mut buf, mut files) = (&out.stdout[..], Vec::new());
    loop {
        let field = |i: usize| {
            let hex = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).unwrap();
            usize::from_str_radix(hex, 16).unwrap()
        };
        let (size, namesize) = (field(6), field(11));
        let name = String::from_utf8(buf[110..110 + namesize - 1].to_vec()).unwrap();
        let data_at = (110 + namesize).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return files;
        }
        files.push((name, buf[data_at..data_at + size].to_vec()));
        buf = &buf[(data_at + size).next_multiple_of(4)..];
    }
}

#[test]
fn default_nic_set_for_the_debian_kernel() {
    let k = kernel();
    let dir = scratch("sets");
    let kdir = k.moddir.join(&k.version);

    // The kernel's whole alias file parses, and QEMU's virtio NIC needs two rounds: the PCI
    // device names the transport, the virtio device it creates names the driver.
    let full = AliasTable::parse(&std::fs::read_to_string(kdir.join("modules.alias")).unwrap())
        .expect("the kernel's modules.alias");
    let pci = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";
    assert_eq!(full.lookup(pci), ["virtio_pci"]);
    assert_eq!(full.lookup("virtio:d00000001v00001AF4"), ["virtio_net"]);

    let none = image(&k, &dir.join("none.img"), NicModules::None);
    let default = image(&k, &dir.join("default.img"), NicModules::Default);
    eprintln!(
        "{}: --modules nbd: --nic-modules none {} bytes ({} module files); default {} bytes ({} module files; NIC drivers {:?}; {} of {} not in this kernel: {:?})",
        k.version,
        none.bytes,
        none.module_files,
        default.bytes,
        default.module_files,
        default.nic_modules,
        default.nic_missing.len(),
        initramfs::DEFAULT_NIC_MODULES.len(),
        default.nic_missing,
    );
    for m in [
        "virtio_net",
        "virtio_pci",
        "vmxnet3",
        "hv_netvsc",
        "ena",
        "gve",
    ] {
        assert!(
            default.nic_modules.iter().any(|n| n == m),
            "{m}: {default:?}"
        );
    }
    assert_eq!(
        default.nic_modules.len() + default.nic_missing.len(),
        initramfs::DEFAULT_NIC_MODULES.len()
    );
    assert!(none.bytes < default.bytes);

    let files = unpack(&dir.join("default.img"));
    let get = |name: &str| {
        files
            .iter()
            .find(|f| f.0 == name)
            .map(|f| String::from_utf8_lossy(&f.1).into_owned())
    };
    let base = format!("lib/modules/{}", k.version);
    assert_eq!(get("etc/nbdroot/modules").as_deref(), Some("nbd\n"));
    let dep = ModulesDep::parse(&get(&format!("{base}/modules.dep")).unwrap()).unwrap();
    let alias_text = get(&format!("{base}/modules.alias")).expect("trimmed modules.alias");
    let alias = AliasTable::parse(&alias_text).unwrap();
    // Only modules in the image, every one of them with its file there.
    let named: HashSet<&str> = alias_text
        .lines()
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    for m in &named {
        let path = dep
            .path_of(m)
            .unwrap_or_else(|| panic!("{m} has aliases but is not in the image"));
        assert!(get(&format!("{base}/{path}")).is_some(), "{path}");
    }
    assert!(
        named.contains("hv_vmbus"),
        "a dependency's aliases are kept"
    );
    assert_eq!(alias.lookup(pci), ["virtio_pci"]);
    // Mellanox drivers are not in the default set (about 1 MB).
    let cx3 = "pci:v000015B3d00001003sv000015B3sd00000006bc02sc00i00";
    assert!(alias.lookup(cx3).is_empty());
    assert!(
        alias_text.lines().count() < 200,
        "{} alias lines",
        alias_text.lines().count()
    );
    let in_image: HashSet<String> = files
        .iter()
        .filter(|f| f.0.ends_with(".ko"))
        .map(|f| module_name(&f.0))
        .collect();
    assert!(!in_image.contains("virtio_blk"), "nothing beyond the set");
    assert!(
        unpack(&dir.join("none.img"))
            .iter()
            .all(|f| !f.0.ends_with("modules.alias")),
        "no NIC set, no alias file"
    );
}

/// Boots with `--modules nbd` and the default NIC set on a VM whose NIC is `nic`, with a root
/// that reports the loaded modules; checks the root came up over /dev/nbd0.
fn boot_with_nic(name: &str, nic: &str) -> (VmOutcome, Vec<String>) {
    let k = kernel();
    let dir = scratch(name);
    let initrd = dir.join("initrd.img");
    image(&k, &initrd, NicModules::Default);

    let mut root = RootFs::new(dir.join("root")).expect("stage root");
    root.add_probe_step(
        r#"echo "NBDROOT-MODULES $($bb cut -d' ' -f1 /proc/modules | $bb tr '\n' ' ')""#,
    );
    let img = dir.join("root.ext4");
    root.build_ext4(&img, 32, None).expect("mkfs.ext4");
    let server = qemu_nbd(&img, None, false).expect("qemu-nbd");

    let mut cfg = VmConfig::new(&k.vmlinuz, &initrd);
    cfg.nic = nic.to_string();
    cfg.append = format!("root=nbd:10.0.2.2:{} {IP} rw", server.port);
    let out = run(&cfg).expect("run QEMU");
    drop(server);
    assert!(!out.timed_out, "the guest hung until the deadline:\n{out}");
    let root = out.lines_with("NBDROOT-MOUNT /dev/nbd0 / ");
    assert!(
        root.first().is_some_and(|r| r.starts_with("ext4 rw")),
        "the root is /dev/nbd0 over a {nic} NIC:\n{out}"
    );
    let modules = out
        .lines_with("NBDROOT-MODULES ")
        .first()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_else(|| panic!("no module list:\n{out}"));
    (out, modules)
}

#[test]
fn vmxnet3_nic_gets_its_driver_and_nothing_else() {
    let (out, modules) = boot_with_nic("vmxnet3", "vmxnet3");
    let has = |m: &str| modules.iter().any(|l| l == m);
    assert!(has("vmxnet3"), "vmxnet3 loaded: {modules:?}\n{out}");
    for absent in ["virtio_net", "virtio_pci", "hv_netvsc", "ena", "mlx5_core"] {
        assert!(!has(absent), "{absent} not loaded: {modules:?}");
    }
}

#[test]
fn virtio_nic_gets_its_transport_then_its_driver() {
    let (out, modules) = boot_with_nic("virtio", "virtio-net-pci");
    let has = |m: &str| modules.iter().any(|l| l == m);
    assert!(
        has("virtio_pci") && has("virtio_net"),
        "virtio_pci and virtio_net loaded: {modules:?}\n{out}"
    );
    assert!(!has("vmxnet3"), "{modules:?}");
}
