//! How long the supervisor pauses between reconnect attempts.

use std::time::Duration;

/// Pauses after the first attempts: short, since a refused connection costs nothing, so that
/// I/O resumes within a quarter of a second of the server's return.
const PAUSES_MS: [u64; 4] = [50, 100, 200, 250];
/// After a minute of failures the server is not coming back soon: once a second is enough.
const SLOW_AFTER: Duration = Duration::from_secs(60);
const SLOW_PAUSE: Duration = Duration::from_secs(1);

/// The pause after attempt `attempt` (0 for the first) that started `elapsed` after the
/// connection was lost.
pub fn pause(attempt: u32, elapsed: Duration) -> Duration {
    if elapsed >= SLOW_AFTER {
        return SLOW_PAUSE;
    }
    let i = (attempt as usize).min(PAUSES_MS.len() - 1);
    Duration::from_millis(PAUSES_MS[i])
}

/// Whether the failure of attempt `made` (1 for the first) goes to the console: the first,
/// then every twentieth, so that a long outage does not flood it.
pub fn worth_logging(made: u32) -> bool {
    made == 1 || made.is_multiple_of(20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn grows_from_50_to_250_ms() {
        let pauses: Vec<u128> = (0..8).map(|n| pause(n, ms(0)).as_millis()).collect();
        assert_eq!(pauses, [50, 100, 200, 250, 250, 250, 250, 250]);
        assert_eq!(pause(u32::MAX, ms(59_999)), ms(250));
    }

    #[test]
    fn once_a_second_after_a_minute() {
        assert_eq!(pause(0, Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(
            pause(400, Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn logs_the_first_failure_then_every_twentieth() {
        let logged: Vec<u32> = (1..=100).filter(|n| worth_logging(*n)).collect();
        assert_eq!(logged, [1, 20, 40, 60, 80, 100]);
    }
}
