//! Running external tools: one place that turns "the tool failed" into an error carrying the
//! command line and the tail of its output.

use std::process::{Command, Output};

use crate::error::{Context, Error, Result};

/// How much of each of a failing tool's stdout and stderr goes into the error message.
const OUTPUT_TAIL: usize = 3000;

/// Renders a command as a shell-like line for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion, capturing stdout and stderr; a non-zero exit is an error that
/// carries the end of both.
pub fn run(step: &str, cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .output()
        .step(|| format!("{step}: start `{}`", describe(cmd)))?;
    if !output.status.success() {
        return Err(Error::Command {
            step: step.to_string(),
            command: describe(cmd),
            status: output.status,
            output: format!("{}{}", tail(&output.stdout), tail(&output.stderr)),
        });
    }
    Ok(output)
}

/// The end of a tool's output, where its error message usually is.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(OUTPUT_TAIL)..]);
    text.into_owned()
}
