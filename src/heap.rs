//! Handing memory back to the system after a burst of work.
//!
//! The `parley` binary allocates with jemalloc (see its `main.rs`), which returns freed
//! pages by itself as they age. glibc's malloc keeps freed memory in its free lists until
//! trimmed, and it still serves SQLite (which allocates with the C library's malloc) and
//! everything else where the library runs inside another program or its tests.

/// Hand memory freed after a burst of work (reading the state back at start) to the
/// system instead of leaving it in glibc malloc's free lists.
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
