//! Giving freed memory back to the operating system.
//!
//! glibc's malloc keeps what the process freed in its arenas: after 15,000 sockets left, or
//! after the windows of a million-row transaction were folded, the resident set stays where
//! its peak was (measured: +91 % of the idle baseline, 3 s after the sockets left). Trimming
//! (`malloc_trim(0)`, which also returns the free pages inside the heap, not only its top)
//! after such moments brings it back. A no-op with other allocators and platforms.

use std::time::Duration;

/// How often the trimmer looks at the number of connected sockets.
const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Hands the free memory of every malloc arena back to the OS; returns whether some was.
/// Takes a few milliseconds on a heap of hundreds of MB: call it after bursts, not per event.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only walks and trims glibc's own arenas; any thread may call it.
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
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
        let _ = release_free_memory();
    }
}
