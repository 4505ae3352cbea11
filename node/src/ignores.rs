//! Ignore patterns: what a node neither scans, watches, sends nor applies.
//!
//! Patterns come from `DIR/.tandemignore` (gitignore syntax, matched by the
//! `ignore` crate's gitignore matcher) and from `--ignore PATTERN` on the
//! node. The file itself is synced like any file, so every node ends up
//! ignoring the same things; it is never ignored. As in git, a path under
//! an ignored folder is ignored, whatever a later `!pattern` says (the
//! folder is not even looked into).
//!
//! Matching is pure: the core reads the file ([`Ignores::load`]) and hands
//! the set around; nothing here touches the disk afterwards.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tandem_common::RelPath;

/// The ignore file at the top of the synced folder.
pub const IGNORE_FILE: &str = ".tandemignore";

/// The patterns in force, shared by the core (which loads them again when
/// the file changes) and the watcher and the API (which read them).
#[derive(Debug, Clone, Default)]
pub struct SharedIgnores(Arc<RwLock<Arc<Ignores>>>);

impl SharedIgnores {
    /// The patterns now.
    pub fn get(&self) -> Arc<Ignores> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `new` in force.
    pub fn set(&self, new: Arc<Ignores>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = new;
    }
}

/// One pattern, and where it was written (`.tandemignore:LINE`, or
/// `--ignore` for one given on the command line).
pub use tandem_common::proto::IgnoreRule as Rule;

/// A set of ignore patterns.
#[derive(Debug, Clone)]
pub struct Ignores {
    matcher: Gitignore,
    rules: Vec<Rule>,
    problems: Vec<String>,
}

impl Default for Ignores {
    fn default() -> Self {
        Ignores::new(None, &[])
    }
}

impl PartialEq for Ignores {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules && self.problems == other.problems
    }
}

impl Ignores {
    /// The same patterns in the same order (from the file or from
    /// `--ignore`), wherever they are written: a comment added above them
    /// moves their line numbers, not what they match.
    pub fn same_patterns(&self, other: &Ignores) -> bool {
        let key = |r: &Rule| (r.pattern.clone(), r.source == "--ignore");
        self.rules.iter().map(key).eq(other.rules.iter().map(key))
    }
}

impl Ignores {
    /// The patterns of `file` (the text of `.tandemignore`, if there is one)
    /// and `extra` (from `--ignore`). Lines that are not valid patterns are
    /// left out and listed in [`Ignores::problems`].
    pub fn new(file: Option<&str>, extra: &[String]) -> Ignores {
        // Paths are matched relative to the synced folder, so the matcher's
        // root only has to be a folder no path is under.
        let mut b = GitignoreBuilder::new("/");
        let mut problems = Vec::new();
        let lines = file
            .into_iter()
            .flat_map(str::lines)
            .enumerate()
            .map(|(i, l)| (format!("{IGNORE_FILE}:{}", i + 1), l))
            .chain(extra.iter().map(|p| ("--ignore".to_string(), p.as_str())));
        let mut rules = Vec::new();
        for (source, line) in lines {
            match b.add_line(Some(PathBuf::from(&source)), line) {
                Err(e) => problems.push(format!(
                    "{source}: {line:?} is not a pattern ({e}); left out"
                )),
                // Blank lines and comments add nothing.
                Ok(_) if line.trim().is_empty() || line.starts_with('#') => {}
                Ok(_) => rules.push(Rule {
                    pattern: line.trim_end().to_string(),
                    source,
                }),
            }
        }
        let matcher = b.build().unwrap_or_else(|e| {
            problems.push(format!(
                "the ignore patterns do not build ({e}); none are used"
            ));
            rules.clear();
            Gitignore::empty()
        });
        Ignores {
            matcher,
            rules,
            problems,
        }
    }

    /// Reads `root/.tandemignore` (none there: no patterns from it) and adds
    /// `extra`. A file that cannot be read is an error, never "nothing is
    /// ignored": that would send what someone meant to keep here. A link
    /// or a folder of that name is never read through.
    pub fn load(root: &Path, extra: &[String]) -> std::io::Result<Ignores> {
        let path = root.join(IGNORE_FILE);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignores::new(None, extra)),
            Err(e) => Err(e),
            Ok(m) if !m.is_file() => Err(std::io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            ))),
            Ok(_) => {
                let bytes = std::fs::read(&path)?;
                let text = String::from_utf8_lossy(&bytes);
                Ok(Ignores::new(Some(&text), extra))
            }
        }
    }

    /// The pattern that makes `rel` ignored (`is_dir`: it is a folder), if
    /// one does: one of its folders' or its own.
    pub fn matched(&self, rel: &RelPath, is_dir: bool) -> Option<Rule> {
        if self.rules.is_empty() || rel.as_str() == IGNORE_FILE {
            return None;
        }
        let s = rel.as_str();
        // Folders first, from the top: nothing under an ignored folder can
        // be taken back by a later `!pattern` (git works the same way).
        for (i, _) in s.match_indices('/') {
            if let Match::Ignore(g) = self.matcher.matched(&s[..i], true) {
                return self.rule_of(g);
            }
        }
        match self.matcher.matched(s, is_dir) {
            Match::Ignore(g) => self.rule_of(g),
            _ => None,
        }
    }

    /// Whether `rel` is ignored.
    pub fn is_ignored(&self, rel: &RelPath, is_dir: bool) -> bool {
        self.matched(rel, is_dir).is_some()
    }

    /// Every pattern, in the order they apply (a later one overrides).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Lines that were left out, with why.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn rule_of(&self, g: &ignore::gitignore::Glob) -> Option<Rule> {
        Some(Rule {
            pattern: g.original().to_string(),
            source: g
                .from()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn gitignore_syntax_with_folders_first() {
        let ig = Ignores::new(
            Some(
                "# editor droppings\n*.swp\n\nbuild/\n/top.txt\n!keep.swp\nlogs/\n!logs/important.log\na{b\n",
            ),
            &["*.tmp".to_string()],
        );
        let why = |s: &str, dir: bool| ig.matched(&p(s), dir).map(|r| (r.pattern, r.source));
        assert_eq!(
            why("a/b.swp", false),
            Some(("*.swp".into(), ".tandemignore:2".into()))
        );
        assert_eq!(why("keep.swp", false), None, "a later ! takes it back");
        assert_eq!(
            why("src/build/x/y.o", false),
            Some(("build/".into(), ".tandemignore:4".into()))
        );
        assert_eq!(why("build", false), None, "build/ is for folders only");
        assert!(why("build", true).is_some());
        assert!(why("top.txt", false).is_some());
        assert_eq!(why("sub/top.txt", false), None, "anchored at the top");
        assert_eq!(
            why("x.tmp", false),
            Some(("*.tmp".into(), "--ignore".into()))
        );
        // Under an ignored folder nothing comes back, as in git.
        assert!(why("logs/important.log", false).is_some());
        assert_eq!(why("notes.txt", false), None);
        assert_eq!(ig.rules().len(), 7);
        assert_eq!(ig.problems().len(), 1, "{:?}", ig.problems());
        assert!(
            ig.problems()[0].starts_with(".tandemignore:9: \"a{b\" is not a pattern"),
            "{:?}",
            ig.problems()
        );
    }

    #[test]
    fn the_ignore_file_itself_always_syncs() {
        let ig = Ignores::new(Some("*\n.*\n"), &[]);
        assert!(!ig.is_ignored(&p(IGNORE_FILE), false));
        assert!(ig.is_ignored(&p("sub/.tandemignore"), false));
        assert!(ig.is_ignored(&p("a.txt"), false));
    }

    #[test]
    fn loading_never_takes_an_unreadable_file_for_none() {
        let d = tempfile::tempdir().unwrap();
        assert!(Ignores::load(d.path(), &[]).unwrap().is_empty());
        std::fs::write(d.path().join(IGNORE_FILE), "*.log\n").unwrap();
        let ig = Ignores::load(d.path(), &["*.tmp".into()]).unwrap();
        assert_eq!(ig.rules().len(), 2);
        std::fs::remove_file(d.path().join(IGNORE_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join(IGNORE_FILE)).unwrap();
        assert!(Ignores::load(d.path(), &[]).is_err(), "a link is not read");
    }
}
