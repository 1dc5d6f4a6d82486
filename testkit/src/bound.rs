//! Commands whose processes die with the tool that started them.

use std::os::unix::process::CommandExt;
use tokio::process::Command;

/// A command whose process is killed when the caller drops it or dies, even by
/// SIGKILL: an interrupted run leaves no server behind.
pub fn bound(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    die_with_parent(cmd.as_std_mut());
    cmd.kill_on_drop(true);
    cmd
}

/// Have the kernel kill `cmd`'s process when its parent dies.
///
/// The parent is the *thread* that spawns the process: spawn it from a thread that
/// outlives it (a runtime worker or a thread of its own, not a blocking-pool thread,
/// which ends when idle).
pub fn die_with_parent(cmd: &mut std::process::Command) {
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec,
    // after any change of user (which would clear it).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
