//! Connection, migrations and the error type.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("database url `{0}`: only sqlite:// is supported by this build")]
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The ledger database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: SqlitePool,
}

impl Database {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        if !url.starts_with("sqlite:") {
            return Err(DbError::UnsupportedUrl(url.to_string()));
        }
        // WAL lets readers (reports, tests) run beside the usage writer;
        // synchronous=NORMAL in WAL mode survives a process crash.
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let db = Self { pool };
        db.migrate().await?;
        Ok(db)
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        MIGRATOR.run(&self.pool).await?;
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
