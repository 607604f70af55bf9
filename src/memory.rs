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

/// Whether enough sockets left since the last trim (`high` = most connected since then) to
/// be worth a trim: at least 256 and a tenth of them.
pub fn sockets_left_enough(high: i64, now: i64) -> bool {
    let left = high - now;
    left >= 256 && left * 10 >= high
}

/// Trims once the number of connected sockets fell noticeably (see [`sockets_left_enough`]),
/// checking every second; runs until dropped.
pub async fn trim_after_disconnects() {
    let mut tick = tokio::time::interval(TRIM_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut high = crate::metrics::CONNECTIONS.get();
    loop {
        tick.tick().await;
        let now = crate::metrics::CONNECTIONS.get();
        high = high.max(now);
        if sockets_left_enough(high, now) {
            tokio::task::spawn_blocking(release_free_memory);
            high = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_many_sockets_left() {
        assert!(!sockets_left_enough(100, 0));
        assert!(sockets_left_enough(15_000, 0));
        assert!(sockets_left_enough(15_000, 13_000));
        assert!(!sockets_left_enough(15_000, 14_000));
        assert!(!sockets_left_enough(0, 0));
    }

    #[test]
    fn releasing_free_memory_is_safe_to_call() {
        let _ = release_free_memory();
    }
}
