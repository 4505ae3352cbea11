//! How the folder's file system compares names, found out at start: a
//! file is made under one spelling and looked up under another (upper and
//! lower case; `é` as one character and as `e` plus an accent). Cheap (two
//! files made and removed) and real: it asks the file system itself, network
//! mounts included. `--assume-fs` overrides it (tests, and file systems it
//! misjudges); the rules that follow from the answer are [`crate::names`]'s.

use std::path::{Path, PathBuf};

use crate::names::Folding;

/// What `--assume-fs` says the folder's file system does with names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AssumeFs {
    /// Every spelling is a name of its own (Linux file systems).
    Exact,
    /// `Notes.txt` and `notes.txt` are one name (NTFS, FAT, exFAT).
    CaseInsensitive,
    /// The NFC and NFD forms of a name (`café`) are one name.
    Normalizing,
    /// Both (APFS and HFS+ by default, ext4 and f2fs with casefold).
    CaseInsensitiveNormalizing,
}

impl AssumeFs {
    /// The differences such a file system ignores.
    pub fn folding(self) -> Folding {
        match self {
            AssumeFs::Exact => Folding::EXACT,
            AssumeFs::CaseInsensitive => Folding {
                case: true,
                unicode: false,
            },
            AssumeFs::Normalizing => Folding {
                case: false,
                unicode: true,
            },
            AssumeFs::CaseInsensitiveNormalizing => Folding::ALL,
        }
    }
}

/// Where to probe the file system of `dir`: its state folder when that is
/// `DIR/.tandem` (emptied of temp files at every start), else `dir` itself
/// under temp names that the node never syncs.
pub fn probe_dir(dir: &Path, state_dir: &Path) -> PathBuf {
    if state_dir == dir.join(tandem_common::path::STATE_DIR_NAME) {
        state_dir.join("tmp")
    } else {
        dir.to_path_buf()
    }
}

/// Asks the file system holding `at` (a folder, made if missing) which
/// spellings it takes for one name.
pub fn probe(at: &Path) -> std::io::Result<Folding> {
    std::fs::create_dir_all(at)?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let t = crate::scan::TEMP_PREFIX;
    let case = finds(
        at,
        &format!("{t}Case-Probe-{tag}"),
        &format!("{t}case-probe-{tag}"),
    )?;
    let unicode = finds(
        at,
        &format!("{t}probe-\u{e9}-{tag}"),
        &format!("{t}probe-e\u{301}-{tag}"),
    )?;
    Ok(Folding { case, unicode })
}

/// Makes `made` in `at` and tells whether `other` then names it too.
fn finds(at: &Path, made: &str, other: &str) -> std::io::Result<bool> {
    let made = at.join(made);
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&made)?;
    let found = match std::fs::symlink_metadata(at.join(other)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    std::fs::remove_file(&made)?;
    found
}

/// The rules for `dir`: the probe's answer (logged), or `assume` when given.
/// Returns (what to treat as one name, what the file system was seen to
/// fold). A probe that fails assumes nothing is folded, and says so.
pub fn settle(dir: &Path, state_dir: &Path, assume: Option<AssumeFs>) -> (Folding, Folding) {
    let probed = match probe(&probe_dir(dir, state_dir)) {
        Ok(f) => {
            tracing::info!(
                "the file system of {} {f}, as probed at start",
                dir.display()
            );
            Some(f)
        }
        Err(e) => {
            tracing::warn!(
                "cannot find out how the file system of {} compares names ({e}); {} (--assume-fs to say)",
                dir.display(),
                if assume.is_some() {
                    "going by --assume-fs"
                } else {
                    "taking every spelling for a name of its own"
                }
            );
            None
        }
    };
    let fs = probed.unwrap_or(Folding::EXACT);
    match assume.map(AssumeFs::folding) {
        Some(a) => {
            tracing::info!(
                "--assume-fs: treating the file system of {} as one that {a}",
                dir.display()
            );
            if probed.is_some_and(|p| p != a) {
                tracing::warn!(
                    "--assume-fs differs from what the probe found: names are refused as if the file system {a}, but it {fs}"
                );
            }
            (a, fs)
        }
        None => (fs, fs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's file systems (ext4, tmpfs) keep every spelling apart;
    /// a case-insensitive one could not be mounted here (see the README).
    #[test]
    fn a_linux_file_system_keeps_spellings_apart_and_the_probe_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe(dir.path()).unwrap(), Folding::EXACT);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let state = dir.path().join(".tandem");
        assert_eq!(probe_dir(dir.path(), &state), state.join("tmp"));
        let elsewhere = dir.path().join("x");
        assert_eq!(probe_dir(dir.path(), &elsewhere), dir.path());
    }
}
