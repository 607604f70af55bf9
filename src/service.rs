//! Wires the stages together: replication → assemble → populate → route → gateway.
//!
//! Connects things; holds no logic of its own. The replication task is the only one that
//! watches the shutdown token: when it stops, the channel closes and the pipeline drains.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use axum::serve::ListenerExt;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide_core::adapter::DefinedAdapter;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::assemble::{
    Assembled, CommittedTransaction, DocumentIndex, PopulateSettings, SpillError,
    TransactionBuffer, TransactionEvents, fold_transaction, snapshot,
};
use crate::auth;
use crate::cluster::{Cluster, DeliveryFeed, SharedState};
use crate::config::Config;
use crate::deliver::{Handoff, ReplayLimits, ReplayLog};
use crate::gateway::{self, Health, Resume};
use crate::leader::Leadership;
use crate::populate::plan::PayloadPlans;
use crate::populate::{PopulateStats, Populator};
use crate::replication::{ConnectParams, Lsn, ReplicationEvent, ReplicationStream, slot};
use crate::route::{Delivery, PermissionModel, Router};
use crate::strapi::Populate;
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
    // Values read through SQL must look like the walsender's (same session settings).
    client
        .batch_execute(
            "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres; SET extra_float_digits = 1",
        )
        .await
        .context("setting the session's DateStyle/TimeZone")?;
    Ok(client)
}

/// The `populate` setting of every configured content type (validated with the config).
pub fn populate_settings(config: &Config) -> PopulateSettings {
    config
        .content_types
        .iter()
        .map(|ct| {
            (
                ct.uid.clone(),
                Populate::parse(ct.populate.as_ref()).unwrap_or_default(),
            )
        })
        .collect()
}

/// A copy of every folded transaction, for tests and tools that watch the document model.
pub type TransactionTap = mpsc::UnboundedSender<Arc<TransactionEvents>>;

/// What the router made of one transaction: its deliveries (every payload variant, as
/// serialized for the sockets) and what populating it took.
#[derive(Debug, Clone)]
pub struct RoutedTransaction {
    pub commit_lsn: Lsn,
    pub deliveries: Vec<Delivery>,
    pub populate: PopulateStats,
}

/// A copy of every routed transaction, for tests and tools that watch payloads.
pub type PayloadTap = mpsc::UnboundedSender<Arc<RoutedTransaction>>;

/// Where copies of the pipeline's work go (tests, tools); none by default.
#[derive(Debug, Clone, Default)]
pub struct Taps {
    pub transactions: Option<TransactionTap>,
    pub payloads: Option<PayloadTap>,
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
    let model = StrapiModel::load_for(client, &config.strapi)
        .await
        .context("reading the Strapi schema")?;
    setup_for(config, client, &model).await
}

/// [`setup`] for a model already loaded.
async fn setup_for(
    config: &Config,
    client: &tokio_postgres::Client,
    model: &StrapiModel,
) -> anyhow::Result<Vec<String>> {
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

/// Removes what [`setup`] made (slot, publication, REPLICA IDENTITY FULL); returns what
/// changed. Refused while a walcast consumes the slot.
pub async fn teardown(
    config: &Config,
    client: &tokio_postgres::Client,
) -> anyhow::Result<Vec<String>> {
    let content = match StrapiModel::load_for(client, &config.strapi).await {
        Ok(model) => slot::existing_tables(client, &model.catalog.content_tables()).await?,
        // No schema any more (Strapi gone): still drop the slot and the publication.
        Err(_) => Vec::new(),
    };
    Ok(slot::teardown(
        client,
        &config.replication.slot,
        &config.replication.publication,
        &content,
    )
    .await?)
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_tap(config, listener, shutdown, None).await
}

/// [`run`], sending a copy of every folded transaction to `tap`.
pub async fn run_with_tap(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    tap: Option<TransactionTap>,
) -> anyhow::Result<()> {
    let taps = Taps {
        transactions: tap,
        payloads: None,
    };
    run_with_taps(config, listener, shutdown, taps).await
}

/// [`run`], sending copies of the pipeline's work to `taps`.
pub async fn run_with_taps(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    taps: Taps,
) -> anyhow::Result<()> {
    let Some(url) = config.redis.url.clone() else {
        let node = Node {
            builder: SocketIo::builder(),
            cluster: None,
            init: Box::new(|()| Box::pin(async { Ok(()) })),
        };
        return run_node(node, config, listener, shutdown, taps).await;
    };
    // Clustered: the Socket.IO server on socketioxide's Redis adapter, and the shared stream.
    let prefix = config.redis.prefix_for(&config.replication.slot);
    let cluster = Cluster::new(&url, &prefix).context("redis.url")?;
    let adapter = socketioxide_redis::RedisAdapterCtr::new_with_redis_config(
        cluster.client(),
        socketioxide_redis::RedisAdapterConfig::new().with_prefix(prefix.clone()),
    )
    .await
    .with_context(|| {
        "connecting the Socket.IO Redis adapter (redis.url must name a reachable Redis 7+ and ask for ?protocol=resp3)"
    })?;
    info!(%prefix, "clustered through Redis");
    let node = Node {
        builder: SocketIo::builder().with_adapter::<socketioxide_redis::RedisAdapter<
            socketioxide::adapter::Emitter,
        >>(adapter),
        cluster: Some(cluster),
        init: Box::new(|init| {
            Box::pin(async move {
                init.await
                    .map_err(|e| anyhow::anyhow!("subscribing the Socket.IO Redis adapter: {e}"))
            })
        }),
    };
    run_node(node, config, listener, shutdown, taps).await
}

/// How one node's Socket.IO server is made: its builder (adapter chosen), the cluster it is
/// part of, and how its namespace's initialisation is completed.
struct Node<A: Adapter> {
    builder: socketioxide::SocketIoBuilder<A>,
    cluster: Option<Cluster>,
    #[allow(clippy::type_complexity)]
    init: Box<
        dyn FnOnce(A::InitRes) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>>
            + Send,
    >,
}

async fn run_node<A: Adapter + DefinedAdapter>(
    node: Node<A>,
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    taps: Taps,
) -> anyhow::Result<()> {
    let client = connect_sql(&config).await?;
    let model = StrapiModel::load_for(&client, &config.strapi)
        .await
        .context("reading the Strapi schema")?;
    info!(
        content_types = model.content_types.by_uid.len(),
        "strapi schema loaded"
    );
    let permissions = PermissionModel::load(&client, &config.events.draft_roles)
        .await
        .context("reading permissions")?;
    crate::metrics::PERMISSION_RELOADS.inc();
    let populate = populate_settings(&config);
    let plans = Arc::new(PayloadPlans::build(&model, &populate));
    let mut router = Router::new(&config, permissions);
    router.set_plans(Arc::clone(&plans));
    let (router_tx, router_rx) = watch::channel(router);
    let auth_db = Arc::new(auth::Db::new(config.clone()));
    let shared = node.cluster.clone().map(SharedState::new);
    let authenticator =
        auth::Authenticator::new(&config, auth_db, router_rx.clone(), shared.clone());
    let auth_changed = Arc::new(Notify::new());
    claim_replay_dir(&config).await?;
    let replay = {
        let dir = config.delivery.replay_dir.clone();
        let limits = ReplayLimits::from_config(&config.delivery);
        tokio::task::spawn_blocking(move || ReplayLog::open(&dir, limits))
            .await
            .context("opening the replay log")??
    };

    let health = Arc::new(Health::default());
    let resume = Resume {
        log: replay.clone(),
        router: router_rx.clone(),
    };
    let (model_tx, model_rx) = watch::channel(Arc::clone(&model));
    let (app, io, init) = gateway::build(
        node.builder,
        &config,
        gateway::Parts {
            health: Arc::clone(&health),
            auth: authenticator.clone(),
            resume,
            model: model_rx,
            router: router_tx.clone(),
            shared,
        },
    );
    (node.init)(init).await?;
    let feed = node.cluster.map(|c| {
        Arc::new(DeliveryFeed::new(
            c,
            config.delivery.replay_max_events,
            gateway::socketio::emit_batch(config.clients.socket_buffer_packets),
        ))
    });
    let addr = listener.local_addr()?;
    info!(%addr, path = %config.server.path, "walcast listening");

    // What every node runs: the listener, the permission reloader, the lag probe.
    let mut tasks = tokio::task::JoinSet::new();
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            // TCP_NODELAY: a client that only reads acknowledges late (delayed ACK, up to
            // 40 ms), and Nagle would hold each small event frame written behind an
            // unacknowledged one until then (measured: 33 ms stalls every 60 ms at 100 events/s).
            let listener = listener.tap_io(|tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    warn!(%error, "could not set TCP_NODELAY on a client connection");
                }
            });
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("http server")
        });
    }
    {
        let reloader = auth::live::Reloader {
            config: config.clone(),
            auth: authenticator,
            router: router_tx.clone(),
            io: io.clone(),
            changed: Arc::clone(&auth_changed),
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            reloader.run(shutdown).await;
            Ok(())
        });
    }
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
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = crate::memory::trim_after_disconnects() => {}
            }
            Ok(())
        });
    }

    // Only the leader consumes the slot. A follower serves its sockets and, seeing no WAL,
    // re-reads the permission model every second so revocations still reach them.
    // Clustered, a follower also follows the leader's deliveries in Redis and emits them to
    // its own sockets; when it takes the lead, it first reads the stream to its end.
    let stop_following = CancellationToken::new();
    let following = feed.as_ref().map(|feed| {
        let (feed, replay, io, stop) = (
            Arc::clone(feed),
            replay.clone(),
            io.clone(),
            stop_following.clone(),
        );
        tokio::spawn(async move { feed.follow(&replay, &io, &stop).await })
    });
    let leadership = tokio::select! {
        leadership = Leadership::acquire(&config, &shutdown, &health.following) => leadership,
        never = follow_permissions(&auth_changed) => match never {},
    };
    stop_following.cancel();
    if let Some(following) = following {
        match following.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if leadership.is_some() => {
                return Err(anyhow::Error::from(e)
                    .context("reading the cluster stream to its end before taking the lead"));
            }
            Ok(Err(e)) => warn!(error = %e, "stopped following the cluster stream"),
            Err(e) => return Err(anyhow::anyhow!("cluster follower failed: {e}")),
        }
    }
    if let Some(feed) = &feed {
        feed.publish_after(replay.last());
    }
    if let Some(leadership) = leadership {
        // The schema may have changed while following.
        let model = StrapiModel::load_for(&client, &config.strapi)
            .await
            .context("reading the Strapi schema")?;
        for change in setup_for(&config, &client, &model).await? {
            info!("setup: {change}");
        }
        let plans = Arc::new(PayloadPlans::build(&model, &populate));
        {
            let plans = Arc::clone(&plans);
            router_tx.send_modify(|router| router.set_plans(plans));
        }
        model_tx.send_replace(Arc::clone(&model));
        let index = snapshot::load(&client, &model.catalog)
            .await
            .context("reading the document index snapshot")?;
        // The snapshot's rows and query buffers were transient: only the index stays.
        tokio::task::spawn_blocking(crate::memory::release_free_memory);

        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let (handed_off_tx, handed_off_rx) = watch::channel(Lsn(0));
        // The slot's flush LSN advances only once the replay log is fsynced up to there.
        let (handoff, syncer) = replay.handoff(handed_off_tx);
        let mut params = ConnectParams::from_config(&config.postgres()).with_tls(config.tls());
        params.application_name = format!("walcast {}", config.replication.slot);
        let stream = ReplicationStream {
            params,
            slot: config.replication.slot.clone(),
            publication: config.replication.publication.clone(),
            status_interval: std::time::Duration::from_millis(
                config.replication.status_interval_ms,
            ),
        };
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
        tasks.spawn(async move { syncer.run().await.context("replay log") });
        {
            let shutdown = shutdown.clone();
            let config = config.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => Ok(()),
                    _ = leadership.lost(&config) => Err(anyhow::anyhow!(
                        "lost the leader lock (another node leads, or Postgres stayed unreachable); stopping so that one node consumes the slot"
                    )),
                }
            });
        }
        {
            let io = io.clone();
            let health = Arc::clone(&health);
            let config_for_pipeline = config.clone();
            let router_tx_for_pipeline = router_tx.clone();
            let shutdown_for_pipeline = shutdown.clone();
            let buffer = TransactionBuffer::new(
                config.replication.max_buffered_changes,
                config.replication.spill_dir.clone(),
            );
            tasks.spawn(async move {
                let pipeline = Pipeline {
                    populate,
                    plans,
                    config: config_for_pipeline,
                    client,
                    model,
                    index,
                    populator: Populator::default(),
                    router: router_rx,
                    router_tx: router_tx_for_pipeline,
                    auth_changed,
                    auth_reload_pending: false,
                    model_view: model_tx,
                    replay,
                    handoff,
                    io,
                    feed,
                    shutdown: shutdown_for_pipeline,
                    health,
                    taps,
                };
                pipeline.run(events_rx, buffer).await.context("pipeline")
            });
        }
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

/// Offsets are WAL positions of one cluster: a replay log written for another cluster,
/// database or slot (a re-created cluster, a copied folder) would make walcast take every new
/// event for one it already logged and drop it. The folder records whose log it is
/// (`IDENTITY`); a log of someone else is removed, with a warning, before it is opened.
async fn claim_replay_dir(config: &Config) -> anyhow::Result<()> {
    let params = ConnectParams::from_config(&config.postgres()).with_tls(config.tls());
    let (system, database) = crate::replication::identify_system(&params)
        .await
        .context("identifying the Postgres cluster (IDENTIFY_SYSTEM)")?;
    let identity = format!(
        "system {system} database {database} slot {}\n",
        config.replication.slot
    );
    let dir = config.delivery.replay_dir.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let marker = dir.join("IDENTITY");
        let recorded = std::fs::read_to_string(&marker).ok();
        if recorded.as_deref() == Some(identity.as_str()) {
            return Ok(());
        }
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "seg") {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                removed += 1;
            }
        }
        if removed > 0 {
            warn!(
                dir = %dir.display(),
                segments = removed,
                was = recorded.as_deref().map(str::trim).unwrap_or("unknown"),
                "the replay log belonged to another cluster, database or slot: removed"
            );
        }
        std::fs::write(&marker, &identity)
            .with_context(|| format!("writing {}", marker.display()))?;
        Ok(())
    })
    .await
    .context("claiming the replay log folder")?
}

/// While following: no WAL reaches this node, so the permission model is re-read every
/// [`crate::leader::RETRY`] (a few queries; the reloader applies it to live sockets).
async fn follow_permissions(changed: &Notify) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(crate::leader::RETRY).await;
        changed.notify_one();
    }
}

/// Emits the custom events among `messages` (prefix `walcast`); counts and logs bad ones.
async fn deliver_custom<A: Adapter>(
    io: &SocketIo<A>,
    messages: &[crate::assemble::LogicalMessage],
    clustered: bool,
) {
    use crate::route::custom::{MESSAGE_PREFIX, parse_custom_event};
    for message in messages.iter().filter(|m| m.prefix == MESSAGE_PREFIX) {
        match parse_custom_event(&message.content) {
            Ok(event) => gateway::socketio::emit_custom(io, &event, clustered).await,
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

/// The stages after replication, owned by one task: assemble, fold, populate, route, log,
/// emit.
struct Pipeline<A: Adapter> {
    config: Config,
    client: tokio_postgres::Client,
    model: Arc<StrapiModel>,
    populate: PopulateSettings,
    /// The populate plans of `populate` against `model`.
    plans: Arc<PayloadPlans>,
    index: DocumentIndex,
    populator: Populator,
    /// The router with the permission model in force (replaced by the reloader).
    router: watch::Receiver<Router>,
    /// The same router, written here only when a schema reload brings new populate plans.
    router_tx: watch::Sender<Router>,
    /// Told when a transaction changed Strapi's auth tables; the reloader settles and reloads.
    auth_changed: Arc<Notify>,
    /// Auth tables changed and the reloader has not published the new model yet: the next
    /// events wait for it, so a grant followed by content routes that content by the grant.
    auth_reload_pending: bool,
    /// The model as client events see it (updated on schema reloads).
    model_view: watch::Sender<Arc<StrapiModel>>,
    replay: ReplayLog,
    handoff: Handoff,
    io: SocketIo<A>,
    /// Clustered: the stream the other nodes follow.
    feed: Option<Arc<DeliveryFeed>>,
    shutdown: CancellationToken,
    health: Arc<Health>,
    taps: Taps,
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
enum PipelineError {
    #[error(transparent)]
    ReplayLog(#[from] crate::deliver::ReplayLogError),
    #[error("buffering a transaction")]
    Spill(#[from] SpillError),
}

impl<A: Adapter> Pipeline<A> {
    /// Assembles, folds, routes, logs and emits, in WAL order; reports each transaction
    /// handed off. Ends when replication stops, when a spilled transaction cannot be read
    /// back, or when the replay log cannot be written (nothing may be confirmed to Postgres
    /// that the log does not hold).
    async fn run(
        mut self,
        mut events: mpsc::Receiver<ReplicationEvent>,
        mut buffer: TransactionBuffer,
    ) -> Result<(), PipelineError> {
        let window_size = buffer.max_in_memory();
        while let Some(event) = events.recv().await {
            if matches!(event, ReplicationEvent::Restarted) {
                self.health.replicating.store(true, Ordering::Relaxed);
            }
            match buffer.push(event)? {
                None => {}
                Some(Assembled::Message(message)) => {
                    deliver_custom(
                        &self.io,
                        std::slice::from_ref(&message),
                        self.feed.is_some(),
                    )
                    .await;
                }
                Some(Assembled::Transaction(tx)) => {
                    let span = info_span!("transaction", commit_lsn = %tx.commit_lsn, spilled = tx.is_spilled());
                    let end_lsn = tx.end_lsn;
                    self.transaction(tx, window_size).instrument(span).await?;
                    self.handoff.send(end_lsn);
                }
            }
        }
        Ok(())
    }

    /// One committed transaction, window by window.
    ///
    /// A transaction larger than the buffer's window (`replication.max_buffered_changes`) is
    /// folded, routed and emitted one window at a time, read back from its spill file, so
    /// memory stays bounded end to end. The consequence: a document whose rows straddle a
    /// window boundary may get two events (at-least-once still holds; offsets keep increasing
    /// through the transaction). The flush position moves past a transaction only after its
    /// last window is handed off.
    async fn transaction(
        &mut self,
        tx: CommittedTransaction,
        window_size: usize,
    ) -> Result<(), PipelineError> {
        crate::metrics::TRANSACTIONS.inc();
        self.reconnect_sql_if_closed().await;
        let mut next_sequence = 0;
        let mut schema_changed = false;
        let mut tapped = Vec::new();
        let spilled = tx.is_spilled();
        for (n, window) in tx.batches(window_size).enumerate() {
            if spilled && n > 0 {
                // The previous window came and went: hand its memory back before the next
                // one (see `crate::memory`), or glibc keeps a window's worth and its
                // fragments resident next to the growing index. A few ms per 10,000 changes.
                crate::memory::release_free_memory();
            }
            let window = window?;
            crate::metrics::ROW_CHANGES.inc_by(window.changes.len() as u64);
            let mut events =
                fold_transaction(&self.model, &self.populate, &mut self.index, &window);
            continue_sequence(&mut events, &mut next_sequence);
            let stats = match self
                .populator
                .run(&self.client, &self.model, &self.plans, &mut events)
                .await
            {
                Ok(stats) => stats,
                Err(e) => {
                    warn!(error = %e, "populating the transaction's entries failed; payloads without an entry name only the document");
                    PopulateStats::default()
                }
            };
            crate::metrics::POPULATE_QUERIES.inc_by(u64::from(stats.queries));
            if events.unattributed > 0 {
                crate::metrics::UNATTRIBUTED_ROWS.inc_by(u64::from(events.unattributed));
                warn!(
                    rows = events.unattributed,
                    "row changes not tied to a document (default replica identity and a row walcast never saw); run `walcast setup` to set REPLICA IDENTITY FULL"
                );
            }
            for event in &events.events {
                crate::metrics::EVENTS
                    .with_label_values(&[&*event.key.uid, event.action.as_str()])
                    .inc();
            }
            // Logged before emitted; resent ones (already logged) come back filtered out.
            if events.auth_changed {
                self.router.borrow_and_update();
                self.auth_changed.notify_one();
                self.auth_reload_pending = true;
            }
            if self.auth_reload_pending && !events.events.is_empty() {
                self.await_permission_reload().await;
            }
            // The router is read, not cloned: the borrow ends before anything awaits.
            let routed = self.router.borrow().route(&events, &self.model);
            if let Some(tap) = &self.taps.payloads {
                let _ = tap.send(Arc::new(RoutedTransaction {
                    commit_lsn: events.commit_lsn,
                    deliveries: routed.clone(),
                    populate: stats,
                }));
            }
            let deliveries = self.replay.append(routed)?;
            {
                let _live = self.replay.live_turn(&deliveries).await;
                let batch =
                    gateway::socketio::emit_batch(self.config.clients.socket_buffer_packets);
                gateway::socketio::emit_all(&self.io, &deliveries, batch).await;
            }
            // The other nodes get them before the slot may pass them.
            if let Some(feed) = &self.feed {
                feed.publish_retrying(&deliveries, &self.shutdown).await;
            }
            deliver_custom(&self.io, &window.messages, self.feed.is_some()).await;
            schema_changed |= events.schema_changed;
            if self.taps.transactions.is_some() {
                tapped.push(events);
            }
        }
        if spilled {
            crate::memory::release_free_memory();
        }
        if schema_changed {
            self.reload_schema().await;
        }

        // Tapped once the transaction's effects (reloads included) are in place.
        if let Some(tap) = &self.taps.transactions {
            for events in tapped {
                let _ = tap.send(Arc::new(events));
            }
        }
        Ok(())
    }

    /// Waits (bounded) for the reloader to publish the permission model that follows the
    /// auth-table changes already seen; on timeout the events go out with the current model.
    async fn await_permission_reload(&mut self) {
        let wait = crate::auth::live::SETTLE * 10;
        match tokio::time::timeout(wait, self.router.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {}
            Err(_) => warn!(
                waited_ms = wait.as_millis() as u64,
                "permission reload still pending; routing with the previous permissions"
            ),
        }
        self.auth_reload_pending = false;
    }

    /// The SQL connection dies with a Postgres restart while replication reconnects on its
    /// own: open a new one before the transaction needs it (on failure the old one stays and
    /// its queries fail with a logged warning; the next transaction tries again).
    async fn reconnect_sql_if_closed(&mut self) {
        if !self.client.is_closed() {
            return;
        }
        match connect_sql(&self.config).await {
            Ok(client) => {
                info!("sql connection re-established");
                self.client = client;
                self.populator.clear();
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "sql connection lost and not re-established yet")
            }
        }
    }

    /// Strapi rewrote its schema row: new model, publication extended to new tables, new
    /// index.
    async fn reload_schema(&mut self) {
        let model = match StrapiModel::load_for(&self.client, &self.config.strapi).await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "schema reload failed; keeping the previous schema");
                return;
            }
        };
        match setup_for(&self.config, &self.client, &model).await {
            Ok(changes) => {
                for change in changes {
                    info!("setup after schema change: {change}");
                }
            }
            Err(e) => {
                warn!(error = %e, "updating the publication after a schema change failed; new tables are not watched until `walcast setup` runs")
            }
        }
        match snapshot::load(&self.client, &model.catalog).await {
            Ok(index) => {
                info!(
                    content_types = model.content_types.by_uid.len(),
                    "strapi schema reloaded"
                );
                crate::metrics::SCHEMA_RELOADS.inc();
                self.model_view.send_replace(Arc::clone(&model));
                self.plans = Arc::new(PayloadPlans::build(&model, &self.populate));
                let plans = Arc::clone(&self.plans);
                self.router_tx.send_modify(|router| router.set_plans(plans));
                self.model = model;
                self.index = index;
                self.populator.clear();
            }
            Err(e) => {
                warn!(error = %e, "re-reading the document index failed; keeping the previous schema")
            }
        }
    }
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
