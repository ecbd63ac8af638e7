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

/// Whether `word` names one of the tool's subcommands (hidden ones included), for the argv
/// forms recognised before clap (`src/hooks/entry.rs`).
pub fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
}
