//! nbdroot-boot(7): every boot parameter, from the table the parser is checked against
//! (`nbdroot::cmdline::params::PARAMS`), one section per [`Section`] in table order.

use clap_mangen::roff::{bold, italic, roman, Roff};

use nbdroot::cmdline::params::{Param, Section, PARAMS};

use crate::man::{self, MANUAL};
use crate::File;

/// Command lines for EXAMPLES, with what they do. Each must parse, or generation fails: the
/// page never shows an example the boot would refuse.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "root=nbd:10.0.0.1:root ip=dhcp rw",
        "The export \"root\" of the server 10.0.0.1 (port 10809), over the interface DHCP configures first.",
    ),
    (
        "root=nbd:10.0.0.1:10900:ext4:noatime ip=10.0.0.5::10.0.0.254:255.255.255.0:client:eth0:off rw",
        "Port 10900 (the server's default export), with a static address on eth0, an ext4 root mounted noatime.",
    ),
    (
        "root=nbd:10.0.0.1:root:xfs::conns=4,timeout=30 ip=dhcp",
        "Four connections, and a 30 second kernel I/O timeout.",
    ),
    (
        "root=dhcp ip=dhcp",
        "The export comes from the DHCP root-path (option 17), e.g. nbd:10.0.0.1:root:ext4.",
    ),
    (
        "nbdroot=10.0.0.1,root,nbd0 ip=dhcp",
        "Debian initramfs-tools' form: server, export (or port) and device.",
    ),
    (
        "root=nbd:10.0.0.1:root ip=dhcp rd.nbdroot.swap=nbd:10.0.0.1:swap rd.nbdroot.retries=20",
        "Swap on a second export, and more patience with a server that is still starting.",
    ),
];

pub fn page() -> Result<File, String> {
    for (line, _) in EXAMPLES {
        nbdroot::cmdline::parse(line)
            .map_err(|e| format!("nbdroot-boot(7) example {line:?}: {e}"))?;
    }
    let mut roff = Roff::new();
    roff.control(
        "TH",
        ["NBDROOT-BOOT", "7", man::NO_DATE, &man::source(), MANUAL],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "nbdroot-boot - the kernel command line of a boot from an NBD root",
    )]);

    // Command lines have few places to break: set them ragged, unhyphenated.
    roff.control("SH", ["SYNOPSIS"]);
    roff.control("na", []);
    roff.control("nh", []);
    roff.text([
        bold("root=nbd:"),
        italic("server"),
        roman(":"),
        italic("port|export"),
        roman("[:"),
        italic("fstype"),
        roman("[:"),
        italic("rootflags"),
        roman("[:"),
        italic("nbdopts"),
        roman("]]] ["),
        bold("ip="),
        italic("..."),
        roman("] ["),
        bold("rd.nbdroot."),
        italic("knob"),
        bold("="),
        italic("value"),
        roman("] ..."),
    ]);
    roff.control("ad", []);
    roff.control("hy", []);

    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "When nbdroot is the /init of an initramfs (see nbdroot-mkinitramfs(8)), it reads these \
         parameters from the kernel command line: it brings the network up, attaches the export \
         to an nbd device, mounts the root filesystem on it and switches to it. It understands \
         dracut's root=nbd:, netroot= and root=dhcp, Debian's nbdroot=, the kernel's and \
         dracut's ip=, and its own rd.nbdroot.* knobs.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "As in the kernel, the last value of a parameter wins, and everything after -- belongs \
         to init. A malformed value stops the boot with one line naming the parameter, the value \
         and the form it takes. ",
    ), bold("nbdroot plan"), roman(" shows what a command line asks for, without doing it.")]);

    let mut sections: Vec<Section> = Vec::new();
    for p in PARAMS {
        if !sections.contains(&p.section) {
            sections.push(p.section);
        }
    }
    for section in sections {
        roff.control("SH", [section.title()]);
        for p in PARAMS.iter().filter(|p| p.section == section) {
            param(&mut roff, p);
        }
    }

    roff.control("SH", ["EXAMPLES"]);
    roff.control("na", []);
    roff.control("nh", []);
    for (line, what) in EXAMPLES {
        roff.control("TP", []);
        roff.text([bold(*line)]);
        roff.text([roman(*what)]);
    }
    roff.control("ad", []);
    roff.control("hy", []);

    man::see_also_section(
        &mut roff,
        &[
            "nbdroot(8)",
            "nbdroot-plan(8)",
            "nbdroot-mkinitramfs(8)",
            "bootparam(7)",
            "dracut.cmdline(7)",
            "nbd-client(8)",
        ],
    );

    Ok(File {
        path: "man/nbdroot-boot.7".into(),
        content: man::join(&[roff.render()]).into_bytes(),
    })
}

/// A parameter as a tagged paragraph: its forms, then what it does and its default.
fn param(roff: &mut Roff, p: &Param) {
    roff.control("TP", []);
    roff.text([bold(p.form)]);
    let mut doc = p.doc.to_string();
    if !doc.ends_with('.') {
        doc.push('.');
    }
    // Capitalise the sentence: the table writes it as a help line.
    let mut chars = doc.chars();
    let doc: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    roff.text([roman(doc)]);
    if let Some(default) = p.default {
        roff.text([roman("Default: "), bold(default), roman(".")]);
    }
}
