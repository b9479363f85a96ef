//! Per-key async locks: operations on one volume name run one at a time, operations on
//! different names run in parallel. Every provider needs this for "concurrent calls with one
//! name create one volume".

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Locks = Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>;

/// A set of locks by name; a name's lock exists only while someone holds or waits for it.
#[derive(Clone, Default)]
pub struct KeyedLock {
    locks: Locks,
}

/// Holds one name's lock until dropped.
pub struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: String,
    locks: Locks,
}

impl KeyedLock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until no one else holds `key`, then holds it.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let lock = self
            .locks
            .lock()
            .entry(key.to_string())
            .or_default()
            .clone();
        KeyGuard {
            guard: Some(lock.lock_owned().await),
            key: key.to_string(),
            locks: self.locks.clone(),
        }
    }

    /// How many names have a lock right now (held or waited for).
    pub fn len(&self) -> usize {
        self.locks.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock();
        // Clones are made under this map's lock, so a count of one means no one else holds or
        // waits for the name.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_name_at_a_time_and_names_in_parallel() {
        let locks = KeyedLock::new();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(if i % 2 == 0 { "a" } else { "b" }).await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "one holder per name, two names"
        );
        assert!(locks.is_empty(), "unused names are forgotten");
    }
}
