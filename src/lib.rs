//! nbdroot: boot Linux from a root filesystem served over NBD.
//!
//! The boot is a pipeline, and the modules follow it (ARCHITECTURE.md has the whole map):
//!
//! 1. [`cmdline`]: the kernel command line → a [`plan::BootPlan`] (pure grammar);
//! 2. [`plan`]: the plan itself, and how it is shown to people (`nbdroot plan`);
//! 3. [`net`]: links, static addresses, DHCP, routes and DNS;
//! 4. [`connect`] over [`proto`]: reaching the server and negotiating the export;
//! 5. [`kernel`]: handing the sockets to the nbd driver (netlink or ioctls);
//! 6. [`mount`]: finding the root filesystem on the device and mounting it;
//! 7. [`switch_root`]: moving the API filesystems, emptying the initramfs, exec'ing init.
//!
//! [`boot`] runs that pipeline as PID 1. Beside it: [`supervise`] (the `@nbdroot` process that
//! replaces dead connections after the switch), [`swap`], [`initramfs`] (the image builder) and
//! [`cli`] (the command-line tool, like nbd-client). Underneath: [`settings`] (every tunable and
//! its default), [`address`] (how users write a server), [`netlink`] (a small netlink codec),
//! [`modules`] (kernel module loading and coldplug), [`blkid`] (filesystem superblocks),
//! [`logger`] and [`text`] (counts and durations in words).
//!
//! The userspace NBD client is also a library: [`proto::Client`] ([`proto::Client::connect`],
//! then read, write with or without FUA, flush, trim, write zeroes, disconnect).
//!
//! Pure logic (grammar, protocol, codecs, state machines) lives apart from the code that makes
//! syscalls, and is tested without a VM.

pub mod cmdline;
pub mod plan;

pub mod net;

pub mod connect;
pub mod proto;
pub mod replica;

pub mod kernel;

pub mod mount;

pub mod switch_root;

pub mod boot;
pub mod hooks;

pub mod cli;
pub mod initramfs;
pub mod supervise;
pub mod swap;

pub mod address;
pub mod blkid;
pub mod dial;
pub mod logger;
pub mod modules;
pub mod netlink;
pub mod settings;
pub mod text;
pub mod tls;
