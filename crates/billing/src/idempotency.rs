//! Stored responses of admin POSTs made with an `Idempotency-Key`.

use chrono::Utc;
use sqlx::Row;

use crate::{Database, DbError};

/// What the database knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: this request runs and its response is then stored.
    Fresh,
    /// The same request ran before: replay its response.
    Done { status: u16, body: Vec<u8> },
    /// The same key is running right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

impl Database {
    /// Claims `key` for a request with `hash`, or says why it cannot run.
    pub async fn claim_idempotency_key(&self, key: &str, hash: &str) -> Result<Claim, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (key, request_hash, status, created_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(hash)
        .bind(Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Fresh);
        }
        let row =
            sqlx::query("SELECT request_hash, status, body FROM idempotency_keys WHERE key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?;
        if row.try_get::<String, _>("request_hash")? != hash {
            return Ok(Claim::Mismatch);
        }
        match row.try_get::<i64, _>("status")? {
            0 => Ok(Claim::InProgress),
            status => Ok(Claim::Done {
                status: u16::try_from(status).unwrap_or(500),
                body: row
                    .try_get::<Option<Vec<u8>>, _>("body")?
                    .unwrap_or_default(),
            }),
        }
    }

    /// Stores the response of a claimed key.
    pub async fn complete_idempotency_key(
        &self,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE idempotency_keys SET status = $2, body = $3 WHERE key = $1")
            .bind(key)
            .bind(i64::from(status))
            .bind(body)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Frees a claimed key whose request failed on our side, so it can be retried.
    pub async fn release_idempotency_key(&self, key: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND status = 0")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
