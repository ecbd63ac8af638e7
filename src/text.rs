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
    let text = format!("{:.3}", d.as_secs_f64());
    format!("{} s", text.trim_end_matches('0'))
}

/// How long a series of attempts took, for a failure message: "after 7.8 s, 6 attempts", or
/// only "1 attempt" when it failed at once (no "after 0.0 s").
pub fn tried(secs: f64, attempts: u32) -> String {
    let count = plural(attempts, "attempt");
    if secs < 0.05 {
        count
    } else {
        format!("after {secs:.1} s, {count}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
