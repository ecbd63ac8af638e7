//! Numbers in words for people: counts with their noun ("1 attempt", "3 tries") and
//! durations ("10 s", "0.25 s"), so no message says "1 attempts".

use std::fmt;
use std::time::Duration;

/// `n` and `noun`, in the plural unless `n` is 1: `plural(1, "attempt")` is "1 attempt",
/// `plural(3, "try")` is "3 tries". Takes any integer (or a reference to one).
pub fn plural(n: impl fmt::Display, noun: &str) -> String {
    let n = n.to_string();
    if n == "1" {
        return format!("1 {noun}");
    }
    let consonant_y = noun
        .strip_suffix('y')
        .and_then(|stem| stem.chars().last())
        .is_some_and(|c| !"aeiou".contains(c));
    if consonant_y {
        format!("{n} {}ies", &noun[..noun.len() - 1])
    } else if ["s", "x", "ch", "sh"].iter().any(|end| noun.ends_with(end)) {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration in seconds, as precise as it is given: "10 s", "0.25 s", "1.5 s".
pub fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        return format!("{} s", d.as_secs());
    }
    // Integer arithmetic, not `{:.3}`: float formatting costs the binary ~5 KB.
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 >= 500_000);
    let text = format!("{}.{:03}", ms / 1000, ms % 1000);
    format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Seconds to one decimal, rounded: `7.84` → "7.8" (as `{:.1}` would print it, without the
/// float formatting code).
pub fn tenths(secs: f64) -> String {
    let t = (secs.max(0.0) * 10.0).round() as u64;
    format!("{}.{}", t / 10, t % 10)
}

/// How long a series of attempts took, for a failure message: "after 7.8 s, 6 attempts", or
/// only "1 attempt" when it failed at once (no "after 0.0 s").
pub fn tried(secs: f64, attempts: u32) -> String {
    let count = plural(attempts, "attempt");
    if secs < 0.05 {
        count
    } else {
        format!("after {} s, {count}", tenths(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_without_float_formatting() {
        for (secs, want) in [
            (7.84, "7.8"),
            (7.86, "7.9"),
            (0.05, "0.1"),
            (9.96, "10.0"),
            (0.0, "0.0"),
        ] {
            assert_eq!(tenths(secs), want, "{secs}");
            assert_eq!(tenths(secs), format!("{secs:.1}"), "{secs}");
        }
        for (ms, want) in [
            (10_000, "10 s"),
            (250, "0.25 s"),
            (1500, "1.5 s"),
            (1001, "1.001 s"),
            (3, "0.003 s"),
        ] {
            assert_eq!(secs(Duration::from_millis(ms)), want);
        }
        assert_eq!(secs(Duration::from_nanos(1_999_600_000)), "2 s");
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(0, "attempt"), "0 attempts");
        assert_eq!(plural(1, "attempt"), "1 attempt");
        assert_eq!(plural(2u64, "connection"), "2 connections");
        assert_eq!(plural(1usize, "byte"), "1 byte");
        assert_eq!(plural(1, "try"), "1 try");
        assert_eq!(plural(6, "try"), "6 tries");
        assert_eq!(plural(2, "day"), "2 days");
        assert_eq!(plural(2, "address"), "2 addresses");
        assert_eq!(plural(11, "request"), "11 requests");
    }

    #[test]
    fn durations() {
        assert_eq!(secs(Duration::from_secs(10)), "10 s");
        assert_eq!(secs(Duration::from_millis(250)), "0.25 s");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(secs(Duration::ZERO), "0 s");
        assert_eq!(tried(0.001, 1), "1 attempt");
        assert_eq!(tried(7.81, 6), "after 7.8 s, 6 attempts");
        assert_eq!(tried(0.06, 1), "after 0.1 s, 1 attempt");
    }
}
