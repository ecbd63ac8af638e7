//! The host side of the LVM-on-LUKS Debian boot: an ext4 image layered into LUKS2 and LVM
//! without device-mapper, and read back the same way.

use std::process::Command;

use nbdroot_qemu::luks_lvm::{build, open, Layout};
use nbdroot_qemu::{debugfs_cat, e2fsck_clean, scratch, RootFs};

#[test]
fn an_ext4_image_layered_into_lvm_on_luks_reads_back() {
    let dir = scratch("luks-lvm", "round-trip");
    let mut fs = RootFs::new(dir.join("tree")).unwrap();
    fs.add_file("etc/marker", "plain text marker 5d1c\n", 0o644)
        .unwrap();
    let ext4 = fs.build_ext4(&dir.join("fs.ext4"), 64, None).unwrap().path;
    let layout = Layout {
        luks_uuid: "0b9c7f3e-5a41-4d0e-9c61-2f9d4e8a7b10".into(),
        key: b"a test key, not a secret".to_vec(),
        vg: format!("nbdt{}", std::process::id()),
        lv: "root".into(),
    };
    let image = dir.join("layered.img");
    build(&ext4, &image, &layout, &dir).unwrap();

    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&image)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("Version:       \t2"), "{dump}");
    assert!(dump.contains(&layout.luks_uuid), "{dump}");
    assert!(dump.contains("Iterations: 1000"), "{dump}");
    // Encrypted: neither the file's text nor LVM's label is readable in the image.
    let bytes = std::fs::read(&image).unwrap();
    for plain in [&b"plain text marker"[..], b"LABELONE", layout.vg.as_bytes()] {
        assert!(
            !bytes.windows(plain.len()).any(|w| w == plain),
            "{:?} is in the clear",
            String::from_utf8_lossy(plain)
        );
    }
    drop(bytes);
    // The host's LVM keeps nothing of the VG.
    assert!(!std::path::Path::new("/etc/lvm/backup")
        .join(&layout.vg)
        .exists());

    let lv = open(&image, &dir.join("plain.img"), &layout, &dir).unwrap();
    e2fsck_clean(lv.path()).unwrap();
    assert_eq!(
        debugfs_cat(lv.path(), "/etc/marker").unwrap(),
        b"plain text marker 5d1c\n"
    );
    let dev = lv.path().to_path_buf();
    drop(lv);
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.lines().any(|l| l.contains(dir.to_str().unwrap())),
        "loop devices left behind ({}):\n{loops}",
        dev.display()
    );

    // A wrong key is refused with cryptsetup's reason.
    let wrong = Layout {
        key: b"wrong".to_vec(),
        ..layout.clone()
    };
    let err = open(&image, &dir.join("plain2.img"), &wrong, &dir)
        .err()
        .expect("a wrong key opens nothing")
        .to_string();
    assert!(
        err.contains("No key available with this passphrase"),
        "{err}"
    );
}
