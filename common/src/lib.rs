//! Code shared by the Tandem node and client: the file model, validated
//! relative paths, the wire protocol and its framing, and display helpers.
//!
//! This crate has no async runtime of its own; framing is expressed as a
//! `tokio_util` codec so either side can drive it over any byte stream
//! (TLS over TCP, see [`tls`]).

pub mod blocklist;
pub mod buffers;
pub mod codec;
pub mod delta;
pub mod display;
pub mod hashing;
pub mod identity;
pub mod model;
pub mod path;
pub mod proto;
pub mod tls;

pub use model::{ContentHash, EntryKind, FileEntry, NodeId, VersionVector, VvOrder};
pub use path::RelPath;
