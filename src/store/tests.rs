//! One store test suite, run against both engines (as Garage tests its database engines):
//! every test is written once against an [`Engine`] and instantiated for SQLite and for
//! PostgreSQL. Tests of what only replicas can do (two stores on one database) follow.
//!
//! PostgreSQL comes from `STOWAGE_TEST_POSTGRES` (a URL of a database in which each test
//! creates its own); `scripts/test.sh` starts a private cluster. Without it the PostgreSQL
//! tests fail, unless the run opts out with `STOWAGE_SKIP=postgres`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::resources::{PersistentVolumeClaim, StorageClass};

fn class(name: &str) -> AnyObject {
    let mut sc = StorageClass::default();
    sc.metadata.name = Some(name.into());
    sc.provisioner = "example.com/x".into();
    sc.into_any()
}

fn claim(ns: &str, name: &str) -> AnyObject {
    let mut c = PersistentVolumeClaim::default();
    c.metadata.name = Some(name.into());
    c.metadata.namespace = Some(ns.into());
    c.into_any()
}

/// Where a test's store lives; opening it again finds the same data.
enum Engine {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Engine {
    async fn sqlite() -> Engine {
        Engine::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh database in the test cluster; `None` when the run opted out of PostgreSQL.
    async fn postgres() -> Option<Engine> {
        let Ok(base) = std::env::var("STOWAGE_TEST_POSTGRES") else {
            stowage_provider::testing::missing(
                "postgres",
                "set STOWAGE_TEST_POSTGRES to a PostgreSQL URL (scripts/test.sh starts a private cluster)",
            );
            return None;
        };
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .expect("connecting to STOWAGE_TEST_POSTGRES");
        let name = format!("store_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("creating a test database");
        let mut url = url::Url::parse(&base).expect("a URL");
        url.set_path(&name);
        Some(Engine::Postgres(url.to_string()))
    }

    async fn backend(&self) -> Box<dyn Backend> {
        match self {
            Engine::Sqlite(dir) => Box::new(
                SqliteBackend::open(&dir.path().join("stowage.db"))
                    .await
                    .unwrap(),
            ),
            Engine::Postgres(url) => {
                let pool = postgres::connect(&PostgresOptions {
                    url: url.clone(),
                    pool_size: 4,
                    timeout: Duration::from_secs(10),
                    window: Duration::from_secs(600),
                })
                .await
                .unwrap();
                Box::new(
                    PostgresBackend::open(pool, Duration::from_secs(600))
                        .await
                        .unwrap(),
                )
            }
        }
    }

    /// A store on this engine (another replica, with PostgreSQL, when opened again).
    async fn open(&self) -> Store {
        Store::with_backend(self.backend().await, StoreOptions::default())
            .await
            .unwrap()
    }
}

/// Counts commits, to see group commit at work; passes everything else through.
struct Counting {
    inner: Box<dyn Backend>,
    commits: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Backend for Counting {
    async fn load(&mut self) -> anyhow::Result<Loaded> {
        self.inner.load().await
    }
    async fn begin(&mut self, known: Rv) -> anyhow::Result<CatchUp> {
        self.inner.begin(known).await
    }
    async fn commit(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        if !rows.is_empty() {
            self.commits.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.commit(rows).await
    }
    async fn follow(&mut self, known: Rv) -> anyhow::Result<CatchUp> {
        self.inner.follow(known).await
    }
    fn remote_commits(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.remote_commits()
    }
    fn head(&self) -> Option<Arc<dyn Head>> {
        self.inner.head()
    }
    async fn compact(&mut self, up_to: Rv, released: &[Rv]) -> anyhow::Result<()> {
        self.inner.compact(up_to, released).await
    }
    fn keeps_versions_once(&self) -> bool {
        self.inner.keeps_versions_once()
    }
}

/// Instantiates each listed test (an `async fn(Engine)`) for both engines.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Engine::sqlite().await).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(engine) = super::Engine::postgres().await {
                        super::$name(engine).await
                    }
                }
            )*
        }
    };
}

on_both_engines!(
    a_group_write_applies_all_or_nothing,
    preconditions_name_the_failing_operation,
    concurrent_writes_share_commits,
    watchers_see_each_change_once_in_order,
    a_closed_store_refuses_writes_after_finishing_queued_ones,
    everything_survives_a_reopen,
    several_changes_to_one_object_in_one_commit_survive_a_reopen_as_the_last,
    history_read_back_shares_current_versions,
);

async fn a_group_write_applies_all_or_nothing(engine: Engine) {
    let store = engine.open().await;
    let a = store
        .write(vec![WriteOp::create(class("a"))])
        .await
        .unwrap()
        .remove(0);
    let err = store
        .write(vec![
            WriteOp::create(class("b")),
            WriteOp::update(class("a"), a.rv + 100),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Conflict { op: 1, .. }), "{err:?}");
    assert!(
        store
            .get(Kind::StorageClass, &ObjectKey::cluster("b"))
            .is_none()
    );
    let rv_before = store.current_rv();
    let both = store
        .write(vec![
            WriteOp::create(class("b")),
            WriteOp::update(class("a"), a.rv),
        ])
        .await
        .unwrap();
    assert_eq!(both.len(), 2);
    assert!(both[0].rv > rv_before && both[1].rv == both[0].rv + 1);
}

async fn preconditions_name_the_failing_operation(engine: Engine) {
    let store = engine.open().await;
    store
        .write(vec![WriteOp::create(class("x"))])
        .await
        .unwrap();
    assert_eq!(
        store
            .write(vec![WriteOp::create(class("x"))])
            .await
            .unwrap_err(),
        WriteError::AlreadyExists { op: 0 }
    );
    assert_eq!(
        store
            .write(vec![WriteOp::delete(
                Kind::StorageClass,
                ObjectKey::cluster("nope"),
                1
            )])
            .await
            .unwrap_err(),
        WriteError::NotFound { op: 0 }
    );
    assert!(
        store
            .write(vec![
                WriteOp::create(class("y")),
                WriteOp::create(class("y"))
            ])
            .await
            .is_err()
    );
}

/// Objects are kept per namespace, then by name: lists and pages must still run in key order
/// across namespaces, resume after a key in any namespace, and forget emptied namespaces.
#[tokio::test]
async fn lists_and_pages_run_in_key_order_across_namespaces() {
    let engine = Engine::sqlite().await;
    let store = engine.open().await;
    for ns in ["b", "a", "ab", "c"] {
        for name in ["y", "x", "z"] {
            store
                .write(vec![WriteOp::create(claim(ns, name))])
                .await
                .unwrap();
        }
    }
    let keys = |items: &[Arc<Stored>]| -> Vec<String> {
        items.iter().map(|s| s.key.to_string()).collect()
    };
    let all = keys(&store.list(Kind::PersistentVolumeClaim, None).0);
    let mut sorted = all.clone();
    sorted.sort_by_key(|k| {
        let (ns, name) = k.split_once('/').unwrap();
        (ns.to_string(), name.to_string())
    });
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 12);
    assert_eq!(all[..4], ["a/x", "a/y", "a/z", "ab/x"]);

    // Pages of two, each after the last key of the one before, give the whole list.
    let mut paged = Vec::new();
    let mut after: Option<ObjectKey> = None;
    for _ in 0..6 {
        let (page, _, more) =
            store.list_page(Kind::PersistentVolumeClaim, None, after.as_ref(), 2, |_| {
                true
            });
        paged.extend(keys(&page));
        after = page.last().map(|s| s.key.clone());
        if !more {
            break;
        }
    }
    assert_eq!(paged, all);

    // In one namespace: only its objects; a key elsewhere starts it from the beginning.
    let (ab, _) = store.list(Kind::PersistentVolumeClaim, Some("ab"));
    assert_eq!(keys(&ab), ["ab/x", "ab/y", "ab/z"]);
    let (b, _, more) = store.list_page(
        Kind::PersistentVolumeClaim,
        Some("b"),
        Some(&ObjectKey::new("a", "z")),
        10,
        |_| true,
    );
    assert_eq!(
        (keys(&b), more),
        (vec!["b/x".into(), "b/y".into(), "b/z".into()], false)
    );
    let (b, _, _) = store.list_page(
        Kind::PersistentVolumeClaim,
        Some("b"),
        Some(&ObjectKey::new("b", "x")),
        10,
        |_| true,
    );
    assert_eq!(keys(&b), ["b/y", "b/z"]);
    assert!(
        store
            .list(Kind::PersistentVolumeClaim, Some("nope"))
            .0
            .is_empty()
    );

    // A namespace emptied is gone from lists; the count follows every change.
    for s in ab {
        store
            .write(vec![WriteOp::delete(s.kind, s.key.clone(), s.rv)])
            .await
            .unwrap();
    }
    assert_eq!(store.count(Kind::PersistentVolumeClaim), 9);
    let (page, _, _) = store.list_page(
        Kind::PersistentVolumeClaim,
        None,
        Some(&ObjectKey::new("a", "z")),
        1,
        |_| true,
    );
    assert_eq!(keys(&page), ["b/x"]);
    store
        .write(vec![WriteOp::create(claim("ab", "w"))])
        .await
        .unwrap();
    assert_eq!(
        keys(&store.list(Kind::PersistentVolumeClaim, None).0)[2..5],
        ["a/z", "ab/w", "b/x"]
    );
    assert_eq!(store.count(Kind::PersistentVolumeClaim), 10);

    // A name too long to be kept inline in its key sorts among short ones as its text does.
    let long = "x".repeat(60);
    store
        .write(vec![WriteOp::create(claim("b", &long))])
        .await
        .unwrap();
    let (b, _) = store.list(Kind::PersistentVolumeClaim, Some("b"));
    assert_eq!(
        keys(&b),
        [
            "b/x".to_string(),
            format!("b/{long}"),
            "b/y".into(),
            "b/z".into()
        ]
    );
    assert!(
        store
            .get(Kind::PersistentVolumeClaim, &ObjectKey::new("b", long))
            .is_some()
    );
}

/// A namespace's set compares the first 8 bytes of names before the rest: names that share
/// them, end within them or differ after them must still list, page, resolve and leave in
/// plain name order.
#[tokio::test]
async fn names_sort_as_text_whatever_their_first_bytes() {
    let engine = Engine::sqlite().await;
    let store = engine.open().await;
    let mut names = vec![
        "a",
        "a-",
        "a-b",
        "aaaaaaa",
        "aaaaaaaa",
        "aaaaaaaa-",
        "aaaaaaab",
        "aaaaaaaaa",
        "b",
        "claim-aa",
        "claim-aaa",
        "claim-ab",
        "claim-a",
        "claim-b.1",
        "z",
        "0",
        "9-9",
        "pvc-00000000-0000",
        "pvc-00000000-0001",
        "pvc-0000000",
    ];
    for name in &names {
        store
            .write(vec![WriteOp::create(claim("ns", name))])
            .await
            .unwrap();
    }
    names.sort();
    let listed = |store: &Store| -> Vec<String> {
        store
            .list(Kind::PersistentVolumeClaim, Some("ns"))
            .0
            .iter()
            .map(|s| s.key.name.to_string())
            .collect()
    };
    assert_eq!(listed(&store), names);
    for (i, name) in names.iter().enumerate() {
        let key = ObjectKey::new("ns", *name);
        assert!(
            store.get(Kind::PersistentVolumeClaim, &key).is_some(),
            "{name}"
        );
        let (page, _, _) = store.list_page(
            Kind::PersistentVolumeClaim,
            Some("ns"),
            Some(&key),
            1,
            |_| true,
        );
        let next: Vec<String> = page.iter().map(|s| s.key.name.to_string()).collect();
        assert_eq!(
            next,
            names
                .get(i + 1)
                .into_iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        );
    }
    assert!(
        store
            .get(
                Kind::PersistentVolumeClaim,
                &ObjectKey::new("ns", "aaaaaaaa-x")
            )
            .is_none()
    );
    // Every other one deleted: the rest still in order, each still found.
    for name in names.iter().step_by(2) {
        let s = store
            .get(Kind::PersistentVolumeClaim, &ObjectKey::new("ns", *name))
            .unwrap();
        store
            .write(vec![WriteOp::delete(s.kind, s.key.clone(), s.rv)])
            .await
            .unwrap();
    }
    let left: Vec<&str> = names.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(listed(&store), left);
    for name in &left {
        assert!(
            store
                .get(Kind::PersistentVolumeClaim, &ObjectKey::new("ns", *name))
                .is_some()
        );
    }
}

/// Start-up and commits go through different connections: both must open the very file
/// named, even when its path reads like a URL's escapes and query.
#[tokio::test]
async fn a_data_directory_named_like_a_url_holds_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data%41?mode=memory#x");
    let path = data.join("stowage.db");
    let open = || async {
        let backend = SqliteBackend::open(&path).await.unwrap();
        Store::with_backend(Box::new(backend), StoreOptions::default())
            .await
            .unwrap()
    };
    let store = open().await;
    store
        .write(vec![WriteOp::create(class("kept"))])
        .await
        .unwrap();
    store.close().await;
    let again = open().await;
    assert!(
        again
            .get(Kind::StorageClass, &ObjectKey::cluster("kept"))
            .is_some()
    );
    let mut databases: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    databases.sort();
    assert_eq!(databases, ["data%41?mode=memory#x"]);
}

async fn concurrent_writes_share_commits(engine: Engine) {
    let commits = Arc::new(AtomicUsize::new(0));
    let backend = Counting {
        inner: engine.backend().await,
        commits: commits.clone(),
    };
    let store = Store::with_backend(Box::new(backend), StoreOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(vec![WriteOp::create(claim("ns", &format!("c{i}")))])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.count(Kind::PersistentVolumeClaim), 500);
    let n = commits.load(Ordering::SeqCst);
    assert!(n < 250, "500 concurrent writes took {n} commits");
}

/// Holds each `begin` until the test lets it go, as a replica waits for the database's write
/// lock while others commit; records how many rows each commit carried.
struct Gated {
    began: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
    commits: Arc<parking_lot::Mutex<Vec<usize>>>,
    /// Every version the store released to compaction, in order.
    released: Arc<parking_lot::Mutex<Vec<Rv>>>,
    /// How many of the next commits fail.
    failing: Arc<AtomicUsize>,
}

impl Gated {
    fn new() -> Gated {
        Gated {
            began: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            commits: Arc::default(),
            released: Arc::default(),
            failing: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl Backend for Gated {
    async fn load(&mut self) -> anyhow::Result<Loaded> {
        Ok(Loaded::default())
    }
    async fn begin(&mut self, _known: Rv) -> anyhow::Result<CatchUp> {
        self.began.notify_one();
        self.gate.acquire().await?.forget();
        Ok(CatchUp::Changes(Vec::new()))
    }
    async fn commit(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        let fail = self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        anyhow::ensure!(!fail, "the disk is full");
        self.commits.lock().push(rows.len());
        Ok(())
    }
    async fn compact(&mut self, _up_to: Rv, released: &[Rv]) -> anyhow::Result<()> {
        self.released.lock().extend_from_slice(released);
        Ok(())
    }
    fn keeps_versions_once(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn writes_that_arrive_while_a_commit_waits_for_the_lock_join_it() {
    let backend = Gated::new();
    let (began, gate, commits) = (
        backend.began.clone(),
        backend.gate.clone(),
        backend.commits.clone(),
    );
    let store = Store::with_backend(Box::new(backend), StoreOptions::default())
        .await
        .unwrap();
    let write = |i: usize| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(vec![WriteOp::create(claim("ns", &format!("c{i}")))])
                .await
        })
    };
    let first = write(0);
    began.notified().await;
    // The writer now waits in `begin`; these queue behind it (a current-thread runtime runs
    // each spawned task up to its wait for an answer when this one yields).
    let later: Vec<_> = (1..10).map(write).collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(100);
    first.await.unwrap().unwrap();
    for w in later {
        w.await.unwrap().unwrap();
    }
    assert_eq!(*commits.lock(), vec![10], "one commit for all ten writes");
    assert_eq!(store.count(Kind::PersistentVolumeClaim), 10);
}

/// A store on `backend` whose watch history keeps one change and compacts at every write, so
/// versions are released as soon as they can be.
async fn keeping_one_change(backend: Gated) -> Store {
    let options = StoreOptions {
        log_max_events: 1,
        compact_every: Duration::ZERO,
        ..StoreOptions::default()
    };
    Store::with_backend(Box::new(backend), options)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_version_replaced_within_the_batch_that_wrote_it_is_released() {
    let backend = Gated::new();
    let (began, gate, released) = (
        backend.began.clone(),
        backend.gate.clone(),
        backend.released.clone(),
    );
    let store = keeping_one_change(backend).await;
    gate.add_permits(1);
    store
        .write(vec![WriteOp::create(class("a"))])
        .await
        .unwrap(); // rv 1
    let version = |v: &str| {
        let mut sc = class("a");
        sc.meta_mut().labels = Some([("v".to_string(), v.to_string())].into());
        WriteOp::update(sc, 0)
    };
    // Two more versions of `a` in one commit (with `b`, at rv 2): the first never reaches
    // the cache, only the log.
    let (two, three) = (version("2"), version("3"));
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.write(vec![WriteOp::create(class("b"))]).await })
    };
    began.notified().await;
    let queued: Vec<_> = [(two, 1), (three, 3)]
        .into_iter()
        .map(|(mut op, at)| {
            op.precondition = Precondition::AtRv(at);
            let store = store.clone();
            tokio::spawn(async move { store.write(vec![op]).await })
        })
        .collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1000);
    assert_eq!(first.await.unwrap().unwrap()[0].rv, 2, "b");
    let rvs: Vec<Rv> = futures::future::join_all(queued)
        .await
        .into_iter()
        .map(|w| w.unwrap().unwrap()[0].rv)
        .collect();
    assert_eq!(rvs, [3, 4]);
    store
        .write(vec![WriteOp::create(class("c"))])
        .await
        .unwrap(); // rv 5
    store.close().await;
    // The log keeps only rv 5. Of `a`, the versions at rv 1 and 3 were replaced; 4 is
    // current, as is b at 2.
    let mut gone = released.lock().clone();
    gone.sort();
    assert_eq!(gone, [1, 3]);
}

#[test]
fn a_version_from_an_encoded_object_is_the_object_serialized_with_its_rv() {
    let mut c = claim("ns", "c");
    c.meta_mut().annotations = Some([("note".to_string(), "rv".to_string())].into());
    let encoded = Encoded::new(c.clone());
    assert!(encoded.rv_at.is_some());
    for rv in [1, 42, Rv::MAX] {
        let spliced = Stored::from_encoded(encoded.clone(), rv);
        assert_eq!(spliced.json, Stored::new(c.clone(), rv).json);
        assert_eq!(spliced.rv, rv);
        assert_eq!(spliced.key, ObjectKey::new("ns", "c"));
        let meta = spliced.meta();
        assert_eq!(
            meta.resource_version.as_deref(),
            Some(rv.to_string().as_str())
        );
        assert_eq!(meta.annotations.unwrap()["note"], "rv");
    }
}

#[tokio::test]
async fn an_object_carrying_the_placeholder_elsewhere_is_serialized_afresh() {
    // Not something a tenant can do (the placeholder never leaves the process), but if it
    // were, the placeholder is not where the number goes.
    let mut c = claim("ns", "c");
    c.meta_mut().annotations =
        Some([("resourceVersion".to_string(), RV_PLACEHOLDER.to_string())].into());
    let encoded = Encoded::new(c.clone());
    assert_eq!(encoded.rv_at, None);
    let stored = Stored::from_encoded(encoded, 7);
    assert_eq!(stored.json, Stored::new(c.clone(), 7).json);
    let meta = stored.meta();
    assert_eq!(meta.resource_version.as_deref(), Some("7"));
    assert_eq!(
        meta.annotations.unwrap()["resourceVersion"],
        *RV_PLACEHOLDER
    );
    // Through a store, which lets go of an encoded object's copy before the writer gets it
    // only when the writer will not need it.
    let engine = Engine::sqlite().await;
    let store = engine.open().await;
    let written = store
        .write(vec![WriteOp::create(c.clone())])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(written.json, Stored::new(c, written.rv).json);
}

#[tokio::test]
async fn a_version_whose_replacement_failed_to_commit_stays() {
    let backend = Gated::new();
    let (gate, released, failing) = (
        backend.gate.clone(),
        backend.released.clone(),
        backend.failing.clone(),
    );
    gate.add_permits(1000);
    let store = keeping_one_change(backend).await;
    let a = store
        .write(vec![WriteOp::create(class("a"))])
        .await
        .unwrap();
    let mut changed = class("a");
    changed.meta_mut().labels = Some([("v".to_string(), "2".to_string())].into());
    failing.store(1, Ordering::SeqCst);
    let refused = store.write(vec![WriteOp::update(changed, a[0].rv)]).await;
    assert!(
        matches!(refused, Err(WriteError::Unavailable(_))),
        "{refused:?}"
    );
    // `a` at rv 1 is still current; the writes after it push it out of the log.
    for name in ["b", "c"] {
        store
            .write(vec![WriteOp::create(class(name))])
            .await
            .unwrap();
    }
    store.close().await;
    assert_eq!(
        *released.lock(),
        Vec::<Rv>::new(),
        "a current version was released"
    );
    assert_eq!(
        store
            .get(Kind::StorageClass, &ObjectKey::cluster("a"))
            .unwrap()
            .rv,
        1
    );
}

async fn watchers_see_each_change_once_in_order(engine: Engine) {
    let store = engine.open().await;
    let (_, rv, mut watcher) = store.snapshot_and_watch(&[]);
    for i in 0..10 {
        store
            .write(vec![WriteOp::create(class(&format!("c{i}")))])
            .await
            .unwrap();
    }
    let mut last = rv;
    for _ in 0..10 {
        let e = watcher.next().await.unwrap();
        assert_eq!(e.rv, last + 1);
        last = e.rv;
    }
    assert!(watcher.try_next().is_none());
}

#[tokio::test]
async fn a_watcher_of_some_kinds_sees_theirs_and_is_woken_by_nothing_else() {
    let store = Store::in_memory(StoreOptions::default()).await;
    let (_, start, mut claims) = store.snapshot_and_watch(&[Kind::PersistentVolumeClaim]);
    let (_, _, mut everything) = store.snapshot_and_watch(&[]);
    let mut written = Vec::new();
    for i in 0..6 {
        let object = if i % 3 == 1 {
            claim("ns", &format!("c{i}"))
        } else {
            class(&format!("s{i}"))
        };
        let stored = store.write(vec![WriteOp::create(object)]).await.unwrap();
        written.push(stored[0].clone());
    }
    // Only the two claims, in order; the classes between them are passed over.
    let claim_rvs: Vec<Rv> = written
        .iter()
        .filter(|s| s.kind == Kind::PersistentVolumeClaim)
        .map(|s| s.rv)
        .collect();
    for rv in &claim_rvs {
        assert_eq!(claims.next().await.unwrap().rv, *rv);
    }
    assert!(claims.try_next().is_none());
    assert_eq!(claims.position(), start + 6, "every change looked at");
    assert!(claims.is_idle());
    // The watcher of every kind sees all six.
    for s in &written {
        assert_eq!(everything.next().await.unwrap().rv, s.rv);
    }

    // Commits of other kinds do not wake it; one of its kind does.
    let _ = claims.take_wake_up();
    store
        .write(vec![WriteOp::create(class("quiet"))])
        .await
        .unwrap();
    assert!(!claims.take_wake_up(), "woken by a class");
    store
        .write(vec![WriteOp::create(claim("ns", "loud"))])
        .await
        .unwrap();
    assert!(claims.take_wake_up(), "not woken by a claim");
    assert_eq!(claims.next().await.unwrap().object.key.name, "loud");

    // A dropped watcher is no longer woken.
    assert_eq!(store.inner.subscriptions.lock().len(), 1);
    drop(claims);
    assert!(store.inner.subscriptions.lock().is_empty());
}

#[tokio::test]
async fn point_reads_find_each_current_version_as_the_index_grows_and_shrinks() {
    let store = Store::in_memory(StoreOptions::default()).await;
    let key = |i: usize| ObjectKey::new(format!("ns{}", i % 3), format!("c{i}"));
    // A namespace's last object deleted: its set goes, and so does its entry.
    let alone = store
        .write(vec![WriteOp::create(claim("alone", "only"))])
        .await
        .unwrap();
    store
        .write(vec![WriteOp::delete(
            Kind::PersistentVolumeClaim,
            ObjectKey::new("alone", "only"),
            alone[0].rv,
        )])
        .await
        .unwrap();
    assert!(
        store
            .get(
                Kind::PersistentVolumeClaim,
                &ObjectKey::new("alone", "only")
            )
            .is_none()
    );
    // Enough objects for the index to grow several times.
    for chunk in (0..3000).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| WriteOp::create(claim(&key(*i).namespace, &key(*i).name)))
            .collect();
        store.write(ops).await.unwrap();
    }
    // Every third replaced, every fifth deleted.
    for i in (0..3000).step_by(3) {
        let current = store.get(Kind::PersistentVolumeClaim, &key(i)).unwrap();
        let mut changed = claim(&key(i).namespace, &key(i).name);
        changed.meta_mut().labels = Some([("v".to_string(), "2".to_string())].into());
        store
            .write(vec![WriteOp::update(changed, current.rv)])
            .await
            .unwrap();
    }
    for i in (0..3000).step_by(5) {
        let current = store.get(Kind::PersistentVolumeClaim, &key(i)).unwrap();
        store
            .write(vec![WriteOp::delete(
                Kind::PersistentVolumeClaim,
                key(i),
                current.rv,
            )])
            .await
            .unwrap();
    }
    // What a point read finds is what the ordered list holds, and nothing else.
    let (listed, _) = store.list(Kind::PersistentVolumeClaim, None);
    assert_eq!(listed.len(), 3000 - 600);
    assert_eq!(store.count(Kind::PersistentVolumeClaim), listed.len());
    for stored in &listed {
        let found = store.get(Kind::PersistentVolumeClaim, &stored.key).unwrap();
        assert!(Arc::ptr_eq(&found, stored), "{:?}", stored.key);
    }
    for i in 0..3000 {
        let found = store.get(Kind::PersistentVolumeClaim, &key(i));
        assert_eq!(found.is_none(), i % 5 == 0, "{i}");
        if let Some(found) = found
            && i % 3 == 0
        {
            assert!(
                found.object().meta().labels.is_some(),
                "{i}: an old version"
            );
        }
    }
    assert!(
        store
            .get(Kind::StorageClass, &ObjectKey::cluster("c1"))
            .is_none()
    );
    // Nearly everything deleted: the table gives its room back, and still finds the rest.
    for stored in &listed[..listed.len() - 10] {
        store
            .write(vec![WriteOp::delete(
                Kind::PersistentVolumeClaim,
                stored.key.clone(),
                stored.rv,
            )])
            .await
            .unwrap();
    }
    {
        let state = store.inner.state.read();
        let claims = &state.objects[Kind::PersistentVolumeClaim as usize];
        assert_eq!(claims.len(), 10);
        assert!(
            claims.by_key.capacity() <= 1024,
            "{}",
            claims.by_key.capacity()
        );
    }
    for stored in &listed[listed.len() - 10..] {
        let found = store.get(Kind::PersistentVolumeClaim, &stored.key).unwrap();
        assert!(Arc::ptr_eq(&found, stored));
    }
}

/// The sets against a model, `BTreeSet<String>`: random names of every length up to 24 bytes,
/// of ASCII, NUL and two- and three-byte characters (so heads end inside a character), the
/// empty name among them, created, replaced and deleted in random order in two namespaces.
/// After each step, each namespace lists as the model orders it.
#[tokio::test]
async fn the_sets_order_names_as_strings_do_whatever_their_bytes() {
    let store = Store::in_memory(StoreOptions::default()).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below as u64) as usize
    };
    let alphabet = ['a', 'b', '\0', '-', 'é', '€'];
    let mut models: [BTreeSet<String>; 2] = Default::default();
    let namespaces = ["one", "two"];
    let listed = |store: &Store, ns: &str| -> Vec<String> {
        let (items, _) = store.list(Kind::PersistentVolumeClaim, Some(ns));
        items.iter().map(|v| v.key.name.to_string()).collect()
    };
    for step in 0..1500 {
        let n = next(2);
        let (ns, model) = (namespaces[n], &mut models[n]);
        // Shared beginnings are the interesting case: most names start with 13-16 `a`s.
        let mut name: String = "a".repeat(if next(4) == 0 { 0 } else { 13 + next(4) });
        while name.len() < 24 && next(3) != 0 {
            name.push(alphabet[next(alphabet.len())]);
        }
        let key = ObjectKey::new(ns, name.as_str());
        match store.get(Kind::PersistentVolumeClaim, &key) {
            None => {
                store
                    .write(vec![WriteOp::create(claim(ns, &name))])
                    .await
                    .unwrap();
                model.insert(name);
            }
            Some(current) if step % 2 == 0 => {
                store
                    .write(vec![WriteOp::update(claim(ns, &name), current.rv)])
                    .await
                    .unwrap();
            }
            Some(current) => {
                store
                    .write(vec![WriteOp::delete(
                        Kind::PersistentVolumeClaim,
                        key,
                        current.rv,
                    )])
                    .await
                    .unwrap();
                model.remove(&name);
            }
        }
        if step % 100 == 99 {
            for (ns, model) in namespaces.iter().zip(&models) {
                let want: Vec<String> = model.iter().cloned().collect();
                assert_eq!(listed(&store, ns), want, "step {step}");
            }
        }
    }
    assert!(
        models.iter().all(|m| m.len() > 50),
        "the names repeat enough to replace and delete"
    );
}

/// The sets compare names by their first bytes, kept beside each version, and by the whole
/// names only when those are equal: names around that length, sharing long beginnings, still
/// list in the names' order, page from any of them, and are found and deleted one by one.
#[tokio::test]
async fn names_sharing_their_beginnings_list_page_and_delete_in_order() {
    let store = Store::in_memory(StoreOptions::default()).await;
    let mut names: Vec<String> = Vec::new();
    for len in 1..=20 {
        names.push("x".repeat(len));
    }
    for stem in [13, 14, 15, 16, 17] {
        for tail in ["a", "b", "y", "-", "0", "ab", "a0", "zz"] {
            names.push(format!("{}{tail}", "x".repeat(stem)));
        }
    }
    names.push("w".repeat(30));
    names.push("y".into());
    names.sort();
    names.dedup();
    // Written in an order unrelated to the names': every seventh, round and round.
    let n = names.len();
    assert_ne!(n % 7, 0, "every name is written");
    let order: Vec<&String> = (0..n).map(|i| &names[(i * 7) % n]).collect();
    for name in &order {
        store
            .write(vec![WriteOp::create(claim("ns", name))])
            .await
            .unwrap();
    }
    let listed = |store: &Store| -> Vec<String> {
        let (items, _) = store.list(Kind::PersistentVolumeClaim, Some("ns"));
        items.iter().map(|v| v.key.name.to_string()).collect()
    };
    assert_eq!(listed(&store), names);
    // A page starts right after any name, whatever it shares with its neighbours.
    for (i, name) in names.iter().enumerate() {
        let after = ObjectKey::new("ns", name.as_str());
        let (page, _, _) =
            store.list_page(Kind::PersistentVolumeClaim, None, Some(&after), 3, |_| true);
        let page: Vec<String> = page.iter().map(|v| v.key.name.to_string()).collect();
        let want: Vec<String> = names[i + 1..].iter().take(3).cloned().collect();
        assert_eq!(page, want, "after {name}");
    }
    // Every other one deleted, found through its head: the rest stay, in order.
    let mut kept = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let key = ObjectKey::new("ns", name.as_str());
        if i % 2 == 0 {
            let current = store.get(Kind::PersistentVolumeClaim, &key).unwrap();
            store
                .write(vec![WriteOp::delete(
                    Kind::PersistentVolumeClaim,
                    key.clone(),
                    current.rv,
                )])
                .await
                .unwrap();
            assert!(store.get(Kind::PersistentVolumeClaim, &key).is_none());
        } else {
            kept.push(name.clone());
        }
    }
    assert_eq!(listed(&store), kept);
    for name in &kept {
        let key = ObjectKey::new("ns", name.as_str());
        assert!(
            store.get(Kind::PersistentVolumeClaim, &key).is_some(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn counts_follow_creates_and_deletes_per_kind() {
    let store = Store::in_memory(StoreOptions::default()).await;
    let mut claims = Vec::new();
    for i in 0..3 {
        claims.extend(
            store
                .write(vec![WriteOp::create(claim("ns", &format!("c{i}")))])
                .await
                .unwrap(),
        );
    }
    store
        .write(vec![WriteOp::create(class("s"))])
        .await
        .unwrap();
    assert_eq!(store.count(Kind::PersistentVolumeClaim), 3);
    assert_eq!(store.count(Kind::StorageClass), 1);
    store
        .write(vec![WriteOp::delete(
            Kind::PersistentVolumeClaim,
            ObjectKey::new("ns", "c1"),
            claims[1].rv,
        )])
        .await
        .unwrap();
    assert_eq!(store.count(Kind::PersistentVolumeClaim), 2);
    assert_eq!(store.count(Kind::ResourceQuota), 0);
}

#[tokio::test]
async fn a_watcher_of_some_kinds_lags_only_when_one_of_its_changes_left_the_log() {
    let options = StoreOptions {
        log_max_events: 2,
        ..StoreOptions::default()
    };
    let store = Store::in_memory(options).await;
    let (_, _, mut claims) = store.snapshot_and_watch(&[Kind::PersistentVolumeClaim]);
    let (_, _, mut classes) = store.snapshot_and_watch(&[Kind::StorageClass]);
    let (_, _, mut everything) = store.snapshot_and_watch(&[]);
    // Five classes: the log keeps two. Only classes left it.
    for i in 0..5 {
        store
            .write(vec![WriteOp::create(class(&format!("s{i}")))])
            .await
            .unwrap();
    }
    assert!(matches!(
        everything.try_next(),
        Some(Err(WatchError::Lagged))
    ));
    assert!(matches!(classes.try_next(), Some(Err(WatchError::Lagged))));
    assert!(claims.try_next().is_none(), "no claim was missed");
    let c = store
        .write(vec![WriteOp::create(claim("ns", "c"))])
        .await
        .unwrap();
    assert_eq!(claims.next().await.unwrap().rv, c[0].rv);
    // Now a claim leaves the log before the watcher has looked: it missed one.
    store
        .write(vec![WriteOp::create(claim("ns", "d"))])
        .await
        .unwrap();
    for i in 5..8 {
        store
            .write(vec![WriteOp::create(class(&format!("s{i}")))])
            .await
            .unwrap();
    }
    assert!(matches!(claims.try_next(), Some(Err(WatchError::Lagged))));
}

async fn a_closed_store_refuses_writes_after_finishing_queued_ones(engine: Engine) {
    let store = engine.open().await;
    let queued = {
        let store = store.clone();
        tokio::spawn(async move { store.write(vec![WriteOp::create(class("q"))]).await })
    };
    tokio::task::yield_now().await;
    store.close().await;
    let after = store.write(vec![WriteOp::create(class("late"))]).await;
    assert!(matches!(after, Err(WriteError::Unavailable(_))));
    // The queued write either committed or was refused; never lost after acknowledgement.
    if queued.await.unwrap().is_ok() {
        let reopened = engine.open().await;
        assert!(
            reopened
                .get(Kind::StorageClass, &ObjectKey::cluster("q"))
                .is_some()
        );
    }
}

async fn everything_survives_a_reopen(engine: Engine) {
    let store = engine.open().await;
    let a = store
        .write(vec![WriteOp::create(class("kept"))])
        .await
        .unwrap()
        .remove(0);
    store
        .write(vec![WriteOp::create(class("gone"))])
        .await
        .unwrap();
    let gone = store
        .get(Kind::StorageClass, &ObjectKey::cluster("gone"))
        .unwrap();
    store
        .write(vec![WriteOp::delete(
            Kind::StorageClass,
            ObjectKey::cluster("gone"),
            gone.rv,
        )])
        .await
        .unwrap();
    let newest = store.current_rv();
    store.close().await;
    let again = engine.open().await;
    assert_eq!(again.current_rv(), newest, "resourceVersions never go back");
    let kept = again
        .get(Kind::StorageClass, &ObjectKey::cluster("kept"))
        .unwrap();
    assert_eq!(kept.rv, a.rv);
    assert!(
        again
            .get(Kind::StorageClass, &ObjectKey::cluster("gone"))
            .is_none()
    );
    // Watches resume across the restart from the retained log.
    let mut w = again.watch_from(a.rv).unwrap();
    let e = w.next().await.unwrap();
    assert_eq!(e.rv, a.rv + 1);
}

/// One commit may change an object more than once (writers' operations grouped into one
/// commit) and may span the backend's statement chunks; the stored object is always its last
/// version, however it came to be. Driven through the backend, to make such a commit exactly.
async fn several_changes_to_one_object_in_one_commit_survive_a_reopen_as_the_last(engine: Engine) {
    let mut rv = 0;
    let mut row = |type_: EventType, name: &str, label: &str| {
        rv += 1;
        let mut c = class(name);
        c.meta_mut()
            .labels
            .get_or_insert_default()
            .insert("v".into(), label.into());
        Row {
            type_,
            stored: Arc::new(Stored::new(c, rv)),
            committed_at: 0,
        }
    };
    use EventType::{Added, Deleted, Modified};
    let first = vec![
        row(Added, "deleted", "first"),
        row(Added, "recreated", "first"),
        row(Added, "updated", "first"),
        row(Added, "span-recreated", "first"),
    ];
    let mut second = vec![
        // Created, then changed: stored as its second version.
        row(Added, "added", "first"),
        row(Modified, "added", "second"),
        // Existing, changed, then deleted.
        row(Modified, "deleted", "second"),
        row(Deleted, "deleted", "second"),
        // Existing, deleted, then created again: stored as the new object.
        row(Deleted, "recreated", "first"),
        row(Added, "recreated", "new"),
        // Created, then deleted: never stored.
        row(Added, "fleeting", "first"),
        row(Deleted, "fleeting", "first"),
        row(Modified, "updated", "second"),
    ];
    // Past a chunk of rows (128 in SQLite), with changes to one object on both sides of the
    // boundary, then a change to an object an earlier chunk made.
    let mut many = (0..140).map(|i| format!("many-{i:03}"));
    while second.len() < 126 {
        second.push(row(Added, &many.next().unwrap(), "first"));
    }
    second.extend([
        row(Added, "span-fleeting", "first"),
        row(Deleted, "span-recreated", "first"),
        // Row 128: the next chunk.
        row(Added, "span-recreated", "new"),
        row(Deleted, "span-fleeting", "first"),
    ]);
    assert_eq!(second[128].stored.key.name, "span-recreated");
    second.extend(many.map(|name| row(Added, &name, "first")));
    second.push(row(Modified, "many-000", "later"));
    let last_rv = rv;

    let mut backend = engine.backend().await;
    for rows in [first, second] {
        backend.begin(0).await.unwrap();
        backend.commit(&rows).await.unwrap();
    }
    drop(backend);
    let loaded = engine.backend().await.load().await.unwrap();
    assert_eq!(loaded.last_rv, last_rv);
    let mut stored: Vec<(String, String)> = loaded
        .objects
        .iter()
        .map(|s| {
            let labels = s.meta().labels.unwrap_or_default();
            (s.key.name.to_string(), labels["v"].clone())
        })
        .collect();
    stored.sort();
    let mut expected: Vec<(String, String)> = [
        ("added", "second"),
        ("recreated", "new"),
        ("updated", "second"),
        ("many-000", "later"),
        ("span-recreated", "new"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .chain((1..140).map(|i| (format!("many-{i:03}"), "first".to_string())))
    .collect();
    expected.sort();
    assert_eq!(stored, expected);
    // Each at the version of its last change, with that version's JSON.
    for s in &loaded.objects {
        assert_eq!(
            s.meta().resource_version.as_deref(),
            Some(s.rv.to_string().as_str()),
            "{}",
            s.key.name
        );
    }
}

/// The resourceVersions of the rows in a SQLite store's `versions` table.
async fn sqlite_connection(engine: &Engine) -> sqlx::SqliteConnection {
    let Engine::Sqlite(dir) = engine else {
        unreachable!("a SQLite engine")
    };
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", dir.path().join("stowage.db").display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

async fn sqlite_versions(engine: &Engine) -> Vec<i64> {
    sqlx::query_scalar("SELECT rv FROM versions ORDER BY rv")
        .fetch_all(&mut sqlite_connection(engine).await)
        .await
        .unwrap()
}

/// A commit is all or nothing on SQLite, whether its rows go in one statement outside a
/// transaction or in several inside one.
#[tokio::test]
async fn a_sqlite_commit_that_fails_leaves_none_of_its_rows() {
    for size in [2, sqlite::CHUNK + 1] {
        let engine = Engine::sqlite().await;
        let mut backend = engine.backend().await;
        backend.load().await.unwrap();
        let row = |rv: Rv| Row {
            type_: EventType::Added,
            stored: Arc::new(Stored::new(class(&format!("c{rv}")), rv)),
            committed_at: 0,
        };
        backend.begin(0).await.unwrap();
        backend.commit(&[row(1)]).await.unwrap();
        // New versions, then one whose resourceVersion is taken: the commit fails there.
        let mut rows: Vec<Row> = (2..=size as Rv).map(row).collect();
        rows.push(row(1));
        assert_eq!(rows.len(), size);
        backend.begin(1).await.unwrap();
        assert!(backend.commit(&rows).await.is_err(), "{size} rows");
        drop(backend);
        assert_eq!(sqlite_versions(&engine).await, [1], "{size} rows");
    }
}

/// SQLite keeps each version once: as its object's current version, as a change in the log,
/// or both. A version leaves the table when it is neither any more, and only then.
#[tokio::test]
async fn sqlite_keeps_a_version_while_it_is_current_or_in_the_log() {
    let engine = Engine::sqlite().await;
    let options = StoreOptions {
        log_max_events: 3,
        compact_every: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = Store::with_backend(engine.backend().await, options.clone())
        .await
        .unwrap();
    let create = |name: &str| WriteOp::create(class(name));
    let mut rvs = Vec::new();
    for op in [create("a"), create("b"), create("c")] {
        rvs.push(store.write(vec![op]).await.unwrap()[0].rv);
    }
    assert_eq!(rvs, [1, 2, 3]);
    for v in ["2", "3"] {
        let a = store
            .get(Kind::StorageClass, &ObjectKey::cluster("a"))
            .unwrap();
        let mut changed = a.object();
        changed.meta_mut().labels = Some([("v".to_string(), v.to_string())].into());
        store
            .write(vec![WriteOp::update(changed, a.rv)])
            .await
            .unwrap(); // rv 4, then 5
    }
    store
        .write(vec![WriteOp::delete(
            Kind::StorageClass,
            ObjectKey::cluster("b"),
            2,
        )])
        .await
        .unwrap(); // rv 6
    for op in [create("d"), create("e")] {
        store.write(vec![op]).await.unwrap(); // rv 7, 8
    }
    store.close().await;
    // The log holds 6 (b's deletion), 7 and 8. Below it only current versions stay: c at 3
    // and a at 5; a's versions 1 and 4 were replaced, and b's version 2 was deleted.
    assert_eq!(sqlite_versions(&engine).await, [3, 5, 6, 7, 8]);

    let again = Store::with_backend(engine.backend().await, options)
        .await
        .unwrap();
    let names: Vec<(String, Rv)> = again
        .list(Kind::StorageClass, None)
        .0
        .iter()
        .map(|s| (s.key.name.to_string(), s.rv))
        .collect();
    assert_eq!(
        names,
        [("a", 5), ("c", 3), ("d", 7), ("e", 8)].map(|(n, rv)| (n.to_string(), rv))
    );
    assert_eq!(again.current_rv(), 8);
    let mut w = again.watch_from(5).unwrap();
    let deleted = w.next().await.unwrap();
    assert_eq!(
        (deleted.rv, deleted.type_, deleted.object.key.name.as_str()),
        (6, EventType::Deleted, "b")
    );
    assert_eq!(w.next().await.unwrap().rv, 7);
    assert!(matches!(
        again.watch_from(4),
        Err(WatchError::Expired { .. })
    ));
}

/// A process that stops between a commit and the next compaction leaves versions that nothing
/// needs. Start-up finds them by replaying the rows, removes them, and never brings a deleted
/// object back, even after the deletion itself is compacted away.
#[tokio::test]
async fn sqlite_start_up_removes_what_an_interrupted_compaction_left() {
    let engine = Engine::sqlite().await;
    let row = |type_: EventType, name: &str, rv: Rv| Row {
        type_,
        stored: Arc::new(Stored::new(class(name), rv)),
        committed_at: 0,
    };
    let mut backend = engine.backend().await;
    backend.load().await.unwrap();
    backend
        .commit(&[row(EventType::Added, "a", 1), row(EventType::Added, "b", 2)])
        .await
        .unwrap();
    backend.compact(2, &[]).await.unwrap();
    backend
        .commit(&[
            row(EventType::Modified, "a", 3),
            row(EventType::Deleted, "b", 4),
            row(EventType::Added, "c", 5),
        ])
        .await
        .unwrap();
    drop(backend); // stopped before it compacted again

    let mut backend = engine.backend().await;
    let loaded = backend.load().await.unwrap();
    let mut objects: Vec<(String, Rv)> = loaded
        .objects
        .iter()
        .map(|s| (s.key.name.to_string(), s.rv))
        .collect();
    objects.sort();
    assert_eq!(objects, [("a".to_string(), 3), ("c".to_string(), 5)]);
    let log: Vec<Rv> = loaded.log.iter().map(|(_, s, _)| s.rv).collect();
    assert_eq!(log, [3, 4, 5], "the log after the last compaction");
    assert_eq!(
        sqlite_versions(&engine).await,
        [3, 4, 5],
        "a's replaced and b's deleted version are gone"
    );
    // The deletion leaves the log: b stays deleted.
    backend.compact(4, &[4]).await.unwrap();
    drop(backend);
    assert_eq!(sqlite_versions(&engine).await, [3, 5]);
    let loaded = engine.backend().await.load().await.unwrap();
    let names: Vec<&str> = loaded.objects.iter().map(|s| s.key.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(!names.contains(&"b"), "{names:?}");
    assert_eq!(loaded.last_rv, 5);
}

/// Rows of a kind this version does not know (a newer one wrote them, then the server was
/// downgraded) are kept while current, and released like any other once replaced or deleted:
/// had they stayed, a deleted object would come back when a version that knows the kind reads
/// every row below the log's start as current again.
#[tokio::test]
async fn sqlite_releases_replaced_versions_of_kinds_it_does_not_know() {
    let engine = Engine::sqlite().await;
    engine.backend().await.load().await.unwrap(); // applies the migrations
    let mut conn = sqlite_connection(&engine).await;
    for (rv, name, type_) in [
        (1, "x", "ADDED"),
        (2, "x", "DELETED"),
        (3, "y", "ADDED"),
        (4, "y", "MODIFIED"),
        (5, "z", "ADDED"),
        (6, "z", "MODIFIED"),
    ] {
        sqlx::query(
            "INSERT INTO versions (rv, kind, namespace, name, type, data, created_at) \
             VALUES (?, 'Widget', '', ?, ?, '{}', 0)",
        )
        .bind(rv)
        .bind(name)
        .bind(type_)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // Compacted past x and y, not past z's replaced version: a newer version's compaction
    // that had not yet deleted what it released.
    sqlx::query("UPDATE compaction SET compacted_rv = 4 WHERE id = 0")
        .execute(&mut conn)
        .await
        .unwrap();

    let mut backend = engine.backend().await;
    let loaded = backend.load().await.unwrap();
    assert!(loaded.objects.is_empty() && loaded.log.is_empty());
    assert_eq!(loaded.last_rv, 6);
    assert_eq!(
        sqlite_versions(&engine).await,
        [4, 5, 6],
        "at start-up: x's versions and y's replaced one are gone"
    );
    backend.compact(4, &[]).await.unwrap();
    assert_eq!(
        sqlite_versions(&engine).await,
        [4, 5, 6],
        "5 is still in the log"
    );
    backend.compact(6, &[]).await.unwrap();
    assert_eq!(
        sqlite_versions(&engine).await,
        [4, 6],
        "each object's current version"
    );
}

/// A replica that only follows others collects nothing to release: PostgreSQL keeps its
/// current objects apart from its log, and a follower never compacts, so anything it
/// collected would grow with every write in the cluster.
#[tokio::test]
async fn a_following_replica_holds_no_list_of_released_versions() {
    let Some(engine) = Engine::postgres().await else {
        return;
    };
    let options = StoreOptions {
        log_max_events: 3,
        ..StoreOptions::default()
    };
    let a = engine.open().await;
    let b = Store::with_backend(engine.backend().await, options)
        .await
        .unwrap();
    let mut rv = a.write(vec![WriteOp::create(class("c"))]).await.unwrap()[0].rv;
    for v in 0..20 {
        let mut changed = a
            .get(Kind::StorageClass, &ObjectKey::cluster("c"))
            .unwrap()
            .object();
        changed.meta_mut().labels = Some([("v".to_string(), v.to_string())].into());
        rv = a.write(vec![WriteOp::update(changed, rv)]).await.unwrap()[0].rv;
        b.sync().await.unwrap(); // one change at a time, so that each trims the log
    }
    assert_eq!(b.current_rv(), rv);
    let state = b.inner.state.read();
    assert!(state.log.len() <= 3, "the log was trimmed");
    assert!(state.released.is_none());
}

/// A database written before versions were stored once (`objects` and `changes`, made by the
/// release before migration 0004: `tests/fixtures/store-before-0004.db`) opens with every
/// object at its version and the change log intact. Its log held 7 (kept's label), 8 (gone's
/// deletion), 9 and 10 (late, created and changed); 1 to 4 were compacted.
#[tokio::test]
async fn a_sqlite_store_from_before_versions_opens_with_its_objects_and_history() {
    let engine = Engine::sqlite().await;
    let Engine::Sqlite(dir) = &engine else {
        unreachable!()
    };
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/store-before-0004.db"
        ),
        dir.path().join("stowage.db"),
    )
    .unwrap();
    // A window that reaches back to when the fixture was made.
    let options = StoreOptions {
        log_window: Duration::from_secs(100 * 365 * 24 * 3600),
        ..StoreOptions::default()
    };
    let store = Store::with_backend(engine.backend().await, options)
        .await
        .unwrap();
    assert_eq!(store.current_rv(), 10);
    let kept = store
        .get(Kind::StorageClass, &ObjectKey::cluster("kept"))
        .unwrap();
    assert_eq!(kept.rv, 7);
    assert_eq!(kept.meta().labels.unwrap_or_default()["v"], "2");
    assert!(
        store
            .get(Kind::StorageClass, &ObjectKey::cluster("gone"))
            .is_none()
    );
    assert_eq!(store.count(Kind::CSIDriver), 2, "compacted objects stay");
    let mut w = store.watch_from(6).unwrap();
    let got: Vec<(Rv, EventType)> = [
        w.next().await.unwrap(),
        w.next().await.unwrap(),
        w.next().await.unwrap(),
        w.next().await.unwrap(),
    ]
    .iter()
    .map(|e| (e.rv, e.type_))
    .collect();
    use EventType::{Added, Deleted, Modified};
    assert_eq!(
        got,
        [(7, Modified), (8, Deleted), (9, Added), (10, Modified)]
    );
    assert!(matches!(
        store.watch_from(5),
        Err(WatchError::Expired { .. })
    ));
    store.close().await;
    assert_eq!(sqlite_versions(&engine).await, [1, 2, 3, 4, 7, 8, 9, 10]);
}

async fn history_read_back_shares_current_versions(engine: Engine) {
    let store = engine.open().await;
    let first = store
        .write(vec![WriteOp::create(class("c"))])
        .await
        .unwrap()
        .remove(0);
    let mut changed = first.object();
    changed.meta_mut().labels = Some([("v".to_string(), "2".to_string())].into());
    let second = store
        .write(vec![WriteOp::update(changed, first.rv)])
        .await
        .unwrap()
        .remove(0);
    store.close().await;

    let again = engine.open().await;
    let current = again
        .get(Kind::StorageClass, &ObjectKey::cluster("c"))
        .unwrap();
    let mut w = again.watch_from(first.rv - 1).unwrap();
    let (old, new) = (w.next().await.unwrap(), w.next().await.unwrap());
    // The superseded version is the history's own copy, as it was.
    assert_eq!(old.rv, first.rv);
    assert_eq!(old.object.json, first.json);
    assert_eq!(
        old.object.meta().resource_version,
        Some(first.rv.to_string())
    );
    // The current version is held once, by the cache and the history together.
    assert_eq!(new.rv, second.rv);
    assert!(Arc::ptr_eq(&new.object, &current), "not shared");
    assert_eq!(current.json, second.json);
    assert_eq!(
        current
            .typed::<k8s_openapi::api::storage::v1::StorageClass>()
            .metadata
            .labels,
        Some([("v".to_string(), "2".to_string())].into())
    );
}

#[tokio::test]
async fn an_idle_sqlite_store_truncates_its_wal() {
    let engine = Engine::sqlite().await;
    let Engine::Sqlite(dir) = &engine else {
        unreachable!()
    };
    let wal = dir.path().join("stowage.db-wal");
    let store = engine.open().await;
    for i in 0..50 {
        store
            .write(vec![WriteOp::create(class(&format!("c{i}")))])
            .await
            .unwrap();
    }
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "writes go to the WAL"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&wal).map_or(0, |m| m.len()) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL was never truncated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Truncation lost nothing, and the store goes on writing.
    assert_eq!(store.count(Kind::StorageClass), 50);
    store
        .write(vec![WriteOp::create(class("after"))])
        .await
        .unwrap();
    store.close().await;
    assert_eq!(engine.open().await.count(Kind::StorageClass), 51);
}

/// Two replicas on one PostgreSQL database, for the tests below.
async fn replicas() -> Option<(Engine, Store, Store)> {
    let engine = Engine::postgres().await?;
    let a = engine.open().await;
    let b = engine.open().await;
    Some((engine, a, b))
}

async fn next_within(w: &mut Watcher, limit: Duration) -> Arc<WatchEvent> {
    tokio::time::timeout(limit, w.next())
        .await
        .expect("a change within the limit")
        .expect("a change")
}

#[tokio::test]
async fn replicas_never_both_win_a_precondition() {
    let Some((_engine, a, b)) = replicas().await else {
        return;
    };
    // Both replicas create the same names at once: each name is made exactly once.
    let mut tasks = Vec::new();
    for i in 0..50 {
        for store in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                store
                    .write(vec![WriteOp::create(class(&format!("race{i}")))])
                    .await
            }));
        }
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(WriteError::AlreadyExists { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, 50, "each name created exactly once");

    // Both update one object from the same version: one wins, the other conflicts, even
    // though the loser's cache had not seen the winner's write when it checked.
    b.sync().await.unwrap();
    let seen = b
        .get(Kind::StorageClass, &ObjectKey::cluster("race0"))
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.write(vec![WriteOp::update(class("race0"), seen.rv)]),
        b.write(vec![WriteOp::update(class("race0"), seen.rv)]),
    );
    assert!(ra.is_ok() != rb.is_ok(), "exactly one wins: {ra:?} {rb:?}");
    let loser = if ra.is_err() { ra } else { rb };
    assert!(
        matches!(loser, Err(WriteError::Conflict { .. })),
        "{loser:?}"
    );
}

#[tokio::test]
async fn every_replica_follows_every_commit_in_one_gapless_order() {
    let Some((_engine, a, b)) = replicas().await else {
        return;
    };
    let (_, start, mut on_b) = b.snapshot_and_watch(&[]);
    let mut writes = Vec::new();
    for i in 0..100 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        writes.push(tokio::spawn(async move {
            store
                .write(vec![WriteOp::create(claim("ns", &format!("c{i}")))])
                .await
                .unwrap()
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    // B's watch sees all 100, from both replicas, each resourceVersion once, in order.
    let mut last = start;
    for _ in 0..100 {
        let e = next_within(&mut on_b, Duration::from_secs(5)).await;
        assert_eq!(e.rv, last + 1, "no gap, no reordering");
        last = e.rv;
    }
    // A consistent read on A sees B's writes at once.
    a.sync().await.unwrap();
    assert_eq!(a.count(Kind::PersistentVolumeClaim), 100);
    assert_eq!(a.current_rv(), b.current_rv());
}

#[tokio::test]
async fn a_replica_wakes_its_watchers_of_the_kinds_another_replica_wrote() {
    let Some((_engine, a, b)) = replicas().await else {
        return;
    };
    let (_, _, mut claims_on_b) = b.snapshot_and_watch(&[Kind::PersistentVolumeClaim]);
    let _ = claims_on_b.take_wake_up();
    a.write(vec![WriteOp::create(class("s"))]).await.unwrap();
    // B has followed A's class (a consistent read waits for that), which woke no watcher of
    // claims.
    b.sync().await.unwrap();
    assert!(!claims_on_b.take_wake_up(), "woken by a class");
    let written = a
        .write(vec![WriteOp::create(claim("ns", "c"))])
        .await
        .unwrap();
    // Only the claim reaches B's watcher of claims, woken by B following A's commits.
    let e = next_within(&mut claims_on_b, Duration::from_secs(5)).await;
    assert_eq!(
        (e.kind(), e.rv),
        (Kind::PersistentVolumeClaim, written[0].rv)
    );
    assert!(claims_on_b.try_next().is_none());
    // B's counts follow what it followed.
    assert_eq!(b.count(Kind::PersistentVolumeClaim), 1);
    assert_eq!(b.count(Kind::StorageClass), 1);
}

#[tokio::test]
async fn a_watch_resumes_on_another_replica_from_a_version_the_first_served() {
    let Some((_engine, a, b)) = replicas().await else {
        return;
    };
    let first = a
        .write(vec![WriteOp::create(class("one"))])
        .await
        .unwrap()
        .remove(0);
    a.write(vec![WriteOp::create(class("two"))]).await.unwrap();
    // The client saw `first` on A; it reconnects to B and resumes from there.
    let mut w = b.watch_from(first.rv).unwrap();
    let e = next_within(&mut w, Duration::from_secs(5)).await;
    assert_eq!(e.object.key.name, "two");
    // And follows on (how fast: `cargo bench --bench replicas`).
    a.write(vec![WriteOp::create(class("three"))])
        .await
        .unwrap();
    let e = next_within(&mut w, Duration::from_secs(5)).await;
    assert_eq!(e.object.key.name, "three");
}

/// A database head whose answer is the number of queries started so far (including itself):
/// an answer shows when its query started.
struct CountingHead(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl Head for CountingHead {
    async fn current_rv(&self) -> anyhow::Result<Rv> {
        let started = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(started)
    }
}

#[tokio::test]
async fn concurrent_consistent_reads_share_head_queries_but_never_an_older_answer() {
    let head = Arc::new(CountingHead(std::sync::atomic::AtomicU64::new(0)));
    let queries = Arc::new(HeadQueries::start(head.clone()));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let queries = queries.clone();
        let head = head.clone();
        tasks.push(tokio::spawn(async move {
            // Queries numbered up to `before` started before this caller asked: too old.
            let before = head.0.load(Ordering::SeqCst);
            let answer = queries.current_rv().await.unwrap();
            assert!(answer > before, "an answer from before the question");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let made = head.0.load(Ordering::SeqCst);
    assert!(made < 50, "200 concurrent callers made {made} queries");
}

#[test]
fn may_have_finds_a_field_value_in_the_json_and_never_misses_one() {
    let stored = Stored::new(claim("ns", "data"), 7);
    assert!(stored.may_have("name", "data"));
    assert!(stored.may_have("namespace", "ns"));
    assert!(!stored.may_have("name", "dat"), "a prefix is not the value");
    assert!(
        !stored.may_have("nodeName", "data"),
        "another field's value"
    );
    // Values are matched as serialized, escapes included.
    let mut odd = claim("ns", "x");
    odd.meta_mut().labels = Some([("k".to_string(), "a\"b".to_string())].into());
    assert!(Stored::new(odd, 8).may_have("k", "a\"b"));
}

#[test]
fn a_decoded_version_is_shared_and_never_taken_for_another() {
    let name = |s: &Stored| s.decoded().meta().name.clone().unwrap();
    let a = Stored::new(claim("ns", "a"), 1);
    let first = a.decoded();
    assert!(
        Arc::ptr_eq(&first, &a.decoded()),
        "decoded once, then shared"
    );
    assert_eq!(*first, a.object());
    // The same JSON in other bytes (another store's copy) is its own entry, and right.
    let copy = Stored::from_parts(a.kind, a.key.clone(), a.rv, Bytes::copy_from_slice(&a.json));
    assert!(!Arc::ptr_eq(&first, &copy.decoded()));
    assert_eq!(name(&copy), "a");
    // Many versions later (more than are kept), each still decodes as itself.
    let others: Vec<Stored> = (0..300)
        .map(|i| Stored::new(claim("ns", &format!("x{i}")), 10 + i))
        .collect();
    for (i, o) in others.iter().enumerate() {
        assert_eq!(name(o), format!("x{i}"));
    }
    assert_eq!(name(&a), "a");
    assert_eq!(name(&others[0]), "x0");

    // Large versions (a tenant's objects near the size limit) never make it hold more than
    // its byte bound.
    let big = |i: usize| {
        let mut c = claim("ns", &format!("big{i}"));
        c.meta_mut().annotations = Some([("pad".to_string(), "x".repeat(400 * 1024))].into());
        Stored::new(c, 1000 + i as Rv)
    };
    for i in 0..40 {
        let b = big(i);
        assert_eq!(name(&b), format!("big{i}"));
        assert!(recently_decoded::kept_bytes() <= recently_decoded::LIMIT_BYTES);
    }
}

/// A pool on a test database, with the migrations applied (as a replica's store applies
/// them).
async fn pool_on(engine: &Engine) -> sqlx::PgPool {
    let Engine::Postgres(url) = engine else {
        unreachable!("a PostgreSQL engine")
    };
    let pool = postgres::connect(&PostgresOptions {
        url: url.clone(),
        pool_size: 4,
        timeout: Duration::from_secs(10),
        window: Duration::from_secs(600),
    })
    .await
    .unwrap();
    PostgresBackend::open(pool.clone(), Duration::from_secs(600))
        .await
        .unwrap();
    pool
}

#[tokio::test]
async fn a_revocation_answers_only_once_every_replica_refuses_the_token() {
    use crate::auth::Role;
    use crate::auth::tokens::Tokens;
    let Some(engine) = Engine::postgres().await else {
        return;
    };
    let replicas = [
        Tokens::open_shared(pool_on(&engine).await).await.unwrap(),
        Tokens::open_shared(pool_on(&engine).await).await.unwrap(),
        Tokens::open_shared(pool_on(&engine).await).await.unwrap(),
    ];
    for round in 0..20 {
        let (info, token) = replicas[round % 3]
            .create(&format!("t{round}"), Role::Viewer, None)
            .await
            .unwrap();
        let header = format!("Bearer {token}");
        // A token made on one replica works on every replica at once.
        for r in &replicas {
            r.authenticate_current(Some(&header)).await.unwrap();
        }
        // Revoked on another: the very next request to any replica is refused.
        assert!(replicas[(round + 1) % 3].revoke(&info.id).await.unwrap());
        for r in &replicas {
            assert!(
                r.authenticate_current(Some(&header)).await.is_err(),
                "round {round}: a replica still let the revoked token through"
            );
        }
    }
    // A token no replica has heard of is not found anywhere.
    assert!(!replicas[0].revoke("nosuchtoken00000").await.unwrap());
    // A replica that went away (its row no longer refreshed) does not hold revocations up
    // past its heartbeat.
    let pool = pool_on(&engine).await;
    sqlx::query("INSERT INTO token_replicas (replica, epoch, seen_at) VALUES ('gone', 0, $1)")
        .bind(jiff::Timestamp::now().as_second() - 60)
        .execute(&pool)
        .await
        .unwrap();
    let (info, _) = replicas[0]
        .create("last", Role::Viewer, None)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(replicas[2].revoke(&info.id).await.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
