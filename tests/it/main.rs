//! Integration tests: real Postgres over real logical replication, real socket.io clients.

mod support;

mod cli;
mod replication;
mod skeleton;
mod streaming;
