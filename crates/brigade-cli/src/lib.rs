//! The `brigade` command's workings, kept in a library so that tests and the benchmark crate
//! can use them: the lab (`brigade lab`) and its local HTTP server, and the cluster
//! inspection (`brigade cluster`).

#![warn(missing_docs, unreachable_pub)]

pub mod cluster;
pub mod lab;
