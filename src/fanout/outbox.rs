//! A connection's bounded send queue: the one place its shard and its session meet.
//!
//! Both live on the same shard thread (see [`super::shard`]), so the mutex is never contended;
//! it is there because the two hold the outbox through an `Arc`.
//!
//! Two writers, never at once:
//! - **Direct.** While the session is idle (waiting for data, holding no batch), the shard
//!   writes what it queued in one pass straight to the socket with `try_write_vectored`
//!   ([`Outbox::flush`]): no task is woken, and tokio's cached edge-triggered readiness costs
//!   no `epoll_ctl`. This is the common case, one `send` per socket per pass.
//! - **Session.** On `WouldBlock`, a partial write, TLS (bytes are encrypted per connection) or
//!   a close, the rest is handed to the session's task, which takes the whole queue in one
//!   swap, waits for the socket to drain and writes with vectored writes until the queue is
//!   empty; then the direct path resumes.
//!
//! The bound is enforced on push, in bytes and in frames, counting frames taken by the session
//! until they reach the socket, so memory per connection never exceeds the bound plus one batch
//! of control replies. Overflow never blocks the publisher: the outbox is emptied at once,
//! marked with why, and the session closes the connection with 4008. Other closes (shutdown,
//! limits) let the queue drain first, within the session's close timeout.

use crate::metrics::SessionMetrics;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::net::tcp::OwnedWriteHalf;

/// Frames handed to one vectored write at most (well under IOV_MAX).
pub const MAX_IOV: usize = 64;

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
    /// Queued; `flush`: the first frame since the last [`Outbox::flush`], so the publisher
    /// must call it once its pass is over.
    Queued { flush: bool },
    /// This push overflowed the bound: the connection is now closing as a slow consumer.
    Overflowed,
    /// The connection was already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Queued>,
    /// Bytes of the front frame already written by a direct write.
    offset: usize,
    /// Bytes queued plus bytes taken by the writer and not yet written.
    bytes: usize,
    /// Frames queued plus frames taken and not yet written.
    count: usize,
    closing: Option<Closing>,
    /// The writer's waker while it waits: for data and closing, or (while it is busy writing a
    /// batch) for closing only. Taken by whoever wakes it, so a busy writer costs pushes nothing.
    waker: Option<Waker>,
    /// The session holds no batch and waits for data: the shard may write directly.
    wants_data: bool,
    /// Pushed to since the last flush (the publisher has it on its list).
    dirty: bool,
    /// Bytes and frames of a `resume=` catch-up admitted above the bound; reset once the queue
    /// has drained, so it lets exactly that backlog through once.
    allowance: (usize, usize),
    /// The plain-TCP socket's write half, shared with the session, for direct writes; `None`
    /// for TLS and once the session has ended.
    direct: Option<Arc<OwnedWriteHalf>>,
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
        if state.bytes + frame.len() > self.bound.max_bytes + state.allowance.0
            || state.count + 1 > self.bound.max_frames + state.allowance.1
        {
            state.closing = Some(Closing::SlowConsumer {
                queued_bytes: state.bytes,
                queued_frames: state.count,
                bound: self.bound,
            });
            // Free the backlog now: a slow consumer must not hold memory while it is closed. A
            // frame already partly on the wire stays, or the close frame would land inside it.
            let started = if state.offset > 0 {
                state.frames.pop_front()
            } else {
                None
            };
            let dropped = std::mem::take(&mut state.frames);
            state.frames.extend(started);
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
        let flush = !state.dirty;
        state.dirty = true;
        Push::Queued { flush }
    }

    /// Queues a `resume=` catch-up. It may be far larger than the bound (minutes of trades), so
    /// it raises the bound by its own size until the queue next drains: live frames behind it
    /// still overflow at the usual bound above it, and a client that does not read it is
    /// evicted as usual. Its size is bounded by `--history`.
    pub fn push_catch_up(&self, frames: Vec<Bytes>) {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return;
        }
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        state.allowance.0 += bytes;
        state.allowance.1 += frames.len();
        state.bytes += bytes;
        state.count += frames.len();
        state
            .frames
            .extend(frames.into_iter().map(|frame| Queued { frame, born_us: 0 }));
        Self::wake_if_waiting(state);
    }

    /// Lets the shard write to this plain-TCP socket directly (see the module docs).
    pub fn set_direct(&self, socket: Arc<OwnedWriteHalf>) {
        self.state.lock().direct = Some(socket);
    }

    /// Drops the shard's reference to the socket, so it closes with the session.
    pub fn release_direct(&self) {
        let socket = self.state.lock().direct.take();
        drop(socket);
    }

    /// Writes what was queued since the last flush, once the publisher's pass is over: directly
    /// to the socket while the session is idle; otherwise (backlog, TLS, closing) by waking
    /// the session if it waits. Records what reached the socket in `metrics`.
    pub fn flush(&self, metrics: &SessionMetrics) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.dirty = false;
        if state.frames.is_empty() {
            return;
        }
        let socket = match &state.direct {
            Some(socket) if state.wants_data && state.closing.is_none() => socket,
            _ => {
                Self::wake_if_waiting(guard);
                return;
            }
        };
        metrics.queue_depth_bytes.record(state.bytes as f64);
        loop {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let count = fill_slices(&mut slices, &state.frames, state.offset);
                if count == 1 {
                    socket.try_write(&slices[0])
                } else {
                    socket.try_write_vectored(&slices[..count])
                }
            };
            let n = match written {
                Ok(n) if n > 0 => n,
                // WouldBlock, or an error the session meets on its own next write.
                _ => break,
            };
            let (frames, bytes) = wrote(&mut state.frames, &mut state.offset, n, metrics);
            state.bytes -= bytes;
            state.count -= frames;
            if state.frames.is_empty() {
                // Idle again: hold no buffer until the next frame (one small allocation per
                // pass, against one `send`).
                state.frames = VecDeque::new();
                state.allowance = (0, 0);
                return;
            }
        }
        // A backlog: the session takes over until the socket drains.
        metrics.write_handoffs.increment(1);
        state.wants_data = false;
        let waker = state.waker.take();
        drop(guard);
        wake(waker);
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

    /// The session's one way in. With `want_data`, moves every queued frame into `batch` (which
    /// must be empty) in one lock hold, with `offset`, the bytes of its first frame already
    /// written directly; once the outbox is closing and everything queued has been handed
    /// out, returns why, so the session sends its close frame last. Without `want_data` (the
    /// session is busy with a batch) it only reports a closing, so an eviction or shutdown
    /// starts the close deadline even while a write is blocked. Otherwise it registers the
    /// waker: a flush it cannot finish and control frames wake it when it wants data, closes
    /// always.
    pub fn poll_next(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Queued>,
        offset: &mut usize,
        want_data: bool,
    ) -> Poll<Option<Closing>> {
        let mut state = self.state.lock();
        if want_data && !state.frames.is_empty() {
            debug_assert!(batch.is_empty());
            std::mem::swap(&mut state.frames, batch);
            *offset = std::mem::take(&mut state.offset);
            state.wants_data = false;
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
        if state.count == 0 {
            state.allowance = (0, 0);
        }
    }

    /// Bytes queued or in flight.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

/// Points `slices` at the queued frames, the first from `offset`; returns how many.
pub(crate) fn fill_slices<'a>(
    slices: &mut [IoSlice<'a>; MAX_IOV],
    frames: &'a VecDeque<Queued>,
    offset: usize,
) -> usize {
    let mut count = 0;
    for (slot, queued) in slices.iter_mut().zip(frames.iter()) {
        let frame = &queued.frame[..];
        *slot = IoSlice::new(if count == 0 { &frame[offset..] } else { frame });
        count += 1;
    }
    count
}

/// Drops fully written frames from `pending`, calling `done` for each; returns how many frames
/// and their total bytes.
pub(crate) fn advance(
    pending: &mut VecDeque<Queued>,
    offset: &mut usize,
    mut written: usize,
    mut done: impl FnMut(&Queued),
) -> (usize, usize) {
    let (mut frames, mut bytes) = (0, 0);
    while let Some(front) = pending.front() {
        let remaining = front.frame.len() - *offset;
        if written < remaining {
            *offset += written;
            break;
        }
        written -= remaining;
        frames += 1;
        bytes += front.frame.len();
        done(front);
        *offset = 0;
        pending.pop_front();
    }
    (frames, bytes)
}

/// One socket write of `written` bytes from `pending` (the first frame from `offset`): drops
/// the frames it completed and records the write and each frame's publish-to-socket time.
/// Returns the frames completed and their bytes. Shared by the shard's direct writes and the
/// session's backlog writes, so both count alike.
pub(crate) fn wrote(
    pending: &mut VecDeque<Queued>,
    offset: &mut usize,
    written: usize,
    metrics: &SessionMetrics,
) -> (usize, usize) {
    let now_us = crate::clock::monotonic_us();
    let (frames, bytes) = advance(pending, offset, written, |done| {
        if done.born_us != 0 {
            metrics.publish_to_socket_us(now_us.saturating_sub(done.born_us));
        }
    });
    metrics.wrote(frames, written);
    (frames, bytes)
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
        let mut offset = 0;
        match outbox.poll_next(&mut cx, batch, &mut offset, true) {
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
        assert!(matches!(
            outbox.push_data(&frame(60), 1),
            Push::Queued { .. }
        ));
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
        assert!(matches!(
            outbox.push_data(&frame(60), 1),
            Push::Queued { .. }
        ));
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
        assert!(matches!(
            outbox.push_data(&frame(10), 1),
            Push::Queued { .. }
        ));
        assert!(matches!(
            outbox.push_data(&frame(10), 1),
            Push::Queued { .. }
        ));
        assert_eq!(
            outbox.push_data(&frame(10), 1),
            Push::Overflowed,
            "frame bound"
        );
    }

    #[test]
    fn advance_handles_partial_frames() {
        let queued = |b: &'static [u8]| Queued {
            frame: Bytes::from_static(b),
            born_us: 7,
        };
        let mut pending: VecDeque<Queued> = [queued(b"abcd"), queued(b"ef")].into();
        let mut offset = 0;
        let mut done = 0;
        assert_eq!(advance(&mut pending, &mut offset, 3, |_| done += 1), (0, 0));
        assert_eq!(offset, 3);
        assert_eq!(advance(&mut pending, &mut offset, 2, |_| done += 1), (1, 4));
        assert_eq!((pending.len(), offset), (1, 1));
        assert_eq!(advance(&mut pending, &mut offset, 1, |_| done += 1), (1, 2));
        assert!(pending.is_empty());
        assert_eq!(done, 2);
    }
}
