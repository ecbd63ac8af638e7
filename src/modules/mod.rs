//! Kernel modules: dependency resolution (pure) and loading (a syscall).

pub mod alias;
pub mod coldplug;
pub mod dep;
pub mod load;

pub use alias::{AliasError, AliasTable};
pub use coldplug::{coldplug, ColdplugError};
pub use dep::{module_name, parse_builtin, DepError, ModulesDep};
pub use load::{load_module, LoadError};

/// Where an initramfs made by `nbdroot mkinitramfs` lists the modules `/init` loads.
pub const INITRAMFS_MODULE_LIST: &str = "etc/nbdroot/modules";
