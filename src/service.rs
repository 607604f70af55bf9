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

use crate::assemble::{Assembled, TransactionBuffer, fold_transaction};
use crate::config::Config;
use crate::gateway::{self, Health};
use crate::replication::{ConnectParams, Lsn, ReplicationEvent, ReplicationStream, slot};
use crate::route::{PermissionModel, Router};
use crate::strapi::StrapiModel;

/// Replication → pipeline channel, in events. Bounded so a slow pipeline stops reading the
/// socket (and Postgres buffers) instead of growing memory.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Opens an ordinary SQL connection (schema, permissions, setup), with the same TLS settings
/// as the replication connection.
pub async fn connect_sql(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let pg = config.postgres();
    let tls = config.tls();
    let target = || {
        format!(
            "connecting to {}",
            crate::config::redact_url(config.database.url.expose())
        )
    };
    let connector =
        tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config().with_context(target)?);
    let (client, connection) = pg
        .connect(connector)
        .await
        .map_err(|e| explain_connect_error(e, &pg, &tls))
        .with_context(target)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "sql connection closed");
        }
    });
    Ok(client)
}

/// Turns a failed tokio-postgres connection into the same clear messages the walsender
/// connection gives (TLS refused or unverifiable, wrong password, pg_hba.conf).
fn explain_connect_error(
    error: tokio_postgres::Error,
    pg: &tokio_postgres::Config,
    tls: &crate::tls::TlsSettings,
) -> anyhow::Error {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let addr = format!("{host}:{port}");
    if let Some(e) = crate::tls::TlsError::from_tokio_postgres(&error, &addr, &host, tls) {
        return e.into();
    }
    if let Some(db) = error.as_db_error() {
        let user = pg.get_user().unwrap_or("postgres");
        let advice = crate::replication::server_advice(db.code().code(), db.message(), user);
        return anyhow::anyhow!(
            "postgres error {}: {}{}",
            db.code().code(),
            db.message(),
            advice.map(|a| format!("; {a}")).unwrap_or_default()
        );
    }
    error.into()
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
    let mut params = ConnectParams::from_config(&config.postgres()).with_tls(config.tls());
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
        tasks.spawn(async move {
            pipeline(events_rx, client, model, router, io, handed_off_tx, health).await;
            Ok(())
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
/// connection, every few seconds; warns once each time the retained WAL goes over
/// `lag_budget_bytes` (and says when it is back). One query per interval, never per event.
async fn probe_slot_lag(config: Config) {
    let mut client = None;
    let mut budget = slot::LagBudget::new(config.replication.lag_budget_bytes);
    let mut tick = tokio::time::interval(LAG_PROBE_INTERVAL);
    loop {
        tick.tick().await;
        if client.is_none() {
            client = connect_sql(&config).await.ok();
        }
        let Some(c) = &client else { continue };
        match slot::slot_lag(c, &config.replication.slot).await {
            Ok(Some(lag)) => {
                crate::metrics::SLOT_LAG_BYTES.set(lag.confirmed_bytes as i64);
                crate::metrics::SLOT_RETAINED_BYTES.set(lag.retained_bytes as i64);
                let seconds = if lag.confirmed_bytes > 0 {
                    crate::metrics::seconds_since_last_handoff()
                } else {
                    0.0
                };
                crate::metrics::SLOT_LAG_SECONDS.set(seconds);
                match budget.observe(lag.retained_bytes) {
                    Some(slot::BudgetCrossing::Exceeded) => warn!(
                        slot = %config.replication.slot,
                        lag_bytes = lag.confirmed_bytes,
                        retained_bytes = lag.retained_bytes,
                        budget_bytes = budget.budget_bytes(),
                        "replication slot retains more WAL than replication.lag_budget_bytes; check that walcast keeps up, and bound it with max_slot_wal_keep_size"
                    ),
                    Some(slot::BudgetCrossing::Recovered) => info!(
                        slot = %config.replication.slot,
                        retained_bytes = lag.retained_bytes,
                        budget_bytes = budget.budget_bytes(),
                        "replication slot is back within replication.lag_budget_bytes"
                    ),
                    None => {}
                }
                crate::metrics::SLOT_LAG_OVER_BUDGET.set(i64::from(budget.is_over()));
            }
            Ok(None) => {}
            Err(_) => client = None,
        }
    }
}

/// Assembles, folds, routes and emits, in WAL order; reports each transaction handed off.
async fn pipeline(
    mut events: mpsc::Receiver<ReplicationEvent>,
    client: tokio_postgres::Client,
    mut model: Arc<StrapiModel>,
    mut router: Router,
    io: SocketIo,
    handed_off: watch::Sender<Lsn>,
    health: Arc<Health>,
) {
    let mut buffer = TransactionBuffer::default();
    while let Some(event) = events.recv().await {
        if matches!(event, ReplicationEvent::Restarted) {
            health.replicating.store(true, Ordering::Relaxed);
        }
        match buffer.push(event) {
            None => {}
            Some(Assembled::Message(message)) => {
                deliver_custom(&io, std::slice::from_ref(&message)).await;
            }
            Some(Assembled::Transaction(tx)) => {
                let span = info_span!("transaction", commit_lsn = %tx.commit_lsn, changes = tx.changes.len());
                async {
                    crate::metrics::TRANSACTIONS.inc();
                    crate::metrics::ROW_CHANGES.inc_by(tx.changes.len() as u64);
                    let events = fold_transaction(&model, &tx);
                    for event in &events.events {
                        crate::metrics::EVENTS
                            .with_label_values(&[&*event.key.uid, event.action.as_str()])
                            .inc();
                    }
                    for delivery in router.route(&events) {
                        gateway::socketio::emit(&io, &delivery).await;
                    }
                    deliver_custom(&io, &tx.messages).await;
                    if events.schema_changed {
                        match StrapiModel::load(&client).await {
                            Ok(m) => {
                                info!(content_types = m.content_types.by_uid.len(), "strapi schema reloaded");
                                crate::metrics::SCHEMA_RELOADS.inc();
                                model = m;
                            }
                            Err(e) => warn!(error = %e, "schema reload failed; keeping the previous schema"),
                        }
                    }
                    if events.auth_changed {
                        match PermissionModel::load(&client).await {
                            Ok(p) => router.permissions = p,
                            Err(e) => warn!(error = %e, "permission reload failed; keeping the previous model"),
                        }
                    }
                }
                .instrument(span)
                .await;
                handed_off.send_replace(tx.end_lsn);
                crate::metrics::record_handoff();
            }
        }
    }
}
