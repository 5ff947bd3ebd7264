//! The database handle shared by the SQLite store and queues: the file's lock, the group-commit
//! writer thread that owns the one writing connection, the checkpointer thread that copies the
//! WAL into the database file beside it, and the online backup.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::schema;
use crate::error::{HubError, Result};
use crate::runtime::files;

/// What a commit waits for before the callers are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = NORMAL` in WAL mode: a commit is in the operating system when it is
    /// answered, so it survives a crash of the process; a power loss may take the last commits
    /// since the last checkpoint's `fsync`.
    #[default]
    Normal,
    /// `synchronous = FULL`: every group commit is `fsync`ed before its callers are answered, so
    /// it survives a power loss as well.
    Full,
}

/// How a database is opened: what a commit waits for, and how large the file may grow.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbOptions {
    /// What a commit waits for.
    pub durability: Durability,
    /// The largest the database file may grow, bytes (rounded down to whole pages); `None`: as
    /// far as the disk allows. Past it, writes that need new pages fail as on a full disk.
    pub size_limit: Option<u64>,
}

impl From<Durability> for DbOptions {
    fn from(durability: Durability) -> Self {
        DbOptions {
            durability,
            size_limit: None,
        }
    }
}

/// Writes at most this many operations in one transaction.
const MAX_GROUP: usize = 512;
/// How long a connection waits for a lock another one holds (a backup, a checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection: more than the adapters use, so none is parsed twice.
const STATEMENT_CACHE: usize = 128;
/// WAL pages (4 KiB each) past which the checkpointer thread copies the WAL into the database
/// file. SQLite's own automatic checkpoint (which runs inside the committing writer and held
/// every caller of the group behind it for 15–20 ms at 4,000 pages) is off.
const CHECKPOINT_PAGES: i32 = 1000;
/// Passive checkpoints the checkpointer runs in a row to catch up with what was committed while
/// the previous one copied (each copies fewer pages than the last); a pass that leaves nothing
/// behind lets the writer's next transaction start the WAL over.
const CATCH_UP_PASSES: usize = 8;
/// WAL pages past which the writer copies the rest itself after a checkpoint, whatever the
/// checkpointer did: its next transaction then starts the WAL over for sure (a caught-up
/// checkpoint lets it only if no commit came between).
const WAL_RESTART_PAGES: i32 = 4 * CHECKPOINT_PAGES;
/// Connections of their own for the reads on the events' path (a subscription for a delivery
/// batch, a topic's entries for a fan-out), run on the caller's thread beside the writer: one per
/// worker thread of a 2-core machine's runtime, and spares for the others.
const READERS: usize = 4;

/// Settings every connection gets.
fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // One plan per statement: without this, SQLite re-prepares a statement whenever a bound
    // LIMIT or range value might change its plan (measured: a tenth of the writer's time).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// An operation of the writer thread, run inside a group's transaction.
trait WriteJob: Send {
    /// Runs the operation; whether it succeeded (its writes are kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's commit is known.
    fn answer(self: Box<Self>, committed: Result<()>);
    /// Whether it runs in a savepoint of its own: an operation of several statements that could
    /// fail half-way does; a read or a single statement (atomic by itself) does not need one.
    fn needs_savepoint(&self) -> bool;
}

/// Runs `op`, turning a panic into an error: one operation must not take the writer down.
fn run_guarded<T>(op: impl FnOnce(&Connection) -> Result<T>, conn: &Connection) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(|| op(conn)))
        .unwrap_or_else(|_| Err(HubError::backend("a database operation panicked")))
}

struct Job<T, F> {
    savepoint: bool,
    op: Option<F>,
    outcome: Option<Result<T>>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let outcome = run_guarded(op, conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn needs_savepoint(&self) -> bool {
        self.savepoint
    }

    fn answer(self: Box<Self>, committed: Result<()>) {
        let outcome = match committed {
            Ok(()) => self
                .outcome
                .unwrap_or_else(|| Err(HubError::backend("the operation did not run"))),
            Err(err) => Err(err),
        };
        let _ = self.reply.send(outcome);
    }
}

/// A write nobody waits for: its failure is logged.
struct BehindJob<F> {
    what: &'static str,
    op: Option<F>,
    failure: Option<HubError>,
}

impl<F> WriteJob for BehindJob<F>
where
    F: FnOnce(&Connection) -> Result<()> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let outcome = run_guarded(op, conn);
        self.failure = outcome.err();
        self.failure.is_none()
    }

    fn needs_savepoint(&self) -> bool {
        false
    }

    fn answer(self: Box<Self>, committed: Result<()>) {
        let failure = match committed {
            Ok(()) => self.failure.map(|e| e.to_string()),
            Err(err) => Some(err.to_string()),
        };
        if let Some(error) = failure {
            tracing::warn!(what = self.what, %error, "a write-behind failed");
        }
    }
}

/// What the writer and the checkpointer thread share: the WAL's size as of the last commit,
/// and where a checkpoint stands.
#[derive(Default)]
struct Checkpoints {
    /// Pages in the WAL after the writer's last commit (its WAL hook sets it).
    wal_pages: AtomicI32,
    /// A checkpoint was asked for and has not finished yet.
    running: AtomicBool,
    /// Set to have a checkpoint made whatever the WAL's size (after a prune gave pages back, so
    /// that the file shrinks).
    wanted: AtomicBool,
    /// How many checkpoints the checkpointer has finished. After each that did not catch up,
    /// the writer copies what was committed meanwhile (a few pages), after which its next
    /// transaction starts the WAL over.
    completed: std::sync::atomic::AtomicU64,
    /// Whether the checkpointer's last checkpoint copied the whole WAL (it caught up with the
    /// commits), so the writer has nothing to copy.
    caught_up: AtomicBool,
    /// Set to have the writer, after its next group and before answering it, copy what is left
    /// of the WAL and cut it back (after a prune, once the checkpointer has copied the bulk).
    truncate: AtomicBool,
}

/// The checkpointer thread: on each request, a passive checkpoint on a connection of its own,
/// so the copy and its `fsync`s happen beside the writer, not in it. Ends with the writer.
fn checkpoint_on_request(path: PathBuf, requests: mpsc::Receiver<()>, shared: Arc<Checkpoints>) {
    let conn = match Connection::open(&path).and_then(|c| tune(&c).map(|()| c)) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(error = %err, "the checkpointer could not open the database; the writer checkpoints alone");
            return;
        }
    };
    while requests.recv().is_ok() {
        let caught_up = (0..CATCH_UP_PASSES).any(|_| {
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            }) {
                // The WAL's frames, and how many of them are in the database file now.
                Ok((frames, copied)) => frames == copied,
                Err(err) => {
                    tracing::warn!(error = %err, "WAL checkpoint failed");
                    false
                }
            }
        });
        shared.caught_up.store(caught_up, Ordering::SeqCst);
        shared.completed.fetch_add(1, Ordering::SeqCst);
        shared.running.store(false, Ordering::SeqCst);
    }
}

struct Inner {
    path: PathBuf,
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    /// Read-only connections for [`SqliteDb::read_committed`], each taken by one read at a time.
    readers: Vec<Mutex<Connection>>,
    /// Where checkpoints stand (shared with the writer and the checkpointer).
    checkpoints: Arc<Checkpoints>,
    /// Held for the life of the handle: a second process on the same file is refused.
    _lock: std::fs::File,
    /// The pages each kind of write may fill up to, under a size limit.
    ceilings: Option<Ceilings>,
}

/// What a write adds to the database, for the size limit: new work is refused first, so the
/// hub always has room to deliver, retry and acknowledge what it already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// What a caller asks for: a published event, a subscription, an idempotency key.
    NewWork,
    /// What the hub makes of work it holds: fan-out's deliveries, retries, kept deliveries,
    /// the delivery log.
    Derived,
}

/// The size limit split by [`Admission`], in pages: new work up to the limit; derived work
/// into half the reserve above it; receives, acknowledgements and postponements into the rest
/// (SQLite's `max_page_count`).
#[derive(Debug, Clone, Copy)]
struct Ceilings {
    new_work: i64,
    derived: i64,
    hard: i64,
}

impl Ceilings {
    /// The ceilings for a `limit` of bytes in pages of `page_size`: the reserve is a tenth of
    /// the limit, at least 256 KiB and at most 64 MiB.
    fn of(limit: u64, page_size: i64) -> Ceilings {
        let reserve = (limit / 10).clamp(256 * 1024, 64 * 1024 * 1024);
        let pages = |bytes: u64| (i64::try_from(bytes).unwrap_or(i64::MAX) / page_size).max(1);
        let new_work = pages(limit);
        let reserve = pages(reserve);
        Ceilings {
            new_work,
            derived: new_work + reserve / 2,
            hard: new_work + reserve,
        }
    }
}

/// Room check for one kind of write, taken from the database and run inside the write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Room {
    ceiling: Option<i64>,
}

impl Room {
    /// `Err(StorageFull)` when the database's pages in use have reached this kind of write's
    /// ceiling; free of cost without a size limit.
    pub(super) fn check(self, conn: &Connection) -> Result<()> {
        let Some(ceiling) = self.ceiling else {
            return Ok(());
        };
        let used: i64 = conn
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count())
                      - (SELECT freelist_count FROM pragma_freelist_count())",
                [],
                |r| r.get(0),
            )
            .map_err(db_error)?;
        if used >= ceiling {
            tracing::warn!(
                used_pages = used,
                ceiling_pages = ceiling,
                "the database is full: new work is refused until deliveries free space"
            );
            return Err(HubError::storage_full());
        }
        Ok(())
    }
}

/// An open webhook-hub database: cheap to clone, shared by the store and the queues.
#[derive(Clone)]
pub struct SqliteDb {
    inner: Arc<Inner>,
}

/// A rusqlite error as a hub error: a full disk or a database at its size limit is
/// [`HubError::StorageFull`] (retry later), anything else a backend failure.
pub(super) fn db_error(err: rusqlite::Error) -> HubError {
    if is_full(&err) {
        tracing::warn!(error = %err, "the database is full: writes are refused until space returns");
        return HubError::storage_full();
    }
    HubError::backend(format!("sqlite: {err}"))
}

/// Whether SQLite refused a write for want of space (`SQLITE_FULL`).
fn is_full(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull)
}

/// `path` with `suffix` added to its file name (`x.db` → `x.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn lock_path(path: &Path) -> PathBuf {
    sibling(path, ".lock")
}

impl SqliteDb {
    /// Opens (or creates) the database at `path`: takes its lock, checks and migrates the
    /// schema, and starts the writer thread. A file that is not a webhook-hub database, is
    /// corrupt, or is in use by another process is refused with an error that says so.
    pub fn open(
        path: &Path,
        options: impl Into<DbOptions>,
    ) -> std::result::Result<SqliteDb, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let options = options.into();
        let lock_file = lock_path(path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(files::PRIVATE_MODE)
            .open(&lock_file)
            .map_err(|e| format!("{}: {e}", lock_file.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "{} is in use by another webhook-hub process (its lock {} is held); \
                     stop that one or choose another --data",
                    path.display(),
                    lock_file.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("{}: {e}", lock_file.display()));
            }
        }
        schema::check_header(path)?;
        // Every file of the database is its owner's alone: created 0600 here (SQLite gives the
        // WAL and shared-memory files the database file's mode), and made so if an older
        // version left it readable by others.
        if !path.exists() {
            files::create_private(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for file in [
            path.to_path_buf(),
            lock_file.clone(),
            sibling(path, "-wal"),
            sibling(path, "-shm"),
        ] {
            files::make_private(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        let conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        tune(&conn).map_err(|e| format!("{}: {e}", path.display()))?;
        schema::prepare(&conn, path)?;
        // Under the file's exclusive lock no other process can be working on a message: what
        // a crashed process held (received, parked) is visible again now, not after the
        // visibility timeout. Messages postponed on purpose (a retry's delay) keep their time.
        let resumed = conn
            .execute(
                "UPDATE messages SET visible_at_ms = ?1, receipt = 0, held = 0 WHERE held = 1",
                [crate::clock::wall_ms()],
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if resumed > 0 {
            tracing::info!(
                messages = resumed,
                "messages held when the last process stopped are visible again"
            );
        }
        let synchronous = match options.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "{}: the WAL journal could not be enabled (got `{mode}`); is it on a network \
                 file system?",
                path.display()
            ));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA journal_size_limit = 8388608; \
             PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;"
        ))
        .map_err(|e| e.to_string())?;
        let ceilings = match options.size_limit {
            Some(limit) => {
                Some(limit_size(&conn, limit).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        let mut conn = conn;
        let checkpoints = Arc::new(Checkpoints::default());
        // Replaces SQLite's automatic checkpoint: the hook only notes the WAL's size.
        let noted = checkpoints.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages| {
            noted.wal_pages.store(pages, Ordering::SeqCst);
            Ok(())
        }))
        .map_err(|e| e.to_string())?;
        let (requests, requested) = mpsc::channel::<()>();
        let (checkpointer_path, shared) = (path.to_path_buf(), checkpoints.clone());
        std::thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || checkpoint_on_request(checkpointer_path, requested, shared))
            .map_err(|e| e.to_string())?;
        let readers = (0..READERS)
            .map(|_| open_reader(path).map(Mutex::new))
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let (jobs, queue) = mpsc::channel::<Box<dyn WriteJob>>();
        let shared = checkpoints.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_groups(conn, queue, &shared, requests))
            .map_err(|e| e.to_string())?;
        Ok(SqliteDb {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                jobs,
                readers,
                checkpoints,
                _lock: lock,
                ceilings,
            }),
        })
    }

    /// The room check for writes of `admission`, to run inside them.
    pub(super) fn room(&self, admission: Admission) -> Room {
        Room {
            ceiling: self.inner.ceilings.map(|c| match admission {
                Admission::NewWork => c.new_work,
                Admission::Derived => c.derived,
            }),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `op` on the writer's connection in the next group transaction; answers once that
    /// transaction is committed (or with the error that undid `op`'s writes).
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(true, op).await
    }

    async fn submit<T, F>(&self, savepoint: bool, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            savepoint,
            op: Some(op),
            outcome: None,
            reply,
        };
        self.inner
            .jobs
            .send(Box::new(job))
            .map_err(|_| HubError::backend("the database writer has stopped"))?;
        answer
            .await
            .map_err(|_| HubError::backend("the database writer has stopped"))?
    }

    /// Runs a read on the writer's connection, in the next group: the read sees every write sent
    /// before it, the ones nobody waits for included, and scans use the writer's warm page cache
    /// (SQLite drops a connection's cache whenever another connection commits). The reads every
    /// event waits on go beside the writer instead ([`SqliteDb::read_committed`]).
    pub(super) async fn read<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_one(op).await
    }

    /// Runs a one-statement read on a connection of its own, on the calling thread, beside the
    /// writer: for the reads every event waits on (a subscription for a delivery batch, a
    /// topic's entries for a fan-out), which would otherwise wait for the writer's group in
    /// progress and then take a place in the next. It sees every write answered before it (each
    /// is committed when answered), not the writes nobody waits for that are still queued.
    /// Measured under the throughput harness: SQLite delivered 8,500–8,700 events/s with these
    /// reads queued to the writer, 10,300–10,500 beside it (docs/sqlite.md). When every reader
    /// is taken, the read goes to the writer as [`SqliteDb::read`].
    pub(super) async fn read_committed<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        for reader in &self.inner.readers {
            if let Ok(conn) = reader.try_lock() {
                return op(&conn);
            }
        }
        self.read(op).await
    }

    /// Runs one statement's worth of writing in the next group, without a savepoint (a single
    /// statement is atomic by itself); answers once it is committed.
    pub(super) async fn write_one<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(false, op).await
    }

    /// Waits until every operation sent so far is committed (the writes nobody waits for
    /// included): `serve` calls it before it exits.
    pub async fn flush(&self) -> Result<()> {
        self.write(|_| Ok(())).await
    }

    /// Queues `op` for the writer without waiting for its commit (and without a savepoint: a
    /// partial failure of it only loses what it would have recorded): for writes whose loss in a
    /// crash only repeats work (an acknowledgement, an attempt record before it). The writer runs
    /// operations in the order they are sent, so one sent later and awaited is committed with or
    /// after this one. A failure is logged.
    pub(super) fn write_behind<F>(&self, what: &'static str, op: F)
    where
        F: FnOnce(&Connection) -> Result<()> + Send + 'static,
    {
        let job = BehindJob {
            what,
            op: Some(op),
            failure: None,
        };
        if self.inner.jobs.send(Box::new(job)).is_err() {
            tracing::warn!(what, "the database writer has stopped");
        }
    }
}

impl SqliteDb {
    /// When more than `threshold` pages are free, gives them back to the file system
    /// (incremental vacuum, a chunk per writer operation so other writes go in between) and has
    /// the WAL checkpointed, so the file shrinks after a prune.
    pub(super) async fn reclaim_free_pages(&self, threshold: i64) -> Result<()> {
        /// Pages given back per writer operation.
        const VACUUM_CHUNK: i64 = 256;
        let mut reclaimed = false;
        loop {
            let more = self
                .write(move |conn| {
                    let free: i64 = conn
                        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                        .map_err(db_error)?;
                    if free <= threshold {
                        return Ok(false);
                    }
                    // Stepped to the end: each step frees one page (execute_batch would step
                    // once).
                    let mut vacuum = conn
                        .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_CHUNK})"))
                        .map_err(db_error)?;
                    let mut steps = vacuum.query([]).map_err(db_error)?;
                    while steps.next().map_err(db_error)?.is_some() {}
                    Ok(true)
                })
                .await?;
            if !more {
                break;
            }
            reclaimed = true;
        }
        if reclaimed {
            // The bulk copied by the checkpointer beside the writer (an empty operation makes
            // the writer look at the request), then the little left and the WAL cut back by the
            // writer, so the file is small when the prune returns.
            let checkpoints = &self.inner.checkpoints;
            let before = checkpoints.completed.load(Ordering::SeqCst);
            checkpoints.wanted.store(true, Ordering::SeqCst);
            self.write_one(|_| Ok(())).await?;
            for _ in 0..500 {
                if checkpoints.completed.load(Ordering::SeqCst) > before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            checkpoints.truncate.store(true, Ordering::SeqCst);
            self.write_one(|_| Ok(())).await?;
        }
        Ok(())
    }
}

/// Sets the database's ceilings for a size limit of `limit` bytes: SQLite's `max_page_count`
/// at the hard one (kept at the current size if the file is already larger).
fn limit_size(conn: &Connection, limit: u64) -> rusqlite::Result<Ceilings> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let ceilings = Ceilings::of(limit, page_size);
    conn.query_row(
        &format!("PRAGMA max_page_count = {}", ceilings.hard),
        [],
        |r| r.get::<_, i64>(0),
    )?;
    let size: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    if size > ceilings.new_work {
        tracing::warn!(
            limit_bytes = limit,
            size_bytes = size * page_size,
            "the database is already larger than its size limit: new work is refused until \
             deliveries free some"
        );
    }
    Ok(ceilings)
}

/// The writer thread: takes every operation waiting, runs them in one transaction (each in a
/// savepoint), commits, then answers each caller. Ends when every handle is gone.
///
/// It never waits on a checkpoint's bulk: past [`CHECKPOINT_PAGES`] it asks the checkpointer
/// thread for one, and once that is done it copies only what was committed meanwhile (a passive
/// checkpoint of a few pages, two small `fsync`s), so that its next transaction starts the WAL
/// over and the WAL stays near [`CHECKPOINT_PAGES`] (a checkpoint that runs beside commits can
/// never finish the WAL by itself).
fn write_groups(
    conn: Connection,
    queue: mpsc::Receiver<Box<dyn WriteJob>>,
    checkpoints: &Checkpoints,
    checkpointer: mpsc::Sender<()>,
) {
    // No waiting for a group to fill: measured under the throughput harness, gathering a busy
    // writer's groups for 250 µs or 1 ms delivered less (4,007/s without, 2,733/s and 1,674/s
    // with), as every delivery waits on several writes one after another.
    // The checkpointer's count of checkpoints when the writer last copied what followed one.
    let mut copied_after = 0;
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let committed = run_group(&conn, &mut group);
        if checkpoints.truncate.swap(false, Ordering::SeqCst) {
            // After a prune, once the checkpointer copied the bulk: the rest, and the WAL cut
            // back, before the prune is answered.
            checkpoint(&conn, "TRUNCATE");
        }
        for job in group {
            job.answer(committed.clone());
        }
        // The WAL's upkeep, which no caller waits for.
        let completed = checkpoints.completed.load(Ordering::SeqCst);
        if completed != copied_after {
            copied_after = completed;
            // Nothing left to copy when the checkpointer caught up (this copy, two `fsync`s in
            // the writer, holds the events behind it for milliseconds), unless commits kept
            // the WAL from starting over for long: then the writer copies the rest, so that
            // its next transaction does.
            if !checkpoints.caught_up.load(Ordering::SeqCst)
                || checkpoints.wal_pages.load(Ordering::SeqCst) >= WAL_RESTART_PAGES
            {
                checkpoint(&conn, "PASSIVE");
            }
        } else if (checkpoints.wal_pages.load(Ordering::SeqCst) >= CHECKPOINT_PAGES
            || checkpoints.wanted.swap(false, Ordering::SeqCst))
            && !checkpoints.running.swap(true, Ordering::SeqCst)
            && checkpointer.send(()).is_err()
        {
            // No checkpointer thread (it could not open the file): the writer copies alone.
            checkpoints.running.store(false, Ordering::SeqCst);
            checkpoint(&conn, "PASSIVE");
        }
    }
    // The last connection to close checkpoints the WAL into the database file.
    let _ = conn.close();
}

/// A connection for [`SqliteDb::read_committed`]: it refuses writes, and keeps a smaller page
/// cache than the writer's (SQLite drops it whenever another connection commits).
fn open_reader(path: &Path) -> std::result::Result<Connection, String> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|conn| {
        tune(&conn)?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -2048;")?;
        Ok(conn)
    })
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs a `wal_checkpoint` of `mode` on `conn`, outside any transaction; a failure is logged.
fn checkpoint(conn: &Connection, mode: &str) {
    if let Err(err) = conn.execute_batch(&format!("PRAGMA wal_checkpoint({mode})")) {
        tracing::warn!(error = %err, mode, "WAL checkpoint failed");
    }
}

/// Why a group was not committed: answered to every caller of the group.
fn group_failure(err: rusqlite::Error) -> HubError {
    if is_full(&err) {
        db_error(err)
    } else {
        HubError::backend(format!("commit failed: sqlite: {err}"))
    }
}

fn run_group(conn: &Connection, group: &mut [Box<dyn WriteJob>]) -> Result<()> {
    let statement = |sql: &str| -> Result<()> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(group_failure)
    };
    statement("BEGIN IMMEDIATE")?;
    for job in group.iter_mut() {
        let step = if job.needs_savepoint() {
            statement("SAVEPOINT job").and_then(|()| {
                if job.run(conn) {
                    statement("RELEASE job")
                } else if conn.is_autocommit() {
                    Ok(())
                } else {
                    statement("ROLLBACK TO job").and_then(|()| statement("RELEASE job"))
                }
            })
        } else {
            job.run(conn);
            Ok(())
        };
        // A full disk (or the size limit) can make SQLite roll back the whole transaction, not
        // just the failed statement: then nothing of the group is kept, every caller is told so,
        // and no later operation runs outside the transaction.
        if step.is_ok() && conn.is_autocommit() {
            return Err(HubError::storage_full());
        }
        if let Err(err) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err);
        }
    }
    statement("COMMIT").inspect_err(|_| {
        let _ = conn.execute_batch("ROLLBACK");
    })
}

/// Copies the database at `data` to a new file `to` with SQLite's online backup: consistent,
/// and safe while `webhook-hub serve` runs on `data`. Returns the number of pages copied.
pub fn backup(data: &Path, to: &Path) -> std::result::Result<i32, String> {
    if !data.exists() {
        return Err(format!("{} does not exist", data.display()));
    }
    schema::check_header(data)?;
    let source = Connection::open_with_flags(data, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", data.display()))?;
    source
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let application_id: i32 = source
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", data.display()))?;
    if application_id != schema::APPLICATION_ID {
        return Err(format!(
            "{} is not a webhook-hub database (application_id {application_id:#x})",
            data.display()
        ));
    }
    // A new file, 0600, made before SQLite opens it: never over an existing file, never
    // through a symlink (a dangling one included).
    if let Err(err) = files::create_private(to) {
        return Err(if err.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} already exists (a file or a link); choose a new file to back up to",
                to.display()
            )
        } else {
            format!("{}: {err}", to.display())
        });
    }
    let mut target = Connection::open(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let copy = rusqlite::backup::Backup::new(&source, &mut target).map_err(|e| e.to_string())?;
    loop {
        // All pages in one step: the copy is of one read transaction, whatever writes meanwhile.
        match copy.step(-1).map_err(|e| e.to_string())? {
            rusqlite::backup::StepResult::Done => break,
            rusqlite::backup::StepResult::More => {}
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let pages = copy.progress().pagecount;
    drop(copy);
    // A standalone copy: one file, no WAL beside it.
    target
        .query_row("PRAGMA journal_mode = DELETE", [], |r| {
            r.get::<_, String>(0)
        })
        .map_err(|e| e.to_string())?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_db() -> (SqliteDb, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "db-test-{}-{:x}.db",
            std::process::id(),
            rand::random::<u64>()
        ));
        (SqliteDb::open(&path, Durability::Normal).unwrap(), path)
    }

    fn count(conn: &Connection) -> Result<i64> {
        conn.query_row("SELECT count(*) FROM hub_keys", [], |r| r.get(0))
            .map_err(db_error)
    }

    async fn add_key(db: &SqliteDb, n: i64) -> Result<()> {
        db.write(move |conn| {
            conn.execute(
                "INSERT INTO hub_keys (name, key) VALUES (?1, x'00')",
                [format!("k{n}")],
            )
            .map(|_| ())
            .map_err(db_error)
        })
        .await
    }

    /// A read beside the writer sees every write answered before it, each one as it is
    /// answered (it is committed then), and never a write that was undone.
    #[tokio::test]
    async fn a_read_beside_the_writer_sees_every_answered_write() {
        let (db, _path) = scratch_db();
        for n in 1..=50 {
            add_key(&db, n).await.unwrap();
            assert_eq!(db.read_committed(count).await.unwrap(), n);
        }
        let undone = db
            .write(|conn| {
                conn.execute("INSERT INTO hub_keys (name, key) VALUES ('x', x'00')", [])
                    .map_err(db_error)?;
                Err::<(), _>(HubError::backend("undone"))
            })
            .await;
        assert!(undone.is_err());
        assert_eq!(db.read_committed(count).await.unwrap(), 50);
    }

    /// With every reader connection taken, a read goes to the writer and still answers; a
    /// reader refuses to write.
    #[tokio::test]
    #[allow(clippy::await_holding_lock)] // holding every reader is the point
    async fn a_read_with_every_reader_taken_goes_to_the_writer() {
        let (db, _path) = scratch_db();
        add_key(&db, 1).await.unwrap();
        let taken: Vec<_> = db.inner.readers.iter().map(|r| r.lock().unwrap()).collect();
        assert_eq!(taken.len(), READERS);
        // Bounded, so a read that waited for a reader instead fails here rather than hanging.
        let read = tokio::time::timeout(Duration::from_secs(5), db.read_committed(count)).await;
        assert_eq!(read.expect("answered without a free reader").unwrap(), 1);
        let refused = taken[0].execute("INSERT INTO hub_keys (name, key) VALUES ('y', x'00')", []);
        assert!(refused.is_err(), "a reader connection is read-only");
    }
}
