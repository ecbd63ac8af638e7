//! The supervisor's decisions, apart from every syscall. The driver (`run` in the parent
//! module) waits for the kernel's events, connects, reconfigures and sleeps; this machine is
//! told what happened and when ([`Event`], with the time as an `Instant`) and answers what to
//! do next ([`Actions`]). It reads no clock and touches no descriptor.
//!
//! It never gives up on its own. Once the dead-connection timeout expires the kernel fails
//! I/O, but the device keeps its configuration, and sockets handed over later make I/O work
//! again: a server back after an hour still saves the machine, and a pause of a second costs
//! nothing. The kernel decides when there is nothing left to supervise: NBD_CMD_STATUS says
//! the device is no longer configured (checked every few seconds, also while reconnecting),
//! or RECONFIGURE answers that it has no such device.

use std::time::{Duration, Instant};

use super::backoff;
use super::kmsg;
use super::offer::{self, Attached, Offer};
use super::status::{State, Status};
use crate::settings::IO_TIMEOUT;

/// How often the supervisor asks whether its device is still configured: a disconnect is not
/// announced, only dead connections are.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How late the block layer's timeout timer may fire: it rounds the expiry up to the next
/// second, and a little more for the timer itself.
const TIMER_SLACK: Duration = Duration::from_millis(1500);

/// How RECONFIGURE says that the device has no configuration left to repair.
const GONE_ERRNOS: [i32; 3] = [libc::EINVAL, libc::ENOENT, libc::ENODEV];

/// What happened: the outcome of the last [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A wait for kernel events ended: the devices whose connections the kernel announced
    /// dead, none when the wait timed out.
    LinkDead(Vec<u32>),
    /// What NBD_CMD_STATUS said about the device.
    Device(Device),
    /// An attempt connected and negotiated the export.
    Negotiated(Offer),
    /// An attempt failed to connect or to negotiate.
    ConnectFailed(String),
    /// RECONFIGURE took the new sockets; the supervisor's RSS right after.
    Reconfigured { rss_kib: Option<u64> },
    /// RECONFIGURE failed, with the kernel's errno when it answered.
    ReconfigureFailed { errno: Option<i32>, message: String },
    /// A pause ended.
    Timer,
    /// While the supervisor waited for events: what the kernel logged about the device.
    KernelLog(Vec<kmsg::Note>),
}

/// The device, as NBD_CMD_STATUS sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Configured,
    /// Disconnected, or unknown to the kernel.
    Unconfigured,
    /// The query failed: no news, so nothing changes.
    Unanswered,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wait for kernel events until the deadline; then [`Event::LinkDead`].
    WaitEvents { until: Instant },
    /// Ask the kernel about the device; then [`Event::Device`].
    CheckDevice,
    /// Connect and negotiate the export; then [`Event::Negotiated`] (keeping the sockets for
    /// a [`Action::Reconfigure`]) or [`Event::ConnectFailed`].
    Connect,
    /// Hand the negotiated sockets to the kernel; then [`Event::Reconfigured`] or
    /// [`Event::ReconfigureFailed`].
    Reconfigure,
    /// Pause until the deadline; then [`Event::Timer`].
    Sleep { until: Instant },
    /// Nothing is left to supervise.
    Stop,
}

/// A line for the console and the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub level: log::Level,
    pub text: String,
}

/// The answer to an event, carried out in field order.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions {
    pub log: Option<Note>,
    /// The status changed: write it.
    pub publish: bool,
    /// Sockets negotiated by a [`Action::Connect`] not followed by a [`Action::Reconfigure`]
    /// are closed before this.
    pub next: Action,
}

impl Actions {
    fn next(next: Action) -> Self {
        Actions {
            log: None,
            publish: false,
            next,
        }
    }

    fn publish(mut self) -> Self {
        self.publish = true;
        self
    }

    fn log(mut self, level: log::Level, text: String) -> Self {
        self.log = Some(Note { level, text });
        self
    }
}

/// Whether `event` is an outcome of `action`.
fn answers(action: Action, event: &Event) -> bool {
    matches!(
        (action, event),
        (
            Action::WaitEvents { .. },
            Event::LinkDead(_) | Event::KernelLog(_)
        ) | (Action::CheckDevice, Event::Device(_))
            | (
                Action::Connect,
                Event::Negotiated(_) | Event::ConnectFailed(_)
            )
            | (
                Action::Reconfigure,
                Event::Reconfigured { .. } | Event::ReconfigureFailed { .. }
            )
            | (Action::Sleep { .. }, Event::Timer)
    )
}

/// A reconnect in progress.
#[derive(Debug, Clone, Copy)]
struct Outage {
    /// When the kernel announced the dead connection.
    since: Instant,
    /// Attempts started.
    attempts: u32,
    /// The pause after the attempt in flight, fixed when it started.
    pause: Duration,
    /// When the next attempt is due, once the last one failed.
    resume: Instant,
    /// When to ask again whether the device is still configured.
    check: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Connected,
    Reconnecting(Outage),
    Gone,
}

/// The supervisor of one device.
#[derive(Debug)]
pub struct Supervisor {
    index: u32,
    attached: Attached,
    status: Status,
    phase: Phase,
    /// The action issued last: repeated when an event does not answer it.
    last: Action,
    /// The kernel I/O timeout, when the supervisor may raise it.
    io_timeout: Option<Duration>,
    /// A raised I/O timeout for the RECONFIGURE under way.
    raise: Option<Duration>,
    /// Since the last reconnect, the kernel gave up on a request on a connection it still
    /// counted alive: the link may be slower than the I/O timeout.
    timed_out_alive: bool,
    /// When the device's connections were last all live (attach, or the last reconnect).
    connected_at: Option<Instant>,
    /// A reconnect was just handed over: dead links the kernel announced meanwhile may be the
    /// other sockets of the same failure, or the new socket dying already; one more round
    /// (a RECONFIGURE with no dead slot left takes nothing) makes sure none stays dead.
    confirming: bool,
    /// Since the last reconnect, the server's shutdown, or another error it answered, was
    /// logged: once per connection is enough.
    shutdown_logged: bool,
    error_logged: bool,
}

impl Supervisor {
    /// The supervisor of `/dev/nbd<index>`, attached as `attached`. `status` carries what
    /// the driver knows (pid, device, server, export, connections, guards, RSS); the
    /// machine keeps the rest up to date.
    pub fn new(index: u32, attached: Attached, mut status: Status) -> Self {
        status.state = State::Connected;
        Supervisor {
            index,
            attached,
            status,
            phase: Phase::Connected,
            last: Action::Stop,
            io_timeout: None,
            raise: None,
            timed_out_alive: false,
            connected_at: None,
            confirming: false,
            shutdown_logged: false,
            error_logged: false,
        }
    }

    /// The device's kernel I/O timeout, which the supervisor doubles (up to [`IO_TIMEOUT`])
    /// when requests outlast it on a live connection.
    pub fn with_io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = Some(timeout);
        self.status.io_timeout_s = Some(timeout.as_secs());
        self
    }

    /// The I/O timeout the next RECONFIGURE sets, when it changes.
    pub fn raised_io_timeout(&self) -> Option<Duration> {
        self.raise
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// With replicas: the server that took the sockets of the reconnect in progress, which
    /// its messages and the status name from now on.
    pub fn set_server(&mut self, server: String) {
        self.status.server = server;
    }

    /// The device was just attached: publish, then wait for the kernel. Comes before any
    /// [`Supervisor::handle`].
    pub fn start(&mut self, now: Instant) -> Actions {
        self.connected_at = Some(now);
        self.issue(Actions::next(Action::WaitEvents {
            until: now + CHECK_EVERY,
        }))
        .publish()
    }

    /// Takes what happened at `now` and says what to do next.
    pub fn handle(&mut self, now: Instant, event: Event) -> Actions {
        if !answers(self.last, &event) {
            log::debug!(
                "supervisor: {event:?} does not answer {:?}; repeating it",
                self.last
            );
            return Actions::next(self.last);
        }
        let confirming = match event {
            Event::LinkDead(_) => std::mem::take(&mut self.confirming),
            _ => false,
        };
        let actions = match (self.phase, event) {
            (_, Event::KernelLog(notes)) => self.noted(now, &notes),
            (Phase::Connected, Event::LinkDead(dead))
                if confirming && dead.contains(&self.index) =>
            {
                let text = format!(
                    "{}: the kernel announced dead connections while the reconnect was handed over; reconnecting again so that none is left",
                    self.status.device
                );
                self.lost(now).log(log::Level::Info, text)
            }
            (Phase::Connected, Event::LinkDead(_)) if confirming => self.wait(now),
            (Phase::Connected, Event::LinkDead(dead)) if dead.contains(&self.index) => {
                self.lost(now)
            }
            // Quiet: nothing announces a disconnect, so ask.
            (Phase::Connected, Event::LinkDead(dead)) if dead.is_empty() => {
                Actions::next(Action::CheckDevice)
            }
            // Only other devices' connections died.
            (Phase::Connected, Event::LinkDead(_)) => self.wait(now),
            (_, Event::Device(Device::Unconfigured)) => self.disconnected(),
            (Phase::Connected, Event::Device(_)) => self.wait(now),
            (Phase::Reconnecting(o), Event::Device(_)) if now >= o.resume => self.attempt(now, o),
            (Phase::Reconnecting(o), Event::Device(_)) => {
                Actions::next(Action::Sleep { until: o.resume })
            }
            (Phase::Reconnecting(o), Event::Timer) => self.attempt(now, o),
            (Phase::Reconnecting(o), Event::Negotiated(offer)) => self.negotiated(now, o, offer),
            (Phase::Reconnecting(o), Event::ConnectFailed(e)) => {
                self.status.last_error = e;
                let actions = self.pause(now, o).publish();
                if backoff::worth_logging(o.attempts) {
                    actions.log(log::Level::Warn, self.about(&self.status.last_error))
                } else {
                    actions
                }
            }
            (Phase::Reconnecting(o), Event::Reconfigured { rss_kib }) => {
                self.reconnected(now, o, rss_kib)
            }
            (Phase::Reconnecting(o), Event::ReconfigureFailed { errno, message }) => {
                let text = self.about(&message);
                self.status.last_error = message;
                if errno.is_some_and(|e| GONE_ERRNOS.contains(&e)) {
                    self.stop(log::Level::Error, format!("{text}; the supervisor stops"))
                } else {
                    self.pause(now, o).log(log::Level::Warn, text)
                }
            }
            // Unreachable: each action is issued in one phase, and nothing answers Stop.
            (_, event) => {
                log::debug!(
                    "supervisor: {event:?} out of place; repeating {:?}",
                    self.last
                );
                Actions::next(self.last)
            }
        };
        self.issue(actions)
    }

    fn issue(&mut self, actions: Actions) -> Actions {
        self.last = actions.next;
        actions
    }

    fn about(&self, what: &str) -> String {
        format!("{}: {what}", self.status.device)
    }

    fn wait(&self, now: Instant) -> Actions {
        Actions::next(Action::WaitEvents {
            until: now + CHECK_EVERY,
        })
    }

    /// What the kernel logged about the device; then the same wait goes on.
    fn noted(&mut self, now: Instant, notes: &[kmsg::Note]) -> Actions {
        let mut actions = Actions::next(self.last);
        for note in notes {
            match *note {
                kmsg::Note::ServerError(errno) => {
                    self.status.server_errors += 1;
                    actions.publish = true;
                    let server = &self.status.server;
                    if errno == kmsg::ESHUTDOWN && !self.shutdown_logged {
                        self.shutdown_logged = true;
                        let text = format!(
                            "server {server} is shutting down: it refuses requests (NBD_ESHUTDOWN), and the kernel fails each one with an I/O error"
                        );
                        actions = actions.log(log::Level::Error, self.about(&text));
                    } else if errno != kmsg::ESHUTDOWN && !self.error_logged {
                        self.error_logged = true;
                        let text = format!(
                            "server {server} answered a request with error {errno}: the kernel failed it with an I/O error"
                        );
                        actions = actions.log(log::Level::Error, self.about(&text));
                    }
                }
                kmsg::Note::TimedOut { alive } => {
                    self.timed_out_alive |= alive > 0 && self.sent_on_live_connections(now)
                }
            }
        }
        actions
    }

    /// Whether a request timing out at `now` went out on the live connections. Until their
    /// first requests can have timed out (the timeout, plus the block layer's rounding of its
    /// timer up to the next second), a timeout is one of a request sent on a dead connection
    /// before, which the kernel reports with the new connection counted alive.
    fn sent_on_live_connections(&self, now: Instant) -> bool {
        let (Some(since), Some(timeout)) = (self.connected_at, self.io_timeout) else {
            return false;
        };
        now >= since + timeout + TIMER_SLACK
    }

    /// The kernel announced a dead connection of the device: I/O waits from now on.
    fn lost(&mut self, now: Instant) -> Actions {
        self.status.state = State::Reconnecting;
        let outage = Outage {
            since: now,
            attempts: 0,
            pause: Duration::ZERO,
            resume: now,
            check: now + CHECK_EVERY,
        };
        let text = format!(
            "{}: connection to {} lost; reconnecting",
            self.status.device, self.status.server
        );
        self.attempt(now, outage)
            .publish()
            .log(log::Level::Warn, text)
    }

    fn attempt(&mut self, now: Instant, mut o: Outage) -> Actions {
        o.pause = backoff::pause(o.attempts, now.saturating_duration_since(o.since));
        o.attempts += 1;
        self.phase = Phase::Reconnecting(o);
        Actions::next(Action::Connect)
    }

    /// After a failed attempt: the pause, preceded by a look at the device when one is due.
    fn pause(&mut self, now: Instant, mut o: Outage) -> Actions {
        o.resume = now + o.pause;
        let next = if now >= o.check {
            o.check = now + CHECK_EVERY;
            Action::CheckDevice
        } else {
            Action::Sleep { until: o.resume }
        };
        self.phase = Phase::Reconnecting(o);
        Actions::next(next)
    }

    fn negotiated(&mut self, now: Instant, o: Outage, offer: Offer) -> Actions {
        match offer::check(&self.attached, &offer) {
            Ok(()) => {
                // The kernel gave up on a live connection, and the server answered at once:
                // not an outage, a link slower than the timeout.
                if self.timed_out_alive && o.attempts == 1 {
                    self.raise = self
                        .io_timeout
                        .filter(|t| *t < IO_TIMEOUT)
                        .map(|t| (t * 2).min(IO_TIMEOUT));
                }
                Actions::next(Action::Reconfigure)
            }
            Err(refusal) => {
                self.status.last_error = refusal.to_string();
                let text = self.about(&self.status.last_error);
                self.pause(now, o).publish().log(log::Level::Error, text)
            }
        }
    }

    fn reconnected(&mut self, now: Instant, o: Outage, rss_kib: Option<u64>) -> Actions {
        self.connected_at = Some(now);
        let stall = now.saturating_duration_since(o.since).as_millis();
        self.phase = Phase::Connected;
        self.status.state = State::Connected;
        self.status.reconnects += 1;
        self.status.last_stall_ms = Some(stall);
        self.status.rss_kib = rss_kib;
        self.timed_out_alive = false;
        self.shutdown_logged = false;
        self.error_logged = false;
        let mut text = format!(
            "{}: reconnected to {} in {stall} ms",
            self.status.device, self.status.server
        );
        if let Some(t) = self.raise.take() {
            self.io_timeout = Some(t);
            self.status.io_timeout_s = Some(t.as_secs());
            text.push_str(&format!(
                "; requests outlasted the I/O timeout on a live connection, so it is now {} s",
                t.as_secs()
            ));
        }
        self.confirming = true;
        Actions::next(Action::WaitEvents { until: now })
            .publish()
            .log(log::Level::Info, text)
    }

    /// Someone disconnected the device: the expected end, not an error.
    fn disconnected(&mut self) -> Actions {
        self.status.last_error = format!("{} was disconnected", self.status.device);
        let text = format!("{}: disconnected; the supervisor stops", self.status.device);
        self.stop(log::Level::Info, text)
    }

    fn stop(&mut self, level: log::Level, text: String) -> Actions {
        self.phase = Phase::Gone;
        self.status.state = State::Gone;
        Actions::next(Action::Stop).publish().log(level, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::{TFLAG_HAS_FLAGS, TFLAG_READ_ONLY, TFLAG_SEND_FLUSH};

    const MIB64: u64 = 64 << 20;
    const FLAGS: u16 = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn supervisor(flags: Option<u16>) -> Supervisor {
        let status = Status {
            pid: 7,
            device: "/dev/nbd0".into(),
            server: "10.0.2.2:10809".into(),
            export: String::new(),
            connections: 1,
            guards: "mlockall=true io_flusher=true oom_score_adj=-1000".into(),
            rss_kib: Some(1000),
            ..Status::default()
        };
        let attached = Attached {
            size: MIB64,
            flags,
            connections: 1,
        };
        Supervisor::new(0, attached, status)
    }

    fn note(level: log::Level, text: &str) -> Option<Note> {
        Some(Note {
            level,
            text: text.into(),
        })
    }

    /// A supervisor that has just seen its connection die at `t0`.
    fn reconnecting(t0: Instant) -> Supervisor {
        let mut s = supervisor(Some(FLAGS));
        let _ = s.start(t0);
        assert_eq!(s.handle(t0, Event::LinkDead(vec![0])).next, Action::Connect);
        s
    }

    #[test]
    fn starts_connected_publishes_and_waits() {
        let t0 = Instant::now();
        let mut s = supervisor(None);
        let a = s.start(t0);
        assert!(a.publish && a.log.is_none());
        assert_eq!(
            a.next,
            Action::WaitEvents {
                until: t0 + ms(5000)
            }
        );
        assert_eq!(
            s.status().render(),
            "pid=7\ndevice=/dev/nbd0\nserver=10.0.2.2:10809\nexport=\nstate=connected\n\
             connections=1\nreconnects=0\nlast_error=\nlast_stall_ms=\nserver_errors=0\n\
             io_timeout_s=\nrss_kib=1000\n\
             guards=mlockall=true io_flusher=true oom_score_adj=-1000\n"
        );
    }

    #[test]
    fn other_devices_deaths_are_not_ours() {
        let t0 = Instant::now();
        let mut s = supervisor(None);
        let _ = s.start(t0);
        let a = s.handle(t0 + ms(10), Event::LinkDead(vec![1, 3]));
        assert_eq!(
            a,
            Actions::next(Action::WaitEvents {
                until: t0 + ms(5010)
            })
        );
        assert_eq!(s.status().state, State::Connected);
    }

    #[test]
    fn a_quiet_wait_asks_whether_the_device_is_still_there() {
        let t0 = Instant::now();
        let mut s = supervisor(None);
        let _ = s.start(t0);
        let t = t0 + ms(5000);
        assert_eq!(
            s.handle(t, Event::LinkDead(vec![])),
            Actions::next(Action::CheckDevice)
        );
        for answer in [Device::Configured, Device::Unanswered] {
            let a = s.handle(t, Event::Device(answer));
            assert_eq!(
                a,
                Actions::next(Action::WaitEvents {
                    until: t + ms(5000)
                })
            );
            let _ = s.handle(t, Event::LinkDead(vec![]));
        }
        let a = s.handle(t, Event::Device(Device::Unconfigured));
        assert_eq!(a.next, Action::Stop);
        assert!(a.publish);
        assert_eq!(
            a.log,
            note(
                log::Level::Info,
                "/dev/nbd0: disconnected; the supervisor stops"
            )
        );
        assert_eq!(s.status().state, State::Gone);
        assert_eq!(s.status().last_error, "/dev/nbd0 was disconnected");
        assert!(s.status().render().contains("\nstate=gone\n"));
        // Gone is final.
        assert_eq!(
            s.handle(t, Event::LinkDead(vec![0])),
            Actions::next(Action::Stop)
        );
    }

    #[test]
    fn a_dead_connection_is_replaced_at_once() {
        let t0 = Instant::now();
        let mut s = supervisor(None);
        let _ = s.start(t0);
        let a = s.handle(t0 + ms(1234), Event::LinkDead(vec![3, 0, 0]));
        assert_eq!(a.next, Action::Connect);
        assert!(a.publish);
        assert_eq!(
            a.log,
            note(
                log::Level::Warn,
                "/dev/nbd0: connection to 10.0.2.2:10809 lost; reconnecting"
            )
        );
        assert_eq!(s.status().state, State::Reconnecting);
        assert!(s.status().render().contains("\nstate=reconnecting\n"));
    }

    /// Plays an outage where every attempt fails after `attempt` and the device stays
    /// configured, until `end`; returns when each attempt and each device check started
    /// (milliseconds after the loss).
    fn outage(attempt: Duration, end: Duration) -> (Vec<u128>, Vec<u128>) {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let (mut now, mut next) = (t0, Action::Connect);
        let (mut attempts, mut checks) = (Vec::new(), Vec::new());
        while now - t0 < end {
            let event = match next {
                Action::Connect => {
                    attempts.push((now - t0).as_millis());
                    now += attempt;
                    Event::ConnectFailed("cannot reach 10.0.2.2:10809: connection refused".into())
                }
                Action::Sleep { until } => {
                    assert!(until >= now, "sleeps move forward");
                    now = until;
                    Event::Timer
                }
                Action::CheckDevice => {
                    checks.push((now - t0).as_millis());
                    Event::Device(Device::Configured)
                }
                other => panic!("unexpected {other:?}"),
            };
            next = s.handle(now, event).next;
        }
        (attempts, checks)
    }

    #[test]
    fn pauses_grow_from_50_to_250_ms_after_each_failure() {
        let (attempts, _) = outage(Duration::ZERO, ms(2000));
        assert_eq!(
            attempts[..8],
            [0, 50, 150, 350, 600, 850, 1100, 1350],
            "{attempts:?}"
        );
        // The pause follows the failure: a slow attempt does not eat into it.
        let (attempts, _) = outage(ms(30), ms(2000));
        assert_eq!(attempts[..5], [0, 80, 210, 440, 720], "{attempts:?}");
    }

    #[test]
    fn after_a_minute_once_a_second() {
        let (attempts, _) = outage(Duration::ZERO, ms(65_000));
        let late: Vec<u128> = attempts.iter().copied().filter(|t| *t >= 59_000).collect();
        // The attempt that starts before the minute still pauses 250 ms.
        assert_eq!(
            late,
            [59_100, 59_350, 59_600, 59_850, 60_100, 61_100, 62_100, 63_100, 64_100]
        );
    }

    #[test]
    fn the_device_is_checked_every_5_s_while_reconnecting() {
        // Attempts of 10 ms: failures at 10, 70, 180, 390, 650, then every 260 ms.
        let (attempts, checks) = outage(ms(10), ms(16_000));
        assert_eq!(checks, [5_070, 10_270, 15_470], "{checks:?}");
        // Each check happens within a pause, which it does not lengthen.
        let gaps: Vec<u128> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..4], [60, 110, 210, 260]);
        assert!(gaps[3..].iter().all(|g| *g == 260), "{gaps:?}");
    }

    #[test]
    fn failures_are_published_and_logged_sparingly() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let mut logged = Vec::new();
        let mut now = t0;
        for n in 1..=40 {
            let e = format!("cannot reach 10.0.2.2:10809: connection refused ({n})");
            let a = s.handle(now, Event::ConnectFailed(e.clone()));
            assert!(a.publish, "every failure is published");
            assert_eq!(s.status().last_error, e);
            if let Some(note) = a.log {
                assert_eq!(note.level, log::Level::Warn);
                assert_eq!(note.text, format!("/dev/nbd0: {e}"));
                logged.push(n);
            }
            let mut next = a.next;
            if next == Action::CheckDevice {
                next = s.handle(now, Event::Device(Device::Configured)).next;
            }
            let Action::Sleep { until } = next else {
                panic!("{next:?}");
            };
            now = until;
            assert_eq!(s.handle(now, Event::Timer).next, Action::Connect);
        }
        assert_eq!(logged, [1, 20, 40]);
        assert_eq!(s.status().state, State::Reconnecting);
    }

    #[test]
    fn another_size_is_refused_loudly_and_retried() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let offer = Offer {
            size: MIB64 + (1 << 20),
            flags: FLAGS,
        };
        let a = s.handle(t0 + ms(3), Event::Negotiated(offer));
        let refusal = "the export is now 68157440 bytes, not 67108864: refusing to reattach it";
        assert_eq!(
            a,
            Actions {
                log: note(log::Level::Error, &format!("/dev/nbd0: {refusal}")),
                publish: true,
                next: Action::Sleep { until: t0 + ms(53) },
            }
        );
        assert_eq!(s.status().last_error, refusal);
        assert_eq!(s.status().state, State::Reconnecting);
        assert!(s
            .status()
            .render()
            .contains(&format!("\nlast_error={refusal}\n")));
        assert_eq!(s.handle(t0 + ms(53), Event::Timer).next, Action::Connect);
    }

    #[test]
    fn a_server_turned_read_only_is_refused() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let offer = Offer {
            size: MIB64,
            flags: FLAGS | TFLAG_READ_ONLY,
        };
        let a = s.handle(t0, Event::Negotiated(offer));
        assert!(matches!(a.next, Action::Sleep { .. }));
        assert_eq!(
            s.status().last_error,
            "the export is now read-only, but the device was attached writable: refusing to reattach it"
        );
    }

    #[test]
    fn the_same_export_is_handed_over() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let offer = Offer {
            size: MIB64,
            flags: FLAGS,
        };
        let a = s.handle(t0 + ms(400), Event::Negotiated(offer));
        assert_eq!(a, Actions::next(Action::Reconfigure));
        let t = t0 + ms(420);
        let a = s.handle(
            t,
            Event::Reconfigured {
                rss_kib: Some(1100),
            },
        );
        assert_eq!(
            a,
            Actions {
                log: note(
                    log::Level::Info,
                    "/dev/nbd0: reconnected to 10.0.2.2:10809 in 420 ms"
                ),
                publish: true,
                // What the kernel announced meanwhile, without waiting.
                next: Action::WaitEvents { until: t },
            }
        );
        let st = s.status();
        assert_eq!(
            (st.state, st.reconnects, st.last_stall_ms, st.rss_kib),
            (State::Connected, 1, Some(420), Some(1100))
        );
    }

    #[test]
    fn each_outage_starts_the_schedule_over() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let offer = Offer {
            size: MIB64,
            flags: FLAGS,
        };
        // A minute and a half of failures: pauses of a second by then.
        let mut now = t0;
        let mut next = Action::Connect;
        while now - t0 < ms(90_000) {
            let event = match next {
                Action::Connect => Event::ConnectFailed("refused".into()),
                Action::CheckDevice => Event::Device(Device::Configured),
                Action::Sleep { until } => {
                    now = until;
                    Event::Timer
                }
                other => panic!("unexpected {other:?}"),
            };
            next = s.handle(now, event).next;
        }
        assert_eq!(next, Action::Connect);
        assert_eq!(
            s.handle(now, Event::Negotiated(offer)).next,
            Action::Reconfigure
        );
        let _ = s.handle(now, Event::Reconfigured { rss_kib: None });
        assert_eq!(s.status().last_stall_ms, Some((now - t0).as_millis()));
        assert!(s.status().last_stall_ms.unwrap() >= 90_000);
        // The next loss: 50 ms again.
        let t1 = now + ms(10_000);
        assert_eq!(s.handle(t1, Event::LinkDead(vec![0])).next, Action::Connect);
        let a = s.handle(t1, Event::ConnectFailed("refused".into()));
        assert_eq!(a.next, Action::Sleep { until: t1 + ms(50) });
        assert_eq!(s.status().reconnects, 1);
    }

    #[test]
    fn reconfigure_failures_retry_unless_the_device_is_gone() {
        let t0 = Instant::now();
        let offer = Offer {
            size: MIB64,
            flags: FLAGS,
        };
        let mut s = reconnecting(t0);
        let _ = s.handle(t0, Event::Negotiated(offer));
        let message = "NBD_CMD_RECONFIGURE: the kernel answered: Device or resource busy";
        let a = s.handle(
            t0 + ms(5),
            Event::ReconfigureFailed {
                errno: Some(libc::EBUSY),
                message: message.into(),
            },
        );
        assert_eq!(
            a,
            Actions {
                log: note(log::Level::Warn, &format!("/dev/nbd0: {message}")),
                publish: false,
                next: Action::Sleep { until: t0 + ms(55) },
            }
        );
        assert_eq!(s.status().last_error, message);

        for errno in [libc::EINVAL, libc::ENOENT, libc::ENODEV] {
            let mut s = reconnecting(t0);
            let _ = s.handle(t0, Event::Negotiated(offer));
            let message = format!("NBD_CMD_RECONFIGURE: errno {errno}");
            let a = s.handle(
                t0,
                Event::ReconfigureFailed {
                    errno: Some(errno),
                    message: message.clone(),
                },
            );
            assert_eq!(a.next, Action::Stop);
            assert!(a.publish);
            assert_eq!(
                a.log,
                note(
                    log::Level::Error,
                    &format!("/dev/nbd0: {message}; the supervisor stops")
                )
            );
            assert_eq!(
                (s.status().state, s.status().last_error.as_str()),
                (State::Gone, message.as_str())
            );
        }
    }

    #[test]
    fn a_disconnect_during_an_outage_ends_it() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let t = t0 + ms(6000);
        let a = s.handle(t, Event::ConnectFailed("refused".into()));
        assert_eq!(a.next, Action::CheckDevice, "the check is due");
        let a = s.handle(t, Event::Device(Device::Unconfigured));
        assert_eq!(a.next, Action::Stop);
        assert_eq!(s.status().state, State::Gone);
        assert_eq!(s.status().last_error, "/dev/nbd0 was disconnected");
    }

    #[test]
    fn a_slow_check_does_not_delay_a_due_attempt() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let t = t0 + ms(6000);
        let _ = s.handle(t, Event::ConnectFailed("refused".into()));
        // The check took longer than the pause: the next attempt goes at once.
        let a = s.handle(t + ms(300), Event::Device(Device::Unanswered));
        assert_eq!(a.next, Action::Connect);
    }

    #[test]
    fn an_event_that_answers_nothing_repeats_the_last_action() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        assert_eq!(
            s.handle(t0, Event::LinkDead(vec![0])),
            Actions::next(Action::Connect)
        );
        let mut s = supervisor(None);
        let _ = s.start(t0);
        assert_eq!(
            s.handle(t0 + ms(1), Event::Timer),
            Actions::next(Action::WaitEvents {
                until: t0 + ms(5000)
            })
        );
        assert_eq!(s.status().state, State::Connected);
    }

    #[test]
    fn server_errors_are_counted_and_a_shutdown_logged_once_per_connection() {
        let t0 = Instant::now();
        let mut s = supervisor(Some(FLAGS));
        let wait = s.start(t0).next;
        let shut = kmsg::Note::ServerError(kmsg::ESHUTDOWN);
        let a = s.handle(t0 + ms(1), Event::KernelLog(vec![shut, shut]));
        let text = "/dev/nbd0: server 10.0.2.2:10809 is shutting down: it refuses requests \
                    (NBD_ESHUTDOWN), and the kernel fails each one with an I/O error";
        assert_eq!(
            a,
            Actions {
                log: note(log::Level::Error, text),
                publish: true,
                // The same wait goes on.
                next: wait,
            }
        );
        let a = s.handle(t0 + ms(2), Event::KernelLog(vec![shut]));
        assert!(a.log.is_none() && a.publish && a.next == wait);
        let a = s.handle(
            t0 + ms(3),
            Event::KernelLog(vec![kmsg::Note::ServerError(5)]),
        );
        assert!(a
            .log
            .unwrap()
            .text
            .contains("answered a request with error 5"));
        assert_eq!(s.status().server_errors, 4);
        assert!(s.status().render().contains("\nserver_errors=4\n"));
        // A new connection: a new shutdown is news again.
        assert_eq!(
            s.handle(t0 + ms(4), Event::LinkDead(vec![0])).next,
            Action::Connect
        );
        let offer = Offer {
            size: MIB64,
            flags: FLAGS,
        };
        assert_eq!(
            s.handle(t0 + ms(5), Event::Negotiated(offer)).next,
            Action::Reconfigure
        );
        let _ = s.handle(t0 + ms(6), Event::Reconfigured { rss_kib: None });
        let a = s.handle(t0 + ms(7), Event::KernelLog(vec![shut]));
        assert!(a.log.is_some());
    }

    /// Reconnects after `notes`: with `attempts` failed attempts first.
    fn reconnect_after(
        s: &mut Supervisor,
        t: Instant,
        notes: Vec<kmsg::Note>,
        failed: u32,
    ) -> Actions {
        let _ = s.handle(t, Event::KernelLog(notes));
        assert_eq!(s.handle(t, Event::LinkDead(vec![0])).next, Action::Connect);
        let mut t = t;
        for _ in 0..failed {
            let a = s.handle(t, Event::ConnectFailed("refused".into()));
            t += Duration::from_secs(1);
            let next = if a.next == Action::CheckDevice {
                s.handle(t, Event::Device(Device::Configured)).next
            } else {
                a.next
            };
            if next != Action::Connect {
                assert_eq!(s.handle(t, Event::Timer).next, Action::Connect);
            }
        }
        let offer = Offer {
            size: MIB64,
            flags: FLAGS,
        };
        assert_eq!(
            s.handle(t, Event::Negotiated(offer)).next,
            Action::Reconfigure
        );
        s.handle(t, Event::Reconfigured { rss_kib: None })
    }

    #[test]
    fn the_io_timeout_doubles_when_a_live_link_is_slower_than_it() {
        let t0 = Instant::now();
        let mut s = supervisor(Some(FLAGS)).with_io_timeout(Duration::from_secs(1));
        let _ = s.start(t0);
        assert!(s.status().render().contains("\nio_timeout_s=1\n"));
        let slow = vec![kmsg::Note::TimedOut { alive: 1 }];
        // Right after attach (or a reconnect) a timeout is one of a dead connection's.
        let _ = s.handle(t0 + ms(2400), Event::KernelLog(slow.clone()));
        let _ = reconnect_after(&mut s, t0 + ms(2400), vec![], 0);
        assert_eq!(s.status().io_timeout_s, Some(1));
        let t0 = t0 + ms(2400);
        // Before RECONFIGURE the raise is pending, and the driver sends it.
        let t0 = t0 + ms(2600);
        let _ = s.handle(t0, Event::KernelLog(slow.clone()));
        assert_eq!(s.handle(t0, Event::LinkDead(vec![0])).next, Action::Connect);
        let offer = Offer {
            size: MIB64,
            flags: FLAGS,
        };
        let _ = s.handle(t0, Event::Negotiated(offer));
        assert_eq!(s.raised_io_timeout(), Some(Duration::from_secs(2)));
        let a = s.handle(t0, Event::Reconfigured { rss_kib: None });
        assert!(a.log.unwrap().text.ends_with("so it is now 2 s"));
        assert_eq!(s.raised_io_timeout(), None);
        let mut t = t0;
        for want in [4, 8, 16, 30, 30] {
            t += Duration::from_secs(40);
            let _ = reconnect_after(&mut s, t, slow.clone(), 0);
            assert_eq!(s.status().io_timeout_s, Some(want));
        }
    }

    #[test]
    fn the_io_timeout_stays_after_an_outage_a_dead_connection_or_a_fixed_timeout() {
        let t0 = Instant::now();
        let mut s = supervisor(Some(FLAGS)).with_io_timeout(Duration::from_secs(1));
        let _ = s.start(t0);
        // The server did not answer at once: an outage, not a slow link.
        let t = t0 + Duration::from_secs(10);
        let _ = reconnect_after(&mut s, t, vec![kmsg::Note::TimedOut { alive: 1 }], 2);
        // The connection was already dead when the request timed out.
        let t = t + Duration::from_secs(20);
        let _ = reconnect_after(&mut s, t, vec![kmsg::Note::TimedOut { alive: 0 }], 0);
        assert_eq!(s.status().io_timeout_s, Some(1));
        // A timeout the user gave is never changed.
        let mut s = supervisor(Some(FLAGS));
        let _ = s.start(t0);
        let t = t0 + Duration::from_secs(60);
        let a = reconnect_after(&mut s, t, vec![kmsg::Note::TimedOut { alive: 1 }], 0);
        assert!(!a.log.unwrap().text.contains("I/O timeout"));
        assert_eq!(s.status().io_timeout_s, None);
    }

    /// After a reconnect the kernel's queued events are read at once: a death announced while
    /// the sockets were handed over (the new socket's, or the other sockets' of the same
    /// failure) gets one more round, so that no connection is left dead; none, and the usual
    /// wait follows.
    #[test]
    fn a_death_during_the_hand_over_gets_one_more_round() {
        let t0 = Instant::now();
        let mut s = reconnecting(t0);
        let offer = Offer {
            size: MIB64,
            flags: FLAGS,
        };
        let _ = s.handle(t0 + ms(10), Event::Negotiated(offer));
        let a = s.handle(t0 + ms(20), Event::Reconfigured { rss_kib: None });
        assert_eq!(a.next, Action::WaitEvents { until: t0 + ms(20) });
        let a = s.handle(t0 + ms(20), Event::LinkDead(vec![0]));
        assert_eq!(a.next, Action::Connect);
        assert_eq!(a.log.unwrap().level, log::Level::Info);
        assert_eq!(s.status().state, State::Reconnecting);
        let _ = s.handle(t0 + ms(30), Event::Negotiated(offer));
        let a = s.handle(t0 + ms(40), Event::Reconfigured { rss_kib: None });
        assert_eq!(a.next, Action::WaitEvents { until: t0 + ms(40) });
        // Nothing queued this time: the usual wait, not a look at the device.
        let a = s.handle(t0 + ms(40), Event::LinkDead(vec![]));
        assert_eq!(
            a.next,
            Action::WaitEvents {
                until: t0 + ms(5040)
            }
        );
        // Later deaths are news again.
        let a = s.handle(t0 + ms(9000), Event::LinkDead(vec![0]));
        assert_eq!(a.log.unwrap().level, log::Level::Warn);
    }
}
