//! The cluster's lock table as a replicated state machine on Raft.
//!
//! - [`machine`]: the PURE lock table every member applies in log order.

pub mod machine;
