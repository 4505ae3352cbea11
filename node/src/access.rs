//! Who may do what: client identities with roles (replicated between
//! trusted nodes, newest record wins), one-time invite codes (kept on the
//! node that made them, only as hashes), and what each request needs.
//!
//! A client is known by the id of its key (TLS proves it holds the key);
//! no token or secret ever crosses the wire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_common::proto::{Access, ClientRequest, ConflictAction, IdentityRecord};
use uuid::Uuid;

/// How long an invite code works.
pub const INVITE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Invite codes that may be outstanding on one node.
const MAX_INVITES: usize = 64;
/// Register attempts one node accepts per minute (good or bad codes).
pub const REGISTER_PER_MINUTE: u32 = 10;

/// The role a request needs; `None` for what any client may do.
pub fn required(req: &ClientRequest) -> Option<Access> {
    use ClientRequest as R;
    match req {
        R::Register { .. } => None,
        R::List
        | R::Locks
        | R::Held
        | R::Clients
        | R::Subscribe { .. }
        | R::Fetch { .. }
        | R::FetchConflict { .. }
        | R::Cache { .. }
        | R::Nodes
        | R::Ping { .. }
        | R::Discover { .. }
        | R::Conflicts
        | R::Ignored
        | R::Versions { .. }
        | R::Identities => Some(Access::Read),
        R::Lock { .. }
        | R::AwaitLock { .. }
        | R::Unlock { force: false, .. }
        | R::Put { .. }
        | R::PutData { .. }
        | R::ResolveConflict { .. }
        | R::RestoreVersion { .. }
        | R::Override { .. }
        | R::Revert { .. } => Some(Access::Write),
        R::Unlock { force: true, .. } | R::Approve { .. } | R::Invite { .. } => Some(Access::Admin),
    }
}

/// The request's name as a person typed it (for refusals).
pub fn request_name(req: &ClientRequest) -> &'static str {
    use ClientRequest as R;
    match req {
        R::List => "list",
        R::Register { .. } => "register",
        R::Approve { .. } => "approve",
        R::Invite { .. } => "invite",
        R::Identities => "identities",
        R::Lock { wait: false, .. } => "lock",
        R::Lock { wait: true, .. } | R::AwaitLock { .. } => "lock --wait",
        R::Unlock { force: true, .. } => "unlock --force",
        R::Unlock { .. } => "unlock",
        R::Locks => "locks",
        R::Held => "held",
        R::Clients => "clients",
        R::Subscribe { .. } => "feed",
        R::Fetch { .. } => "fetch",
        R::FetchConflict { .. } => "conflicts fetch",
        R::Cache { .. } => "cache",
        R::Nodes => "nodes",
        R::Ping { .. } => "ping",
        R::Discover { .. } => "discover",
        R::Put { .. } | R::PutData { .. } => "put",
        R::Conflicts => "conflicts",
        R::Ignored => "ignored",
        R::Versions { .. } => "versions",
        R::RestoreVersion { .. } => "restore",
        R::Override { .. } => "override",
        R::Revert { .. } => "revert",
        R::ResolveConflict {
            action: ConflictAction::Restore,
            ..
        } => "conflicts restore",
        R::ResolveConflict {
            action: ConflictAction::Discard,
            ..
        } => "conflicts discard",
    }
}

/// Which of two records of the same id is kept: the newest; ties are
/// broken by content so every node keeps the same one.
fn newer(a: &IdentityRecord, b: &IdentityRecord) -> bool {
    (a.changed_ns, a.role, &a.name, &a.by) > (b.changed_ns, b.role, &b.name, &b.by)
}

/// The cluster's client identities, shared by the core (which persists and
/// replicates them) and the connection tasks (which check roles on every
/// request, so a change applies at once).
#[derive(Clone, Default)]
pub struct Identities {
    map: Arc<Mutex<HashMap<Uuid, IdentityRecord>>>,
}

impl Identities {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, IdentityRecord>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts from the stored records.
    pub fn load(&self, recs: Vec<IdentityRecord>) {
        let mut m = self.lock();
        for r in recs {
            m.insert(r.id, r);
        }
    }

    /// The role of `id`, if it has one.
    pub fn role(&self, id: &Uuid) -> Option<Access> {
        self.lock().get(id).and_then(|r| r.role)
    }

    /// Every record, sorted by name.
    pub fn all(&self) -> Vec<IdentityRecord> {
        let mut v: Vec<IdentityRecord> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        v
    }

    /// Keeps `rec` if it is newer than what is known; true if it was.
    pub fn merge(&self, rec: IdentityRecord) -> bool {
        let mut m = self.lock();
        match m.get(&rec.id) {
            Some(old) if !newer(&rec, old) => false,
            _ => {
                m.insert(rec.id, rec);
                true
            }
        }
    }

    /// The bootstrap rule: when this node knows no identity at all, `rec`
    /// (an admin) is recorded and true returned; otherwise nothing changes.
    /// Checked and set under one lock, so two first clients cannot both win
    /// on one node.
    pub fn claim_first(&self, rec: IdentityRecord) -> bool {
        let mut m = self.lock();
        if !m.is_empty() {
            return false;
        }
        m.insert(rec.id, rec);
        true
    }
}

/// One-time invite codes of this node (hashes only) and the register rate.
#[derive(Default)]
pub struct Invites {
    inner: Mutex<InvitesInner>,
}

#[derive(Default)]
struct InvitesInner {
    codes: HashMap<[u8; 32], (Access, Instant)>,
    window: Option<Instant>,
    attempts: u32,
}

/// Why a code was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum InviteError {
    /// Too many attempts this minute.
    RateLimited(u64),
    /// Unknown, used or expired.
    Unknown,
    /// Too many outstanding codes.
    TooMany,
}

fn code_hash(code: &str) -> [u8; 32] {
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    *blake3::hash(clean.as_bytes()).as_bytes()
}

impl Invites {
    fn lock(&self) -> std::sync::MutexGuard<'_, InvitesInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new code for `role`, valid for [`INVITE_LIFETIME`].
    pub fn make(&self, role: Access, now: Instant) -> Result<String, InviteError> {
        let mut bytes = [0u8; 15];
        getrandom(&mut bytes);
        let code = data_encoding::BASE32_NOPAD.encode(&bytes);
        let code = format!("{}-{}-{}", &code[..8], &code[8..16], &code[16..]);
        let mut g = self.lock();
        g.codes
            .retain(|_, (_, t)| now.duration_since(*t) < INVITE_LIFETIME);
        if g.codes.len() >= MAX_INVITES {
            return Err(InviteError::TooMany);
        }
        g.codes.insert(code_hash(&code), (role, now));
        Ok(code)
    }

    /// Uses a code: its role, once.
    pub fn redeem(&self, code: &str, now: Instant) -> Result<Access, InviteError> {
        let mut g = self.lock();
        let fresh = g
            .window
            .is_some_and(|w| now.duration_since(w) < Duration::from_secs(60));
        if !fresh {
            g.window = Some(now);
            g.attempts = 0;
        }
        if g.attempts >= REGISTER_PER_MINUTE {
            let left = g.window.map_or(60, |w| {
                60u64.saturating_sub(now.duration_since(w).as_secs())
            });
            return Err(InviteError::RateLimited(left.max(1)));
        }
        g.attempts += 1;
        match g.codes.remove(&code_hash(code)) {
            Some((role, t)) if now.duration_since(t) < INVITE_LIFETIME => Ok(role),
            _ => Err(InviteError::Unknown),
        }
    }
}

/// Fills `buf` from the OS's secure generator (through ring, which TLS
/// already uses).
fn getrandom(buf: &mut [u8]) {
    let rng = tokio_rustls::rustls::crypto::ring::default_provider().secure_random;
    if rng.fill(buf).is_err() {
        // ring only fails when the OS has no entropy source at all; uuid's
        // v4 reads the same OS generator through another path.
        for chunk in buf.chunks_mut(16) {
            let u = Uuid::new_v4();
            chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: Uuid, role: Option<Access>, t: i64) -> IdentityRecord {
        IdentityRecord {
            id,
            name: "x".into(),
            role,
            changed_ns: t,
            by: "test".into(),
        }
    }

    #[test]
    fn newest_record_wins_in_any_order() {
        let id = Uuid::new_v4();
        let (a, b) = (rec(id, Some(Access::Write), 1), rec(id, None, 2));
        let x = Identities::default();
        assert!(x.merge(a.clone()));
        assert!(x.merge(b.clone()));
        assert!(!x.merge(a.clone()));
        assert_eq!(x.role(&id), None);
        let y = Identities::default();
        assert!(y.merge(b));
        assert!(!y.merge(a));
        assert_eq!(y.role(&id), None);
    }

    #[test]
    fn only_the_first_claim_wins() {
        let x = Identities::default();
        assert!(x.claim_first(rec(Uuid::new_v4(), Some(Access::Admin), 1)));
        assert!(!x.claim_first(rec(Uuid::new_v4(), Some(Access::Admin), 2)));
    }

    #[test]
    fn codes_work_once_expire_and_are_rate_limited() {
        let inv = Invites::default();
        let t0 = Instant::now();
        let code = inv.make(Access::Write, t0).unwrap();
        assert_eq!(inv.redeem(&code.to_lowercase(), t0), Ok(Access::Write));
        assert_eq!(inv.redeem(&code, t0), Err(InviteError::Unknown), "once");
        let late = inv.make(Access::Read, t0).unwrap();
        assert_eq!(
            inv.redeem(&late, t0 + INVITE_LIFETIME + Duration::from_secs(1)),
            Err(InviteError::Unknown),
            "expired"
        );
        let inv = Invites::default();
        for _ in 0..REGISTER_PER_MINUTE {
            assert_eq!(inv.redeem("WRONG", t0), Err(InviteError::Unknown));
        }
        let good = inv.make(Access::Read, t0).unwrap();
        assert!(matches!(
            inv.redeem(&good, t0),
            Err(InviteError::RateLimited(_))
        ));
        assert_eq!(
            inv.redeem(&good, t0 + Duration::from_secs(61)),
            Ok(Access::Read)
        );
    }

    #[test]
    fn roles_needed() {
        use tandem_common::RelPath;
        let p = RelPath::new("a").unwrap();
        assert_eq!(required(&ClientRequest::List), Some(Access::Read));
        assert_eq!(
            required(&ClientRequest::Lock {
                path: p.clone(),
                wait: false
            }),
            Some(Access::Write)
        );
        assert_eq!(
            required(&ClientRequest::Unlock {
                path: p,
                force: true
            }),
            Some(Access::Admin)
        );
        assert_eq!(
            required(&ClientRequest::Register { code: "x".into() }),
            None
        );
        assert_eq!(required(&ClientRequest::Conflicts), Some(Access::Read));
        let fetch = ClientRequest::FetchConflict {
            node: "B".into(),
            id: "x".into(),
        };
        assert_eq!(required(&fetch), Some(Access::Read));
        for action in [ConflictAction::Restore, ConflictAction::Discard] {
            let req = ClientRequest::ResolveConflict {
                node: "B".into(),
                id: "x".into(),
                action,
            };
            assert_eq!(required(&req), Some(Access::Write), "{action:?}");
        }
    }
}
