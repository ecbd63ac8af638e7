//! The command-line tool: attach exports like nbd-client, build an initramfs, show a plan.

pub mod commands;
