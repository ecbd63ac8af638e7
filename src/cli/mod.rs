//! The command-line tool: attach exports like nbd-client, build an initramfs, show a plan.
//!
//! [`args`] is the grammar (clap definitions, also the source of the man pages and shell
//! completions), [`values`] parses option values, [`run`] dispatches to [`commands`].

pub mod args;
pub mod commands;
pub mod nbdtab;
pub mod run;
pub mod values;

pub use args::Cli;
