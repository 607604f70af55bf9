//! Memory: the service's allocator, and giving freed memory back to the operating system.
//!
//! The binaries run on jemalloc ([`service_allocator!`]). An allocator keeps what the process
//! freed for reuse: after 15,000 sockets left, or after the windows of a million-row
//! transaction were folded, the resident set would stay near its peak for a while (glibc's
//! malloc kept it for good: +91 % of the idle baseline 3 s after the sockets left).
//! [`release_free_memory`] after such moments hands it back at once: jemalloc's dirty pages of
//! every arena, and glibc's free pages for what is allocated outside jemalloc.

use std::time::Duration;

pub use tikv_jemallocator::Jemalloc;

/// Makes jemalloc the global allocator of the binary it is written in (`walcast`, and the
/// bench drain so that it measures what the service does), with purging tuned for a service
/// whose load comes in waves.
///
/// Why jemalloc: fan-out allocates a packet per socket and event on one thread and frees it on
/// another; glibc's malloc spent ~20 % of the fan-out's CPU in `_int_free`/`malloc` and its
/// arena locks, and `make bench` measured 370,000 deliveries/s with it against 660,000–830,000
/// with jemalloc (same clients, same machine). Purging: background threads return freed
/// pages after `dirty_decay_ms` (1 s here, 10 s by default), and muzzy pages at once, so the
/// resident set follows the load down; [`release_free_memory`] does it at once after bursts.
/// Built without "cache-oblivious" placement, which offsets every large allocation by a random
/// part of a page: it cost ~4 KB per idle socket (35.6 → 31.6 KB measured).
#[macro_export]
macro_rules! service_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::memory::Jemalloc = $crate::memory::Jemalloc;

        /// jemalloc's options, read once at start (`_RJEM_MALLOC_CONF` in the environment wins).
        #[allow(non_upper_case_globals)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        pub static malloc_conf: &[u8] =
            b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
    };
}

/// How often the trimmer looks at the number of connected sockets.
const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Hands the free memory of the allocators back to the OS: purges every jemalloc arena
/// (what `dirty_decay_ms` would return within a second anyway) and trims glibc's arenas.
/// Takes a few milliseconds on a heap of hundreds of MB: call it after bursts, not per event.
pub fn release_free_memory() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages, now.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a documented mallctl that takes and returns nothing (all pointers null).
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only walks and trims glibc's own arenas; any thread may call it.
        unsafe { malloc_trim(0) };
    }
}

/// When to trim as sockets come and go, looked at once a second: during a wave of
/// disconnects (at least 64 fewer than the most since the last trim), and once more when the
/// count has settled after one (the last sockets' memory is freed a moment after they left).
#[derive(Debug, Default)]
pub struct TrimPolicy {
    /// The most sockets connected since the last trim.
    high: i64,
    /// The count a second ago.
    last: i64,
    /// A wave was trimmed; the settled count has not been yet.
    settling: bool,
}

impl TrimPolicy {
    /// Whether to trim now, with `now` sockets connected.
    pub fn tick(&mut self, now: i64) -> bool {
        self.high = self.high.max(now);
        let trim = if self.high - now >= 64 {
            self.settling = true;
            true
        } else if self.settling && now == self.last {
            self.settling = false;
            true
        } else {
            false
        };
        if trim {
            self.high = now;
        }
        self.last = now;
        trim
    }
}

/// Trims as [`TrimPolicy`] says, checking every second; runs until dropped.
pub async fn trim_after_disconnects() {
    let mut tick = tokio::time::interval(TRIM_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy = TrimPolicy::default();
    loop {
        tick.tick().await;
        if policy.tick(crate::metrics::CONNECTIONS.get()) {
            tokio::task::spawn_blocking(release_free_memory);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_during_a_wave_of_disconnects_and_once_settled() {
        let mut policy = TrimPolicy::default();
        let ticks: Vec<bool> = [
            0, 5_000, 15_000, 15_000, 14_990, 9_000, 2_000, 30, 30, 30, 0,
        ]
        .into_iter()
        .map(|now| policy.tick(now))
        .collect();
        assert_eq!(
            ticks,
            [
                false, false, false, false, false, true, true, true, true, false, false
            ]
        );
    }

    #[test]
    fn releasing_free_memory_is_safe_to_call() {
        release_free_memory();
    }
}
