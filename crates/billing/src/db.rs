//! Connection, migrations and the error type.
//!
//! One code path for both databases: queries go through sqlx's `Any` driver
//! with `$N` placeholders, `ON CONFLICT` and `RETURNING`, which SQLite and
//! Postgres both accept. Only the migrations differ per backend (column types,
//! triggers). Integer columns are `BIGINT` on Postgres and money is `i64`
//! micros everywhere; timestamps of records are RFC 3339 text, event times
//! integer microseconds.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::AnyPool;
use sqlx::{ConnectOptions, Connection, Executor};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// A request the data makes impossible (e.g. closing a future period).
    #[error("{0}")]
    Invalid(String),
    #[error("database url `{0}`: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// Maps a unique-constraint violation to [`DbError::Conflict`].
    pub(crate) fn from_write(e: sqlx::Error, what: &str) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                DbError::Conflict(format!("{what} already exists"))
            }
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                DbError::Conflict(format!("{what} refers to a record that does not exist"))
            }
            _ => DbError::Sqlx(e),
        }
    }
}

/// Postgres SQLSTATE classes worth retrying: connection exception (08),
/// transaction rollback (40: serialization failure, deadlock), insufficient
/// resources (53), operator intervention (57: shutdown, cannot connect now),
/// system error (58).
const PG_TRANSIENT_CLASSES: [&str; 5] = ["08", "40", "53", "57", "58"];

/// SQLite primary result codes worth retrying: BUSY (5), LOCKED (6),
/// IOERR (10), FULL (13, the disk), CANTOPEN (14). Extended codes carry the
/// primary code in their low byte.
const SQLITE_TRANSIENT_CODES: [i64; 5] = [5, 6, 10, 13, 14];

/// Whether a database error may go away if the same statement is sent again.
fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let Some(code) = d.code() else {
                return false;
            };
            if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                is_transient_sqlstate(&code)
            } else {
                is_transient_sqlite_code(&code)
            }
        }
        _ => false,
    }
}

/// Postgres reports a five-character SQLSTATE.
fn is_transient_sqlstate(code: &str) -> bool {
    PG_TRANSIENT_CLASSES.iter().any(|c| code.starts_with(c))
}

/// SQLite reports its numeric (extended) result code.
fn is_transient_sqlite_code(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|n| SQLITE_TRANSIENT_CODES.contains(&(n & 0xff)))
}

impl DbError {
    /// Transient (the database is down, busy or out of resources: retry)
    /// or permanent (it refuses these rows and will again: dead-letter).
    pub fn into_delivery(self) -> paygate_usage::DeliveryError {
        use paygate_usage::DeliveryError;
        let transient = match &self {
            DbError::Sqlx(e) => is_transient_sqlx(e),
            DbError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_transient_sqlx(e),
            _ => false,
        };
        if transient {
            DeliveryError::transient(self)
        } else {
            DeliveryError::permanent(self)
        }
    }
}

/// Record timestamps are stored as RFC 3339 text.
pub(crate) fn ts(s: &str) -> Result<DateTime<Utc>, DbError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Corrupt(format!("timestamp {s:?}: {e}")))
}

pub(crate) fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded: one file, one node.
    Sqlite,
    /// Production: shared by the billing worker and the admin API.
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(url.to_string()))
        }
    }
}

/// The ledger database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Database {
    /// Opens the database at `url` (creating a SQLite file if needed) and
    /// applies migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let db = Self::open(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Opens the database without touching its schema.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                // Create the file and switch it to WAL once: WAL is a property
                // of the file, and lets readers (reports) run beside the usage
                // writer. The Any driver can only take options from the URL.
                let opts = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal);
                opts.connect().await?.close().await?;
                AnyPoolOptions::new()
                    .max_connections(4)
                    // A file cannot drop a connection; a ping per checkout is
                    // one more hop to sqlx's SQLite worker thread per batch.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // NORMAL in WAL mode survives a process crash; the
                            // busy timeout lets the writer and readers share the file.
                            // A 64 MB page cache and memory-mapped reads: with
                            // SQLite's 2 MB default, the ledger's indexes were read
                            // back from the OS with a copy per page on every batch
                            // (a third of the ingest's CPU).
                            conn.execute(
                                "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
                                 PRAGMA cache_size = -65536; PRAGMA mmap_size = 268435456; PRAGMA wal_autocheckpoint = 16384",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that may write.
    ///
    /// On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes fails at once with
    /// `SQLITE_BUSY` if the usage writer committed in between, and no busy
    /// timeout helps it. Waiting for the lock at the start is what the busy
    /// timeout does handle. Postgres needs nothing special.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, DbError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&self.pool).await?,
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The API-key HMAC secret: the configured one, else the one kept in the
    /// database, else a new one that is kept from now on.
    pub async fn key_secret(&self, configured: Option<String>) -> Result<String, DbError> {
        if let Some(s) = configured {
            return Ok(s);
        }
        let fresh = paygate_core::apikey::generate_server_secret();
        sqlx::query("INSERT INTO settings (name, value) VALUES ('key_secret', $1) ON CONFLICT (name) DO NOTHING")
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let (secret,): (String,) =
            sqlx::query_as("SELECT value FROM settings WHERE name = 'key_secret'")
                .fetch_one(&self.pool)
                .await?;
        Ok(secret)
    }
}

/// `VALUES (…), (…)` with `rows` rows of `cols` placeholders. sqlx's
/// `QueryBuilder<Any>` writes `?`, which Postgres refuses; SQLite takes `$N`
/// but sqlx then looks every parameter up by name, which is quadratic in the
/// number of parameters (it was a third of the gateway's CPU with 960 of them
/// per statement). So: `$N` on Postgres, `?` on SQLite.
pub(crate) fn values_clause(backend: Backend, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5 + 8);
    s.push_str("VALUES ");
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&(r * cols + c + 1).to_string());
                }
                Backend::Sqlite => s.push('?'),
            }
        }
        s.push(')');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{is_transient_sqlite_code, is_transient_sqlstate, values_clause, Backend, DbError};

    #[test]
    fn delivery_errors_are_classified_by_code() {
        // SQLite: BUSY, BUSY_SNAPSHOT (517), LOCKED, IOERR_WRITE (778), FULL.
        for code in ["5", "517", "6", "778", "13"] {
            assert!(is_transient_sqlite_code(code), "{code}");
        }
        // SQLite: CONSTRAINT_UNIQUE (2067), MISMATCH (20), ERROR (1).
        for code in ["2067", "20", "1"] {
            assert!(!is_transient_sqlite_code(code), "{code}");
        }
        // Postgres: connection failure, serialization failure, deadlock,
        // too many connections, admin shutdown.
        for code in ["08006", "40001", "40P01", "53300", "57P01"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        // Postgres: NUL in text, unique violation, undefined table.
        for code in ["22021", "23505", "42P01"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        assert!(DbError::Sqlx(sqlx::Error::PoolTimedOut)
            .into_delivery()
            .is_transient());
        assert!(!DbError::Corrupt("x".into()).into_delivery().is_transient());
    }

    #[test]
    fn values_clause_per_backend() {
        assert_eq!(
            values_clause(Backend::Postgres, 2, 2),
            "VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(
            values_clause(Backend::Sqlite, 2, 2),
            "VALUES (?, ?), (?, ?)"
        );
    }
}
