//! How the process's allocator is set up before any thread starts.
//!
//! glibc's malloc gives each thread that meets contention an arena of its own, up to
//! eight per core. Memory freed in one arena is not reused by another, so a burst of
//! connections handled across many threads leaves each arena holding freed pages, and
//! the resident memory of every idle connection grows with it. parley runs a worker
//! thread per core, so as many arenas suffice. Measured with `parley-load connect
//! --connections 19000`: 8,232–8,306 B of RSS per idle connection with the default,
//! 8,049 B with two arenas on the two-core machine.

/// Limit malloc's arenas to one per core. Call it first thing, before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = i32::try_from(cores).unwrap_or(i32::MAX).max(1);
        // SAFETY: mallopt only sets an allocator parameter; no allocation is in flight
        // on another thread because none has started yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Hand memory freed after a burst of work (reading the state back at start) to the
/// system instead of leaving it in malloc's free lists.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free pages to the system; it is safe to call
        // at any time from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
