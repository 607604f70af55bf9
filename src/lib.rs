//! walcast: real-time Socket.IO events for Strapi v5, straight from Postgres's WAL.
//!
//! ```text
//! Postgres WAL ──► replication ──► assemble ──► populate ──► route ──► deliver ──► gateway ──► clients
//!  (pgoutput)      (LSN, feedback,  (rows of one  (relations,   (rooms,     (replay log:  (Socket.IO
//!                   resume)          commit →      media, comp-  permissions, durable,      + HTTP)
//!                                    documents)    onents; SQL)  payloads)    bounded)
//!                 strapi: read-only model of the app, consulted by every stage
//!                 leader: only one node consumes the slot
//! ```
//!
//! - [`leader`]: leader election — one node consumes the slot, the others wait and take over.
//! - [`replication`]: walsender bytes → ordered replication events; owns the slot position.
//! - [`strapi`]: content types, table roles and naming rules, discovered from the database.
//! - [`assemble`]: committed transactions → document events (spec §3).
//! - [`populate`]: completes events through SQL: entries the WAL did not carry, and the
//!   configured `populate` (relations, media, components), batched per transaction.
//! - [`route`]: who receives each event and what they see (spec §4–5).
//! - [`deliver`]: the durable replay log that lets clients resume with `auth.offset` (spec §6).
//! - [`auth`]: handshake authentication, and permission changes applied to live sockets.
//! - [`gateway`]: the Socket.IO and HTTP listener; presence.
//! - [`security`]: IP lists, connection and event limits, lockout, admin session tokens.
//! - [`service`]: wires the stages; [`preflight`]: `walcast check`; [`config`]: configuration;
//!   [`metrics`]: Prometheus; [`tls`]: `sslmode` and rustls for both Postgres connections.

pub mod assemble;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod populate;
pub mod preflight;
pub mod replication;
pub mod route;
pub mod security;
pub mod service;
pub mod strapi;
pub mod tls;

pub use service::run;
