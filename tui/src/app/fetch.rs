//! Fetching a file to this machine, the UI's way: into the last folder used
//! (the working directory at first), keeping the file's own folders under
//! it; asking before a file there is replaced; Esc cancelling the fetch
//! under way; and that fetch's rate and time left for the gauge.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent};
use tandem_common::RelPath;

use super::Wanted;
use super::{AppState, Effect, FetchProgress, Level, Mode};

/// The rate is measured over about this much of the latest progress, so it
/// follows a transfer that speeds up or slows down (ns).
pub const RATE_WINDOW_NS: i64 = 5_000_000_000;
/// No rate is shown before progress covers this long: the first chunks
/// arrive in a burst that would promise far too much (ns).
const RATE_MIN_SPAN_NS: i64 = 500_000_000;

/// Why a fetch ended without saving the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// A file is at this path already and the fetch was not forced: it was
    /// left as it was.
    Exists(PathBuf),
    /// Cancelled (Esc): the partial download was removed.
    Cancelled,
    /// Anything else, in words.
    Failed(String),
}

/// What a finished fetch saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The file written.
    pub to: PathBuf,
    /// The outermost folder that had to be made for it, if any.
    pub made: Option<PathBuf>,
}

/// The question asked before a fetch replaces a file ([`Mode::Overwrite`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverwriteQuestion {
    /// The file in the cluster, or the conflict copy.
    pub what: Wanted,
    /// The folder the fetch writes into.
    pub dest: PathBuf,
    /// The local file that is there.
    pub existing: PathBuf,
}

impl OverwriteQuestion {
    /// `plan.txt exists in /x/y — replace it? y/n`.
    pub fn text(&self) -> String {
        let folder = self.existing.parent().unwrap_or(Path::new("/"));
        format!(
            "{} exists in {} — replace it? y/n",
            self.what.rel().file_name(),
            folder.display()
        )
    }
}

/// A transfer's rate over its latest [`RATE_WINDOW_NS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateMeter {
    /// (time ns, bytes done), oldest first; the first is the newest one
    /// at or before the window's start, so the window is always covered.
    samples: VecDeque<(i64, u64)>,
}

impl RateMeter {
    /// Notes that `done` bytes had arrived at `now_ns`.
    pub fn record(&mut self, now_ns: i64, done: u64) {
        self.samples.push_back((now_ns, done));
        while self.samples.len() > 2 && self.samples[1].0 <= now_ns - RATE_WINDOW_NS {
            self.samples.pop_front();
        }
    }

    /// Bytes per second, once the samples cover enough time.
    pub fn per_sec(&self) -> Option<u64> {
        let (&(t0, d0), &(t1, d1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1 - t0;
        if span < RATE_MIN_SPAN_NS {
            return None;
        }
        Some(((d1.saturating_sub(d0)) as u128 * 1_000_000_000 / span as u128) as u64)
    }
}

impl FetchProgress {
    /// The rate, once it can be told.
    pub fn per_sec(&self) -> Option<u64> {
        self.meter.per_sec()
    }

    /// Seconds left at the current rate (rounded up), once it can be told.
    pub fn eta_secs(&self) -> Option<u64> {
        let rate = self.per_sec().filter(|r| *r > 0)?;
        Some(self.total.saturating_sub(self.done).div_ceil(rate))
    }
}

impl AppState {
    /// Where fetches go unless told otherwise: the last folder used in this
    /// session, the working directory at first.
    pub fn fetch_folder(&self) -> PathBuf {
        self.last_fetch_folder
            .clone()
            .unwrap_or_else(|| self.cwd.clone())
    }

    /// Fetches `what` under `folder`, keeping the file's own folders
    /// (`docs/plan.md` into `~/dl` is `~/dl/docs/plan.md`; a conflict copy
    /// of it lands beside it) unless `flat` (`~/dl/plan.md`). `folder`
    /// becomes the default for the next fetch.
    pub(super) fn fetch_into(
        &mut self,
        what: Wanted,
        folder: PathBuf,
        flat: bool,
        force: bool,
    ) -> Vec<Effect> {
        let dest = fetch_dest(what.rel(), &folder, flat);
        let fx = self.fetch(what, dest, force);
        if !fx.is_empty() {
            self.last_fetch_folder = Some(folder);
        }
        fx
    }

    /// Stops the fetch under way (the gauge says so until it has stopped).
    pub(super) fn cancel_fetch(&mut self) -> Vec<Effect> {
        match &mut self.fetch {
            Some(f) if !f.cancelling => {
                f.cancelling = true;
                vec![Effect::CancelFetch]
            }
            _ => Vec::new(),
        }
    }
}

/// The folder `path` is written into under `folder`.
pub fn fetch_dest(path: &RelPath, folder: &Path, flat: bool) -> PathBuf {
    match path.parent() {
        Some(parent) if !flat => parent.to_disk(folder),
        _ => folder.to_path_buf(),
    }
}

/// The node started sending `total` bytes from `from`.
pub(super) fn on_started(s: &mut AppState, total: u64, from: String, now: i64) {
    s.now_ns = s.now_ns.max(now);
    if let Some(f) = &mut s.fetch {
        f.total = total;
        f.from = Some(from);
        f.done = 0;
        // A retry (the file changed while sent) starts counting again.
        f.meter = RateMeter::default();
        f.meter.record(now, 0);
    }
}

/// `done` bytes have arrived.
pub(super) fn on_progress(s: &mut AppState, done: u64, now: i64) {
    s.now_ns = s.now_ns.max(now);
    if let Some(f) = &mut s.fetch {
        f.done = done;
        f.meter.record(now, done);
    }
}

/// The fetch ended: say how, or ask whether to replace the file there.
pub(super) fn on_done(s: &mut AppState, r: Result<Saved, FetchError>) {
    let Some(f) = s.fetch.take() else {
        return;
    };
    let what = f.what;
    match r {
        Ok(saved) => {
            let made = saved
                .made
                .map(|m| format!("; made the folder {}", m.display()))
                .unwrap_or_default();
            s.set_status(
                Level::Ok,
                format!(
                    "fetched {what} to {} (hash verified){made}",
                    saved.to.display()
                ),
            )
        }
        Err(FetchError::Exists(existing)) => {
            let q = OverwriteQuestion {
                what,
                dest: f.dest,
                existing,
            };
            // Typing something else: do not take the keyboard from it.
            if s.mode == Mode::Normal {
                s.status = None;
                s.mode = Mode::Overwrite(q);
            } else {
                s.set_status(
                    Level::Error,
                    format!(
                        "{} is there already; nothing was fetched (fetch again to be asked whether to replace it)",
                        q.existing.display()
                    ),
                );
            }
        }
        Err(FetchError::Cancelled) => s.set_status(
            Level::Info,
            format!("fetch of {what} cancelled; nothing was saved"),
        ),
        Err(FetchError::Failed(e)) => {
            s.set_status(Level::Error, format!("fetch of {what} failed: {e}"))
        }
    }
}

/// A key while [`Mode::Overwrite`] asks: `y` fetches again, replacing the
/// file; `n` or Esc keeps it; anything else asks on.
pub(super) fn on_overwrite_key(
    s: &mut AppState,
    q: OverwriteQuestion,
    k: &KeyEvent,
) -> Vec<Effect> {
    match k.code {
        KeyCode::Char('y' | 'Y') => s.fetch(q.what, q.dest, true),
        KeyCode::Char('n' | 'N') | KeyCode::Esc => {
            s.set_status(
                Level::Info,
                format!("kept {}; nothing was changed", q.existing.display()),
            );
            Vec::new()
        }
        _ => {
            s.mode = Mode::Overwrite(q);
            Vec::new()
        }
    }
}
