//! Crash points for fault tests: with `TANDEM_CRASH_AT=NAME` in its
//! environment, a debug build of the node kills itself with `SIGKILL` (as
//! `kill -9` would) when it reaches the point called `NAME`, so a test can
//! stop it inside a window a real crash could hit but a test could never
//! time from outside (between two renames of one install, say). Release
//! builds read nothing and do nothing.

/// Dies here, at once and without cleanup, if the tests asked for it.
#[inline]
pub fn reached(name: &str) {
    #[cfg(debug_assertions)]
    {
        static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let wanted = WANTED.get_or_init(|| std::env::var("TANDEM_CRASH_AT").ok());
        if wanted.as_deref() == Some(name) {
            eprintln!("crash point {name} reached: killing this node (TANDEM_CRASH_AT)");
            // SAFETY: sending a signal to this process has no memory effects.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
