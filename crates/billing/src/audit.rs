//! The audit log: every admin change, who made it, the record before and
//! after (JSON), and when. Written in the transaction of the change itself, so
//! there is no change without its entry and no entry without its change.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use crate::db::{now_text, ts};
use crate::paging::{page, Page};
use crate::{Database, DbError};

/// Who makes a change: the admin token's holder, named by the caller
/// (`X-Paygate-Actor`) or `admin`, and where the call came from.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub source: Option<String>,
}

impl Actor {
    /// Changes made by paygate itself (the demo seed, migrations of data).
    pub fn system() -> Self {
        Self {
            name: "system".into(),
            source: None,
        }
    }

    fn describe(&self) -> String {
        match &self.source {
            Some(s) => format!("{} ({s})", self.name),
            None => self.name.clone(),
        }
    }
}

/// One change to record.
pub(crate) struct Change<'a> {
    pub action: &'static str,
    pub resource: &'static str,
    pub resource_id: &'a str,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub resource_id: String,
    #[schema(required = true)]
    pub before: Option<Value>,
    #[schema(required = true)]
    pub after: Option<Value>,
}

/// Filters of `GET /admin/v1/audit`.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub resource: Option<String>,
    pub resource_id: Option<String>,
}

pub(crate) async fn record(
    conn: &mut AnyConnection,
    actor: &Actor,
    change: Change<'_>,
) -> Result<(), DbError> {
    let json = |v: Option<Value>| v.map(|v| v.to_string());
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, resource, resource_id, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(now_text())
    .bind(actor.describe())
    .bind(change.action)
    .bind(change.resource)
    .bind(change.resource_id)
    .bind(json(change.before))
    .bind(json(change.after))
    .execute(conn)
    .await?;
    Ok(())
}

fn parse_json(s: Option<String>) -> Result<Option<Value>, DbError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| DbError::Corrupt(format!("audit json: {e}"))))
        .transpose()
}

impl Database {
    /// Newest first, paged by entry id.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<AuditEntry>, DbError> {
        // The UUIDv7 ids sort by time; "after" an id means older than it.
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE ($1 = '' OR id < $1) \
             AND ($2 = '' OR resource = $2) AND ($3 = '' OR resource_id = $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(after.unwrap_or(""))
        .bind(filter.resource.as_deref().unwrap_or(""))
        .bind(filter.resource_id.as_deref().unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let entries = rows
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: ts(&r.try_get::<String, _>("at")?)?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    resource: r.try_get("resource")?,
                    resource_id: r.try_get("resource_id")?,
                    before: parse_json(r.try_get("before")?)?,
                    after: parse_json(r.try_get("after")?)?,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        Ok(page(entries, limit))
    }
}
