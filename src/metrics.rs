//! Prometheus metrics: every name walcast exports, registered once.
//!
//! Names carry the `walcast_` prefix; the registry is rendered by `/metrics` (text format).

use std::sync::LazyLock;

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
pub static POPULATE_QUERIES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_populate_queries_total",
        "SQL statements the populate stage ran (entries and populated attributes, batched per transaction)",
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
pub static DROPPED_DELIVERIES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_dropped_deliveries_total",
        "events a socket could not be given because its send queue was full (the socket is disconnected and can resume)",
    )
});
pub static CLUSTER_PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_cluster_published_deliveries_total",
        "deliveries the leader added to the cluster stream in Redis",
    )
});
pub static CLUSTER_FOLLOWED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_cluster_followed_deliveries_total",
        "deliveries this node read from the cluster stream (as a follower) and logged",
    )
});
pub static CLUSTER_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_cluster_errors_total",
        "failed Redis operations of the cluster (retried) and skipped damaged stream entries",
    )
});
pub static SLOW_CONSUMER_DISCONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_slow_consumer_disconnects_total",
        "sockets disconnected because they did not drain their send queue",
    )
});
pub static CLIENT_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "walcast_client_events_total",
        "client-to-server events (subscribe-entity, join-room…) by event and outcome",
        &["event", "outcome"],
    )
});
pub static ENTITY_SUBSCRIPTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_entity_subscriptions",
        "entity subscriptions held by connected sockets",
    )
});
pub static CONNECTIONS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("walcast_connections", "connected sockets"));
pub static ROOMS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_rooms",
        "socket.io rooms with at least one member (measured when /metrics is read)",
    )
});
pub static PERMISSION_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "walcast_permission_cache_total",
        "handshake and admin credential lookups, by result: hit (answered from the cache) or miss (queried)",
        &["result"],
    )
});
pub static HTTP_ADMIN_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "walcast_admin_requests_total",
        "requests to the /io admin and server-helper routes, by outcome (ok, unauthorized, bad_request)",
        &["outcome"],
    )
});
pub static HANDSHAKE_REJECTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_handshake_rejections_total",
        "socket handshakes refused",
    )
});
pub static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "walcast_connections_refused_total",
        "connections refused before authentication (ip lists, connection limits, lockout)",
        &["reason"],
    )
});
pub static RATE_LIMITED_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_rate_limited_events_total",
        "client events refused because the socket sent more than max_events_per_second",
    )
});
pub static RATE_LIMIT_DISCONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_rate_limit_disconnects_total",
        "sockets disconnected for repeatedly exceeding max_events_per_second",
    )
});
pub static UNATTRIBUTED_ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_unattributed_rows_total",
        "row changes of content tables that could not be tied to a document (default replica identity, row never seen)",
    )
});
pub static PERMISSION_RELOADS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_permission_reloads_total",
        "times the permission model was reloaded after Strapi's auth tables changed",
    )
});
pub static SOCKETS_REVOKED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_sockets_revoked_total",
        "sockets disconnected because their credentials were revoked, blocked or expired",
    )
});
pub static SOCKETS_MOVED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_sockets_moved_total",
        "sockets moved to another room after a permission change",
    )
});
pub static SCHEMA_RELOADS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_schema_reloads_total",
        "times the Strapi schema was reloaded",
    )
});

pub static CUSTOM_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_custom_events_total",
        "custom events from pg_logical_emit_message delivered",
    )
});
pub static CUSTOM_EVENTS_INVALID: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_custom_events_invalid_total",
        "pg_logical_emit_message messages with prefix walcast that were not valid events",
    )
});
pub static SLOT_LAG_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_slot_lag_bytes",
        "WAL bytes between the server's current position and the slot's confirmed flush LSN",
    )
});
pub static SLOT_RETAINED_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_slot_retained_bytes",
        "WAL bytes the slot keeps on the server (from its restart LSN)",
    )
});
pub static SLOT_LAG_OVER_BUDGET: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_slot_lag_over_budget",
        "1 while the slot retains more WAL than replication.lag_budget_bytes, else 0",
    )
});
pub static SLOT_LAG_SECONDS: LazyLock<Gauge> = LazyLock::new(|| {
    let g = Gauge::new(
        "walcast_slot_lag_seconds",
        "seconds since walcast last handed off a transaction, while the slot is behind",
    )
    .expect("valid metric");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
});
pub static TRANSACTION_BUFFER_CHANGES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_transaction_buffer_changes",
        "row changes of not yet delivered transactions held in memory (the rest is spilled to disk)",
    )
});
pub static TRANSACTION_BUFFER_HIGH_WATER: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_transaction_buffer_high_water",
        "the most row changes a transaction buffer has held in memory at once",
    )
});
pub static SPILLED_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_spilled_changes_total",
        "row changes written to spill files because their transaction exceeded replication.max_buffered_changes",
    )
});
pub static SPILLED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_spilled_bytes_total",
        "bytes written to spill files",
    )
});
pub static STREAMED_TRANSACTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_streamed_transactions_total",
        "transactions postgres streamed before their commit (pgoutput protocol 2)",
    )
});
pub static ABORTED_STREAMS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_aborted_streams_total",
        "streamed transactions aborted as a whole; their changes were dropped",
    )
});

pub static REPLAY_LOG_EVENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_replay_log_events",
        "events held in the replay log for resuming clients",
    )
});
pub static REPLAY_LOG_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_replay_log_bytes",
        "bytes of the replay log's segment files on disk",
    )
});
pub static REPLAY_LOG_TRUNCATED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_replay_log_truncated_bytes_total",
        "bytes of torn or corrupt replay log tails cut off when the log was opened",
    )
});
pub static REPLAYED_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_replayed_events_total",
        "events replayed from the log to resuming sockets",
    )
});
pub static REPLAY_GAPS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_replay_gaps_total",
        "resuming sockets told walcast:gap because the log no longer held what they missed",
    )
});

static LAST_HANDOFF: LazyLock<std::sync::Mutex<std::time::Instant>> =
    LazyLock::new(|| std::sync::Mutex::new(std::time::Instant::now()));

/// Notes that a transaction was handed off now (for the lag in seconds).
pub fn record_handoff() {
    if let Ok(mut t) = LAST_HANDOFF.lock() {
        *t = std::time::Instant::now();
    }
}

/// Seconds since the last hand-off.
pub fn seconds_since_last_handoff() -> f64 {
    LAST_HANDOFF
        .lock()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0)
}

pub static LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_leader",
        "1 while this node holds the slot's leader lock and consumes it, 0 while following",
    )
});
pub static LEADER_SINCE: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "walcast_leader_since_timestamp_seconds",
        "when this node became leader (Unix time)",
    )
});
pub static LEADER_TAKEOVERS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "walcast_leader_takeovers_total",
        "times this node became leader after following another",
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
        &*DROPPED_DELIVERIES,
        &*CLUSTER_PUBLISHED,
        &*CLUSTER_FOLLOWED,
        &*CLUSTER_ERRORS,
        &*SLOW_CONSUMER_DISCONNECTS,
        &*CLIENT_EVENTS,
        &*ENTITY_SUBSCRIPTIONS,
        &*CONNECTIONS,
        &*ROOMS,
        &*PERMISSION_CACHE,
        &*HTTP_ADMIN_REQUESTS,
        &*HANDSHAKE_REJECTIONS,
        &*CONNECTIONS_REFUSED,
        &*RATE_LIMITED_EVENTS,
        &*RATE_LIMIT_DISCONNECTS,
        &*SCHEMA_RELOADS,
        &*PERMISSION_RELOADS,
        &*SOCKETS_REVOKED,
        &*SOCKETS_MOVED,
        &*CUSTOM_EVENTS,
        &*CUSTOM_EVENTS_INVALID,
        &*SLOT_LAG_BYTES,
        &*SLOT_RETAINED_BYTES,
        &*SLOT_LAG_OVER_BUDGET,
        &*SLOT_LAG_SECONDS,
        &*REPLAY_LOG_EVENTS,
        &*REPLAY_LOG_BYTES,
        &*REPLAY_LOG_TRUNCATED_BYTES,
        &*REPLAYED_EVENTS,
        &*REPLAY_GAPS,
        &*TRANSACTION_BUFFER_CHANGES,
        &*TRANSACTION_BUFFER_HIGH_WATER,
        &*SPILLED_CHANGES,
        &*SPILLED_BYTES,
        &*STREAMED_TRANSACTIONS,
        &*ABORTED_STREAMS,
        &*UNATTRIBUTED_ROWS,
        &*POPULATE_QUERIES,
        &*LEADER,
        &*LEADER_SINCE,
        &*LEADER_TAKEOVERS,
    );
    for result in ["hit", "miss"] {
        PERMISSION_CACHE.with_label_values(&[result]);
    }
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&REGISTRY.gather())
        .unwrap_or_default()
}
