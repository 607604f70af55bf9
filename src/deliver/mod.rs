//! Delivery guarantees between the router and the gateway (spec §6).
//!
//! [`replay`] keeps every routed delivery in a durable, bounded log before the slot may pass
//! it, so a client that reconnects with `auth.offset` gets what it missed, also across a
//! walcast restart; [`segment`] is that log's file format. Knows deliveries, never sockets.

pub mod replay;
pub mod segment;

pub use replay::{
    Handoff, LiveTurn, LogSyncer, ReplayBatch, ReplayLimits, ReplayLog, ReplayLogError,
    ResumePosition,
};
