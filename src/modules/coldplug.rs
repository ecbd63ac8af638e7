//! Coldplug without udev: load the drivers of the devices already present, found by matching
//! each device's modalias in sysfs against `modules.alias`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::alias::{AliasError, AliasTable};
use super::dep::{module_name, parse_builtin, DepError, ModulesDep};
use super::load::{load_module, LoadError};

#[derive(Debug, thiserror::Error)]
pub enum ColdplugError {
    #[error("coldplug: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("coldplug: {path}: {source}")]
    Alias { path: PathBuf, source: AliasError },
    #[error("coldplug: {path}: {source}")]
    Dep { path: PathBuf, source: DepError },
}

/// A loaded driver can create devices of its own (virtio_pci the virtio devices that
/// virtio_net drives, hv_vmbus the vmbus ones), so the scan repeats until nothing new loads.
const MAX_ROUNDS: usize = 4;

/// The modalias of every device under `<sysfs>/bus/*/devices/*`, sorted, each once.
pub fn device_modaliases(sysfs: &Path) -> Vec<String> {
    // Plain loops: iterator chains over ReadDir cost kilobytes in the static binary.
    let mut out = Vec::new();
    let Ok(buses) = fs::read_dir(sysfs.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(m) = fs::read_to_string(dev.path().join("modalias")) {
                if !m.trim().is_empty() {
                    out.push(m.trim().to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The modules that drive any of `modaliases`, each once, in first-match order.
pub fn modules_for_devices(aliases: &AliasTable, modaliases: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in modaliases.iter().flat_map(|m| aliases.lookup(m)) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Loads the modules that drive the devices present, with their dependencies, using
/// `<moddir>/modules.alias` (absent: nothing to do) and `<moddir>/modules.dep`. Modules already
/// in /sys/module are skipped. Returns the names loaded, dependencies included.
///
/// A module that fails to load is reported and skipped: a driver failing for one device must
/// not stop the boot when another interface can carry it.
pub fn coldplug(moddir: &Path) -> Result<Vec<String>, ColdplugError> {
    coldplug_in(moddir, Path::new("/sys"), &mut |p| load_module(p))
}

fn coldplug_in(
    moddir: &Path,
    sysfs: &Path,
    load: &mut dyn FnMut(&Path) -> Result<(), LoadError>,
) -> Result<Vec<String>, ColdplugError> {
    let read = |path: PathBuf| {
        fs::read_to_string(&path).map_err(|source| ColdplugError::Read { path, source })
    };
    let alias_path = moddir.join("modules.alias");
    let aliases = match read(alias_path.clone()) {
        Ok(text) => AliasTable::parse(&text).map_err(|source| ColdplugError::Alias {
            path: alias_path,
            source,
        })?,
        Err(ColdplugError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    if aliases.is_empty() {
        return Ok(Vec::new());
    }
    let dep_path = moddir.join("modules.dep");
    let dep_err = |source| ColdplugError::Dep {
        path: dep_path.clone(),
        source,
    };
    let dep = ModulesDep::parse(&read(dep_path.clone())?).map_err(dep_err)?;
    let builtin = read(moddir.join("modules.builtin"))
        .map(|t| parse_builtin(&t))
        .unwrap_or_default();
    let is_loaded = |name: &str| sysfs.join("module").join(name).exists();

    let mut loaded = Vec::new();
    let mut tried = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let wanted: Vec<String> = modules_for_devices(&aliases, &device_modaliases(sysfs))
            .into_iter()
            .filter(|m| !tried.contains(m) && !is_loaded(m) && dep.path_of(m).is_some())
            .collect();
        if wanted.is_empty() {
            break;
        }
        tried.extend_from_slice(&wanted);
        for path in dep.load_order(&wanted, &builtin).map_err(dep_err)? {
            let name = module_name(&path);
            if is_loaded(&name) {
                continue;
            }
            match load(&moddir.join(&path)) {
                Ok(()) => loaded.push(name),
                Err(e) => log::warn!("coldplug: {e}"),
            }
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRTIO_PCI: &str = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";
    const VMXNET3: &str = "pci:v000015ADd000007B0sv000015ADsd000007B0bc02sc00i00";

    fn tree(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nbdroot-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn device(sys: &Path, bus: &str, dev: &str, modalias: Option<&str>) {
        let d = sys.join("bus").join(bus).join("devices").join(dev);
        fs::create_dir_all(&d).unwrap();
        if let Some(m) = modalias {
            fs::write(d.join("modalias"), format!("{m}\n")).unwrap();
        }
    }

    #[test]
    fn modaliases_from_a_fake_sysfs() {
        let sys = tree("coldplug-sysfs");
        device(&sys, "pci", "0000:00:03.0", Some(VIRTIO_PCI));
        device(&sys, "pci", "0000:00:04.0", Some(VMXNET3));
        device(&sys, "pci", "0000:00:05.0", Some(VMXNET3));
        device(&sys, "platform", "serial8250", None);
        device(&sys, "virtio", "virtio0", Some("virtio:d00000001v00001AF4"));
        let found = device_modaliases(&sys);
        assert_eq!(
            found,
            [VMXNET3, VIRTIO_PCI, "virtio:d00000001v00001AF4"],
            "sorted, each once, devices without modalias ignored"
        );
        let aliases = AliasTable::parse(
            "alias virtio:d00000001v* virtio_net\nalias pci:v000015ADd000007B0sv*sd*bc*sc*i* vmxnet3\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n",
        )
        .unwrap();
        assert_eq!(
            modules_for_devices(&aliases, &found),
            ["vmxnet3", "virtio_pci", "virtio_net"]
        );
        assert!(device_modaliases(&sys.join("missing")).is_empty());
        fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn loads_drivers_with_dependencies_in_rounds() {
        let dir = tree("coldplug-load");
        let (sys, moddir) = (dir.join("sys"), dir.join("lib/modules/6.1.0-test"));
        fs::create_dir_all(sys.join("module/virtio_ring")).unwrap();
        fs::create_dir_all(&moddir).unwrap();
        device(&sys, "pci", "0000:00:03.0", Some(VIRTIO_PCI));
        device(&sys, "pci", "0000:00:04.0", Some(VMXNET3));
        device(&sys, "pci", "0000:00:00.0", Some("pci:v00008086d00001237"));
        fs::write(
            moddir.join("modules.dep"),
            "kernel/virtio_pci.ko: kernel/virtio.ko kernel/virtio_ring.ko\nkernel/virtio.ko:\nkernel/virtio_ring.ko:\n\
             kernel/virtio_net.ko: kernel/failover.ko kernel/virtio.ko\nkernel/failover.ko:\nkernel/vmxnet3.ko:\n",
        )
        .unwrap();
        fs::write(
            moddir.join("modules.alias"),
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\nalias virtio:d00000001v* virtio_net\nalias pci:v000015ADd000007B0sv*sd*bc*sc*i* vmxnet3\n",
        )
        .unwrap();

        // The fake kernel: loading registers the module, virtio_pci adds its virtio device,
        // and vmxnet3 fails the way a real load can.
        let mut calls = Vec::new();
        let mut load = |path: &Path| {
            let name = module_name(&path.to_string_lossy());
            calls.push(name.clone());
            if name == "vmxnet3" {
                return Err(LoadError::Load {
                    path: path.into(),
                    source: io::Error::from_raw_os_error(libc::ENODEV),
                });
            }
            fs::create_dir_all(sys.join("module").join(&name)).unwrap();
            if name == "virtio_pci" {
                device(&sys, "virtio", "virtio0", Some("virtio:d00000001v00001AF4"));
            }
            Ok(())
        };
        let loaded = coldplug_in(&moddir, &sys, &mut load).unwrap();
        assert_eq!(
            loaded,
            ["virtio", "virtio_pci", "failover", "virtio_net"],
            "virtio_ring was loaded already; vmxnet3 failed"
        );
        assert_eq!(
            calls,
            ["vmxnet3", "virtio", "virtio_pci", "failover", "virtio_net"],
            "a failed module is tried once"
        );

        // Everything present is loaded now: a second pass does nothing.
        let mut none = |p: &Path| panic!("unexpected load of {}", p.display());
        let again = coldplug_in(&moddir, &sys, &mut |p| {
            if p.ends_with("vmxnet3.ko") {
                Ok(())
            } else {
                none(p)
            }
        })
        .unwrap();
        assert_eq!(again, ["vmxnet3"]);

        // No modules.alias: nothing to do; a broken one names the file and line.
        assert!(coldplug_in(&dir, &sys, &mut none).unwrap().is_empty());
        fs::write(moddir.join("modules.alias"), "alias broken\n").unwrap();
        let err = coldplug_in(&moddir, &sys, &mut none)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("modules.alias: modules.alias line 1: expected"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
