//! A connection's bounded send queue: the one place the hub and a writer meet.
//!
//! The publisher (engine thread) pushes shared frames; the connection's writer drains everything
//! queued in one swap and writes it with one vectored write. The bound is enforced on push, in
//! bytes and in frames, counting frames taken by the writer until they reach the socket, so
//! memory per connection never exceeds the bound plus one batch of control replies. Overflow
//! never blocks the publisher: the outbox is emptied at once, marked with why, and the writer
//! closes the connection with 4008. Other closes (shutdown, limits) let the queue drain first,
//! within the writer's close timeout.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

/// Room above the byte bound for control replies, so a reply is not what tips a connection
/// over; one LIST_SUBSCRIPTIONS reply for 1024 streams is about 30 KiB.
pub const CONTROL_SLACK: usize = 64 * 1024;

/// How much one connection may have queued before it counts as a slow consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueBound {
    pub max_bytes: usize,
    pub max_frames: usize,
}

/// A queued frame and when it was published, so the writer can measure publish-to-socket time.
#[derive(Clone, Debug)]
pub struct Queued {
    pub frame: Bytes,
    /// [`crate::clock::monotonic_us`] at publish; 0 for replies and control frames.
    pub born_us: u64,
}

/// Why an outbox stopped accepting frames; the writer turns it into a close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closing {
    /// The queue overflowed: close 4008 naming the bound.
    SlowConsumer {
        queued_bytes: usize,
        queued_frames: usize,
        bound: QueueBound,
    },
    /// Someone else (shutdown, lifetime, rate limit, ...) asked to close with this code.
    Close { code: u16, reason: String },
}

/// What the publisher learns from a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This push overflowed the bound: the connection is now closing as a slow consumer.
    Overflowed,
    /// The connection was already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Queued>,
    /// Bytes queued plus bytes taken by the writer and not yet written.
    bytes: usize,
    /// Frames queued plus frames taken and not yet written.
    count: usize,
    closing: Option<Closing>,
    /// The writer's waker while it waits: for data and closing, or (while it is busy writing a
    /// batch) for closing only. Taken by whoever wakes it, so a busy writer costs pushes nothing.
    waker: Option<Waker>,
    wants_data: bool,
}

pub struct Outbox {
    state: Mutex<State>,
    bound: QueueBound,
}

impl Outbox {
    pub fn new(bound: QueueBound) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            bound,
        }
    }

    /// Queues a data frame, or evicts the connection if that would overflow the bound.
    pub fn push_data(&self, frame: &Bytes, born_us: u64) -> Push {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return Push::Closed;
        }
        if state.bytes + frame.len() > self.bound.max_bytes
            || state.count + 1 > self.bound.max_frames
        {
            state.closing = Some(Closing::SlowConsumer {
                queued_bytes: state.bytes,
                queued_frames: state.count,
                bound: self.bound,
            });
            // Free the backlog now: a slow consumer must not hold memory while it is closed.
            let dropped = std::mem::take(&mut state.frames);
            state.bytes -= dropped.iter().map(|q| q.frame.len()).sum::<usize>();
            state.count -= dropped.len();
            let waker = state.waker.take();
            drop(state);
            drop(dropped);
            wake(waker);
            return Push::Overflowed;
        }
        state.bytes += frame.len();
        state.count += 1;
        state.frames.push_back(Queued {
            frame: frame.clone(),
            born_us,
        });
        Self::wake_if_waiting(state);
        Push::Queued
    }

    /// Queues a reply or control frame. These are few (each answers one rate-limited client
    /// message, or is a ping) and must not be refused because market data filled the queue, so
    /// they may exceed the bound by [`CONTROL_SLACK`]; a client that lets even that pile up is
    /// a slow consumer like any other.
    pub fn push_control(&self, frame: Bytes) {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return;
        }
        if state.bytes + frame.len() > self.bound.max_bytes + CONTROL_SLACK {
            drop(state);
            self.push_data(&frame, 0);
            return;
        }
        state.bytes += frame.len();
        state.count += 1;
        state.frames.push_back(Queued { frame, born_us: 0 });
        Self::wake_if_waiting(state);
    }

    fn wake_if_waiting(mut state: parking_lot::MutexGuard<'_, State>) {
        let waker = if state.wants_data {
            state.waker.take()
        } else {
            None
        };
        drop(state);
        wake(waker);
    }

    /// Asks the writer to close the connection with `code` once what is queued is written
    /// (first caller wins). `last` is queued before the close, e.g. the `serverShutdown` event.
    pub fn close(&self, code: u16, reason: impl Into<String>, last: Option<Bytes>) {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return;
        }
        if let Some(frame) = last {
            state.bytes += frame.len();
            state.count += 1;
            state.frames.push_back(Queued { frame, born_us: 0 });
        }
        state.closing = Some(Closing::Close {
            code,
            reason: reason.into(),
        });
        let waker = state.waker.take();
        drop(state);
        wake(waker);
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().closing.is_some()
    }

    /// Why the outbox is closing, if it is.
    pub fn closing(&self) -> Option<Closing> {
        self.state.lock().closing.clone()
    }

    /// The writer's one way in. With `want_data`, moves every queued frame into `batch` (which
    /// must be empty) in one lock hold; once the outbox is closing and everything queued has
    /// been handed out, returns why, so the writer sends its close frame last. Without
    /// `want_data` (the writer is busy with a batch) it only reports a closing, so an eviction
    /// or shutdown starts the close deadline even while a write is blocked. Otherwise it
    /// registers the waker: pushes wake it only when it wants data, closes always.
    pub fn poll_next(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Queued>,
        want_data: bool,
    ) -> Poll<Option<Closing>> {
        let mut state = self.state.lock();
        if want_data && !state.frames.is_empty() {
            debug_assert!(batch.is_empty());
            std::mem::swap(&mut state.frames, batch);
            return Poll::Ready(None);
        }
        if let Some(closing) = &state.closing {
            return Poll::Ready(Some(closing.clone()));
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        state.wants_data = want_data;
        Poll::Pending
    }

    /// Tells the outbox that `frames` frames of `bytes` bytes reached the socket.
    pub fn written(&self, frames: usize, bytes: usize) {
        let mut state = self.state.lock();
        state.bytes = state.bytes.saturating_sub(bytes);
        state.count = state.count.saturating_sub(frames);
    }

    /// Bytes queued or in flight.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    /// `poll_next` wanting data, outside a task.
    fn take(outbox: &Outbox, batch: &mut VecDeque<Queued>) -> Option<Closing> {
        let mut cx = Context::from_waker(Waker::noop());
        match outbox.poll_next(&mut cx, batch, true) {
            Poll::Ready(closing) => closing,
            Poll::Pending => None,
        }
    }

    #[test]
    fn overflow_evicts_and_frees_the_backlog() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 10,
        });
        assert_eq!(outbox.push_data(&frame(60), 1), Push::Queued);
        assert_eq!(outbox.push_data(&frame(60), 1), Push::Overflowed);
        assert_eq!(outbox.push_data(&frame(1), 1), Push::Closed);
        let mut batch = VecDeque::new();
        match take(&outbox, &mut batch) {
            Some(Closing::SlowConsumer {
                queued_bytes: 60,
                queued_frames: 1,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(batch.is_empty());
    }

    #[test]
    fn bytes_in_flight_count_until_written() {
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 10,
        });
        assert_eq!(outbox.push_data(&frame(60), 1), Push::Queued);
        let mut batch = VecDeque::new();
        assert_eq!(take(&outbox, &mut batch), None);
        assert_eq!(batch.len(), 1);
        assert_eq!(
            outbox.push_data(&frame(60), 1),
            Push::Overflowed,
            "the taken frame still counts"
        );
        let outbox = Outbox::new(QueueBound {
            max_bytes: 100,
            max_frames: 2,
        });
        outbox.push_data(&frame(10), 1);
        batch.clear();
        take(&outbox, &mut batch);
        outbox.written(1, 10);
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.push_data(&frame(10), 1), Push::Queued);
        assert_eq!(outbox.push_data(&frame(10), 1), Push::Queued);
        assert_eq!(
            outbox.push_data(&frame(10), 1),
            Push::Overflowed,
            "frame bound"
        );
    }
}
