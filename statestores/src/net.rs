//! Deadlines for network operations: every fetch, push, list or put against a remote server
//! ends, with an error naming the server and the operation, within [`NetworkTimeouts`].
//!
//! | transport | connect | silence (no byte for `read`) | whole operation |
//! |---|---|---|---|
//! | `git://` fetch (gix) | TCP connect timeout | socket read/write timeouts | every read is bounded by what is left of the deadline |
//! | `http(s)://` fetch (gix, reqwest) | client connect timeout | (whole operation) | client timeout = what is left of the deadline, pack download interrupted at the deadline |
//! | ssh fetch (gix spawns `ssh`) | `ConnectTimeout` (TCP, banner and key exchange) | `ServerAliveInterval`/`ServerAliveCountMax` | `timeout` (coreutils) around `ssh`, pack download interrupted at the deadline |
//! | `git push` (CLI, every scheme) | ssh `ConnectTimeout` | `http.lowSpeedLimit`/`lowSpeedTime`, ssh `ServerAlive*` | the process group is killed at the deadline |
//! | S3 (`object_store`, reqwest) | client connect timeout | client read timeout | each `check`/`owned`/`apply` is cancelled at the deadline |

use std::time::{Duration, Instant};

/// Connect, read and whole-operation timeouts (daemon settings `network.connectTimeout`,
/// `network.readTimeout`, `network.operationTimeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkTimeouts {
    /// Establishing a connection (TCP, and for ssh the banner and key exchange). Default 30 s.
    pub connect: Duration,
    /// Longest silence of a connected server (no byte received). Default 60 s.
    pub read: Duration,
    /// Longest time one operation (a fetch, a push, a state store check or apply against S3)
    /// may take in total. Default 5 min.
    pub operation: Duration,
}

impl Default for NetworkTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
            operation: Duration::from_secs(300),
        }
    }
}

impl NetworkTimeouts {
    /// The deadline of an operation starting now.
    pub fn deadline(&self) -> Deadline {
        Deadline {
            at: Instant::now() + self.operation,
            timeouts: *self,
        }
    }
}

/// The end of one network operation, with the timeouts it was derived from.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    timeouts: NetworkTimeouts,
}

impl Deadline {
    /// The timeouts this deadline was made from.
    pub fn timeouts(&self) -> &NetworkTimeouts {
        &self.timeouts
    }

    /// The instant the operation must end.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The connect timeout, cut to what is left (at least 1 ms: a zero timeout means "none"
    /// to the socket APIs).
    pub fn connect_timeout(&self) -> Duration {
        self.timeouts
            .connect
            .min(self.remaining())
            .max(Duration::from_millis(1))
    }

    /// The read timeout, cut to what is left (at least 1 ms).
    pub fn read_timeout(&self) -> Duration {
        self.timeouts
            .read
            .min(self.remaining())
            .max(Duration::from_millis(1))
    }

    /// Why an operation that failed after this deadline passed failed, for messages.
    pub fn expired_text(&self) -> String {
        format!(
            "no result within {} (network.operationTimeout)",
            human(self.timeouts.operation)
        )
    }
}

/// `2s`, `1m 30s`, `250ms`.
pub fn human(d: Duration) -> String {
    if d.subsec_millis() != 0 && d < Duration::from_secs(10) {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}

/// Sets `flag` when `deadline` passes, until dropped: gix's `should_interrupt` for a pack
/// download, so a server that keeps sending slowly is stopped at the deadline too.
pub struct Alarm {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Alarm {
    /// Starts the timer thread.
    pub fn start(deadline: &Deadline) -> Self {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let set = flag.clone();
        let wait = deadline.remaining();
        let spawned = std::thread::Builder::new()
            .name("net-deadline".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(wait) {
                    set.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
        Self {
            flag,
            stop: spawned.is_ok().then_some(tx),
        }
    }

    /// The flag to hand to gix.
    pub fn flag(&self) -> &std::sync::atomic::AtomicBool {
        &self.flag
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_settings() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(90)), "1m 30s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn timeouts_are_cut_to_the_deadline() {
        let t = NetworkTimeouts {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
            operation: Duration::ZERO,
        };
        let d = t.deadline();
        assert!(d.expired());
        assert_eq!(d.read_timeout(), Duration::from_millis(1));
        assert_eq!(d.connect_timeout(), Duration::from_millis(1));
    }
}
