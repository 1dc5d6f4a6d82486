//! How much of its CPU the machine itself delivers: a check to run before a latency
//! benchmark.
//!
//! On a shared virtual machine the host can slice a vCPU's time finely while the guest
//! believes its thread ran the whole time (no steal time is reported): measured on the
//! project's machine, a CPU-bound loop's 10 ms pieces of work took up to 108 ms, all of
//! it "on CPU" by the guest's own accounting, while a thread sleeping 1 ms on the same CPU
//! still woke within 4 ms. A server at 60% of a core then falls behind for as long as the
//! host holds back, and no server can deliver within 5 ms through that.
//!
//! One thread per CPU, pinned to it, runs the same piece of work over and over and
//! records how many times longer than its best each piece took. It keeps every CPU busy,
//! so it is run on its own, before a benchmark, not during one.

use serde::Serialize;
use std::time::{Duration, Instant};

/// Iterations of one piece of work: about 0.7 ms on the project's machine.
const WORK: u64 = 1_000_000;
/// A piece that took this many times its best ran on a slowed CPU.
const SLOW: f64 = 2.0;

/// What the check saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hiccups {
    /// CPUs measured.
    pub cpus: usize,
    /// Pieces of work run, all CPUs together.
    pub pieces: u64,
    /// The fastest piece, ms: the machine at its best.
    pub best_piece_ms: f64,
    /// The median piece, as a multiple of the best.
    pub median_slowdown: f64,
    /// Share of pieces that took at least twice the best.
    pub slow_share: f64,
    /// The slowest piece, ms.
    pub worst_piece_ms: f64,
    /// Work done over work the best pace would have done in the same time: the share of
    /// its CPUs the machine delivered.
    pub capacity: f64,
}

/// Keep every CPU busy for `duration` and say how evenly the machine delivered.
pub fn measure(duration: Duration) -> Hiccups {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..cpus)
        .filter_map(|cpu| {
            std::thread::Builder::new()
                .name(format!("hiccup-{cpu}"))
                .spawn(move || pieces(cpu, duration))
                .ok()
        })
        .collect();
    let per_cpu: Vec<Vec<u64>> = threads.into_iter().filter_map(|t| t.join().ok()).collect();
    summarise(&per_cpu)
}

fn summarise(per_cpu: &[Vec<u64>]) -> Hiccups {
    let mut all: Vec<u64> = per_cpu.iter().flatten().copied().collect();
    all.sort_unstable();
    let Some(&best) = all.first() else {
        return Hiccups::default();
    };
    let best = best.max(1) as f64;
    let total: u64 = all.iter().sum();
    let slow = all.iter().filter(|&&w| w as f64 >= SLOW * best).count();
    Hiccups {
        cpus: per_cpu.len(),
        pieces: all.len() as u64,
        best_piece_ms: best / 1e6,
        median_slowdown: all[all.len() / 2] as f64 / best,
        slow_share: slow as f64 / all.len() as f64,
        worst_piece_ms: *all.last().expect("not empty") as f64 / 1e6,
        capacity: best * all.len() as f64 / total.max(1) as f64,
    }
}

/// Run pieces of work on `cpu` for `duration`: how long each took, in nanoseconds.
fn pieces(cpu: usize, duration: Duration) -> Vec<u64> {
    pin_to(cpu);
    let end = Instant::now() + duration;
    let mut took = Vec::new();
    loop {
        let start = Instant::now();
        if start >= end {
            return took;
        }
        std::hint::black_box(work(WORK));
        took.push(start.elapsed().as_nanos() as u64);
    }
}

/// A fixed piece of CPU work the optimiser cannot fold away.
fn work(n: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..std::hint::black_box(n) {
        x = x.rotate_left(5) ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    x
}

/// Keep the calling thread on one CPU, so that each CPU is measured on its own.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only
    // touch the set passed, and 0 names the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The check's summary on stderr.
pub fn show(h: &Hiccups) {
    eprintln!(
        "machine: {} CPUs delivered {:.0}% of their best pace; {:.1}% of {} pieces of work took at least twice the best {:.2} ms (median {:.2}x, worst {:.1} ms)",
        h.cpus, 100.0 * h.capacity, 100.0 * h.slow_share, h.pieces, h.best_piece_ms, h.median_slowdown, h.worst_piece_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_pieces_are_counted_against_the_best() {
        let h = summarise(&[vec![1_000_000, 1_000_000], vec![2_000_000, 4_000_000]]);
        assert_eq!(h.cpus, 2);
        assert_eq!(h.pieces, 4);
        assert_eq!(h.best_piece_ms, 1.0);
        assert_eq!(h.median_slowdown, 2.0);
        assert_eq!(h.slow_share, 0.5);
        assert_eq!(h.worst_piece_ms, 4.0);
        // 4 pieces at the best pace would have taken 4 ms of the 8 spent.
        assert_eq!(h.capacity, 0.5);
    }

    #[test]
    fn a_short_check_measures_every_cpu() {
        let h = measure(Duration::from_millis(30));
        assert!(h.cpus >= 1);
        assert!(h.pieces >= h.cpus as u64, "{h:?}");
        assert!(h.capacity > 0.0 && h.capacity <= 1.0, "{h:?}");
        assert!(h.worst_piece_ms >= h.best_piece_ms, "{h:?}");
    }
}
