//! `modules.alias`: which modules drive a device, from the device's modalias (pure).
//!
//! Each line is `alias <pattern> <module>`; a device's modalias (e.g.
//! `pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00`) selects every module with a
//! pattern that matches it as a shell glob.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("modules.alias line {line}: expected \"alias <pattern> <module>\", found {text:?}")]
    Malformed { line: usize, text: String },
}

/// The parsed alias table, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AliasTable {
    /// (pattern, module name with underscores)
    entries: Vec<(String, String)>,
}

impl AliasTable {
    pub fn parse(text: &str) -> Result<Self, AliasError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => {
                    entries.push((pattern.to_string(), module.replace('-', "_")))
                }
                _ => {
                    return Err(AliasError::Malformed {
                        line: i + 1,
                        text: raw.to_string(),
                    })
                }
            }
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The modules whose patterns match `modalias`, each once, in file order.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.entries {
            if !out.contains(module) && fnmatch(pattern, modalias) {
                out.push(module.clone());
            }
        }
        out
    }

    /// The patterns that name `module`, in file order.
    pub fn patterns_of<'a>(&'a self, module: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.1 == module)
            .map(|e| e.0.as_str())
    }

    /// A modules.alias holding only the lines of `modules` (names with underscores).
    pub fn render_subset(&self, modules: &HashSet<String>) -> String {
        let mut out = String::new();
        for (pattern, module) in self.entries.iter().filter(|e| modules.contains(&e.1)) {
            out.push_str(&format!("alias {pattern} {module}\n"));
        }
        out
    }
}

/// Shell-glob matching as fnmatch(3) without flags: `*` any run, `?` one character,
/// `[a-z]` / `[!a-z]` / `[^a-z]` classes, `\x` a literal x. Bytes, not characters:
/// modaliases are ASCII.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let (pat, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it covers up to).
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if pat.get(p) == Some(&b'*') {
            p += 1;
            resume = Some((p, t));
            continue;
        }
        if let Some(n) = pat.get(p..).and_then(|rest| step(rest, text[t])) {
            p += n;
            t += 1;
            continue;
        }
        // Mismatch: let the last `*` swallow one more character, or fail without one.
        // Resuming only from the last star is enough: an earlier star can never help more.
        let Some((rp, rt)) = resume else {
            return false;
        };
        p = rp;
        t = rt + 1;
        resume = Some((rp, rt + 1));
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// How many pattern bytes one text byte `c` consumes at the start of `pat`, if it matches.
fn step(pat: &[u8], c: u8) -> Option<usize> {
    match *pat.first()? {
        b'?' => Some(1),
        b'[' => match class(pat, c) {
            Some((hit, len)) => hit.then_some(len),
            // An unclosed `[` is an ordinary character, as in fnmatch.
            None => (c == b'[').then_some(1),
        },
        b'\\' if pat.len() > 1 => (pat[1] == c).then_some(2),
        x => (x == c).then_some(1),
    }
}

/// A `[...]` class at the start of `pat`: whether `c` is in it and the class's length, or
/// `None` when there is no closing `]`. A `]` right after `[` or `[!` is a member.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let (mut hit, first) = (false, i);
    loop {
        let lo = *pat.get(i)?;
        if lo == b']' && i > first {
            return Some((hit != negate, i + 1));
        }
        match (pat.get(i + 1), pat.get(i + 2)) {
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                hit |= (lo..=hi).contains(&c);
                i += 3;
            }
            _ => {
                hit |= lo == c;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines from Debian's 6.1 cloud kernel (6.1.0-56-cloud-amd64) modules.alias.
    const REAL: &str = "\
# Aliases extracted from modules themselves.
alias fs-xfs xfs
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias pci:v00001D0Fd0000EC20sv*sd*bc*sc*i* ena
alias pci:v00001AE0d00000042sv*sd*bc*sc*i* gve
alias auxiliary:mlx5_core.eth mlx5_core
alias pci:v000015B3d00001017sv*sd*bc*sc*i* mlx5_core
alias pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_core
alias virtio:d00000001v* virtio_net
alias pci:v000015ADd000007B0sv*sd*bc*sc*i* vmxnet3
alias vmbus:635161f83edfc546913ff2d2f965ed0e hv_netvsc
alias acpi*:VMBus:* hv_vmbus
alias acpi*:VMBUS:* hv_vmbus
";

    #[test]
    fn real_devices_find_their_drivers() {
        let t = AliasTable::parse(REAL).unwrap();
        let cases: [(&str, &[&str]); 9] = [
            // QEMU's virtio-net-pci (transitional) and virtio-blk: the transport only.
            (
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                &["virtio_pci"],
            ),
            // The virtio device virtio_pci then creates.
            ("virtio:d00000001v00001AF4", &["virtio_net"]),
            ("virtio:d00000002v00001AF4", &["virtio_blk"]),
            (
                "pci:v000015ADd000007B0sv000015ADsd000007B0bc02sc00i00",
                &["vmxnet3"],
            ),
            (
                "pci:v000015B3d00001018sv000015B3sd00000000bc02sc00i00",
                &["mlx5_core"],
            ),
            ("auxiliary:mlx5_core.eth", &["mlx5_core"]),
            ("acpi:VMBUS:", &["hv_vmbus"]),
            // QEMU's e1000 and a host bridge: nothing in this table.
            ("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", &[]),
            ("pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00", &[]),
        ];
        for (modalias, want) in cases {
            assert_eq!(t.lookup(modalias), want, "{modalias}");
        }
    }

    #[test]
    fn dedup_file_order_and_dashes() {
        let t = AliasTable::parse(
            "alias pci:v0000ABCDd* b-mod\nalias pci:v*d0001* a_mod\nalias pci:v0000ABCD* b_mod\n",
        )
        .unwrap();
        assert_eq!(t.lookup("pci:v0000ABCDd0001"), ["b_mod", "a_mod"]);
        let keep = HashSet::from(["b_mod".to_string()]);
        assert_eq!(
            t.patterns_of("b_mod").collect::<Vec<_>>(),
            ["pci:v0000ABCDd*", "pci:v0000ABCD*"]
        );
        assert_eq!(
            t.render_subset(&keep),
            "alias pci:v0000ABCDd* b_mod\nalias pci:v0000ABCD* b_mod\n"
        );
    }

    #[test]
    fn glob_semantics() {
        let yes = [
            ("", ""),
            ("*", ""),
            ("a*b*c", "aXbYbZc"),
            ("*sd*bc*", "svXsdYbcZ"),
            ("a?c", "abc"),
            ("d0[1-3]*", "d02x"),
            ("d[!0-3]", "d7"),
            ("d[^0-3]", "d7"),
            ("x[]]y", "x]y"),
            ("x[a-]y", "x-y"),
            ("x[ab", "x[ab"),
            ("a\\*", "a*"),
            ("usb:v0BDAp8153d[2-2]*dc*", "usb:v0BDAp8153d2000dcFF"),
        ];
        for (p, s) in yes {
            assert!(fnmatch(p, s), "{p:?} should match {s:?}");
        }
        let no = [
            ("", "a"),
            ("a*b", "aXbY"),
            ("a?c", "ac"),
            ("d0[1-3]*", "d04x"),
            ("d[!0-3]", "d2"),
            ("a\\*", "ab"),
            ("pci:v00001AF4d*", "pci:v00001AF5d0"),
            ("*a", "bbb"),
        ];
        for (p, s) in no {
            assert!(!fnmatch(p, s), "{p:?} must not match {s:?}");
        }
    }

    #[test]
    fn malformed_lines_are_named() {
        assert_eq!(
            AliasTable::parse("alias a b\nalias onlyone\n"),
            Err(AliasError::Malformed {
                line: 2,
                text: "alias onlyone".into()
            })
        );
        assert!(AliasTable::parse("softdep a pre: b\n").is_err());
        assert!(AliasTable::parse("# c\n\n").unwrap().is_empty());
    }
}
