//! Kept conflict copies as the client shows them: the `tandem conflicts`
//! table, and finding the copy a person means by its short id.

use std::io::Write;

use tandem_common::display::{human_size, local_time, rfc3339};
use tandem_common::proto::{ConflictAction, ConflictCopy, ConflictResolution};

/// The note for copies kept but not listed.
pub fn not_listed(n: u64) -> String {
    format!("{n} older copies (each node lists its newest 1,000)")
}

/// Prints the copies (newest first, as the node sends them), the nodes
/// that could not say what they keep, and how many older copies are not
/// listed.
pub fn print_conflicts(
    copies: &[ConflictCopy],
    unanswered: &[String],
    not_listed_count: u64,
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = copies
            .iter()
            .map(|c| {
                serde_json::json!({
                    "short_id": c.short_id(),
                    "node": c.node,
                    "id": c.id,
                    "path": c.path.as_ref().map(|p| p.as_str()),
                    "author": c.author,
                    "size": c.size,
                    "mtime": rfc3339(c.mtime_ns),
                    "kept": rfc3339(c.kept_ns),
                })
            })
            .collect();
        let v = serde_json::json!({
            "conflicts": rows,
            "unanswered": unanswered,
            "not_listed": not_listed_count,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        return writeln!(out);
    }
    if copies.is_empty() {
        writeln!(out, "(no conflict copies kept)")?;
    } else {
        writeln!(
            out,
            "{:<7}  {:<10}  {:<10}  {:>10}  {:<19}  FILE",
            "ID", "NODE", "MADE ON", "SIZE", "KEPT"
        )?;
        for c in copies {
            let file = match &c.path {
                Some(p) => p.as_str().to_string(),
                None => format!("? ({})", c.id),
            };
            writeln!(
                out,
                "{:<7}  {:<10}  {:<10}  {:>10}  {:<19}  {file}",
                c.short_id(),
                c.node,
                if c.author.is_empty() { "?" } else { &c.author },
                human_size(c.size),
                local_time(c.kept_ns),
            )?;
        }
        writeln!(
            out,
            "restore one with `tandem conflicts restore ID`, delete one with `tandem conflicts discard ID`"
        )?;
    }
    for u in unanswered {
        writeln!(out, "not included (the node did not answer): {u}")?;
    }
    if not_listed_count > 0 {
        writeln!(out, "not included: {}", not_listed(not_listed_count))?;
    }
    Ok(())
}

/// Why no single copy was found for what a person typed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PickError {
    /// Nothing matches.
    #[error("no conflict copy has the id {0:?}; `tandem conflicts` lists them")]
    NotFound(String),
    /// Several match: the id needs more characters.
    #[error("the id {typed:?} matches {} conflict copies ({}); type more of it", .matches.len(), .matches.join(", "))]
    Ambiguous {
        /// What was typed.
        typed: String,
        /// The short ids it matches.
        matches: Vec<String>,
    },
}

/// The copy `typed` names: the start of its short id, or its full id in
/// the conflicts folder (optionally as `NODE:ID`).
pub fn pick<'a>(copies: &'a [ConflictCopy], typed: &str) -> Result<&'a ConflictCopy, PickError> {
    let exact: Vec<&ConflictCopy> = copies
        .iter()
        .filter(|c| c.id == typed || format!("{}:{}", c.node, c.id) == typed)
        .collect();
    let found: Vec<&ConflictCopy> = if exact.is_empty() && !typed.is_empty() {
        copies
            .iter()
            .filter(|c| c.short_id().starts_with(&typed.to_ascii_lowercase()))
            .collect()
    } else {
        exact
    };
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(PickError::NotFound(typed.to_string())),
        many => Err(PickError::Ambiguous {
            typed: typed.to_string(),
            matches: many.iter().map(|c| c.short_id()).collect(),
        }),
    }
}

/// What resolving did, in a sentence.
pub fn describe_resolution(r: &ConflictResolution) -> String {
    match (r.action, &r.path) {
        (ConflictAction::Restore, Some(p)) => {
            let mut s = format!("restored {p} on {} from the conflict copy {}", r.node, r.id);
            if let Some(k) = &r.replaced_as {
                s.push_str(&format!(
                    "; the version it replaced is kept as {k} on {}",
                    r.node
                ));
            }
            s
        }
        (ConflictAction::Restore, None) => {
            format!("restored the conflict copy {} on {}", r.id, r.node)
        }
        (ConflictAction::Discard, _) => {
            format!("deleted the conflict copy {} on {}", r.id, r.node)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::RelPath;

    fn copy(node: &str, id: &str) -> ConflictCopy {
        ConflictCopy {
            node: node.into(),
            id: id.into(),
            path: Some(RelPath::new("plan.txt").unwrap()),
            author: "B".into(),
            size: 3,
            mtime_ns: 0,
            kept_ns: 0,
        }
    }

    #[test]
    fn picks_by_short_id_prefix_or_full_id() {
        let v = vec![
            copy("A", "plan.conflict-20251203-060000-B.txt"),
            copy("C", "plan.conflict-20251203-060000-B.txt"),
        ];
        let short = v[1].short_id();
        assert_eq!(pick(&v, &short).unwrap().node, "C");
        assert_eq!(pick(&v, &short[..5]).unwrap().node, "C");
        assert_eq!(
            pick(&v, "A:plan.conflict-20251203-060000-B.txt")
                .unwrap()
                .node,
            "A"
        );
        assert!(matches!(
            pick(&v, "plan.conflict-20251203-060000-B.txt"),
            Err(PickError::Ambiguous { .. })
        ));
        assert_eq!(pick(&v, "zzzz"), Err(PickError::NotFound("zzzz".into())));
        assert!(matches!(pick(&v, ""), Err(PickError::NotFound(_))));
    }

    #[test]
    fn table_names_each_copy_and_says_what_is_missing() {
        let v = vec![copy("A", "plan.conflict-20251203-060000-B.txt")];
        let mut out = Vec::new();
        print_conflicts(&v, &["C: timed out".into()], 3, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&v[0].short_id()), "{text}");
        assert!(text.contains("plan.txt"), "{text}");
        assert!(
            text.contains("not included (the node did not answer): C: timed out"),
            "{text}"
        );
        let mut out = Vec::new();
        print_conflicts(&[], &[], 0, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(no conflict copies kept)\n"
        );
    }
}
