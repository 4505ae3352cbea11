//! Test-only transport: members in one process, each request and reply
//! encoded and decoded with the store codec on the way (so every message
//! type is known to round-trip through bincode), and links that can be cut
//! between chosen pairs. A cut link answers `Unreachable`, as a node with
//! no route to a member does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_common::codec;

use super::RaftLocks;
use super::network::{RaftReply, RaftRequest, RaftTransport, TransportError};
use super::types::MemberId;

/// The in-process "network" of a test cluster.
#[derive(Default)]
pub(crate) struct MemNet {
    members: Mutex<BTreeMap<MemberId, RaftLocks>>,
    cut: Mutex<BTreeSet<(MemberId, MemberId)>>,
    /// Whether transports say which links are up, as the mesh's does
    /// ([`RaftTransport::heard_within`]); off: they say nothing (true).
    links_known: std::sync::atomic::AtomicBool,
}

impl MemNet {
    pub(crate) fn new() -> Arc<MemNet> {
        Arc::new(MemNet::default())
    }

    /// The transport member `me` sends through.
    pub(crate) fn transport(self: &Arc<Self>, me: MemberId) -> Arc<dyn RaftTransport> {
        Arc::new(MemTransport {
            net: self.clone(),
            me,
        })
    }

    /// Makes `locks` reachable.
    pub(crate) fn attach(&self, locks: RaftLocks) {
        self.members.lock().unwrap().insert(locks.me(), locks);
    }

    /// Makes `id` unreachable (as if stopped).
    pub(crate) fn detach(&self, id: MemberId) {
        self.members.lock().unwrap().remove(&id);
    }

    /// Cuts every link of `id`.
    pub(crate) fn isolate(&self, id: MemberId) {
        let others: Vec<MemberId> = self.members.lock().unwrap().keys().copied().collect();
        let mut cut = self.cut.lock().unwrap();
        for o in others.into_iter().filter(|o| *o != id) {
            cut.insert(ordered(id, o));
        }
    }

    /// Transports say from now on which links are up (see `links_known`).
    pub(crate) fn know_links(&self) {
        self.links_known
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Restores every link.
    pub(crate) fn heal(&self) {
        self.cut.lock().unwrap().clear();
    }

    fn is_cut(&self, a: MemberId, b: MemberId) -> bool {
        self.cut.lock().unwrap().contains(&ordered(a, b))
    }

    /// Detaches everyone (breaks the transport ↔ member reference cycle).
    pub(crate) fn clear(&self) {
        self.members.lock().unwrap().clear();
    }
}

fn ordered(a: MemberId, b: MemberId) -> (MemberId, MemberId) {
    if a <= b { (a, b) } else { (b, a) }
}

fn round_trip<T: Serialize + DeserializeOwned>(v: &T) -> Result<T, TransportError> {
    let fail = |e: codec::CodecError| TransportError::Failed {
        to: MemberId::default(),
        reason: e.to_string(),
    };
    codec::decode_stored(&codec::encode_stored(v).map_err(fail)?).map_err(fail)
}

struct MemTransport {
    net: Arc<MemNet>,
    me: MemberId,
}

impl RaftTransport for MemTransport {
    fn heard_within(&self, member: MemberId, _within: Duration) -> bool {
        let net = &self.net;
        !net.links_known.load(std::sync::atomic::Ordering::Relaxed)
            || (net.members.lock().unwrap().contains_key(&member) && !net.is_cut(self.me, member))
    }

    fn call(
        &self,
        to: MemberId,
        request: RaftRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>> {
        let (net, me) = (self.net.clone(), self.me);
        Box::pin(async move {
            let target = net.members.lock().unwrap().get(&to).cloned();
            let Some(target) = target.filter(|_| !net.is_cut(me, to)) else {
                return Err(TransportError::Unreachable(to));
            };
            let request = round_trip(&request)?;
            // The receiver works on its own task, as a remote node would.
            let answer = tokio::spawn(async move { target.answer(me, request).await });
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(reply)) if !net.is_cut(me, to) => round_trip(&reply),
                Ok(Ok(_)) | Err(_) => Err(TransportError::Timeout(to, timeout)),
                Ok(Err(e)) => Err(TransportError::Failed {
                    to,
                    reason: e.to_string(),
                }),
            }
        })
    }
}
