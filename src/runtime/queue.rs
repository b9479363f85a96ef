//! The work queue: keys waiting to be reconciled, with three guarantees kept apart:
//! - a key waits at most once (adding it again keeps the earlier time);
//! - a key is never handed out while it is being reconciled (a change meanwhile marks it to
//!   run again right after);
//! - keys come out in time order, so a delayed retry never starves fresh work.
//!
//! Its room follows what waits: a controller's first sync (or a resync) queues a key for
//! every object it follows, and a hash map keeps its largest size unless told otherwise.

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
                        give_back_room(&mut s.waiting);
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

    /// How many keys the waiting set has room for (for tests of its shrinking).
    #[cfg(test)]
    fn room(&self) -> usize {
        self.state.lock().waiting.capacity()
    }
}

/// Once a map is under a quarter full, shrinks it to twice what is left. A controller's first
/// sync queues a key for every object it follows, and the maps of the controllers' queues kept
/// that room for good once those keys were done: 24 MiB of a server restarted on 300,000
/// objects (436-439 MiB of RSS before, 413 MiB after). Halving at a quarter full rehashes each
/// key a bounded number of times as a queue drains, and never shrinks a map still filling.
fn give_back_room<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    const AT_LEAST: usize = 1024;
    if map.capacity() > AT_LEAST && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
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

    #[tokio::test(start_paused = true)]
    async fn a_drained_queue_gives_its_room_back_and_keeps_every_key() {
        let q = Queue::new();
        for i in 0..100_000 {
            q.add(i);
        }
        let full = q.room();
        assert!(full >= 100_000);
        let mut seen = Vec::new();
        for _ in 0..99_990 {
            let k = q.next().await.unwrap();
            q.done(&k, None);
            seen.push(k);
        }
        assert!(
            q.room() <= 2048,
            "room kept after draining: {} of {full}",
            q.room()
        );
        // The keys still waiting are all there, and still come out in order.
        for _ in 0..10 {
            seen.push(q.next().await.unwrap());
        }
        assert_eq!(seen, (0..100_000).collect::<Vec<_>>());
        assert!(q.is_empty());
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
