//! Stopping the factory, in one struct whose fields say their role (after mini-redis's
//! `Listener`): the signal every task waits on, and the count of sessions still draining.
//!
//! The sequence (see `server::serve`): the signal is given ([`Shutdown::begin`], from SIGTERM or
//! `Factory::stop`); the listeners stop accepting; each session finishes its in-flight
//! writes, acks them and closes with ShuttingDown; once every session is gone (or after the
//! drain timeout) the sink is stopped and the inventory written; then the executor's threads end.

use smol::channel::{Receiver, Sender};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// The factory's stop signal and the sessions it waits for.
pub struct Shutdown {
    /// Taken (dropped) to tell every session, loop and listener to stop: receivers of
    /// `begun` then fail.
    notify: Mutex<Option<Sender<()>>>,
    /// Cloned by whatever waits for the stop.
    begun: Receiver<()>,
    /// Cloned into every session task; dropped by `drain` so that, once the last session is
    /// gone, `sessions_done` fails.
    session_alive: Mutex<Option<Sender<()>>>,
    /// Fails once every session task (and `session_alive` itself) is gone.
    sessions_done: Receiver<()>,
}

/// Held by a session task for its life; the drain waits until none is left.
pub struct SessionGuard {
    _alive: Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        let (notify, begun) = smol::channel::bounded(1);
        let (alive, done) = smol::channel::bounded(1);
        Shutdown {
            notify: Mutex::new(Some(notify)),
            begun,
            session_alive: Mutex::new(Some(alive)),
            sessions_done: done,
        }
    }
}

impl Shutdown {
    /// Gives the stop signal (idempotent).
    pub fn begin(&self) {
        self.notify.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// True once the stop signal was given.
    pub fn is_begun(&self) -> bool {
        self.begun.is_closed()
    }

    /// Resolves once the stop signal is given (at once if it was).
    pub fn begun(&self) -> impl Future<Output = ()> + Send + 'static {
        let rx = self.begun.clone();
        async move {
            let _ = rx.recv().await;
        }
    }

    /// A guard for a new session task; `None` once the drain has started (the connection is
    /// then refused as ShuttingDown by its session, without a guard to wait for).
    pub fn session(&self) -> Option<SessionGuard> {
        let alive = self.session_alive.lock().unwrap_or_else(|p| p.into_inner());
        alive.as_ref().map(|tx| SessionGuard { _alive: tx.clone() })
    }

    /// Waits until every session task has ended, at most `timeout`; true when they all did.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.session_alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let done = self.sessions_done.clone();
        smol::future::or(
            async {
                let _ = done.recv().await;
                true
            },
            async {
                smol::Timer::after(timeout).await;
                false
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_waits_for_every_session_guard() {
        let s = Shutdown::default();
        assert!(!s.is_begun());
        let g = s.session().expect("guard before the drain");
        s.begin();
        s.begin();
        assert!(s.is_begun());
        smol::block_on(s.begun());
        // A session still running: the drain times out.
        assert!(!smol::block_on(s.drain(Duration::from_millis(50))));
        assert!(s.session().is_none(), "no new sessions once draining");
        drop(g);
        assert!(smol::block_on(s.drain(Duration::from_secs(30))));
    }
}
