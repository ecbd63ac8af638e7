//! Every boot parameter nbdroot reads, with its form, default and meaning: the source of the
//! nbdroot-boot(7) man page, and what an unknown `rd.nbdroot.*` name is checked against.

/// Which table of the documentation a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Where the root is and how to mount it.
    Root,
    /// The network.
    Network,
    /// nbdroot's own `rd.nbdroot.*` knobs.
    Knobs,
}

/// One boot parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The name before `=` (`root`, `rd.nbdroot.timeout`).
    pub name: &'static str,
    /// The forms it takes, as written on the command line.
    pub form: &'static str,
    /// The default, when there is one.
    pub default: Option<&'static str>,
    /// What it does, in a sentence or two.
    pub doc: &'static str,
    pub section: Section,
}

/// The table, in documentation order.
pub const PARAMS: &[Param] = &[Param {
    name: "rd.nbdroot.timeout",
    form: "rd.nbdroot.timeout=<s>",
    default: Some("10"),
    doc: "bound on one attempt to reach the server (TCP connect, then the handshake)",
    section: Section::Knobs,
}];
