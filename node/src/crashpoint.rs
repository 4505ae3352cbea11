//! Crash points for fault tests: with `TANDEM_CRASH_AT=NAME` in its
//! environment, a debug build of the node kills itself with `SIGKILL` (as
//! `kill -9` would) when it reaches the point called `NAME`, so a test can
//! stop it inside a window a real crash could hit but a test could never
//! time from outside (between two renames of one install, say). Hold
//! points (`TANDEM_HOLD_AT`) pause there instead, and fail points
//! (`TANDEM_FAIL_AT`) make what is done there fail once. Release builds
//! read nothing and do nothing.

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

/// Waits here while a test holds this point: with
/// `TANDEM_HOLD_AT=NAME:FILE` in its environment, a debug build reaching
/// the point called `NAME` the first time creates `FILE` and waits until
/// the test removes it (a minute at most), so the test can act inside a
/// window it could never time from outside (a user deleting a folder right
/// after the node made it, say). Later visits go on at once (a retry must
/// show what it does, not hold the node again). Release builds read
/// nothing and do nothing.
#[inline]
pub fn held(name: &str) {
    #[cfg(debug_assertions)]
    {
        static WANTED: std::sync::OnceLock<Option<(String, std::path::PathBuf)>> =
            std::sync::OnceLock::new();
        let wanted = WANTED.get_or_init(|| {
            let v = std::env::var("TANDEM_HOLD_AT").ok()?;
            let (point, file) = v.split_once(':')?;
            Some((point.to_string(), file.into()))
        });
        static HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if let Some((point, file)) = wanted
            && point == name
            && !HELD.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!(
                "hold point {name} reached: waiting for {} to go",
                file.display()
            );
            if std::fs::write(file, name).is_ok() {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while file.exists() && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// True the first time a debug build reaches the point called `NAME` with
/// `TANDEM_FAIL_AT=NAME` in its environment: the caller then fails as if
/// what it does there had failed, so a test can check that the failure is
/// handled (kept and tried again, say) where a real one is rare or cannot
/// be made from outside. Later visits do not fail. Release builds read
/// nothing and never fail.
#[inline]
pub fn fails(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let wanted = WANTED.get_or_init(|| std::env::var("TANDEM_FAIL_AT").ok());
        if wanted.as_deref() == Some(name)
            && !FAILED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!("fail point {name} reached: failing here once (TANDEM_FAIL_AT)");
            return true;
        }
        false
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}
