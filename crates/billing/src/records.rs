//! Plans, customers, keys and credit grants: the records the admin API writes.

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use futures::TryStreamExt;
use paygate_core::apikey::KeyHash;
use paygate_core::records::{CustomerRecord, KeyRecord};
use paygate_core::{CustomerId, KeyId, Micros, Plan, PlanId};
use serde::Serialize;
use sqlx::Row;

use crate::audit::{self, Actor, Change};
use crate::db::{now_text, ts};
use crate::paging::{page, Page};
use crate::{Database, DbError};

/// A key as listed: never the secret, never the hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyRow {
    pub id: String,
    pub customer_id: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a credit top-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// First time this reference was seen: the balance went up.
    Credited,
    /// The reference was already used with the same amount: nothing changed.
    AlreadyCredited,
}

pub struct NewCustomer {
    pub id: CustomerId,
    pub name: String,
    pub email: String,
    pub plan_id: PlanId,
}

pub struct CustomerPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    pub plan_id: Option<PlanId>,
}

fn plan_from_body(body: &str) -> Result<Plan, DbError> {
    serde_json::from_str(body).map_err(|e| DbError::Corrupt(format!("plan: {e}")))
}

fn customer_from_row(r: &sqlx::any::AnyRow) -> Result<CustomerRecord, DbError> {
    let corrupt = |e: paygate_core::ValidationError| DbError::Corrupt(e.to_string());
    Ok(CustomerRecord {
        id: CustomerId::new(r.try_get::<String, _>("id")?).map_err(corrupt)?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        plan_id: PlanId::new(r.try_get::<String, _>("plan_id")?).map_err(corrupt)?,
        anchor_day: u32::try_from(r.try_get::<i64, _>("anchor_day")?).unwrap_or(1),
        created_at: ts(&r.try_get::<String, _>("created_at")?)?,
    })
}

fn key_row(r: &sqlx::any::AnyRow) -> Result<KeyRow, DbError> {
    let revoked: Option<String> = r.try_get("revoked_at")?;
    Ok(KeyRow {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        prefix: r.try_get("prefix")?,
        created_at: ts(&r.try_get::<String, _>("created_at")?)?,
        revoked_at: revoked.as_deref().map(ts).transpose()?,
    })
}

fn key_record(r: &sqlx::any::AnyRow) -> Result<KeyRecord, DbError> {
    let hash: Vec<u8> = r.try_get("hash")?;
    let row = key_row(r)?;
    let corrupt = |e: paygate_core::ValidationError| DbError::Corrupt(e.to_string());
    Ok(KeyRecord {
        id: KeyId::new(row.id).map_err(corrupt)?,
        customer_id: CustomerId::new(row.customer_id).map_err(corrupt)?,
        prefix: row.prefix,
        hash: hash
            .try_into()
            .map_err(|_| DbError::Corrupt("key hash length".into()))?,
        created_at: row.created_at,
    })
}

fn plan_json(plan: &Plan) -> Result<String, DbError> {
    serde_json::to_string(plan).map_err(|e| DbError::Corrupt(e.to_string()))
}

fn to_value<T: Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// The customer as the admin API shows it (and the audit log keeps it).
pub fn customer_json(c: &CustomerRecord) -> serde_json::Value {
    serde_json::json!({
        "id": c.id.as_str(),
        "name": c.name,
        "email": c.email,
        "plan_id": c.plan_id.as_str(),
        "billing_anchor_day": c.anchor_day,
        "created_at": c.created_at,
    })
}

impl Database {
    // ---- plans ----

    pub async fn create_plan(&self, plan: &Plan, actor: &Actor) -> Result<(), DbError> {
        let now = now_text();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO plans (id, body, created_at, updated_at) VALUES ($1, $2, $3, $3)")
            .bind(plan.id.as_str())
            .bind(plan_json(plan)?)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(|e| DbError::from_write(e, "plan"))?;
        let change = Change {
            action: "plan.create",
            resource: "plan",
            resource_id: plan.id.as_str(),
            before: None,
            after: to_value(plan),
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_plan(&self, plan: &Plan, actor: &Actor) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        let before = sqlx::query("SELECT body FROM plans WHERE id = $1")
            .bind(plan.id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound)?;
        let before = plan_from_body(&before.try_get::<String, _>("body")?)?;
        sqlx::query("UPDATE plans SET body = $2, updated_at = $3 WHERE id = $1")
            .bind(plan.id.as_str())
            .bind(plan_json(plan)?)
            .bind(now_text())
            .execute(&mut *tx)
            .await?;
        let change = Change {
            action: "plan.update",
            resource: "plan",
            resource_id: plan.id.as_str(),
            before: to_value(&before),
            after: to_value(plan),
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_plan(&self, id: &str) -> Result<Plan, DbError> {
        let row = sqlx::query("SELECT body FROM plans WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound)?;
        plan_from_body(&row.try_get::<String, _>("body")?)
    }

    pub async fn list_plans(&self, limit: u32, after: Option<&str>) -> Result<Page<Plan>, DbError> {
        let rows = sqlx::query("SELECT body FROM plans WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let plans = rows
            .iter()
            .map(|r| plan_from_body(&r.try_get::<String, _>("body")?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(plans, limit))
    }

    /// Deletes a plan no customer is on; a plan in use is a conflict.
    pub async fn delete_plan(&self, id: &str, actor: &Actor) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        let in_use: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE plan_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        if in_use > 0 {
            return Err(DbError::Conflict(format!(
                "plan {id} is in use by {in_use} customer(s)"
            )));
        }
        let before = sqlx::query("DELETE FROM plans WHERE id = $1 RETURNING body")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound)?;
        let before = plan_from_body(&before.try_get::<String, _>("body")?)?;
        let change = Change {
            action: "plan.delete",
            resource: "plan",
            resource_id: id,
            before: to_value(&before),
            after: None,
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- customers ----

    /// Creates a customer whose billing anchor is the day of `now` (the
    /// caller's clock: the present, or the original date of an import).
    pub async fn create_customer(
        &self,
        c: NewCustomer,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<CustomerRecord, DbError> {
        // Stored with microsecond precision: answer with what a later read returns.
        let now = now.trunc_subsecs(6);
        let rec = CustomerRecord {
            id: c.id,
            name: c.name,
            email: c.email,
            plan_id: c.plan_id,
            anchor_day: now.day(),
            created_at: now,
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO customers (id, name, email, plan_id, anchor_day, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(rec.id.as_str())
        .bind(&rec.name)
        .bind(&rec.email)
        .bind(rec.plan_id.as_str())
        .bind(i64::from(rec.anchor_day))
        .bind(rec.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .execute(&mut *tx)
        .await
        .map_err(|e| DbError::from_write(e, "customer"))?;
        start_plan(&mut tx, &rec, now).await?;
        let change = Change {
            action: "customer.create",
            resource: "customer",
            resource_id: rec.id.as_str(),
            before: None,
            after: Some(customer_json(&rec)),
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn get_customer(&self, id: &str) -> Result<CustomerRecord, DbError> {
        let row = sqlx::query("SELECT * FROM customers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound)?;
        customer_from_row(&row)
    }

    pub async fn list_customers(
        &self,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<CustomerRecord>, DbError> {
        let rows = sqlx::query("SELECT * FROM customers WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let list = rows
            .iter()
            .map(customer_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(list, limit))
    }

    /// Changes name, email or plan. A new plan is recorded in the plan
    /// history from now on: the fee is prorated by day, usage keeps counting.
    pub async fn patch_customer(
        &self,
        id: &str,
        p: CustomerPatch,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<CustomerRecord, DbError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT * FROM customers WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound)?;
        let before = customer_from_row(&row)?;
        let mut rec = before.clone();
        if let Some(n) = p.name {
            rec.name = n;
        }
        if let Some(e) = p.email {
            rec.email = e;
        }
        if let Some(plan) = p.plan_id {
            rec.plan_id = plan;
        }
        sqlx::query("UPDATE customers SET name = $2, email = $3, plan_id = $4 WHERE id = $1")
            .bind(id)
            .bind(&rec.name)
            .bind(&rec.email)
            .bind(rec.plan_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| DbError::from_write(e, "customer"))?;
        if rec.plan_id != before.plan_id {
            start_plan(&mut tx, &rec, now).await?;
        }
        let change = Change {
            action: "customer.update",
            resource: "customer",
            resource_id: id,
            before: Some(customer_json(&before)),
            after: Some(customer_json(&rec)),
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(rec)
    }

    // ---- keys ----

    pub async fn create_key(
        &self,
        customer_id: &CustomerId,
        prefix: &str,
        hash: &KeyHash,
        actor: &Actor,
    ) -> Result<KeyRecord, DbError> {
        let rec = KeyRecord {
            id: KeyId::generate(),
            customer_id: customer_id.clone(),
            prefix: prefix.to_string(),
            hash: *hash,
            created_at: Utc::now().trunc_subsecs(6),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, customer_id, prefix, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(rec.id.as_str())
        .bind(customer_id.as_str())
        .bind(prefix)
        .bind(&hash[..])
        .bind(rec.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .execute(&mut *tx)
        .await
        .map_err(|e| DbError::from_write(e, "key"))?;
        let shown = KeyRow {
            id: rec.id.as_str().to_owned(),
            customer_id: customer_id.as_str().to_owned(),
            prefix: prefix.to_owned(),
            created_at: rec.created_at,
            revoked_at: None,
        };
        let change = Change {
            action: "key.create",
            resource: "key",
            resource_id: rec.id.as_str(),
            before: None,
            after: to_value(&shown),
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn list_keys(
        &self,
        customer_id: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<KeyRow>, DbError> {
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE customer_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(customer_id)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let list = rows.iter().map(key_row).collect::<Result<Vec<_>, _>>()?;
        Ok(page(list, limit))
    }

    /// Marks a key revoked (idempotent: revoking twice keeps the first time,
    /// and only the first is audited).
    pub async fn revoke_key(&self, key_id: &str, actor: &Actor) -> Result<KeyRow, DbError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound)?;
        let before = key_row(&row)?;
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        let now = Utc::now().trunc_subsecs(6);
        sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1")
            .bind(key_id)
            .bind(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .execute(&mut *tx)
            .await?;
        let after = KeyRow {
            revoked_at: Some(now),
            ..before.clone()
        };
        let change = Change {
            action: "key.revoke",
            resource: "key",
            resource_id: key_id,
            before: to_value(&before),
            after: to_value(&after),
        };
        audit::record(&mut tx, actor, change).await?;
        tx.commit().await?;
        Ok(after)
    }

    // ---- credits ----

    /// Credits `amount` once per `(customer, reference)`. The same reference
    /// with another amount is a conflict, as with Stripe's idempotency keys.
    pub async fn grant_credits(
        &self,
        customer_id: &str,
        amount: Micros,
        reference: &str,
        actor: &Actor,
    ) -> Result<Grant, DbError> {
        let mut tx = self.begin_write().await?;
        let id = format!("cg_{}", uuid::Uuid::now_v7().simple());
        let done = sqlx::query(
            "INSERT INTO credit_grants (id, customer_id, amount_micros, reference, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id, reference) DO NOTHING",
        )
        .bind(&id)
        .bind(customer_id)
        .bind(amount)
        .bind(reference)
        .bind(now_text())
        .execute(&mut *tx)
        .await
        .map_err(|e| DbError::from_write(e, "credit grant"))?;
        if done.rows_affected() == 1 {
            let change = Change {
                action: "credits.grant",
                resource: "customer",
                resource_id: customer_id,
                before: None,
                after: Some(serde_json::json!({
                    "id": id, "amount_micros": amount, "reference": reference,
                })),
            };
            audit::record(&mut tx, actor, change).await?;
            tx.commit().await?;
            return Ok(Grant::Credited);
        }
        let existing: i64 = sqlx::query_scalar(
            "SELECT amount_micros FROM credit_grants WHERE customer_id = $1 AND reference = $2",
        )
        .bind(customer_id)
        .bind(reference)
        .fetch_one(&mut *tx)
        .await?;
        if existing == amount {
            Ok(Grant::AlreadyCredited)
        } else {
            Err(DbError::Conflict(format!(
                "reference {reference} was already used for {existing} micros"
            )))
        }
    }

    /// One key with its hash, and whether it is revoked.
    pub async fn get_key(&self, key_id: &str) -> Result<(KeyRecord, bool), DbError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound)?;
        let revoked = row.try_get::<Option<String>, _>("revoked_at")?.is_some();
        Ok((key_record(&row)?, revoked))
    }

    /// Every plan and every customer (the catalog without its keys).
    pub async fn load_plans_and_customers(
        &self,
    ) -> Result<(Vec<Plan>, Vec<CustomerRecord>), DbError> {
        let plans = sqlx::query("SELECT body FROM plans")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| plan_from_body(&r.try_get::<String, _>("body")?))
            .collect::<Result<Vec<_>, _>>()?;
        let customers = sqlx::query("SELECT * FROM customers ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(customer_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((plans, customers))
    }

    /// Hands every live API key to `f`, a row at a time: a million keys are
    /// never held as a list (nor as the driver's rows) at once.
    pub async fn for_each_key(&self, mut f: impl FnMut(KeyRecord) + Send) -> Result<(), DbError> {
        let mut rows = sqlx::query(
            "SELECT id, customer_id, prefix, hash, created_at, revoked_at FROM api_keys WHERE revoked_at IS NULL",
        )
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            f(key_record(&row)?);
        }
        Ok(())
    }
}

/// Records that `c` is on its plan from `at`, with the plan's fee as it is now.
async fn start_plan(
    conn: &mut sqlx::AnyConnection,
    c: &CustomerRecord,
    at: DateTime<Utc>,
) -> Result<(), DbError> {
    let body: String = sqlx::query_scalar("SELECT body FROM plans WHERE id = $1")
        .bind(c.plan_id.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| DbError::Conflict(format!("no plan with id {}", c.plan_id.as_str())))?;
    let plan = plan_from_body(&body)?;
    sqlx::query(
        "INSERT INTO customer_plans (id, customer_id, plan_id, monthly_fee_micros, effective_us) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(format!("cp_{}", uuid::Uuid::now_v7().simple()))
    .bind(c.id.as_str())
    .bind(c.plan_id.as_str())
    .bind(plan.monthly_fee_micros)
    .bind(at.timestamp_micros())
    .execute(conn)
    .await?;
    Ok(())
}
