//! Pieces of the load-test tools that are worth testing on their own.
#![forbid(unsafe_code)]

pub mod link;
