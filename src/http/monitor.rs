//! The plugin's monitoring service (`getEventStats`, `getEventLog`, `resetStats`), in memory.
//!
//! Unlike the plugin, walcast counts every event it emits (content, custom and test events),
//! so that `eventsPerSecond` (over the last 60 s) and the dashboard mean something. The log
//! keeps the last `monitoring.maxEventLogSize` entries while `monitoring.enableEventLogging`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The window `eventsPerSecond` is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct State {
    total: u64,
    by_type: BTreeMap<String, u64>,
    last_reset_ms: u64,
    /// One entry per second with events: (second, count).
    recent: VecDeque<(Instant, u64)>,
    log: VecDeque<Value>,
    logging: bool,
    max_log: usize,
}

/// The process-wide monitor.
pub static MONITOR: LazyLock<Monitor> = LazyLock::new(Monitor::new);

#[derive(Debug)]
pub struct Monitor {
    state: Mutex<State>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An ISO-8601 UTC timestamp, as the plugin's `new Date().toISOString()`.
pub fn iso_now() -> String {
    iso(now_ms())
}

/// `ms` since the epoch as ISO-8601 UTC.
pub fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

impl Monitor {
    fn new() -> Self {
        Monitor {
            state: Mutex::new(State {
                total: 0,
                by_type: BTreeMap::new(),
                last_reset_ms: now_ms(),
                recent: VecDeque::new(),
                log: VecDeque::new(),
                logging: true,
                max_log: 100,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `monitoring.enableEventLogging` and `maxEventLogSize`.
    pub fn configure(&self, logging: bool, max_log: usize) {
        let mut s = self.lock();
        s.logging = logging;
        s.max_log = max_log.max(1);
        while s.log.len() > s.max_log {
            s.log.pop_front();
        }
    }

    /// Counts one emitted event, and logs it (`type`, `data`) when logging is on.
    pub fn record(&self, event_type: &str, data: Value) {
        let now = Instant::now();
        let mut s = self.lock();
        s.total += 1;
        *s.by_type.entry(event_type.to_owned()).or_default() += 1;
        match s.recent.back_mut() {
            Some((at, n)) if now.duration_since(*at) < Duration::from_secs(1) => *n += 1,
            _ => s.recent.push_back((now, 1)),
        }
        while s
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            s.recent.pop_front();
        }
        if s.logging {
            s.log
                .push_back(json!({ "timestamp": iso_now(), "type": event_type, "data": data }));
            while s.log.len() > s.max_log {
                s.log.pop_front();
            }
        }
    }

    /// `getEventStats()`: `{totalEvents, eventsByType, lastReset, eventsPerSecond}`.
    pub fn event_stats(&self) -> Value {
        let now = Instant::now();
        let s = self.lock();
        let in_window: u64 = s
            .recent
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= RATE_WINDOW)
            .map(|(_, n)| n)
            .sum();
        let eps = in_window as f64 / RATE_WINDOW.as_secs_f64();
        json!({
            "totalEvents": s.total,
            "eventsByType": s.by_type,
            "lastReset": iso(s.last_reset_ms),
            "eventsPerSecond": (eps * 100.0).round() / 100.0,
        })
    }

    /// `getEventLog(limit)`: the last `limit` entries, oldest first.
    pub fn event_log(&self, limit: usize) -> Vec<Value> {
        let s = self.lock();
        let skip = s.log.len().saturating_sub(limit);
        s.log.iter().skip(skip).cloned().collect()
    }

    /// `resetStats()`.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.total = 0;
        s.by_type.clear();
        s.recent.clear();
        s.log.clear();
        s.last_reset_ms = now_ms();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn counts_logs_and_resets() {
        let m = Monitor::new();
        m.configure(true, 2);
        for i in 0..3 {
            m.record("test", json!({ "i": i }));
        }
        let stats = m.event_stats();
        assert_eq!(stats["totalEvents"], 3);
        assert_eq!(stats["eventsByType"]["test"], 3);
        assert_eq!(m.event_log(10).len(), 2);
        assert_eq!(m.event_log(1)[0]["data"]["i"], 2);
        m.reset();
        assert_eq!(m.event_stats()["totalEvents"], 0);
    }
}
