//! What more than one fuzz target needs: writers that invert the root grammars, so that a
//! target can check that whatever parses reads back the same from its canonical spelling.

use nbdroot::address::Host;
use nbdroot::cmdline::root;
use nbdroot::plan::{DebianSpec, NbdSpec};
use nbdroot::proto::consts::DEFAULT_PORT;

/// `spec` spelled as `nbd:<host>:<port|export>:<fstype>:<rootflags>:<nbdopts>`. An export
/// on the default port goes in the second field, as people write it; one that field cannot
/// hold (a colon, all digits) goes in `export=`, which cannot hold a comma. `None` when
/// neither can, which `parse_nbd` never yields.
pub fn render_nbd(spec: &NbdSpec) -> Option<String> {
    let e = &spec.export;
    let in_field = spec.port == DEFAULT_PORT
        && !e.is_empty()
        && !e.contains(':')
        && !e.bytes().all(|b| b.is_ascii_digit());
    let field = if in_field {
        e.clone()
    } else if e.contains(',') {
        return None;
    } else {
        spec.port.to_string()
    };
    let o = &spec.opts;
    let mut opts = Vec::new();
    if !in_field && !e.is_empty() {
        opts.push(format!("export={e}"));
    }
    opts.extend(o.block_size.map(|b| format!("bs={b}")));
    opts.extend(o.timeout.map(|t| format!("timeout={}", t.as_secs())));
    opts.extend(o.connections.map(|c| format!("conns={c}")));
    opts.extend(
        o.dead_timeout
            .map(|t| format!("dead-timeout={}", t.as_secs())),
    );
    opts.extend(o.priority.map(|p| format!("prio={p}")));
    if o.read_only {
        opts.push("readonly".into());
    }
    if o.mkswap {
        opts.push("mkswap".into());
    }
    Some(format!(
        "nbd:{}:{field}:{}:{}:{}",
        spec.host,
        spec.fstype.as_deref().unwrap_or(""),
        spec.rootflags.as_deref().unwrap_or(""),
        opts.join(",")
    ))
}

/// Debian's `nbdroot=` spelling of `spec`: `<host>,<port|export>,nbdN` when there is a
/// device (only that form has one), else `<host>:<port>/<export>`. `None` where neither form
/// can say it.
pub fn render_debian(spec: &DebianSpec) -> Option<String> {
    let DebianSpec::Given {
        host,
        port,
        export,
        device,
    } = spec
    else {
        return Some("dhcp".into());
    };
    let host = host.as_ref().map_or(String::new(), Host::to_string);
    // The comma form carries a port or an export name (on the default port), and an all-digit
    // field reads as a port. Its server may end with a colon, which lets a server named
    // "dhcp" (from `dhcp:,…`) be told from the keyword; the URL form has no way to.
    let field = if export.is_empty() {
        Some(port.to_string())
    } else {
        let digits = export.bytes().all(|b| b.is_ascii_digit());
        (*port == DEFAULT_PORT && !digits && !export.contains(',')).then(|| export.clone())
    };
    let server = if host.is_empty() {
        host.clone()
    } else {
        format!("{host}:")
    };
    let comma = field.map(|f| match device {
        Some(d) => format!("{server},{f},nbd{d}"),
        None => format!("{server},{f}"),
    });
    if device.is_some() || host.contains('/') || host == "dhcp" || export.contains(',') {
        return comma;
    }
    Some(format!("{host}:{port}/{export}"))
}

/// Checks what any parsed `nbd:` spec must satisfy, and that its canonical spelling parses
/// back to it.
pub fn check_nbd_spec(spec: &NbdSpec) {
    assert!(spec.port > 0, "{spec:?}");
    let o = &spec.opts;
    assert!(o
        .block_size
        .is_none_or(|b| [512, 1024, 2048, 4096].contains(&b)));
    assert!(o.timeout.is_none_or(|t| t.as_secs() > 0));
    assert!(o.connections.is_none_or(|c| (1..=64).contains(&c)));
    assert!(o.priority.is_none_or(|p| p <= 32767));
    assert!(spec
        .fstype
        .as_deref()
        .is_none_or(|f| !f.is_empty() && !f.contains(':')));
    assert!(spec
        .rootflags
        .as_deref()
        .is_none_or(|f| !f.is_empty() && !f.contains(':')));
    if let Host::Name(n) = &spec.host {
        assert!(
            !n.is_empty() && !n.contains(':') && !n.starts_with('['),
            "{n:?}"
        );
        assert!(
            n.parse::<std::net::IpAddr>().is_err(),
            "{n:?} is an address"
        );
    }
    let text = render_nbd(spec).expect("every parsed nbd: spec has a spelling");
    assert_eq!(root::parse_nbd(&text).as_ref(), Ok(spec), "{text}");
}

/// Checks a parsed Debian spec the same way.
pub fn check_debian_spec(spec: &DebianSpec) {
    if let DebianSpec::Given { port, .. } = spec {
        assert!(*port > 0, "{spec:?}");
    }
    let text = render_debian(spec).expect("every parsed Debian spec has a spelling");
    assert_eq!(root::parse_debian(&text).as_ref(), Ok(spec), "{text}");
}
