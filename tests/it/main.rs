//! Integration tests: real Postgres over real logical replication, real socket.io clients.

mod support;

mod auth;
mod cli;
mod client_events;
mod cluster;
mod connect_errors;
mod dashboard;
mod document_model;
mod golden;
mod http_api;
mod js_client;
mod leader;
mod payloads;
mod presence;
mod readme;
mod replication;
mod resume;
mod security;
mod skeleton;
mod streaming;
mod tls;
