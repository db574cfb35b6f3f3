//! Customers that JWTs bring with them: created on first sight of a valid
//! token (`default_plan`) or moved to the plan their token names
//! (`plan_claim`), in the database with an audit entry (actor
//! `jwt:<issuer>`), then put into this gateway's catalog and published to the
//! others, like an admin change.

use std::sync::Arc;

use chrono::Utc;
use paygate_billing::audit::Actor;
use paygate_billing::records::{CustomerPatch, NewCustomer};
use paygate_billing::{Database, DbError};
use paygate_core::{CustomerId, PlanId};
use paygate_gateway::auth::{self, ProvisionError, Provisioner};
use paygate_store::{changes, Catalog, ChangeBus, Store};

pub struct JwtProvisioner {
    pub db: Database,
    pub catalog: Arc<Catalog>,
    pub store: Arc<dyn Store>,
    pub changes: ChangeBus,
    /// One change at a time in this process: concurrent first calls of the
    /// same new customer create it once.
    pub serial: tokio::sync::Mutex<()>,
}

fn actor(name: &str) -> Actor {
    Actor {
        name: name.to_owned(),
        source: None,
    }
}

fn failed(e: impl std::fmt::Display) -> ProvisionError {
    ProvisionError(e.to_string())
}

#[async_trait::async_trait]
impl Provisioner for JwtProvisioner {
    async fn create_customer(&self, new: auth::NewCustomer<'_>) -> Result<(), ProvisionError> {
        let _one = self.serial.lock().await;
        if self.catalog.customer(new.id.as_str()).is_some() {
            return Ok(());
        }
        let plan_id = PlanId::new(new.plan).map_err(failed)?;
        let created = self
            .db
            .create_customer(
                NewCustomer {
                    id: new.id.clone(),
                    name: new.name.unwrap_or(new.id.as_str()).to_owned(),
                    email: new.email.unwrap_or_default().to_owned(),
                    plan_id,
                },
                &actor(new.actor),
                Utc::now(),
            )
            .await;
        match created {
            Ok(rec) => {
                changes::customer_created(&self.catalog, &self.changes, self.store.as_ref(), &rec)
                    .await;
            }
            // Another gateway created it first: take theirs.
            Err(DbError::Conflict(_)) => {
                let rec = self
                    .db
                    .get_customer(new.id.as_str())
                    .await
                    .map_err(failed)?;
                changes::customer_stored(&self.catalog, &self.changes, &rec).await;
            }
            Err(e) => return Err(failed(e)),
        }
        Ok(())
    }

    async fn change_plan(
        &self,
        customer: &CustomerId,
        plan: &str,
        actor_name: &str,
    ) -> Result<(), ProvisionError> {
        let _one = self.serial.lock().await;
        if self
            .catalog
            .customer(customer.as_str())
            .is_some_and(|c| c.plan_id.as_str() == plan)
        {
            return Ok(());
        }
        let patch = CustomerPatch {
            name: None,
            email: None,
            plan_id: Some(PlanId::new(plan).map_err(failed)?),
        };
        let rec = self
            .db
            .patch_customer(customer.as_str(), patch, &actor(actor_name), Utc::now())
            .await
            .map_err(failed)?;
        changes::customer_stored(&self.catalog, &self.changes, &rec).await;
        Ok(())
    }
}
