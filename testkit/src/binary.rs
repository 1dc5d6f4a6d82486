//! Finding the `parley` binary a tool should start.

use crate::LaunchError;
use std::path::{Path, PathBuf};

/// The `parley` binary: `$PARLEY_BIN`, else the one beside the running executable (or
/// one directory up, where cargo puts binaries when the caller is a test in `deps/`).
pub fn find_parley() -> Result<PathBuf, LaunchError> {
    if let Some(bin) = std::env::var_os("PARLEY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().map_err(|e| LaunchError::NoBinary(e.to_string()))?;
    let name = format!("parley{}", std::env::consts::EXE_SUFFIX);
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join(&name), dir.join("..").join(&name)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            LaunchError::NoBinary(format!(
                "no `{name}` beside {}: build it (cargo build -p parley) or set PARLEY_BIN",
                exe.display()
            ))
        })
}
