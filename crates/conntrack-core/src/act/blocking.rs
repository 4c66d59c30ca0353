//! Running the [`dialer`](crate::dialer) without an async runtime: what the blocking
//! `conntrack-std` dialer builds its [`Runtime`](crate::dialer::Runtime) from.
//!
//! [`block_on`] drives a future on the calling thread, parking it between polls; [`sleep`] is a
//! timer that this `block_on` honours (it parks no longer than the earliest pending sleep);
//! [`spawn`] runs a blocking call on its own thread and is a future of its result, so that
//! several blocking connects can race under one `block_on`. Nothing here runs between dials.

use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

thread_local! {
    /// The earliest deadline of a [`Sleep`] polled during the current `block_on` poll.
    static WAKE_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread.
///
/// Between polls the thread parks until a waker fires or the earliest [`sleep`] polled is due.
/// A future that needs an async runtime's reactor (a tokio socket, say) never completes here.
///
/// ```
/// use std::time::Duration;
/// use conntrack_core::blocking::{block_on, sleep, spawn};
///
/// let answer = block_on(async {
///     sleep(Duration::from_millis(1)).await;
///     spawn(|| 6 * 7).await
/// });
/// assert_eq!(answer, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        let outer = WAKE_AT.replace(None);
        let polled = future.as_mut().poll(&mut cx);
        let wake_at = WAKE_AT.replace(outer);
        if let Poll::Ready(out) = polled {
            return out;
        }
        match wake_at {
            Some(at) => thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => thread::park(),
        }
    }
}

/// A future that is ready once `duration` has passed, for use under [`block_on`] (elsewhere
/// nothing wakes it when it is due).
#[must_use]
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now() + duration,
    }
}

/// The future of [`sleep`].
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        WAKE_AT.with(|w| {
            w.set(Some(w.get().map_or(deadline, |at| at.min(deadline))));
        });
        Poll::Pending
    }
}

/// Runs `f` on a new thread; the returned future is its result.
///
/// Dropping the future does not stop the thread: `f` runs to its end and its result is dropped
/// there (a blocking connect cannot be cancelled; bound it with its own timeout).
pub fn spawn<T, F>(f: F) -> Spawned<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
    }));
    let theirs = Arc::clone(&slot);
    thread::spawn(move || {
        let value = f();
        let waker = {
            let mut s = theirs.lock().unwrap_or_else(PoisonError::into_inner);
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    });
    Spawned { slot }
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The future of [`spawn`].
pub struct Spawned<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> std::fmt::Debug for Spawned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned").finish_non_exhaustive()
    }
}

impl<T> Future for Spawned<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_race_spawned_work() {
        // The shorter sleep wins over a thread that waits for a signal sent only afterwards.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waiting = spawn(move || rx.recv().is_ok());
        let winner = block_on(async {
            let mut waiting = pin!(waiting);
            let mut timer = pin!(sleep(Duration::from_millis(5)));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(v) = waiting.as_mut().poll(cx) {
                    return Poll::Ready(Some(v));
                }
                timer.as_mut().poll(cx).map(|()| None)
            })
            .await
        });
        assert_eq!(winner, None);
        tx.send(()).unwrap();
    }
}
