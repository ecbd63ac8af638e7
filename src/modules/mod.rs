//! Kernel modules: dependency resolution (pure) and loading (a syscall).

pub mod dep;
pub mod load;

pub use dep::{module_name, parse_builtin, DepError, ModulesDep};
pub use load::{load_module, LoadError};

/// Where an initramfs made by `nbdroot mkinitramfs` lists the modules `/init` loads.
pub const INITRAMFS_MODULE_LIST: &str = "etc/nbdroot/modules";
