//! `modules.dep`: which file holds a module, and the order that loads its dependencies first.

use std::collections::{HashMap, HashSet};

/// A missing or malformed module dependency entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepError {
    #[error(
        "modules.dep line {line}: expected \"<path>: [<dependency path> ...]\", found {text:?}"
    )]
    Malformed { line: usize, text: String },
    #[error("module \"{0}\" is neither in modules.dep nor built into the kernel")]
    Unknown(String),
}

/// A module's canonical name from its path: `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net`.
/// Dashes and underscores are interchangeable in module names; the kernel uses underscores.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The parsed dependency table.
#[derive(Debug, Default, Clone)]
pub struct ModulesDep {
    /// Module name → (path relative to the module directory, dependency paths).
    entries: HashMap<String, (String, Vec<String>)>,
}

impl ModulesDep {
    pub fn parse(text: &str) -> Result<Self, DepError> {
        let mut entries = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line.split_once(':').ok_or_else(|| DepError::Malformed {
                line: i + 1,
                text: raw.to_string(),
            })?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(module_name(path), (path.trim().to_string(), deps));
        }
        Ok(Self { entries })
    }

    /// The file of a module, relative to the module directory.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.entries
            .get(&name.replace('-', "_"))
            .map(|(p, _)| p.as_str())
    }

    /// Paths of `names` and everything they depend on, each dependency before its users and
    /// every module once. Names in `builtin` are skipped; any other unknown name is an error.
    pub fn load_order<S: AsRef<str>>(
        &self,
        names: &[S],
        builtin: &HashSet<String>,
    ) -> Result<Vec<String>, DepError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let name = name.as_ref().replace('-', "_");
            if self.entries.contains_key(&name) {
                self.visit(&name, &mut seen, &mut order);
            } else if !builtin.contains(&name) {
                return Err(DepError::Unknown(name));
            }
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.entries.get(name) else {
            return;
        };
        for dep in deps {
            self.visit(&module_name(dep), seen, order);
        }
        order.push(path.clone());
    }

    /// A modules.dep holding only `paths` (as produced by [`Self::load_order`]).
    pub fn render_subset(&self, paths: &[String]) -> String {
        let mut out = String::new();
        for path in paths {
            if let Some((_, deps)) = self.entries.get(&module_name(path)) {
                out.push_str(path);
                out.push(':');
                for dep in deps {
                    out.push(' ');
                    out.push_str(dep);
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Names listed in `modules.builtin` (one path per line).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/nbd.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko: kernel/drivers/virtio/virtio.ko
kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko.xz
kernel/lib/libcrc32c.ko.xz:
";

    fn pos(order: &[String], name: &str) -> usize {
        order.iter().position(|p| module_name(p) == name).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/fs/xfs/xfs.ko.xz"), "xfs");
        assert_eq!(module_name("a/b/snd-hda-intel.ko"), "snd_hda_intel");
        assert_eq!(module_name("virtio_net"), "virtio_net");
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let dep = ModulesDep::parse(DEP).unwrap();
        let builtin = parse_builtin("kernel/fs/ext4/ext4.ko\n");
        let order = dep
            .load_order(
                &["virtio_net", "virtio-pci", "nbd", "ext4", "xfs"],
                &builtin,
            )
            .unwrap();
        assert_eq!(order.len(), 11);
        let unique: HashSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len());
        for (before, after) in [
            ("virtio_ring", "virtio_net"),
            ("failover", "net_failover"),
            ("net_failover", "virtio_net"),
            ("virtio", "virtio_pci_modern_dev"),
            ("virtio_pci_modern_dev", "virtio_pci"),
            ("libcrc32c", "xfs"),
        ] {
            assert!(
                pos(&order, before) < pos(&order, after),
                "{before} before {after}: {order:?}"
            );
        }
        let subset = dep.render_subset(&order);
        let reparsed = ModulesDep::parse(&subset).unwrap();
        assert_eq!(
            reparsed
                .load_order(&["virtio_net"], &builtin)
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn errors() {
        let dep = ModulesDep::parse(DEP).unwrap();
        assert_eq!(
            dep.load_order(&["e1000e"], &HashSet::new()),
            Err(DepError::Unknown("e1000e".into()))
        );
        assert!(matches!(
            ModulesDep::parse("a.ko: b.ko\njunk line\n"),
            Err(DepError::Malformed { line: 2, .. })
        ));
    }
}
