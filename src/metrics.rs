//! Prometheus metrics: every name walcast exports, registered once.
//!
//! Names carry the `walcast_` prefix; the registry is rendered by `/metrics` (text format).

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The registry `/metrics` renders.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

pub static WAL_MESSAGES: LazyLock<IntCounter> =
    LazyLock::new(|| counter("walcast_wal_messages_total", "pgoutput messages decoded"));
pub static WAL_UNEXPECTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_wal_unexpected_total",
        "replication frames or messages that were not understood and were skipped",
    )
});
pub static REPLICATION_RECONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_replication_reconnects_total",
        "times the replication stream was re-established after an interruption",
    )
});
pub static REPLICATION_STREAMING: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_replication_streaming",
        "1 while the replication stream is connected and streaming",
    )
});
pub static CONFIRMED_LSN: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_confirmed_flush_lsn",
        "the flush LSN last confirmed to postgres",
    )
});
pub static TRANSACTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_transactions_total",
        "committed transactions received",
    )
});
pub static ROW_CHANGES: LazyLock<IntCounter> =
    LazyLock::new(|| counter("walcast_row_changes_total", "row changes received"));
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "walcast_events_total",
        "document events produced, by content type and action",
        &["uid", "action"],
    )
});
pub static DELIVERIES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_deliveries_total",
        "event emissions handed to socket.io rooms",
    )
});
pub static EMIT_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_emit_errors_total",
        "emissions socket.io reported as not delivered to at least one socket",
    )
});
pub static CONNECTIONS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("walcast_connections", "connected sockets"));
pub static HANDSHAKE_REJECTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_handshake_rejections_total",
        "socket handshakes refused",
    )
});
pub static SCHEMA_RELOADS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_schema_reloads_total",
        "times the Strapi schema or permission model was reloaded",
    )
});

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    // Touch the lazies so that every metric appears even before its first use.
    let _ = (
        &*WAL_MESSAGES,
        &*WAL_UNEXPECTED,
        &*REPLICATION_RECONNECTS,
        &*REPLICATION_STREAMING,
        &*CONFIRMED_LSN,
        &*TRANSACTIONS,
        &*ROW_CHANGES,
        &*EVENTS,
        &*DELIVERIES,
        &*EMIT_ERRORS,
        &*CONNECTIONS,
        &*HANDSHAKE_REJECTIONS,
        &*SCHEMA_RELOADS,
    );
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&REGISTRY.gather())
        .unwrap_or_default()
}
