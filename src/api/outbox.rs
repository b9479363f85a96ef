//! A watch's unread output: the encoded lines between the task that follows the store and the
//! connection that writes them to the client, bounded in bytes three ways.
//!
//! - **Per watch** ([`WATCH_BUFFER_BYTES`]): live events that would go over end the watch (its
//!   client resumes from its last resourceVersion); the initial events wait instead, since the
//!   client asked for all of them and reads them at its own pace.
//! - **Per token** (`per_token`): one tenant's stalled watches together cannot take more.
//! - **In all** (`all`): what every watch's slow clients hold together.
//!
//! Nothing ever waits on the token or server budget: a line that does not fit ends its watch,
//! so no stalled client can make another tenant's watch wait or fail. When a watch ends, its
//! queue is emptied at once, whether or not the client ever reads again; the connection only
//! keeps what it had already taken.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Encoded bytes one watch may have waiting for its client. One object is at most 1.5 MiB.
pub const WATCH_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// The server-wide and per-token budgets, shared by every watch.
pub struct Budgets {
    pub per_token: usize,
    pub all: usize,
    used: AtomicUsize,
    tokens: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl Budgets {
    pub fn new(per_token: usize, all: usize) -> Self {
        Budgets {
            per_token,
            all,
            used: AtomicUsize::new(0),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes queued by every watch now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn of_token(&self, token: &str) -> Arc<AtomicUsize> {
        self.tokens
            .lock()
            .entry(token.to_string())
            .or_default()
            .clone()
    }
}

/// Why a line was not queued.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The watch's own budget is full: wait for the client, or end the watch.
    Own,
    /// The token's or the server's budget is full: end the watch.
    Shared,
}

pub struct Outbox {
    queue: Mutex<VecDeque<Bytes>>,
    /// Bytes in `queue`.
    queued: AtomicUsize,
    token: Arc<AtomicUsize>,
    budgets: Arc<Budgets>,
    /// The watch ended: no more lines, and the reader stops.
    closed: AtomicBool,
    readable: Notify,
    writable: Notify,
    /// The connection dropped its reader: the client is gone.
    gone: CancellationToken,
}

impl Outbox {
    pub fn new(budgets: Arc<Budgets>, token: &str) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            token: budgets.of_token(token),
            budgets,
            closed: AtomicBool::new(false),
            readable: Notify::new(),
            writable: Notify::new(),
            gone: CancellationToken::new(),
        })
    }

    fn charge(&self, n: usize) -> Result<(), Refused> {
        if self.queued.load(Ordering::SeqCst) + n > WATCH_BUFFER_BYTES.max(n) {
            return Err(Refused::Own);
        }
        let token = self.token.fetch_add(n, Ordering::SeqCst) + n;
        let all = self.budgets.used.fetch_add(n, Ordering::SeqCst) + n;
        if token > self.budgets.per_token || all > self.budgets.all {
            self.token.fetch_sub(n, Ordering::SeqCst);
            self.budgets.used.fetch_sub(n, Ordering::SeqCst);
            return Err(Refused::Shared);
        }
        self.queued.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
        self.token.fetch_sub(n, Ordering::SeqCst);
        self.budgets.used.fetch_sub(n, Ordering::SeqCst);
    }

    fn enqueue(&self, line: Bytes) {
        self.queue.lock().push_back(line);
        self.readable.notify_one();
    }

    /// Queues a live line; `false` (and the watch must end) if any budget is full or the watch
    /// is over.
    pub fn try_send(&self, line: Bytes) -> bool {
        if self.closed.load(Ordering::SeqCst) || self.charge(line.len()).is_err() {
            return false;
        }
        self.enqueue(line);
        true
    }

    /// Queues a line of the initial events, waiting while the watch's own budget is full;
    /// `false` if a shared budget is full or the watch is over.
    pub async fn send(&self, line: Bytes) -> bool {
        loop {
            let writable = self.writable.notified();
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            match self.charge(line.len()) {
                Ok(()) => {
                    self.enqueue(line);
                    return true;
                }
                Err(Refused::Shared) => return false,
                Err(Refused::Own) => writable.await,
            }
        }
    }

    /// Ends the watch normally (its time is up): the client still gets what is queued, then
    /// the end of the stream.
    pub fn finish(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// Cuts the watch off: drops what the client has not read (it resumes from the last
    /// resourceVersion it got), and ends the stream.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let dropped: Vec<Bytes> = self.queue.lock().drain(..).collect();
        for line in dropped {
            self.release(line.len());
        }
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// Completes when the client is gone.
    pub async fn gone(&self) {
        self.gone.cancelled().await
    }

    fn pop(&self) -> Option<Bytes> {
        let line = self.queue.lock().pop_front()?;
        self.release(line.len());
        self.writable.notify_waiters();
        Some(line)
    }

    /// The lines as the connection reads them; the end of the stream is the end of the watch.
    pub fn reader(
        self: &Arc<Self>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + use<> {
        let reader = Reader(self.clone());
        futures::stream::unfold(reader, |reader| async move {
            let out = reader.0.clone();
            loop {
                let readable = out.readable.notified();
                if let Some(line) = out.pop() {
                    return Some((Ok(line), reader));
                }
                if out.closed.load(Ordering::SeqCst) {
                    return None;
                }
                readable.await;
            }
        })
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

/// The connection's end; dropping it (the client left) ends the watch.
struct Reader(Arc<Outbox>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.gone.cancel();
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn line(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[tokio::test]
    async fn a_stalled_watch_is_cut_off_and_frees_what_it_held() {
        let budgets = Arc::new(Budgets::new(usize::MAX, usize::MAX));
        let out = Outbox::new(budgets.clone(), "t");
        let _reader = out.reader();
        let mut sent = 0;
        while out.try_send(line(1 << 20)) {
            sent += 1;
        }
        assert_eq!(sent, WATCH_BUFFER_BYTES >> 20);
        assert_eq!(budgets.used(), WATCH_BUFFER_BYTES);
        out.close();
        assert_eq!(budgets.used(), 0, "an ended watch holds nothing");
    }

    #[tokio::test]
    async fn one_token_cannot_take_the_shared_budget_and_nothing_waits_on_it() {
        let budgets = Arc::new(Budgets::new(3 << 20, 4 << 20));
        let a1 = Outbox::new(budgets.clone(), "a");
        let a2 = Outbox::new(budgets.clone(), "a");
        let b = Outbox::new(budgets.clone(), "b");
        assert!(a1.try_send(line(2 << 20)));
        assert!(!a2.try_send(line(2 << 20)), "over the token's share");
        assert!(!a2.send(line(2 << 20)).await, "refused, not waiting");
        assert!(b.try_send(line(2 << 20)), "another tenant still fits");
        assert!(!b.try_send(line(1 << 20)), "the server's budget is full");
        drop(a1);
        assert!(b.try_send(line(1 << 20)), "freed when the watch ended");
    }

    #[tokio::test]
    async fn initial_lines_wait_for_the_reader_and_come_out_in_order() {
        let budgets = Arc::new(Budgets::new(usize::MAX, usize::MAX));
        let out = Outbox::new(budgets, "t");
        let mut reader = Box::pin(out.reader());
        let writer = {
            let out = out.clone();
            tokio::spawn(async move {
                for i in 0..40u8 {
                    assert!(out.send(Bytes::from(vec![i; 1 << 20])).await);
                }
                out.finish();
            })
        };
        let mut seen = 0u8;
        while let Some(l) = reader.next().await {
            assert_eq!(l.unwrap()[0], seen);
            seen += 1;
        }
        assert_eq!(seen, 40);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn the_watch_learns_when_its_client_leaves() {
        let out = Outbox::new(Arc::new(Budgets::new(usize::MAX, usize::MAX)), "t");
        let reader = out.reader();
        drop(reader);
        tokio::time::timeout(std::time::Duration::from_secs(1), out.gone())
            .await
            .unwrap();
        assert!(!out.try_send(line(1)));
    }
}
