//! `GET /admin/v1/openapi.json`: the OpenAPI document of this API, derived
//! with utoipa from each handler's `#[utoipa::path]` and from the types the
//! handlers take and answer, so the schemas are those of the JSON on the wire.
//! The admin tests check that it lists every route the router serves, that
//! every `$ref` in it resolves, and that an OpenAPI validator accepts it.

use axum::Json;
use paygate_core::{Micros, Plan};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::handlers::{billing, credits, customers, keys, plans};
use crate::views::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "paygate admin API",
        description = "Plans, customers, API keys, prepaid credits and balances, usage \
            reports, invoices and the audit log of a paygate deployment. Every call needs \
            the admin bearer token; every error answers the same JSON body."
    ),
    paths(
        plans::list,
        plans::create,
        plans::get,
        plans::replace,
        plans::remove,
        customers::list,
        customers::create,
        customers::get,
        customers::patch,
        keys::list,
        keys::create,
        keys::revoke,
        credits::top_up,
        credits::balance,
        billing::usage,
        billing::list_invoices,
        billing::get_invoice,
        billing::close,
        billing::payments,
        billing::audit,
        serve,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken, &OverageShape, &PlanReplacement),
    security(("bearer" = [])),
    tags(
        (name = "plans", description = "What a customer may call, how fast, how much, at what price"),
        (name = "customers", description = "Who calls, on which plan"),
        (name = "keys", description = "The customers' API keys"),
        (name = "credits", description = "Prepaid credits and where a customer stands now"),
        (name = "billing", description = "Usage reports and invoices, from the ledger"),
        (name = "audit", description = "Every admin change"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document
#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI document of this API", body = Object),
        (status = 401, description = "No valid admin bearer token", body = ErrorBody),
    )
)]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// The `bearer` scheme the document's `security` names: the admin token.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("The admin token: `admin.token` in the config, or the environment variable `admin.token_env` names (default `PAYGATE_ADMIN_TOKEN`)".into());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// The body of `PUT /admin/v1/plans/{id}`: the derived `Plan` schema with
/// `id` no longer required (the handler takes it from the path).
struct PlanReplacement;

impl PlanReplacement {
    const NAME: &'static str = "PlanReplacement";
}

impl Modify for PlanReplacement {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
        // Anything but an object leaves the `$ref` dangling, which the tests catch.
        if let Some(RefOr::T(Schema::Object(plan))) = schemas.get(Plan::name().as_ref()) {
            let mut put = plan.clone();
            put.required.retain(|field| field != "id");
            put.description = Some(
                "A whole plan, as `PUT` takes it: `id` may be left out (it is the path's), \
                 and must be the path's if given"
                    .into(),
            );
            schemas.insert(Self::NAME.into(), RefOr::T(Schema::Object(put)));
        }
    }
}

/// A plan's `overage`: `"block"` or `{"price_micros": N}`.
///
/// [`paygate_core::Overage`] is serialized by hand, which its derived schema
/// cannot see; this mirror derives the real shape and replaces that schema
/// in the document. A test checks that the two read and write the same JSON.
#[derive(Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
enum OverageForm {
    Block(#[schema(inline)] BlockWord),
    /// Keep serving, billing each call past the quota at this price.
    Price {
        #[schema(value_type = i64, minimum = 0)]
        price_micros: Micros,
    },
}

/// Refuse calls past the quota with 402 `quota_exhausted` (the default).
#[derive(Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum BlockWord {
    Block,
}

/// Puts [`OverageForm`]'s schema in place of the derived `Overage`.
struct OverageShape;

impl Modify for OverageShape {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let mut schema = OverageForm::schema();
        if let RefOr::T(Schema::OneOf(one_of)) = &mut schema {
            one_of.description = Some(
                "What happens once the quota is used up: `\"block\"` or `{\"price_micros\": N}`"
                    .into(),
            );
        }
        doc.components
            .get_or_insert_with(Default::default)
            .schemas
            .insert(paygate_core::Overage::name().into_owned(), schema);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use paygate_core::Overage;
    use serde_json::{json, Value};

    #[test]
    fn the_overage_form_reads_and_writes_what_the_plan_does() {
        let pairs = [
            (Overage::Block, OverageForm::Block(BlockWord::Block)),
            (
                Overage::Price { price_micros: 250 },
                OverageForm::Price { price_micros: 250 },
            ),
        ];
        for (core, form) in pairs {
            let wire = serde_json::to_value(core).unwrap();
            assert_eq!(serde_json::to_value(&form).unwrap(), wire);
            assert_eq!(
                serde_json::from_value::<OverageForm>(wire.clone()).unwrap(),
                form
            );
            assert_eq!(serde_json::from_value::<Overage>(wire).unwrap(), core);
        }
    }

    #[test]
    fn the_overage_schema_is_the_forms() {
        let doc = serde_json::to_value(document()).unwrap();
        let overage = &doc["components"]["schemas"]["Overage"];
        let variants = overage["oneOf"].as_array().unwrap();
        assert_eq!(variants[0]["enum"], json!(["block"]), "{overage}");
        assert_eq!(
            variants[1]["required"],
            json!(["price_micros"]),
            "{overage}"
        );
        assert_eq!(
            doc["components"]["schemas"]["Plan"]["properties"]["overage"]["$ref"],
            Value::from("#/components/schemas/Overage")
        );
    }
}
