//! The nodes this node accepts as peers: the ids named by `--peer ID@ADDR`
//! plus the trust list in the state folder (`trust.toml`), which
//! `tandem-node --dir DIR trust ID` and `untrust ID` edit. The file is read
//! again at every peer handshake, so an edit made while the node runs takes
//! effect for the next connection. Membership of the cluster is this set:
//! no peer can add a member by talking.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tandem_common::NodeId;

/// File name of the trust list in the state folder.
pub const TRUST_FILE: &str = "trust.toml";

/// The trust list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Reading or writing failed.
    #[error("cannot {what} the trust list {path}: {source}")]
    Io {
        /// read, write.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error(
        "the trust list {path} is damaged ({why}); fix it by hand or remove it and trust the nodes again"
    )]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// One trusted node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trusted {
    /// Its id, in the checked text form.
    pub id: String,
    /// A name to recognise it by (not checked against what it calls itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TrustFile {
    #[serde(default, rename = "node")]
    nodes: Vec<Trusted>,
}

/// The trust list of one state folder.
#[derive(Debug, Clone)]
pub struct TrustList {
    path: PathBuf,
    nodes: Vec<(NodeId, Trusted)>,
}

impl TrustList {
    /// Reads the list in `state_dir` (empty when there is none).
    pub fn load(state_dir: &Path) -> Result<TrustList, TrustError> {
        let path = state_dir.join(TRUST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(TrustError::Io {
                    what: "read",
                    path,
                    source,
                });
            }
        };
        let bad = |why: String| TrustError::Bad {
            path: path.clone(),
            why,
        };
        let file: TrustFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut nodes = Vec::with_capacity(file.nodes.len());
        for t in file.nodes {
            let id: NodeId = t.id.parse().map_err(|e| bad(format!("{e}")))?;
            nodes.push((id, t));
        }
        Ok(TrustList { path, nodes })
    }

    /// Whether `id` is on the list.
    pub fn contains(&self, id: NodeId) -> bool {
        self.nodes.iter().any(|(n, _)| *n == id)
    }

    /// The trusted ids with their names.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, Option<&str>)> {
        self.nodes.iter().map(|(id, t)| (*id, t.name.as_deref()))
    }

    /// Adds `id` (or renames it); true if the list changed.
    pub fn add(&mut self, id: NodeId, name: Option<String>) -> bool {
        if let Some((_, t)) = self.nodes.iter_mut().find(|(n, _)| *n == id) {
            if name.is_some() && t.name != name {
                t.name = name;
                return true;
            }
            return false;
        }
        self.nodes.push((
            id,
            Trusted {
                id: id.to_string(),
                name,
            },
        ));
        true
    }

    /// Removes `id`; true if it was there.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let before = self.nodes.len();
        self.nodes.retain(|(n, _)| *n != id);
        self.nodes.len() != before
    }

    /// Writes the list atomically (a temp file renamed over the old one).
    pub fn save(&self) -> Result<(), TrustError> {
        let io = |what, source| TrustError::Io {
            what,
            path: self.path.clone(),
            source,
        };
        let file = TrustFile {
            nodes: self.nodes.iter().map(|(_, t)| t.clone()).collect(),
        };
        let body = toml::to_string(&file).map_err(|e| TrustError::Bad {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let text = format!(
            "# Nodes this node accepts as peers. Edit with\n#   tandem-node --dir DIR trust ID [--name NAME]\n#   tandem-node --dir DIR untrust ID\n{body}"
        );
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("write", e))
    }
}

/// Who may be a peer: the ids given with `--peer` plus the trust list,
/// read afresh on every question.
#[derive(Debug, Clone)]
pub struct Trust {
    state_dir: PathBuf,
    configured: Vec<NodeId>,
    /// The list as last read, and the file's identity then (inode, size,
    /// mtime): asked for every lock-cluster message, it is read again only
    /// when the file changed.
    cache: std::sync::Arc<std::sync::Mutex<Option<(Stamp, TrustList)>>>,
    /// Names trusted nodes gave themselves in answers (for those the list
    /// does not name): what views call them before the lock cluster does.
    learned: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<NodeId, String>>>,
}

type Stamp = (u64, u64, Option<std::time::SystemTime>);

impl Trust {
    /// Trust for the node whose state folder is `state_dir`.
    pub fn new(state_dir: &Path, configured: Vec<NodeId>) -> Trust {
        Trust {
            state_dir: state_dir.to_path_buf(),
            configured,
            cache: Default::default(),
            learned: Default::default(),
        }
    }

    /// The trust list, read again only if the file changed.
    fn list(&self) -> Result<TrustList, TrustError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.state_dir.join(TRUST_FILE);
        let stamp = match std::fs::metadata(&path) {
            Ok(m) => Some((m.ino(), m.len(), m.modified().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(TrustError::Io {
                    what: "read",
                    path,
                    source,
                });
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(st), Some((cached, list))) = (stamp, cache.as_ref())
            && st == *cached
        {
            return Ok(list.clone());
        }
        let list = TrustList::load(&self.state_dir)?;
        *cache = stamp.map(|st| (st, list.clone()));
        Ok(list)
    }

    /// Whether `id` may be a peer. A damaged list trusts only `--peer` ids
    /// (and says why in the log): an error is never taken as "trust all".
    pub fn trusts(&self, id: NodeId) -> bool {
        if self.configured.contains(&id) {
            return true;
        }
        match self.list() {
            Ok(l) => l.contains(id),
            Err(e) => {
                tracing::error!("{e}");
                false
            }
        }
    }

    /// Every trusted id (the cluster's members besides this node).
    pub fn members(&self) -> Vec<NodeId> {
        let mut v = self.configured.clone();
        match self.list() {
            Ok(l) => v.extend(l.nodes().map(|(id, _)| id)),
            Err(e) => tracing::error!("{e}"),
        }
        v.sort();
        v.dedup();
        v
    }

    /// Every trusted id, or why the trust list cannot be read (for
    /// decisions that must not be taken on a damaged list).
    pub fn try_members(&self) -> Result<Vec<NodeId>, TrustError> {
        let mut v = self.configured.clone();
        v.extend(self.list()?.nodes().map(|(id, _)| id));
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// The name the trust list gives `id`, or else the one it gave itself
    /// in an answer ([`Trust::learn_name`]), if any.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        let listed = self.list().ok().and_then(|list| {
            list.nodes()
                .find(|(i, _)| *i == id)
                .and_then(|(_, n)| n.map(str::to_string))
        });
        listed.or_else(|| {
            let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            learned.get(&id).cloned()
        })
    }

    /// Notes the name a trusted node `id` answered with. Others are not
    /// noted, so a peer cannot fill this (it is bounded by the trust list).
    pub fn learn_name(&self, id: NodeId, name: &str) {
        if name.is_empty() || !self.trusts(id) {
            return;
        }
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if learned.get(&id).map(String::as_str) != Some(name) {
            learned.insert(id, name.to_string());
        }
    }

    /// The exact command that trusts `id` on this node.
    pub fn command_for(&self, dir: &Path, id: NodeId) -> String {
        let default_state = dir.join(tandem_common::path::STATE_DIR_NAME);
        if self.state_dir == default_state {
            format!("tandem-node --dir {} trust {id}", dir.display())
        } else {
            format!(
                "tandem-node --dir {} --state-dir {} trust {id}",
                dir.display(),
                self.state_dir.display()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_save_load() {
        let dir = std::env::temp_dir().join(format!("tandem-trust-{}", uuid::Uuid::new_v4()));
        let mut l = TrustList::load(&dir).unwrap();
        let (a, b) = (NodeId::random(), NodeId::random());
        assert!(l.add(a, Some("A".into())));
        assert!(!l.add(a, None), "adding again changes nothing");
        assert!(l.add(b, None));
        l.save().unwrap();
        let t = Trust::new(&dir, vec![]);
        assert!(t.trusts(a) && t.trusts(b));
        assert!(!t.trusts(NodeId::random()));
        let mut l = TrustList::load(&dir).unwrap();
        assert!(l.remove(a));
        l.save().unwrap();
        assert!(!t.trusts(a) && t.trusts(b));
        std::fs::write(dir.join(TRUST_FILE), "[[node]]\nid = \"nope\"\n").unwrap();
        assert!(!t.trusts(b), "a damaged list trusts nobody");
        let err = TrustList::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("not a Tandem id"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
