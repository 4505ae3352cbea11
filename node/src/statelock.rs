//! An exclusive lock on the state folder, so two nodes never share one index.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, bail};

/// Held for the node's lifetime; released when dropped (or when the process
/// dies, which is what makes it safe after `kill -9`).
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock or explains who has it.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
        let path = state_dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            bail!(
                "another tandem-node is already using {} (stop it, or give this one another --dir/--state-dir)",
                state_dir.display()
            );
        }
        Ok(StateLock { _file: file })
    }
}
