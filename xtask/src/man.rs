//! nbdroot(8) and one page per command, nbdroot-<command>(8), rendered by clap_mangen from
//! the clap definitions. The examples and exit codes that end each command's help become the
//! page's EXAMPLES and EXIT STATUS sections; SEE ALSO links the pages.

use std::io;

use clap::{Command, CommandFactory};
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use nbdroot::cli::{nbdtab, Cli};

use crate::File;

/// System administration: the commands need root, or run as /init.
const SECTION: &str = "8";
pub const MANUAL: &str = "nbdroot manual";
/// An empty date argument of `.TH`, quoted: the roff crate writes an empty argument as
/// nothing, which would shift the source and manual into its place.
pub const NO_DATE: &str = "\"\"";

/// `nbdroot <version>`, for the page footers; no date, so every run writes the same bytes.
pub fn source() -> String {
    format!(
        "nbdroot {}",
        Cli::command().get_version().unwrap_or_default()
    )
}

/// Every page: nbdroot.8, then nbdroot-<command>.8 for each command users see.
pub fn pages() -> Result<Vec<File>, String> {
    // The help subcommand is clap's: it would be listed, with no page of its own.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut files = vec![page(&cli)?];
    for cmd in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        files.push(page(cmd)?);
    }
    Ok(files)
}

fn page(cmd: &Command) -> Result<File, String> {
    // "nbdroot" or "nbdroot-connect", as clap names a built subcommand.
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .date(NO_DATE)
        .source(source())
        .manual(MANUAL);
    let mut sections = vec![
        rendered(|w| man.render_title(w)),
        rendered(|w| man.render_name_section(w)),
        rendered(|w| man.render_synopsis_section(w)),
        rendered(|w| man.render_description_section(w)),
    ];
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        sections.push(rendered(|w| man.render_options_section(w)));
    }
    if cmd.get_subcommands().any(|c| !c.is_hide_set()) {
        sections.push(rendered(|w| man.render_subcommands_section(w)));
    }
    let after_help = cmd.get_after_help().map(|h| h.to_string());
    let mut roff = Roff::new();
    after_help_sections(&mut roff, after_help.as_deref().unwrap_or_default())
        .map_err(|e| format!("{name}: {e}"))?;
    if name == "nbdroot-connect" {
        nbdtab_section(&mut roff);
    }
    see_also(&mut roff, &name);
    sections.push(roff.render());
    Ok(File {
        path: format!("man/{name}.{SECTION}"),
        content: join(&sections).into_bytes(),
    })
}

/// One piece of a page, as clap_mangen writes it.
fn rendered(render: impl FnOnce(&mut dyn io::Write) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    render(&mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("roff output of UTF-8 text is UTF-8")
}

/// The pieces as one page: each starts with the roff crate's preamble (it defines the
/// apostrophe string), which the page needs once.
pub fn join(pieces: &[String]) -> String {
    let preamble = Roff::new().render();
    let mut page = preamble.clone();
    for piece in pieces {
        page.push_str(piece.strip_prefix(&preamble).unwrap_or(piece));
    }
    page
}

/// The paragraphs after the options in a command's help: `Examples:` with indented command
/// lines, and `Exit status:` with `<code>  <meaning>` lines or a sentence.
fn after_help_sections(roff: &mut Roff, text: &str) -> Result<(), String> {
    for paragraph in text.split("\n\n") {
        let (first, rest) = paragraph.split_once('\n').unwrap_or((paragraph, ""));
        if first == "Examples:" {
            roff.control("SH", ["EXAMPLES"]);
            roff.control("RS", ["4"]);
            roff.control("nf", []);
            for line in rest.lines() {
                roff.text([roman(line.strip_prefix("  ").unwrap_or(line))]);
            }
            roff.control("fi", []);
            roff.control("RE", []);
        } else if first == "Exit status:" {
            roff.control("SH", ["EXIT STATUS"]);
            for line in rest.lines() {
                let (code, meaning) = line.trim().split_once("  ").ok_or_else(|| {
                    format!("exit status line {line:?}: expected <code>  <meaning>")
                })?;
                roff.control("TP", []);
                roff.text([bold(code)]);
                roff.text([roman(meaning.trim())]);
            }
        } else if let Some(sentence) = first.strip_prefix("Exit status: ") {
            roff.control("SH", ["EXIT STATUS"]);
            roff.text([roman(sentence)]);
            for line in rest.lines() {
                roff.text([roman(line)]);
            }
        } else {
            return Err(format!(
                "help paragraph {first:?}: expected \"Examples:\" or \"Exit status\""
            ));
        }
    }
    Ok(())
}

/// FILES: /etc/nbdtab, nbd-client's table, as `connect nbdN` reads it (nbdtab(5)).
fn nbdtab_section(roff: &mut Roff) {
    roff.control("SH", ["FILES"]);
    roff.control("TP", []);
    roff.text([bold(nbdtab::PATH)]);
    roff.text([roman(
        "Read by connect given only a device (nbdN or /dev/nbdN), in nbd-client's format \
         (nbdtab(5)): one entry a line, ",
    )]);
    roff.text([italic(nbdtab::FORM)]);
    roff.text([roman(
        ", fields separated by spaces or tabs, options by commas, # to the end of a line a \
         comment. --nbdtab or $NBDROOT_NBDTAB name another file. The options:",
    )]);
    roff.control("RS", []);
    for (option, meaning) in nbdtab::OPTIONS {
        roff.control("TP", []);
        roff.text([bold(*option)]);
        roff.text([roman(*meaning)]);
    }
    roff.control("RE", []);
}

/// Related pages: nbdroot's own, then the tools each command stands in for.
fn see_also(roff: &mut Roff, page: &str) {
    let related: &[&str] = match page {
        "nbdroot" => &[
            "nbdroot-boot(7)",
            "nbd-client(8)",
            "nbdinfo(1)",
            "nbd-server(1)",
        ],
        "nbdroot-connect" => &[
            "nbdroot-disconnect(8)",
            "nbdroot-check(8)",
            "nbdroot-status(8)",
            "nbd-client(8)",
            "nbdtab(5)",
        ],
        "nbdroot-disconnect" | "nbdroot-check" => &["nbdroot-connect(8)", "nbd-client(8)"],
        "nbdroot-list" => &["nbdroot-info(8)", "nbdinfo(1)"],
        "nbdroot-info" => &["nbdroot-list(8)", "nbdinfo(1)"],
        "nbdroot-mkinitramfs" | "nbdroot-boot" => &["nbdroot-boot(7)", "nbdroot-plan(8)"],
        "nbdroot-plan" => &["nbdroot-boot(7)"],
        "nbdroot-status" => &["nbdroot-connect(8)"],
        _ => &[],
    };
    let pages = if page == "nbdroot" {
        related.to_vec()
    } else {
        [&["nbdroot(8)"], related].concat()
    };
    see_also_section(roff, &pages);
}

/// SEE ALSO: `name(section)` references, the names in bold, separated by commas; set ragged
/// and unhyphenated, so no name is split.
pub fn see_also_section(roff: &mut Roff, pages: &[&str]) {
    let mut refs: Vec<Inline> = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let (name, section) = page.split_once('(').expect("name(section)");
        refs.push(bold(name));
        let sep = if i + 1 < pages.len() { ", " } else { "" };
        refs.push(roman(format!("({section}{sep}")));
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.control("na", []);
    roff.control("nh", []);
    roff.text(refs);
    roff.control("ad", []);
    roff.control("hy", []);
}
