//! What a load message carries, and when it is sent: its body names the sending slot, a
//! per-sender counter and the time it was due on the process clock; paced senders follow
//! a schedule.

use std::time::{Duration, Instant};

/// Write the body of a load message into `out`: who sent it, its per-sender counter and
/// when (µs on the process clock), padded to the asked size. `out` is reused from one send
/// to the next.
pub fn load_body(out: &mut String, slot: usize, counter: u64, at_us: u64, size: usize) {
    use std::fmt::Write;
    out.clear();
    write!(out, "L {slot} {counter} {at_us} ").expect("writing to a String");
    while out.len() < size {
        out.push('x');
    }
}

/// A body written by [`load_body`]: (slot, counter, µs).
pub fn parse_body(body: &str) -> Option<(usize, u64, u64)> {
    let mut parts = body.strip_prefix("L ")?.split(' ');
    let slot = parts.next()?.parse().ok()?;
    let counter = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some((slot, counter, at))
}

/// Microseconds since a process-wide origin: senders and receivers of one group live in
/// the same process, so this clock is shared by both ends of every latency sample.
pub fn now_us() -> u64 {
    us_at(Instant::now())
}

/// `at` in microseconds since the process-wide origin.
pub fn us_at(at: Instant) -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    at.saturating_duration_since(origin).as_micros() as u64
}

/// When a sender paced at `rate` sends per second is due: every `1 / rate` seconds from a
/// random phase after `start`, a sender that falls behind catching up in a burst. None for
/// a `rate` of 0 (closed loop).
pub fn schedule(rate: f64, start: Instant) -> Option<tokio::time::Interval> {
    (rate > 0.0).then(|| {
        let period = Duration::from_secs_f64(1.0 / rate);
        let phase = period.mul_f64(rand::random::<f64>());
        let mut i = tokio::time::interval_at((start + phase).into(), period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_back() {
        let mut body = String::from("left over");
        load_body(&mut body, 12, 345, 6789, 40);
        assert_eq!(body.len(), 40);
        assert!(body.starts_with("L 12 345 6789 x"), "{body}");
        assert_eq!(parse_body(&body), Some((12, 345, 6789)));
        load_body(&mut body, 1, 2, 3, 0);
        assert_eq!(body, "L 1 2 3 ");
        assert_eq!(parse_body("opening"), None);
    }
}
