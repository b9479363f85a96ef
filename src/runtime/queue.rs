//! The work queue: keys waiting to be reconciled, with three guarantees kept apart:
//! - a key waits at most once (adding it again keeps the earlier time);
//! - a key is never handed out while it is being reconciled (a change meanwhile marks it to
//!   run again right after);
//! - keys come out in time order, so a delayed retry never starves fresh work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

struct State<K> {
    /// When each waiting key is due, with a sequence number for FIFO among equal times.
    due: BTreeMap<(Instant, u64), K>,
    waiting: HashMap<K, (Instant, u64)>,
    /// Keys being reconciled now.
    active: HashSet<K>,
    /// Active keys that were added again meanwhile, and when they are due.
    rerun: HashMap<K, Instant>,
    seq: u64,
    closed: bool,
}

pub struct Queue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash> Default for Queue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    pub fn new() -> Self {
        Queue {
            state: Mutex::new(State {
                due: BTreeMap::new(),
                waiting: HashMap::new(),
                active: HashSet::new(),
                rerun: HashMap::new(),
                seq: 0,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    /// Schedules `key` to run after `delay` (or sooner, if it is already due sooner).
    pub fn add_after(&self, key: K, delay: Duration) {
        let when = Instant::now() + delay;
        let mut s = self.state.lock();
        if s.active.contains(&key) {
            let entry = s.rerun.entry(key).or_insert(when);
            *entry = (*entry).min(when);
            return;
        }
        if let Some(&(existing, seq)) = s.waiting.get(&key) {
            if existing <= when {
                return;
            }
            s.due.remove(&(existing, seq));
        }
        s.seq += 1;
        let slot = (when, s.seq);
        s.due.insert(slot, key.clone());
        s.waiting.insert(key, slot);
        drop(s);
        self.notify.notify_one();
    }

    pub fn add(&self, key: K) {
        self.add_after(key, Duration::ZERO);
    }

    /// Waits for the next due key and marks it active. `None` once closed.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            let wake_at = {
                let mut s = self.state.lock();
                if s.closed {
                    return None;
                }
                let now = Instant::now();
                match s.due.first_key_value() {
                    Some((&(when, seq), _)) if when <= now => {
                        let key = s.due.remove(&(when, seq)).expect("first entry exists");
                        s.waiting.remove(&key);
                        s.active.insert(key.clone());
                        // Let another waiting worker look for the next key.
                        if !s.due.is_empty() {
                            self.notify.notify_one();
                        }
                        return Some(key);
                    }
                    Some((&(when, _), _)) => Some(when),
                    None => None,
                }
            };
            match wake_at {
                Some(when) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(when) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` finished; re-adds it if it changed meanwhile or must be retried.
    pub fn done(&self, key: &K, retry_after: Option<Duration>) {
        let rerun = {
            let mut s = self.state.lock();
            s.active.remove(key);
            s.rerun.remove(key)
        };
        let now = Instant::now();
        let mut delay = retry_after;
        if let Some(when) = rerun {
            let d = when.saturating_duration_since(now);
            delay = Some(delay.map_or(d, |r| r.min(d)));
        }
        if let Some(d) = delay {
            self.add_after(key.clone(), d);
        }
    }

    /// Keys waiting (not counting active ones).
    pub fn len(&self) -> usize {
        self.state.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every waiter with `None`.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn adding_a_waiting_key_again_keeps_the_earlier_time() {
        let q = Queue::new();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(1));
        q.add_after("a", Duration::from_secs(5));
        assert_eq!(q.len(), 1);
        let start = Instant::now();
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(start.elapsed().as_secs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_active_key_is_not_handed_out_twice_but_runs_again_after() {
        let q = Queue::new();
        q.add("k");
        assert_eq!(q.next().await, Some("k"));
        q.add("k");
        assert_eq!(q.len(), 0, "held back while active");
        let second = tokio::time::timeout(Duration::from_millis(50), q.next()).await;
        assert!(second.is_err(), "not handed out while active");
        q.done(&"k", None);
        assert_eq!(q.next().await, Some("k"));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_come_out_in_time_order() {
        let q = Queue::new();
        q.add_after("late", Duration::from_millis(30));
        q.add_after("early", Duration::from_millis(10));
        q.add("now");
        assert_eq!(q.next().await, Some("now"));
        assert_eq!(q.next().await, Some("early"));
        assert_eq!(q.next().await, Some("late"));
    }

    #[tokio::test(start_paused = true)]
    async fn done_with_a_retry_requeues_after_the_delay() {
        let q = Queue::new();
        q.add(1);
        assert_eq!(q.next().await, Some(1));
        let start = Instant::now();
        q.done(&1, Some(Duration::from_millis(200)));
        assert_eq!(q.next().await, Some(1));
        assert_eq!(start.elapsed().as_millis(), 200);
    }

    #[tokio::test]
    async fn close_wakes_waiters() {
        let q = std::sync::Arc::new(Queue::<u8>::new());
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await })
        };
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
