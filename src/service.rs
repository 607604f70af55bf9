//! Wires the stages together: replication → assemble → route → gateway.
//!
//! Connects things; holds no logic of its own. The replication task is the only one that
//! watches the shutdown token: when it stops, the channel closes and the pipeline drains.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::assemble::{
    Assembled, SpillError, TransactionBuffer, TransactionEvents, fold_transaction,
};
use crate::config::Config;
use crate::gateway::{self, Health};
use crate::replication::{ConnectParams, Lsn, ReplicationEvent, ReplicationStream, slot};
use crate::route::{PermissionModel, Router};
use crate::strapi::StrapiModel;

/// Replication → pipeline channel, in events. Bounded so a slow pipeline stops reading the
/// socket (and Postgres buffers) instead of growing memory.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Opens an ordinary SQL connection (schema, permissions, setup).
pub async fn connect_sql(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let pg = config.postgres();
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await.with_context(|| {
        format!(
            "connecting to {}",
            crate::config::redact_url(config.database.url.expose())
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "sql connection closed");
        }
    });
    Ok(client)
}

/// Creates the publication and slot if missing; returns what changed.
pub async fn setup(
    config: &Config,
    client: &tokio_postgres::Client,
) -> anyhow::Result<Vec<String>> {
    let model = StrapiModel::load(client)
        .await
        .context("reading the Strapi schema")?;
    let wanted = model.catalog.watched_tables();
    let tables = slot::existing_tables(client, &wanted).await?;
    let mut changes = Vec::new();
    if let Some(c) =
        slot::ensure_publication(client, &config.replication.publication, &tables).await?
    {
        changes.push(c);
    }
    if config.replication.replica_identity_full {
        let content = slot::existing_tables(client, &model.catalog.content_tables()).await?;
        changes.extend(slot::ensure_replica_identity_full(client, &content).await?);
    }
    if let Some(c) = slot::ensure_slot(client, &config.replication.slot).await? {
        changes.push(c);
    }
    Ok(changes)
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = connect_sql(&config).await?;
    for change in setup(&config, &client).await? {
        info!("setup: {change}");
    }
    let model = StrapiModel::load(&client)
        .await
        .context("reading the Strapi schema")?;
    info!(
        content_types = model.content_types.by_uid.len(),
        "strapi schema loaded"
    );
    let permissions = PermissionModel::load(&client)
        .await
        .context("reading permissions")?;
    let router = Router::new(&config, permissions);

    let health = Arc::new(Health::default());
    let (app, io) = gateway::build(&config, Arc::clone(&health));
    let addr = listener.local_addr()?;
    info!(%addr, path = %config.server.path, "walcast listening");

    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let (handed_off_tx, handed_off_rx) = watch::channel(Lsn(0));
    let mut params = ConnectParams::from_config(&config.postgres());
    params.application_name = format!("walcast {}", config.replication.slot);
    let stream = ReplicationStream {
        params,
        slot: config.replication.slot.clone(),
        publication: config.replication.publication.clone(),
        status_interval: std::time::Duration::from_millis(config.replication.status_interval_ms),
    };

    let mut tasks = tokio::task::JoinSet::new();
    {
        let config = config.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = probe_slot_lag(config) => {}
            }
            Ok(())
        });
    }
    {
        let shutdown = shutdown.clone();
        let health = Arc::clone(&health);
        tasks.spawn(async move {
            let result = stream.run(events_tx, handed_off_rx, shutdown.clone()).await;
            health.replicating.store(false, Ordering::Relaxed);
            if let Err(e) = &result {
                warn!(error = %e, "replication stopped");
            }
            shutdown.cancel();
            result.map_err(anyhow::Error::from).context("replication")
        });
    }
    {
        let io = io.clone();
        let health = Arc::clone(&health);
        let buffer = TransactionBuffer::new(
            config.replication.max_buffered_changes,
            config.replication.spill_dir.clone(),
        );
        tasks.spawn(async move {
            pipeline(
                events_rx,
                buffer,
                client,
                model,
                router,
                io,
                handed_off_tx,
                health,
            )
            .await
            .context("pipeline")
        });
    }
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("http server")
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                first_error.get_or_insert(e);
            }
            Err(e) => {
                shutdown.cancel();
                first_error.get_or_insert(anyhow::anyhow!("task failed: {e}"));
            }
        }
        if shutdown.is_cancelled() {
            io.close().await;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Emits the custom events among `messages` (prefix `walcast`); counts and logs bad ones.
async fn deliver_custom(io: &SocketIo, messages: &[crate::assemble::LogicalMessage]) {
    use crate::route::custom::{MESSAGE_PREFIX, parse_custom_event};
    for message in messages.iter().filter(|m| m.prefix == MESSAGE_PREFIX) {
        match parse_custom_event(&message.content) {
            Ok(event) => gateway::socketio::emit_custom(io, &event).await,
            Err(e) => {
                crate::metrics::CUSTOM_EVENTS_INVALID.inc();
                warn!(lsn = %message.lsn, error = %e, "ignoring custom event message");
            }
        }
    }
}

/// How often the slot's lag is measured.
const LAG_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Measures the slot's lag (bytes of WAL it retains beyond what walcast confirmed) on its own
/// connection, every few seconds; warns above `lag_budget_bytes`. One query per interval,
/// never per event.
async fn probe_slot_lag(config: Config) {
    let mut client = None;
    let mut last_warning: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(LAG_PROBE_INTERVAL);
    loop {
        tick.tick().await;
        if client.is_none() {
            client = connect_sql(&config).await.ok();
        }
        let Some(c) = &client else { continue };
        let row = c
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&config.replication.slot],
            )
            .await;
        match row {
            Ok(Some(row)) => {
                let confirmed_lag: i64 = row.get::<_, Option<i64>>(0).unwrap_or(0);
                let retained: i64 = row.get::<_, Option<i64>>(1).unwrap_or(0);
                crate::metrics::SLOT_LAG_BYTES.set(confirmed_lag);
                crate::metrics::SLOT_RETAINED_BYTES.set(retained);
                let seconds = if confirmed_lag > 0 {
                    crate::metrics::seconds_since_last_handoff()
                } else {
                    0.0
                };
                crate::metrics::SLOT_LAG_SECONDS.set(seconds);
                if retained as u64 > config.replication.lag_budget_bytes
                    && last_warning.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60))
                {
                    warn!(
                        retained_bytes = retained,
                        budget_bytes = config.replication.lag_budget_bytes,
                        slot = %config.replication.slot,
                        "replication slot retains more WAL than the lag budget; check that walcast keeps up, and bound it with max_slot_wal_keep_size"
                    );
                    last_warning = Some(std::time::Instant::now());
                }
            }
            Ok(None) => {}
            Err(_) => client = None,
        }
    }
}

/// Assembles, folds, routes and emits, in WAL order; reports each transaction handed off.
///
/// A transaction larger than the buffer's window (`replication.max_buffered_changes`) is
/// folded, routed and emitted one window at a time, read back from its spill file, so memory
/// stays bounded end to end. The consequence: a document whose rows straddle a window
/// boundary may get two events (at-least-once still holds; offsets keep increasing through
/// the transaction). The flush position moves past a transaction only after its last window
/// is emitted.
#[allow(clippy::too_many_arguments)] // wiring: one handle per stage
async fn pipeline(
    mut events: mpsc::Receiver<ReplicationEvent>,
    mut buffer: TransactionBuffer,
    client: tokio_postgres::Client,
    mut model: Arc<StrapiModel>,
    mut router: Router,
    io: SocketIo,
    handed_off: watch::Sender<Lsn>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    let window_size = buffer.max_in_memory();
    while let Some(event) = events.recv().await {
        if matches!(event, ReplicationEvent::Restarted) {
            health.replicating.store(true, Ordering::Relaxed);
        }
        match buffer.push(event).context("buffering a transaction")? {
            None => {}
            Some(Assembled::Message(message)) => {
                deliver_custom(&io, std::slice::from_ref(&message)).await;
            }
            Some(Assembled::Transaction(tx)) => {
                let end_lsn = tx.end_lsn;
                let span = info_span!("transaction", commit_lsn = %tx.commit_lsn, spilled = tx.is_spilled());
                async {
                    crate::metrics::TRANSACTIONS.inc();
                    let mut next_sequence = 0;
                    let (mut schema_changed, mut auth_changed) = (false, false);
                    for window in tx.batches(window_size) {
                        let window = window?;
                        crate::metrics::ROW_CHANGES.inc_by(window.changes.len() as u64);
                        let mut events = fold_transaction(&model, &window);
                        continue_sequence(&mut events, &mut next_sequence);
                        for event in &events.events {
                            crate::metrics::EVENTS
                                .with_label_values(&[&*event.key.uid, event.action.as_str()])
                                .inc();
                        }
                        for delivery in router.route(&events) {
                            gateway::socketio::emit(&io, &delivery).await;
                            // An emit only queues packets (try_send) and wakes each socket's
                            // writer task into this worker's LIFO slot, which no other worker
                            // steals: without a yield, a burst queues everything before any
                            // writer runs, and socket.io drops what exceeds a socket's buffer
                            // (4,096 of 200,000 got through in a test).
                            tokio::task::yield_now().await;
                        }
                        deliver_custom(&io, &window.messages).await;
                        schema_changed |= events.schema_changed;
                        auth_changed |= events.auth_changed;
                    }
                    if schema_changed {
                        match StrapiModel::load(&client).await {
                            Ok(m) => {
                                info!(content_types = m.content_types.by_uid.len(), "strapi schema reloaded");
                                crate::metrics::SCHEMA_RELOADS.inc();
                                model = m;
                            }
                            Err(e) => warn!(error = %e, "schema reload failed; keeping the previous schema"),
                        }
                    }
                    if auth_changed {
                        match PermissionModel::load(&client).await {
                            Ok(p) => router.permissions = p,
                            Err(e) => warn!(error = %e, "permission reload failed; keeping the previous model"),
                        }
                    }
                    Ok::<_, SpillError>(())
                }
                .instrument(span)
                .await
                .context("reading a spilled transaction back")?;
                handed_off.send_replace(end_lsn);
                crate::metrics::record_handoff();
            }
        }
    }
    Ok(())
}

/// `fold` numbers the events of each call from 0; the windows of one transaction continue
/// the numbering so that offsets stay unique and increasing within the transaction.
fn continue_sequence(events: &mut TransactionEvents, next: &mut u32) {
    let base = *next;
    for event in &mut events.events {
        event.offset.sequence += base;
        *next = (*next).max(event.offset.sequence + 1);
    }
}
