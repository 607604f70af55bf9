//! Security at the edge (spec §8): who may connect (IP allow/deny lists, `trust_proxy`,
//! connection limits, lockout after failed handshakes) and how much a socket may send (client
//! events per second). Admin session tokens are in [`sessions`].
//!
//! Every limit is checked in the Socket.IO handshake middleware, before credentials are, with
//! the plugin's `connect_error` messages. Client addresses are logged; credentials never are.

pub mod sessions;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::{SecurityConfig, TrustProxy};

/// Why a connection was refused before its credentials were looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("IP not whitelisted")]
    NotAllowed,
    #[error("IP blacklisted")]
    Denied,
    #[error("Max connections reached")]
    MaxConnections,
    /// walcast: `rate_limit.max_connections_per_ip`.
    #[error("Too many connections from this IP")]
    PerIp,
    #[error("Too many authentication attempts. Try again later.")]
    LockedOut,
}

/// The ack error of a client event over the socket's rate.
pub const RATE_LIMITED: &str = "Rate limit exceeded";

/// An address or CIDR from config (`"10.0.0.0/8"`, `"::1"`); a bare address is a /32 or /128.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn nets(list: &[String]) -> Vec<IpNet> {
    list.iter().filter_map(|c| parse_net(c)).collect()
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, a dual-stack listener's view of IPv4) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Which peers may speak for the client through X-Forwarded-For.
#[derive(Debug, Clone)]
enum Trust {
    Nobody,
    Everybody,
    Proxies(Vec<IpNet>),
}

impl Trust {
    fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            Trust::Nobody => false,
            Trust::Everybody => true,
            Trust::Proxies(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
/// X-Forwarded-For chain is walked from the right while each hop is trusted. An entry that is
/// not an address ends the walk.
fn client_ip(trust: &Trust, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let mut ip = canonical(peer);
    if !trust.trusts(ip) {
        return ip;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .take(64)
        .collect();
    for hop in hops.iter().rev() {
        if !trust.trusts(ip) {
            break;
        }
        match hop.parse::<IpAddr>() {
            Ok(next) => ip = canonical(next),
            Err(_) => break,
        }
    }
    ip
}

#[derive(Debug)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Connection limits, IP lists and the lockout. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    inner: Arc<Inner>,
    /// Clustered: failed handshakes are counted in Redis, so a lockout holds on every node.
    shared: Option<crate::cluster::SharedState>,
}

#[derive(Debug)]
struct Inner {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trust: Trust,
    max_connections: usize,
    max_per_ip: u32,
    lockout_max: u32,
    lockout_window: Duration,
    max_events_per_second: u32,
    disconnect_after_refused: u32,
    live: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// A live connection's place in the limits, given back once (on disconnect, or when dropped).
#[derive(Debug)]
pub struct Slot {
    guard: Guard,
    pub ip: IpAddr,
    released: AtomicBool,
}

impl Slot {
    pub fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = &self.guard.inner;
        inner.live.fetch_sub(1, Ordering::SeqCst);
        let mut per_ip = inner.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether a client event may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the rate: refuse this one.
    Refused,
    /// Over the rate once too often: refuse and disconnect.
    Disconnect,
}

/// One socket's event rate: a one-second window opened by its first event.
#[derive(Debug)]
pub struct EventRate {
    window: Mutex<(Instant, u32)>,
    refused: AtomicU32,
}

impl Default for EventRate {
    fn default() -> Self {
        EventRate {
            window: Mutex::new((Instant::now(), 0)),
            refused: AtomicU32::new(0),
        }
    }
}

impl Guard {
    pub fn new(config: &SecurityConfig) -> Self {
        let trust = match &config.trust_proxy {
            TrustProxy::All(false) => Trust::Nobody,
            TrustProxy::All(true) => Trust::Everybody,
            TrustProxy::Proxies(list) => Trust::Proxies(nets(list)),
        };
        Guard {
            inner: Arc::new(Inner {
                allow: nets(&config.ip_allow),
                deny: nets(&config.ip_deny),
                trust,
                max_connections: config.max_connections,
                max_per_ip: config.rate_limit.max_connections_per_ip,
                lockout_max: config.lockout_max_failures,
                lockout_window: Duration::from_secs(config.lockout_window_secs),
                max_events_per_second: config.rate_limit.max_events_per_second,
                disconnect_after_refused: config.rate_limit.disconnect_after_refused,
                live: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
            }),
            shared: None,
        }
    }

    /// Counts failed handshakes in the cluster's Redis.
    pub fn with_shared(mut self, shared: Option<crate::cluster::SharedState>) -> Self {
        self.shared = shared;
        self
    }

    /// [`Self::check_lockout`] over the whole cluster when clustered. If Redis does not
    /// answer, this node's own count decides.
    pub async fn check_lockout_anywhere(&self, ip: IpAddr) -> Result<(), GuardError> {
        if let Some(shared) = &self.shared {
            match shared.failures(&ip.to_string()).await {
                Ok(n) if n >= self.inner.lockout_max => return Err(GuardError::LockedOut),
                Ok(_) => return Ok(()),
                Err(e) => tracing::debug!(error = %e, "lockout check falls back to this node"),
            }
        }
        self.check_lockout(ip)
    }

    /// [`Self::record_failure`], and in the cluster's Redis when clustered.
    pub async fn record_failure_anywhere(&self, ip: IpAddr) {
        self.record_failure(ip);
        if let Some(shared) = &self.shared
            && let Err(e) = shared
                .failure(&ip.to_string(), self.inner.lockout_window)
                .await
        {
            tracing::debug!(error = %e, "failed handshake not counted in the cluster");
        }
    }

    /// The client address of a request from `peer`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(&self.inner.trust, peer.ip(), headers)
    }

    /// The allow and deny lists: deny wins; an empty allow list allows all.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), GuardError> {
        let inner = &self.inner;
        if inner.deny.iter().any(|n| n.contains(&ip)) {
            return Err(GuardError::Denied);
        }
        if !inner.allow.is_empty() && !inner.allow.iter().any(|n| n.contains(&ip)) {
            return Err(GuardError::NotAllowed);
        }
        Ok(())
    }

    /// Refuses an IP with `lockout_max_failures` failed handshakes in the current window.
    pub fn check_lockout(&self, ip: IpAddr) -> Result<(), GuardError> {
        let mut failures = self.failures();
        match failures.get(&ip) {
            Some(f) if f.since.elapsed() >= self.inner.lockout_window => {
                failures.remove(&ip);
                Ok(())
            }
            Some(f) if f.count >= self.inner.lockout_max => Err(GuardError::LockedOut),
            _ => Ok(()),
        }
    }

    /// Counts a failed handshake from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let mut failures = self.failures();
        if failures.len() >= 100_000 {
            let window = self.inner.lockout_window;
            failures.retain(|_, f| f.since.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert(Failures {
            since: Instant::now(),
            count: 0,
        });
        if entry.since.elapsed() >= self.inner.lockout_window {
            *entry = Failures {
                since: Instant::now(),
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.inner
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a connection slot for `ip` if both limits allow.
    pub fn acquire(&self, ip: IpAddr) -> Result<Slot, GuardError> {
        let inner = &self.inner;
        let mut per_ip = inner.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.live.load(Ordering::SeqCst) >= inner.max_connections {
            return Err(GuardError::MaxConnections);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= inner.max_per_ip {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            return Err(GuardError::PerIp);
        }
        *n += 1;
        inner.live.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            guard: self.clone(),
            ip,
            released: AtomicBool::new(false),
        })
    }

    /// Live connections counted against `max_connections`.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Whether one more client event of the socket with `rate` may run.
    pub fn admit(&self, rate: &EventRate) -> Admit {
        let now = Instant::now();
        let mut window = rate.window.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(window.0) >= Duration::from_secs(1) || window.1 == 0 {
            *window = (now, 0);
        }
        if window.1 < self.inner.max_events_per_second {
            window.1 += 1;
            return Admit::Yes;
        }
        let refused = rate.refused.fetch_add(1, Ordering::SeqCst) + 1;
        if refused >= self.inner.disconnect_after_refused {
            Admit::Disconnect
        } else {
            Admit::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecurityConfig;

    fn guard(f: impl FnOnce(&mut SecurityConfig)) -> Guard {
        let mut config = SecurityConfig::default();
        f(&mut config);
        Guard::new(&config)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn cidr_lists_match_v4_and_v6() {
        let g = guard(|c| {
            c.ip_allow = vec!["10.0.0.0/8".into(), "2001:db8::/32".into(), "::1".into()];
            c.ip_deny = vec!["10.1.0.0/16".into(), "2001:db8:dead::/48".into()];
        });
        assert_eq!(g.check_ip(ip("10.2.3.4")), Ok(()));
        assert_eq!(g.check_ip(ip("10.1.3.4")), Err(GuardError::Denied));
        assert_eq!(g.check_ip(ip("11.0.0.1")), Err(GuardError::NotAllowed));
        assert_eq!(g.check_ip(ip("2001:db8::1")), Ok(()));
        assert_eq!(g.check_ip(ip("2001:db8:dead::1")), Err(GuardError::Denied));
        assert_eq!(g.check_ip(ip("2001:db9::1")), Err(GuardError::NotAllowed));
        assert_eq!(g.check_ip(ip("::1")), Ok(()));
        assert_eq!(g.check_ip(ip("::2")), Err(GuardError::NotAllowed));
        assert!(parse_net("not-an-ip").is_none());
        assert!(parse_net("10.0.0.0/33").is_none());
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let nobody = guard(|_| {});
        assert_eq!(nobody.client_ip(peer, &xff("1.2.3.4")), ip("127.0.0.1"));
        let all = guard(|c| c.trust_proxy = TrustProxy::All(true));
        assert_eq!(
            all.client_ip(peer, &xff("1.2.3.4, 10.0.0.2")),
            ip("1.2.3.4")
        );
        assert_eq!(all.client_ip(peer, &xff("garbage")), ip("127.0.0.1"));
        let some = guard(|c| {
            c.trust_proxy = TrustProxy::Proxies(vec!["127.0.0.0/8".into(), "10.0.0.0/8".into()])
        });
        // The client forged the first hop; the trusted proxy 10.0.0.2 saw 5.6.7.8.
        assert_eq!(
            some.client_ip(peer, &xff("1.2.3.4, 5.6.7.8, 10.0.0.2")),
            ip("5.6.7.8")
        );
        let other: SocketAddr = "192.168.1.1:5000".parse().unwrap();
        assert_eq!(some.client_ip(other, &xff("1.2.3.4")), ip("192.168.1.1"));
        let v6: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(nobody.client_ip(v6, &HeaderMap::new()), ip("127.0.0.1"));
        let v6peer: SocketAddr = "[::1]:1".parse().unwrap();
        let trust6 = guard(|c| c.trust_proxy = TrustProxy::Proxies(vec!["::1/128".into()]));
        assert_eq!(
            trust6.client_ip(v6peer, &xff("2001:db8::7")),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn connection_limits_at_and_over() {
        let g = guard(|c| {
            c.max_connections = 3;
            c.rate_limit.max_connections_per_ip = 2;
        });
        let a1 = g.acquire(ip("1.1.1.1")).unwrap();
        let _a2 = g.acquire(ip("1.1.1.1")).unwrap();
        assert_eq!(g.acquire(ip("1.1.1.1")).unwrap_err(), GuardError::PerIp);
        let _b1 = g.acquire(ip("2.2.2.2")).unwrap();
        assert_eq!(
            g.acquire(ip("3.3.3.3")).unwrap_err(),
            GuardError::MaxConnections
        );
        a1.release();
        a1.release();
        assert_eq!(g.live(), 2);
        let _a3 = g.acquire(ip("1.1.1.1")).unwrap();
    }

    #[test]
    fn lockout_after_the_limit() {
        let g = guard(|c| c.lockout_max_failures = 3);
        let a = ip("1.1.1.1");
        for _ in 0..2 {
            g.record_failure(a);
        }
        assert_eq!(g.check_lockout(a), Ok(()));
        g.record_failure(a);
        assert_eq!(g.check_lockout(a), Err(GuardError::LockedOut));
        assert_eq!(g.check_lockout(ip("1.1.1.2")), Ok(()));
    }

    #[test]
    fn trust_proxy_config_shapes() {
        use crate::config::Config;
        for (text, expected) in [
            ("", TrustProxy::All(false)),
            ("trust_proxy = true", TrustProxy::All(true)),
            (
                "trust_proxy = [\"10.0.0.0/8\", \"::1\"]",
                TrustProxy::Proxies(vec!["10.0.0.0/8".into(), "::1".into()]),
            ),
        ] {
            let config = Config::from_toml(&format!("[security]\n{text}\n")).unwrap();
            assert_eq!(config.security.trust_proxy, expected);
        }
        assert!(Config::from_toml("[security]\ntrust_proxy = \"yes\"\n").is_err());
        let mut config = Config::default();
        config.security.ip_deny = vec!["10.0.0.0/40".into()];
        config.security.trust_proxy = TrustProxy::Proxies(vec!["proxy".into()]);
        let errors = config.validate().unwrap_err();
        let text = format!("{errors:?}");
        assert!(
            text.contains("security.ip_deny") && text.contains("security.trust_proxy"),
            "{text}"
        );
    }

    #[test]
    fn event_rate() {
        let g = guard(|c| {
            c.rate_limit.max_events_per_second = 3;
            c.rate_limit.disconnect_after_refused = 2;
        });
        let rate = EventRate::default();
        for _ in 0..3 {
            assert_eq!(g.admit(&rate), Admit::Yes);
        }
        assert_eq!(g.admit(&rate), Admit::Refused);
        assert_eq!(g.admit(&rate), Admit::Disconnect);
    }
}
