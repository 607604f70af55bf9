//! Resuming sockets: what a client that reconnects with `auth.offset` missed, then live.
//!
//! A socket that asks to resume joins its rooms only after it has caught up. It first replays
//! from the replay log, in offset order, every event after its offset that its principal may
//! read ([`Router::admits`], the live rule on the live permission model), each with its offset as
//! the trailing argument, as live events carry it. Then, holding the log's live gate shared (no
//! transaction is emitted live meanwhile), it replays the last few events that went out live
//! while it caught up, and joins its rooms: every event exactly once, in order. When the log no
//! longer holds everything after the offset, the socket gets `walcast:gap` instead and goes
//! live. Replay waits for room in the socket's buffer rather than dropping; a socket that does
//! not drain it for a while is disconnected, and can resume again from its last offset.

use std::time::Duration;

use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::assemble::EventOffset;
use crate::deliver::{ReplayBatch, ReplayLog, ResumePosition};
use crate::route::{Access, Delivery, Router};

/// The event telling a resuming client that events it missed are no longer available.
pub const GAP_EVENT: &str = "walcast:gap";
/// Events read from the log at a time.
const READ_BATCH: usize = 512;
/// A catch-up pass that sent at most this many events without waiting for buffer space is
/// close enough to live to finish under the live gate.
const CATCH_UP_SLACK: usize = 256;
/// Pause before retrying an emit to a full socket buffer.
const FULL_RETRY: Duration = Duration::from_millis(5);
/// A socket whose buffer stays full this long while catching up is disconnected.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// The same while the live gate is held: live emission waits for it, so give up sooner.
const STALL_LIMIT_GATED: Duration = Duration::from_secs(2);

/// What the gateway needs to resume sockets: the log and the live routing rules.
#[derive(Debug, Clone)]
pub struct Resume {
    pub log: ReplayLog,
    /// The router as the pipeline last updated it (permission reloads).
    pub router: watch::Receiver<Router>,
}

/// The offset a socket asked to resume after, from its handshake.
#[derive(Debug, Clone, Copy)]
pub struct ResumeFrom(pub EventOffset);

/// Why a catch-up ended before the socket went live.
enum Stop {
    /// The log dropped events after `after` (retention overtook the replay).
    Gap {
        after: EventOffset,
        oldest: Option<EventOffset>,
    },
    /// The socket disconnected.
    Gone,
    /// The socket's buffer stayed full; it was disconnected.
    Stalled,
    /// The log could not be read.
    Failed,
}

/// One pass over a range of the log.
struct Pass {
    sent: usize,
    waited: bool,
}

/// Replays what the socket missed after `from`, then joins `rooms`. Runs as the socket's own
/// task; returns when the socket is live or gone.
pub async fn resume_socket<A: Adapter>(
    socket: SocketRef<A>,
    access: Access,
    from: EventOffset,
    rooms: Vec<String>,
    resume: Resume,
) {
    match catch_up(&socket, &access, from, &rooms, &resume).await {
        Ok(()) => debug!(sid = %socket.id, from = %from, "socket resumed"),
        Err(Stop::Gap { after, oldest }) => {
            send_gap(&socket, after, oldest);
            socket.join(rooms);
            super::subscriptions::set_live(&socket);
        }
        Err(Stop::Gone) => {}
        Err(Stop::Stalled) => {
            warn!(sid = %socket.id, "resuming socket did not drain its buffer; disconnecting it");
            let _ = socket.disconnect();
        }
        Err(Stop::Failed) => {
            let _ = socket.disconnect();
        }
    }
}

async fn catch_up<A: Adapter>(
    socket: &SocketRef<A>,
    access: &Access,
    from: EventOffset,
    rooms: &[String],
    resume: &Resume,
) -> Result<(), Stop> {
    if let ResumePosition::Gap { oldest } = resume.log.position(from) {
        return Err(Stop::Gap {
            after: from,
            oldest,
        });
    }
    let mut cursor = from;
    // Catch up without holding live emission back, until a pass finds little left to send.
    loop {
        let Some(horizon) = resume.log.live_horizon().await else {
            break;
        };
        let pass = replay_range(socket, access, &mut cursor, horizon, resume, STALL_LIMIT).await?;
        if pass.sent <= CATCH_UP_SLACK && !pass.waited {
            break;
        }
    }
    // The rest, with live emission held, then live.
    let gate = resume.log.live_gate().await;
    if let Some(horizon) = *gate {
        replay_range(
            socket,
            access,
            &mut cursor,
            horizon,
            resume,
            STALL_LIMIT_GATED,
        )
        .await?;
    }
    socket.join(rooms.to_vec());
    super::subscriptions::set_live(socket);
    drop(gate);
    Ok(())
}

/// Replays the events in (`cursor`, `upto`] the principal may read, advancing `cursor`.
async fn replay_range<A: Adapter>(
    socket: &SocketRef<A>,
    access: &Access,
    cursor: &mut EventOffset,
    upto: EventOffset,
    resume: &Resume,
    stall_limit: Duration,
) -> Result<Pass, Stop> {
    let mut pass = Pass {
        sent: 0,
        waited: false,
    };
    while *cursor < upto {
        let batch = match resume.log.read_after(*cursor, upto, READ_BATCH).await {
            Ok(ReplayBatch::Events(events)) => events,
            Ok(ReplayBatch::Gap { oldest }) => {
                return Err(Stop::Gap {
                    after: *cursor,
                    oldest,
                });
            }
            Err(e) => {
                warn!(error = %e, sid = %socket.id, "cannot read the replay log for a resuming socket");
                return Err(Stop::Failed);
            }
        };
        let Some(last) = batch.last() else { break };
        let last = last.offset;
        for delivery in &batch {
            let admitted = resume.router.borrow().admits(access, delivery);
            if admitted {
                pass.waited |= emit_waiting(socket, delivery, stall_limit).await?;
                pass.sent += 1;
                crate::metrics::REPLAYED_EVENTS.inc();
            }
        }
        *cursor = last;
    }
    Ok(pass)
}

/// Emits one replayed delivery to the socket, waiting while its buffer is full; returns
/// whether it had to wait.
async fn emit_waiting<A: Adapter>(
    socket: &SocketRef<A>,
    delivery: &Delivery,
    stall_limit: Duration,
) -> Result<bool, Stop> {
    let args = super::socketio::event_args(delivery);
    let mut waited = None;
    loop {
        match socket.emit(&delivery.event_name, &args) {
            Ok(()) => return Ok(waited.is_some()),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                let since = *waited.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > stall_limit {
                    return Err(Stop::Stalled);
                }
                tokio::time::sleep(FULL_RETRY).await;
            }
            Err(SendError::Socket(SocketError::Closed)) => return Err(Stop::Gone),
            Err(e) => {
                warn!(event = %delivery.event_name, error = %e, "cannot replay an event");
                crate::metrics::EMIT_ERRORS.inc();
                return Ok(false);
            }
        }
    }
}

/// Tells the socket that events after `after` are gone; `oldest` is the oldest still held.
fn send_gap<A: Adapter>(socket: &SocketRef<A>, after: EventOffset, oldest: Option<EventOffset>) {
    crate::metrics::REPLAY_GAPS.inc();
    let body = json!({
        "offset": after.to_string(),
        "oldest": oldest.map(|o| o.to_string()),
    });
    if let Err(e) = socket.emit(GAP_EVENT, &body) {
        debug!(sid = %socket.id, error = %e, "cannot send walcast:gap");
    }
}
