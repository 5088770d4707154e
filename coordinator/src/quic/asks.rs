//! What the coordinator asks of one live session besides answering it: `ProbeNow` frames,
//! encoded once per round and shared by every session asked.
//!
//! One of these is kept per connection for as long as it lives, so it is small: a mutex over a
//! queue that is empty (no allocation) between rounds, and a `Notify`, about 100 bytes where the
//! tokio channel it replaces cost every connection about 0.8 KiB (a 384-byte channel aligned to
//! 128 and a first block of 32 slots, allocated when the channel was made).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Requests one session may have waiting; one more is refused (as a full channel was): a
/// session that does not write them out is not sent more.
pub const ASKS_QUEUED: usize = 8;

/// An encoded frame to write to a probe, shared by all the sessions it is for.
pub(super) type Frame = Arc<[u8]>;

/// The queue of one session's requests, shared by the session ([`AsksReceiver`]) and whoever
/// asks ([`Asks::offer`]).
#[derive(Debug, Default)]
pub(super) struct Asks {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    /// The session has ended: nothing more is taken.
    closed: bool,
}

impl Asks {
    /// A new queue and the session's end of it.
    pub(super) fn new() -> (Arc<Asks>, AsksReceiver) {
        let asks = Arc::new(Asks::default());
        (asks.clone(), AsksReceiver(asks))
    }

    /// Queues `frame` for the session; false when the session has ended or has
    /// [`ASKS_QUEUED`] waiting already.
    pub(super) fn offer(&self, frame: &Frame) -> bool {
        {
            let mut state = self.state.lock();
            if state.closed || state.queue.len() >= ASKS_QUEUED {
                return false;
            }
            state.queue.push_back(frame.clone());
        }
        self.ready.notify_one();
        true
    }
}

/// The session's end: takes requests in order; dropping it closes the queue.
#[derive(Debug)]
pub(super) struct AsksReceiver(Arc<Asks>);

impl AsksReceiver {
    /// The next request, once there is one. Cancel-safe: a request is only taken when this
    /// returns it (`Notify` keeps a wake-up that came while nobody waited).
    pub(super) async fn next(&self) -> Frame {
        loop {
            if let Some(frame) = self.try_next() {
                return frame;
            }
            self.0.ready.notified().await;
        }
    }

    /// The next request, if one is waiting.
    pub(super) fn try_next(&self) -> Option<Frame> {
        let mut state = self.0.state.lock();
        let frame = state.queue.pop_front();
        if state.queue.is_empty() {
            // A queue emptied after a round gives its memory back.
            state.queue = VecDeque::new();
        }
        frame
    }
}

impl Drop for AsksReceiver {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.closed = true;
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b: u8) -> Frame {
        Arc::from(vec![b])
    }

    #[tokio::test]
    async fn requests_come_out_in_order_and_beyond_the_bound_are_refused() {
        let (asks, rx) = Asks::new();
        for i in 0..ASKS_QUEUED as u8 {
            assert!(asks.offer(&frame(i)), "request {i} queued");
        }
        assert!(!asks.offer(&frame(99)), "one past the bound is refused");
        for i in 0..ASKS_QUEUED as u8 {
            assert_eq!(&*rx.next().await, &[i]);
        }
        assert!(rx.try_next().is_none());
        assert!(asks.offer(&frame(7)), "room again once taken");
        assert_eq!(&*rx.next().await, &[7]);
    }

    #[tokio::test]
    async fn a_request_offered_while_nobody_waits_wakes_the_next_wait() {
        let (asks, rx) = Asks::new();
        let waiter = tokio::spawn(async move {
            let first = rx.next().await;
            let second = rx.next().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        assert!(asks.offer(&frame(1)));
        assert!(asks.offer(&frame(2)));
        let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("both requests arrive")
            .expect("the waiter");
        assert_eq!((&*first, &*second), (&[1u8][..], &[2u8][..]));
    }

    #[tokio::test]
    async fn a_cancelled_wait_loses_no_request() {
        let (asks, rx) = Asks::new();
        // A wait dropped before anything came (as when another branch of the session's
        // select! wins) takes nothing with it.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), rx.next())
                .await
                .is_err()
        );
        assert!(asks.offer(&frame(3)));
        assert_eq!(&*rx.next().await, &[3]);
    }

    #[test]
    fn an_ended_session_is_offered_nothing() {
        let (asks, rx) = Asks::new();
        assert!(asks.offer(&frame(1)));
        drop(rx);
        assert!(!asks.offer(&frame(2)), "the session ended");
        assert!(asks.state.lock().queue.is_empty(), "what waited is freed");
    }
}
