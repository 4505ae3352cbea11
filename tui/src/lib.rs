//! The Tandem client library: the connection to a node ([`client`]), the
//! one-shot subcommands' output ([`cli`]) and transfers ([`transfer`]), the
//! terminal UI ([`app`] state, [`ui`] views, [`keys`], [`term`], [`ui_main`]
//! event loop), events in words for both ([`wording`]), and the allocator's
//! settings ([`memory`]), all used by the `tandem` binary.

pub mod app;
pub mod cli;
pub mod client;
pub mod conflicts;
pub mod keys;
pub mod memory;
pub mod term;
pub mod transfer;
pub mod ui;
pub mod ui_main;
pub mod versions;
pub mod wording;
