//! Process sampling: CPU time and memory of the servers under load, their PostgreSQL and
//! Redis, and the client processes, read from `/proc`.

/// CPU time and resident memory of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in bytes.
    pub rss: u64,
}

/// The fields of `/proc/PID/stat` after the command name (which may itself hold spaces
/// and parentheses): state, ppid, …; utime is at 11.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split(' ').map(str::to_owned).collect())
}

fn ticks_to_s(fields: &[String], at: &[usize]) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut sum = 0u64;
    for &i in at {
        sum += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some(sum as f64 / ticks)
}

/// A `kB` field of `/proc/PID/FILE`, in bytes.
pub(crate) fn kb_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Read a process's CPU time and RSS; `None` once it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let fields = stat_fields(pid)?;
    Some(ProcSample {
        cpu_s: ticks_to_s(&fields, &[11, 12])?,
        rss: kb_field(pid, "status", "VmRSS:")?,
    })
}

/// A server made of a parent and its children (PostgreSQL's postmaster and backends): CPU
/// of all of them, those already reaped included, and their proportional set sizes
/// summed (RSS would count the shared buffers once per backend).
pub fn sample_tree(pid: u32) -> Option<ProcSample> {
    let fields = stat_fields(pid)?;
    // utime, stime, and the children's it has reaped: cutime, cstime.
    let mut cpu_s = ticks_to_s(&fields, &[11, 12, 13, 14])?;
    let memory =
        |p: u32| kb_field(p, "smaps_rollup", "Pss:").or_else(|| kb_field(p, "status", "VmRSS:"));
    let mut rss = memory(pid).unwrap_or(0);
    let parent = pid.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(f) = stat_fields(child) else {
            continue;
        };
        if f.get(1) == Some(&parent) {
            cpu_s += ticks_to_s(&f, &[11, 12]).unwrap_or(0.0);
            rss += memory(child).unwrap_or(0);
        }
    }
    Some(ProcSample { cpu_s, rss })
}

/// The processes a run reads: the servers under load (the parley nodes, or the
/// baseline), and the cluster's PostgreSQL and Redis when known.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// Servers under load; their figures are summed.
    pub servers: Vec<u32>,
    /// PostgreSQL's postmaster.
    pub postgres: Option<u32>,
    /// Redis.
    pub redis: Option<u32>,
}

/// One reading of every watched process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The servers under load, summed (`None` when none could be read).
    pub servers: Option<ProcSample>,
    /// PostgreSQL, postmaster and backends.
    pub postgres: Option<ProcSample>,
    /// Redis.
    pub redis: Option<ProcSample>,
}

impl Watched {
    /// Read them all now.
    pub fn sample(&self) -> Usage {
        let servers = self
            .servers
            .iter()
            .filter_map(|&p| sample(p))
            .reduce(|a, b| ProcSample {
                cpu_s: a.cpu_s + b.cpu_s,
                rss: a.rss + b.rss,
            });
        Usage {
            servers,
            postgres: self.postgres.and_then(sample_tree),
            redis: self.redis.and_then(sample),
        }
    }
}

/// The largest memory seen of each watched process.
#[derive(Default)]
pub struct MemoryMax {
    /// The servers under load, summed.
    pub servers: u64,
    /// PostgreSQL.
    pub postgres: u64,
    /// Redis.
    pub redis: u64,
}

impl MemoryMax {
    /// Count one reading.
    pub fn add(&mut self, u: &Usage) {
        let rss = |s: Option<ProcSample>| s.map_or(0, |s| s.rss);
        self.servers = self.servers.max(rss(u.servers));
        self.postgres = self.postgres.max(rss(u.postgres));
        self.redis = self.redis.max(rss(u.redis));
    }
}

/// CPU time of the client processes, summed.
pub fn load_cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| sample(p))
        .map(|s| s.cpu_s)
        .sum()
}

/// CPU percent over roughly the last `span` seconds of samples.
pub fn cpu_between(samples: &[(f64, ProcSample)], span: f64) -> f64 {
    let Some(&(t1, last)) = samples.last() else {
        return 0.0;
    };
    let first = samples
        .iter()
        .rev()
        .find(|(t, _)| t1 - t >= span * 0.5)
        .copied();
    match first {
        Some((t0, s0)) if t1 > t0 => 100.0 * (last.cpu_s - s0.cpu_s) / (t1 - t0),
        _ => 0.0,
    }
}

/// The sample taken nearest to `at` seconds.
pub fn nearest(samples: &[(f64, ProcSample)], at: f64) -> Option<ProcSample> {
    samples
        .iter()
        .min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs()))
        .map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        let s = super::sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss > 0);
        assert!(s.cpu_s >= 0.0);
    }

    #[test]
    fn a_tree_counts_its_children() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let busy = loop {
            let busy = super::sample(child.id()).unwrap().cpu_s;
            if busy >= 0.1 || std::time::Instant::now() > deadline {
                break busy;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let alone = super::sample(std::process::id()).unwrap();
        let tree = super::sample_tree(std::process::id()).expect("own /proc entry");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(busy >= 0.1, "the child never got busy");
        assert!(
            tree.cpu_s >= alone.cpu_s + busy,
            "{tree:?} {alone:?} {busy}"
        );
        assert!(tree.rss > 0);
    }
}
