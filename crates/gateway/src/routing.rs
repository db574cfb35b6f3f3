//! Route table: longest matching path prefix wins, matched on whole path
//! segments (`/v1/prices` matches `/v1/prices/AAPL`, not `/v1/pricesX`).

use std::sync::Arc;

use http::Method;
use paygate_config::{RouteConfig, X402Config};
use paygate_core::{ErrorCode, RateLimit};

use crate::cache::ResponseCache;
use crate::cors::Cors;
use crate::refusal::Refusal;
use crate::upstream::Pool;

#[derive(Debug)]
pub struct Route {
    pub id: Arc<str>,
    pub prefix: String,
    /// The targets of this route's upstream, as configured when the route
    /// was (a reload swaps both together).
    pub upstream: Arc<Pool>,
    pub cost: u32,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    /// Units per started minute of an open WebSocket, after the first.
    pub ws_minute_cost: u32,
    /// Units per data message the upstream sends over a WebSocket.
    pub ws_message_cost: u32,
    /// Calls may be paid with x402 at this price.
    pub x402: Option<RoutePrice>,
    /// Browsers' cross-origin calls (`cors = {...}`).
    pub cors: Option<Cors>,
    /// GET answers kept and served again (`cache = {...}`).
    pub cache: Option<ResponseCache>,
}

/// An x402 route's price, and the rate limit its anonymous payers share
/// (per payer address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePrice {
    pub price_micros: i64,
    pub payer_rate_limit: RateLimit,
}

/// Result of matching a request against the table.
#[derive(Debug, Clone, Copy)]
pub enum RouteMatch<'a> {
    Found(&'a Arc<Route>),
    NoRoute,
    MethodNotAllowed(&'a Arc<Route>),
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Longest prefix first. `Arc` so an admitted call keeps its route cheaply.
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// `upstream_of` maps an upstream name to its pool; config validation
    /// has already checked that every route's upstream exists, and that a
    /// priced route has `[x402]`.
    pub fn new(
        routes: &[RouteConfig],
        x402: Option<&X402Config>,
        upstream_of: impl Fn(&str) -> Option<Arc<Pool>>,
    ) -> Self {
        let mut table: Vec<Arc<Route>> = routes
            .iter()
            .filter_map(|r| {
                let methods: Option<Vec<Method>> = r.methods.as_ref().map(|ms| {
                    ms.iter()
                        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                        .collect()
                });
                Some(Arc::new(Route {
                    id: Arc::from(r.id.as_str()),
                    prefix: r.path_prefix.clone(),
                    upstream: upstream_of(&r.upstream)?,
                    cost: r.cost,
                    cors: r.cors.as_ref().map(|c| Cors::new(c, methods.as_deref())),
                    cache: r.cache.map(|c| ResponseCache::new(&c)),
                    methods,
                    ws_minute_cost: r.ws_minute_cost,
                    ws_message_cost: r.ws_message_cost,
                    x402: match (r.x402_price_micros, x402) {
                        (Some(price_micros), Some(x)) => Some(RoutePrice {
                            price_micros,
                            payer_rate_limit: r.x402_rate_limit(x),
                        }),
                        _ => None,
                    },
                }))
            })
            .collect();
        table.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self { routes: table }
    }

    pub fn find(&self, path: &str, method: &Method) -> RouteMatch<'_> {
        let Some(route) = self.routes.iter().find(|r| prefix_matches(&r.prefix, path)) else {
            return RouteMatch::NoRoute;
        };
        match &route.methods {
            Some(ms) if !ms.contains(method) => RouteMatch::MethodNotAllowed(route),
            _ => RouteMatch::Found(route),
        }
    }
}

/// The route step: 404 `no_route`, 405 `method_not_allowed`. The route's
/// id becomes the `route` label of the call's metrics, a 405's included.
pub fn route(
    table: &RouteTable,
    path: &str,
    method: &Method,
    label: &mut Option<Arc<str>>,
) -> Result<Arc<Route>, Refusal> {
    match table.find(path, method) {
        RouteMatch::Found(r) => {
            *label = Some(Arc::clone(&r.id));
            Ok(Arc::clone(r))
        }
        RouteMatch::NoRoute => Err(Refusal::new(
            ErrorCode::NoRoute,
            "no route matches this path",
        )),
        RouteMatch::MethodNotAllowed(r) => {
            *label = Some(Arc::clone(&r.id));
            Err(Refusal::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take this method",
            ))
        }
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, prefix: &str, methods: Option<&[&str]>) -> RouteConfig {
        RouteConfig {
            id: id.into(),
            path_prefix: prefix.into(),
            upstream: "u".into(),
            cost: 1,
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            ws_minute_cost: 0,
            ws_message_cost: 0,
            x402_price_micros: None,
            x402_rate_limit: None,
            cors: None,
            cache: None,
        }
    }

    fn pools() -> crate::upstream::Upstreams {
        let c = paygate_config::parse(
            "[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:9\"]\n",
            Vec::new(),
        )
        .unwrap();
        crate::upstream::Upstreams::new(&c.upstreams, 0).unwrap()
    }

    fn check(table: &RouteTable, method: Method, path: &str, expected: &str) {
        let got = match table.find(path, &method) {
            RouteMatch::Found(r) => format!("found {}", r.id),
            RouteMatch::NoRoute => "no_route".into(),
            RouteMatch::MethodNotAllowed(r) => format!("405 {}", r.id),
        };
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let up = pools();
        let t = RouteTable::new(
            &[
                route("root", "/", None),
                route("v1", "/v1", None),
                route("prices", "/v1/prices", Some(&["GET"])),
            ],
            None,
            |n| up.by_name(n),
        );
        check(&t, Method::GET, "/v1/prices/AAPL", "found prices");
        check(&t, Method::GET, "/v1/prices", "found prices");
        check(&t, Method::GET, "/v1/pricesX", "found v1");
        check(&t, Method::POST, "/v1/prices/AAPL", "405 prices");
        check(&t, Method::GET, "/other", "found root");
        let t = RouteTable::new(&[route("v1", "/v1", None)], None, |n| up.by_name(n));
        check(&t, Method::GET, "/v2", "no_route");
        check(&t, Method::GET, "/", "no_route");
    }
}
