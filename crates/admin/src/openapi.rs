//! `GET /admin/v1/openapi.json`: the OpenAPI 3 document of this API. The
//! admin tests check that it lists every route the router serves.

use serde_json::{json, Value};

fn error_responses(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        m.insert(
            (*c).to_string(),
            json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(m)
}

fn op(summary: &str, ok: &str, schema: Option<&str>, body: Option<&str>, errors: &[&str]) -> Value {
    let mut responses = error_responses(errors);
    let content = schema.map(
        |s| json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}}),
    );
    responses[ok] = json!({"description": "success", "content": content.unwrap_or(json!({}))});
    let mut o = json!({"summary": summary, "responses": responses});
    if let Some(b) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
    }
    o
}

pub fn document() -> Value {
    let auth = ["400", "401", "404", "409", "422"];
    json!({
        "openapi": "3.0.3",
        "info": {"title": "paygate admin API", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": {
            "/admin/v1/plans": {
                "get": op("List plans", "200", Some("PlanList"), None, &auth),
                "post": op("Create a plan", "201", Some("Plan"), Some("Plan"), &auth),
            },
            "/admin/v1/plans/{id}": {
                "get": op("Get a plan", "200", Some("Plan"), None, &auth),
                "put": op("Replace a plan", "200", Some("Plan"), Some("Plan"), &auth),
                "delete": op("Delete a plan no customer is on (409 otherwise)", "200", None, None, &auth),
            },
            "/admin/v1/customers": {
                "get": op("List customers", "200", Some("CustomerList"), None, &auth),
                "post": op("Create a customer", "201", Some("Customer"), Some("NewCustomer"), &auth),
            },
            "/admin/v1/customers/{id}": {
                "get": op("Get a customer", "200", Some("Customer"), None, &auth),
                "patch": op("Change name, email or plan", "200", Some("Customer"), Some("CustomerPatch"), &auth),
            },
            "/admin/v1/customers/{id}/keys": {
                "get": op("List a customer's keys (no secrets)", "200", Some("KeyList"), None, &auth),
                "post": op("Create a key; the only time the key is shown", "201", Some("NewKey"), None, &auth),
            },
            "/admin/v1/keys/{key_id}": {
                "delete": op("Revoke a key", "200", Some("Key"), None, &auth),
            },
            "/admin/v1/customers/{id}/credits": {
                "post": op("Add prepaid credits, once per reference", "201", Some("CreditResult"), Some("TopUp"), &auth),
            },
            "/admin/v1/customers/{id}/balance": {
                "get": op("Credits, quota and rate limit now", "200", Some("Balance"), None, &auth),
            },
            "/admin/v1/usage": {
                "get": op("Usage report from the ledger: ?customer_id, from, to (YYYY-MM-DD or RFC 3339; to exclusive), period (YYYY-MM), group_by=day,route,key, format=json|csv", "200", Some("UsageReport"), None, &auth),
            },
            "/admin/v1/invoices": {
                "get": op("Invoices, finalized and draft: ?customer_id, period, format=json|csv, limit, starting_after", "200", Some("InvoiceList"), None, &auth),
            },
            "/admin/v1/invoices/{id}": {
                "get": op("One invoice: ?format=json|csv", "200", Some("Invoice"), None, &auth),
            },
            "/admin/v1/invoices/close": {
                "post": op("Finalize a period's invoices", "200", Some("Closed"), Some("ClosePeriod"), &auth),
            },
            "/admin/v1/audit": {
                "get": op("Audit log, newest first: ?resource, resource_id, limit, starting_after", "200", Some("AuditList"), None, &auth),
            },
            "/admin/v1/openapi.json": {
                "get": op("This document", "200", None, None, &["401"]),
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}}
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}}}},
                "Plan": {"type": "object", "required": ["id", "name", "rate_limit"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "rate_limit": {"type": "object", "properties": {"requests": {"type": "integer"}, "per": {"type": "string", "enum": ["second", "minute", "hour"]}, "burst": {"type": "integer"}}},
                    "quota": {"type": "object", "nullable": true, "properties": {"calls": {"type": "integer"}, "period": {"type": "string", "enum": ["month"]}}},
                    "overage": {"oneOf": [{"type": "string", "enum": ["block"]}, {"type": "object", "properties": {"price_micros": {"type": "integer"}}}]},
                    "price_per_call_micros": {"type": "integer"},
                    "monthly_fee_micros": {"type": "integer"},
                    "routes": {"type": "array", "items": {"type": "string"}},
                    "max_websockets": {"type": "integer"}}},
                "PlanList": {"type": "object", "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Plan"}}, "has_more": {"type": "boolean"}}},
                "NewCustomer": {"type": "object", "required": ["name", "email", "plan_id"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}, "plan_id": {"type": "string"}}},
                "CustomerPatch": {"type": "object", "properties": {"name": {"type": "string"}, "email": {"type": "string"}, "plan_id": {"type": "string"}}},
                "Customer": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}, "plan_id": {"type": "string"},
                    "billing_anchor_day": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"}}},
                "CustomerList": {"type": "object", "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Customer"}}, "has_more": {"type": "boolean"}}},
                "NewKey": {"type": "object", "properties": {"id": {"type": "string"}, "key": {"type": "string"}, "prefix": {"type": "string"}, "customer_id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}},
                "Key": {"type": "object", "properties": {"id": {"type": "string"}, "customer_id": {"type": "string"}, "prefix": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}, "revoked_at": {"type": "string", "format": "date-time", "nullable": true}}},
                "KeyList": {"type": "object", "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}}, "has_more": {"type": "boolean"}}},
                "TopUp": {"type": "object", "required": ["amount_micros", "reference"], "properties": {"amount_micros": {"type": "integer", "minimum": 1}, "reference": {"type": "string"}}},
                "CreditResult": {"type": "object", "properties": {"customer_id": {"type": "string"}, "amount_micros": {"type": "integer"}, "reference": {"type": "string"}, "credited": {"type": "boolean"}, "credits_micros": {"type": "integer"}}},
                "Balance": {"type": "object", "properties": {
                    "customer_id": {"type": "string"}, "plan_id": {"type": "string"}, "credits_micros": {"type": "integer"},
                    "quota": {"type": "object", "nullable": true, "properties": {"limit": {"type": "integer"}, "used": {"type": "integer"}, "remaining": {"type": "integer"}, "resets_at": {"type": "string", "format": "date-time"}}},
                    "rate_limit": {"type": "object", "properties": {"requests": {"type": "integer"}, "per": {"type": "string"}, "burst": {"type": "integer"}}},
                    "period": {"type": "string"}}},
                "UsageRow": {"type": "object", "properties": {
                    "day": {"type": "string"}, "route": {"type": "string"}, "key_id": {"type": "string"},
                    "calls": {"type": "integer"}, "billable_calls": {"type": "integer"}, "units": {"type": "integer"}, "amount_micros": {"type": "integer"}}},
                "UsageReport": {"type": "object", "properties": {
                    "data": {"type": "array", "items": {"$ref": "#/components/schemas/UsageRow"}}, "has_more": {"type": "boolean"},
                    "totals": {"type": "object", "properties": {"calls": {"type": "integer"}, "billable_calls": {"type": "integer"}, "units": {"type": "integer"}, "amount_micros": {"type": "integer"}}}}},
                "InvoiceLine": {"type": "object", "properties": {
                    "kind": {"type": "string", "enum": ["fee", "usage", "overage", "payg", "proration", "adjustment"]},
                    "description": {"type": "string"}, "route": {"type": "string", "nullable": true}, "source_period": {"type": "string"},
                    "quantity": {"type": "integer"}, "unit_price_micros": {"type": "integer"}, "amount_micros": {"type": "integer"}}},
                "Invoice": {"type": "object", "properties": {
                    "id": {"type": "string"}, "number": {"type": "integer", "nullable": true}, "customer_id": {"type": "string"},
                    "period": {"type": "string"}, "period_start": {"type": "string", "format": "date-time"}, "period_end": {"type": "string", "format": "date-time"},
                    "status": {"type": "string", "enum": ["draft", "finalized"]}, "currency": {"type": "string"},
                    "lines": {"type": "array", "items": {"$ref": "#/components/schemas/InvoiceLine"}},
                    "total_micros": {"type": "integer"}, "credits_applied_micros": {"type": "integer"}, "amount_due_micros": {"type": "integer"},
                    "finalized_at": {"type": "string", "format": "date-time", "nullable": true}}},
                "InvoiceList": {"type": "object", "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Invoice"}}, "has_more": {"type": "boolean"}}},
                "ClosePeriod": {"type": "object", "required": ["period"], "properties": {"period": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}}},
                "Closed": {"type": "object", "properties": {"period": {"type": "string"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Invoice"}}, "has_more": {"type": "boolean"}}},
                "AuditEntry": {"type": "object", "properties": {
                    "id": {"type": "string"}, "at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"},
                    "action": {"type": "string"}, "resource": {"type": "string"}, "resource_id": {"type": "string"},
                    "before": {"nullable": true}, "after": {"nullable": true}}},
                "AuditList": {"type": "object", "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}}, "has_more": {"type": "boolean"}}}
            }
        }
    })
}
