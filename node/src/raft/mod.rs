//! The cluster's lock table as a replicated state machine on Raft (openraft
//! 0.9, storage v2).
//!
//! - [`machine`]: the PURE lock table every member applies in log order.
//! - [`types`]: openraft's type configuration (member ids are Tandem node ids).
//! - [`store`]: log, vote, applied table and snapshot in `STATE/raft.db`.

pub mod machine;
pub mod store;
pub mod types;
