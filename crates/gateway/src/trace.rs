//! OpenTelemetry spans of a call (`[tracing]`): `call` (the whole call,
//! continuing the caller's `traceparent` if it sent one), `admission` and
//! `store` inside it, and `upstream`, whose context goes to the upstream as
//! a W3C `traceparent`. Spans have the target [`TARGET`]; only the OTLP
//! layer listens to it, so without `[tracing]` none is made.

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use pingora::http::RequestHeader;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span paygate exports.
pub const TARGET: &str = "paygate::trace";

/// The `call` span of a request, a child of the caller's `traceparent`.
pub fn call(req: &RequestHeader, request_id: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "call",
        otel.kind = "server",
        http.request.method = req.method.as_str(),
        url.path = req.uri.path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        paygate.request_id = request_id,
        paygate.decision = tracing::field::Empty,
        paygate.customer = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(&req.headers))
    });
    let _ = span.set_parent(parent);
    span
}

pub fn admission(call: &Span) -> Span {
    tracing::info_span!(target: TARGET, parent: call, "admission")
}

/// The store's decision, inside whatever span is current (`admission`).
pub fn store() -> Span {
    tracing::info_span!(target: TARGET, "store", otel.kind = "client")
}

/// The call to the upstream; its context goes out as `traceparent`.
pub fn upstream(call: &Span, up: &mut RequestHeader) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: call,
        "upstream",
        otel.kind = "client",
        http.response.status_code = tracing::field::Empty,
    );
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(up));
    });
    span
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut RequestHeader);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // A header the client sent under the same name is replaced.
        let _ = self.0.insert_header(key.to_string(), value);
    }
}
