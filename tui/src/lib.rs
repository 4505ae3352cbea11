//! The Tandem client library: the connection to a node ([`client`]) and the
//! one-shot subcommands' output ([`cli`]), shared by the `tandem` binary and
//! (later) its terminal UI.

pub mod cli;
pub mod client;
pub mod transfer;
