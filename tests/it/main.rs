//! Integration tests: real Postgres over real logical replication, real socket.io clients.

mod support;

mod cli;
mod connect_errors;
mod document_model;
mod golden;
mod payloads;
mod replication;
mod resume;
mod skeleton;
mod tls;
