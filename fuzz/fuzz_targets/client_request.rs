//! A frame payload decoded as what a client sends (`Request`, wrapping a
//! `ClientRequest`) and as what a node sends a client (`NodeToClient`,
//! wrapping a `ClientResponse`, or a feed `Event`).
//!
//! Why: a node decodes every client frame before it knows what the client
//! may do (a client without a role gets small frames, not other code), and
//! a client decodes whatever the node it connected to sends. Checked,
//! beyond "never panics":
//! - the codec's round trip (see `tandem_fuzz::round_trip`) for each of the
//!   four types: what decodes re-encodes no longer, decodes to the same
//!   value, and a failure is a typed decode error;
//! - a decoded `Event` compares equal to its round trip (it has PartialEq);
//! - what decoding validates: every path a valid `RelPath`;
//! - the raw body that follows a `Chunk` (`codec::Body`): announced by the
//!   chunk's `len`, and put back whole.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tandem_common::codec::{self, Body};
use tandem_common::proto::{ClientRequest, ClientResponse, Event, NodeToClient, Request};
use tandem_fuzz::{check_path, round_trip};

fuzz_target!(|data: &[u8]| {
    if let Some(req) = round_trip::<Request>(data) {
        check_request(&req.body);
    }
    if let Some(req) = round_trip::<ClientRequest>(data) {
        check_request(&req);
    }
    if let Some(msg) = round_trip::<NodeToClient>(data) {
        check_to_client(msg);
    }
    if let Some(resp) = round_trip::<ClientResponse>(data) {
        check_response(&resp);
    }
});

fn check_request(req: &ClientRequest) {
    match req {
        ClientRequest::Lock { path, .. }
        | ClientRequest::AwaitLock { path }
        | ClientRequest::Unlock { path, .. }
        | ClientRequest::Fetch { path, .. }
        | ClientRequest::Put { path, .. } => check_path(path.as_str()),
        _ => {}
    }
}

fn check_to_client(mut msg: NodeToClient) {
    match &msg {
        NodeToClient::Response { body, .. } => check_response(body),
        NodeToClient::Event(e) => {
            let bytes = codec::encode(e).expect("a decoded event re-encodes");
            let back: Event = codec::decode(&bytes).expect("a re-encoded event decodes");
            assert_eq!(&back, e);
        }
        NodeToClient::Missed { .. } => {}
    }
    match msg.body_len() {
        Some(n) => {
            let NodeToClient::Response {
                body: ClientResponse::Chunk { len, data, .. },
                ..
            } = &msg
            else {
                panic!("a body announced by {msg:?}")
            };
            assert_eq!(n, *len as usize);
            assert!(data.is_empty(), "chunk bytes before the body");
            if n <= 1 << 20 {
                let body = Bytes::from(vec![7u8; n]);
                msg.put_body(body.clone());
                assert_eq!(msg.take_body(), vec![body]);
            }
        }
        None => assert!(msg.take_body().is_empty()),
    }
}

fn check_response(resp: &ClientResponse) {
    match resp {
        ClientResponse::Files { files, .. } => {
            files.iter().for_each(|f| check_path(f.path.as_str()))
        }
        ClientResponse::Locked(l) | ClientResponse::Queued { lock: l, .. } => {
            check_path(l.path.as_str())
        }
        ClientResponse::Unlocked { lock, released, .. } => {
            check_path(lock.path.as_str());
            released.iter().for_each(|h| check_path(h.path.as_str()));
        }
        ClientResponse::LockList(locks) => locks.iter().for_each(|l| check_path(l.path.as_str())),
        ClientResponse::HeldList(held) => held.iter().for_each(|h| check_path(h.path.as_str())),
        ClientResponse::FetchStart { file, .. } => check_path(file.path.as_str()),
        ClientResponse::CacheReport(c) => {
            c.entries.iter().for_each(|e| check_path(e.path.as_str()))
        }
        ClientResponse::Stored { path } => check_path(path.as_str()),
        _ => {}
    }
}
