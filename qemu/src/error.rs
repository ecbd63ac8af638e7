//! The harness's one error type: every variant names the step that failed and the value it
//! failed on, because a VM test failure is read by someone who did not watch it run.

use std::fmt::{self, Display};
use std::io;
use std::process::ExitStatus;

/// Everything that can go wrong while preparing or running a VM test.
#[derive(thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `step` says what we were doing, and to what.
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: io::Error,
    },
    /// An external tool (apt-get, mkfs.ext4, qemu-nbd, ...) ran but reported failure.
    #[error("{step}: `{command}` exited with {status}\n{output}")]
    Command {
        step: String,
        command: String,
        status: ExitStatus,
        output: String,
    },
    /// A tool succeeded but its result is not what the harness needs.
    #[error("{step}: {detail}")]
    Unexpected { step: String, detail: String },
}

/// Debug shows the message: tests `.expect()` harness results, and the panic should read as
/// the step that failed, not as a struct dump.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Result with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Unexpected`].
    pub fn unexpected(step: impl Display, detail: impl Display) -> Self {
        Error::Unexpected {
            step: step.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Attaches the step description to an `io::Result`, lazily so the happy path formats nothing.
pub trait Context<T> {
    /// Wraps the error as [`Error::Io`] with `step()` as its description.
    fn step<S: Display>(self, step: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn step<S: Display>(self, step: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Io {
            step: step().to_string(),
            source,
        })
    }
}
