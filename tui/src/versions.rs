//! Kept versions as the client shows them: asking for them, the `tandem
//! versions` table, which versions `tandem restore` brings back, and what a
//! restore did, in words (the UI's detail pane uses the same).

use std::collections::BTreeMap;
use std::io::Write;

use tandem_common::RelPath;
use tandem_common::display::{human_size, local_time, rfc3339};
use tandem_common::proto::{ClientRequest, ClientResponse, KeptVersion, VersionRestoration};

use crate::client::{Client, ClientError};

/// Every node's kept versions of `path` (and of the files under it, when it
/// is or was a folder), newest kept first, and the nodes that could not say
/// what they keep, with why.
pub async fn kept_versions(
    c: &Client,
    path: &RelPath,
) -> Result<(Vec<KeptVersion>, Vec<String>), ClientError> {
    let req = ClientRequest::Versions { path: path.clone() };
    match c.call(req).await? {
        ClientResponse::VersionList {
            versions,
            unanswered,
        } => Ok((versions, unanswered)),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// Prints the versions (newest kept first, as the node sends them) and the
/// nodes that could not say what they keep.
pub fn print_versions(
    path: &RelPath,
    versions: &[KeptVersion],
    unanswered: &[String],
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "short_id": v.short_id(),
                    "node": v.node,
                    "id": v.id,
                    "path": v.path.as_str(),
                    "cause": v.cause,
                    "size": v.size,
                    "mtime": rfc3339(v.mtime_ns),
                    "kept": rfc3339(v.kept_ns),
                })
            })
            .collect();
        let v = serde_json::json!({ "versions": rows, "unanswered": unanswered });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        return writeln!(out);
    }
    if versions.is_empty() {
        writeln!(out, "(no kept versions of {path})")?;
    } else {
        writeln!(
            out,
            "{:<7}  {:<10}  {:<10}  {:>10}  {:<19}  {:<19}  FILE",
            "ID", "NODE", "REPLACED BY", "SIZE", "MODIFIED", "KEPT"
        )?;
        for v in versions {
            writeln!(
                out,
                "{:<7}  {:<10}  {:<10}  {:>10}  {:<19}  {:<19}  {}",
                v.short_id(),
                v.node,
                v.cause,
                human_size(v.size),
                local_time(v.mtime_ns),
                local_time(v.kept_ns),
                v.path
            )?;
        }
        writeln!(
            out,
            "make one current again with `tandem restore {path} --version ID` (without --version: the newest kept)"
        )?;
    }
    for u in unanswered {
        writeln!(out, "not included (the node did not answer): {u}")?;
    }
    Ok(())
}

/// Why nothing could be picked to restore.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PickError {
    /// No version kept of the path (on that node).
    #[error("no kept versions of {path}{}; `tandem versions {path}` lists them", .from.as_ref().map(|n| format!(" on {n}")).unwrap_or_default())]
    None {
        /// What was asked for.
        path: String,
        /// The node asked for, if one was.
        from: Option<String>,
    },
    /// The id matches no version of the path.
    #[error("no kept version of {path} has the id {typed:?}; `tandem versions {path}` lists them")]
    NotFound {
        /// The path.
        path: String,
        /// What was typed.
        typed: String,
    },
    /// The id matches several.
    #[error("the id {typed:?} matches {} versions ({}); type more of it", .matches.len(), .matches.join(", "))]
    Ambiguous {
        /// What was typed.
        typed: String,
        /// The short ids it matches.
        matches: Vec<String>,
    },
}

/// What `tandem restore PATH` brings back, from `versions` (those of PATH
/// and of the files under it): the version `typed` names (the start of its
/// short id, or its full id), else the newest kept version of PATH itself,
/// else (PATH was a folder) the newest kept version of each file under it.
/// Only versions kept on `from`, when given.
pub fn pick<'a>(
    path: &RelPath,
    versions: &'a [KeptVersion],
    typed: Option<&str>,
    from: Option<&str>,
) -> Result<Vec<&'a KeptVersion>, PickError> {
    let mine: Vec<&KeptVersion> = versions
        .iter()
        .filter(|v| from.is_none_or(|n| v.node == n))
        .collect();
    if let Some(t) = typed {
        let lower = t.to_ascii_lowercase();
        let found: Vec<&KeptVersion> = mine
            .iter()
            .copied()
            .filter(|v| v.id == t || v.short_id().starts_with(&lower))
            .collect();
        return match found.as_slice() {
            [one] => Ok(vec![*one]),
            [] => Err(PickError::NotFound {
                path: path.to_string(),
                typed: t.to_string(),
            }),
            many => Err(PickError::Ambiguous {
                typed: t.to_string(),
                matches: many.iter().map(|v| v.short_id()).collect(),
            }),
        };
    }
    let newest = |of: &mut dyn Iterator<Item = &'a KeptVersion>| {
        let mut by_path: BTreeMap<&RelPath, &'a KeptVersion> = BTreeMap::new();
        for v in of {
            let e = by_path.entry(&v.path).or_insert(v);
            if (v.kept_ns, &v.node) > (e.kept_ns, &e.node) {
                *e = v;
            }
        }
        by_path.into_values().collect::<Vec<_>>()
    };
    let exact = newest(&mut mine.iter().copied().filter(|v| v.path == *path));
    let chosen = if exact.is_empty() {
        newest(&mut mine.iter().copied())
    } else {
        exact
    };
    if chosen.is_empty() {
        return Err(PickError::None {
            path: path.to_string(),
            from: from.map(str::to_string),
        });
    }
    Ok(chosen)
}

/// What replaced a kept version, in words: `replaced by B's change` (an
/// edit or a delete made on B: the versions folder does not say which).
pub fn cause(v: &KeptVersion) -> String {
    let by = if v.cause.is_empty() { "?" } else { &v.cause };
    format!("replaced by {by}'s change")
}

/// What restoring did, in a sentence.
pub fn describe_restoration(r: &VersionRestoration) -> String {
    let mut s = format!(
        "restored {} on {} from the version {}",
        r.path, r.node, r.id
    );
    if let Some(k) = &r.replaced_as {
        s.push_str(&format!(
            "; the version it replaced is kept as {k} on {}",
            r.node
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(node: &str, path: &str, kept_s: i64) -> KeptVersion {
        KeptVersion {
            node: node.into(),
            id: format!("{path}.{node}.{kept_s}"),
            path: RelPath::new(path).unwrap(),
            cause: "B".into(),
            size: 3,
            mtime_ns: 0,
            kept_ns: kept_s * 1_000_000_000,
        }
    }

    #[test]
    fn restore_picks_the_newest_of_the_file_or_of_each_file_in_a_folder() {
        let p = |s: &str| RelPath::new(s).unwrap();
        let all = vec![
            v("A", "d/x.txt", 5),
            v("B", "d/x.txt", 9),
            v("A", "d/y.txt", 7),
            v("A", "d", 1),
        ];
        let ids = |r: Result<Vec<&KeptVersion>, PickError>| -> Vec<String> {
            r.unwrap().into_iter().map(|v| v.id.clone()).collect()
        };
        assert_eq!(
            ids(pick(&p("d/x.txt"), &all[..2], None, None)),
            ["d/x.txt.B.9"]
        );
        assert_eq!(
            ids(pick(&p("d/x.txt"), &all[..2], None, Some("A"))),
            ["d/x.txt.A.5"]
        );
        // A file once called d has versions too: the file is what is meant.
        assert_eq!(ids(pick(&p("d"), &all, None, None)), ["d.A.1"]);
        assert_eq!(
            ids(pick(&p("d"), &all[..3], None, None)),
            ["d/x.txt.B.9", "d/y.txt.A.7"]
        );
        let short = all[2].short_id();
        assert_eq!(
            ids(pick(&p("d"), &all, Some(&short[..5]), None)),
            ["d/y.txt.A.7"]
        );
        assert!(matches!(
            pick(&p("d"), &all, Some("zzzz"), None),
            Err(PickError::NotFound { .. })
        ));
        assert_eq!(
            pick(&p("e"), &[], None, Some("C")).unwrap_err().to_string(),
            "no kept versions of e on C; `tandem versions e` lists them"
        );
    }
}
