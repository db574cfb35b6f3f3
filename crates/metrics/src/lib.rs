//! Every Prometheus metric of SPEC §6, in one registry owned by the process
//! and handed to each component, so tests can make their own.
//!
//! No label ever carries a key, a token or a customer's personal data: labels
//! are route ids, plan ids, status codes and decision names.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub decisions: IntCounterVec,
    pub request_duration: Histogram,
    pub gateway_overhead: Histogram,
    pub store_errors: IntCounter,
    pub usage_events: IntCounterVec,
    pub usage_backlog: IntGauge,
    /// Store counters minus ledger, summed in absolute value over customers.
    pub usage_drift: IntGaugeVec,
    /// JWKS fetches per JWT issuer (`outcome`: ok or error).
    pub jwks_refresh: IntCounterVec,
    /// x402 payments that reached settlement, by how it ended.
    pub x402_payments: IntCounterVec,
    /// Seconds until each served certificate expires (`name`: the listener
    /// or server name).
    pub tls_cert_expiry: IntGaugeVec,
    /// Certificate re-reads on SIGHUP, by outcome (ok, error).
    pub tls_reloads: IntCounterVec,
    /// Configuration reloads on SIGHUP, by outcome (ok, error).
    pub config_reloads: IntCounterVec,
    /// Times the store was found to have lost its data and every
    /// customer's counters were rebuilt from the ledger.
    pub store_rebuilds: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let buckets = vec![
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "paygate_requests_total",
                    "Calls answered, by route, plan and status",
                ),
                &["route", "plan", "status"],
            )?,
            decisions: IntCounterVec::new(
                Opts::new("paygate_decisions_total", "Admission decisions"),
                &["decision"],
            )?,
            request_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "paygate_request_duration_seconds",
                    "Whole call, as the client sees it",
                )
                .buckets(buckets.clone()),
            )?,
            gateway_overhead: Histogram::with_opts(
                HistogramOpts::new(
                    "paygate_gateway_overhead_seconds",
                    "Time spent in paygate itself before the upstream is called",
                )
                .buckets(buckets),
            )?,
            store_errors: IntCounter::new("paygate_store_errors_total", "Failed store operations")?,
            usage_events: IntCounterVec::new(
                Opts::new("paygate_usage_events_total", "Usage events by state"),
                &["state"],
            )?,
            usage_backlog: IntGauge::new(
                "paygate_usage_backlog",
                "Usage events not yet in the ledger",
            )?,
            usage_drift: IntGaugeVec::new(
                Opts::new(
                    "paygate_usage_drift",
                    "Store counters minus the ledger, in absolute value summed over customers, \
                     for this period (counter: quota_units or credits_micros)",
                ),
                &["counter"],
            )?,
            jwks_refresh: IntCounterVec::new(
                Opts::new(
                    "paygate_jwks_refresh_total",
                    "JWKS fetches per JWT issuer, by outcome (ok, error)",
                ),
                &["issuer", "outcome"],
            )?,
            x402_payments: IntCounterVec::new(
                Opts::new(
                    "paygate_x402_payments_total",
                    "x402 payments that reached settlement, by state \
                     (settled, failed, settlement_unknown)",
                ),
                &["state"],
            )?,
            tls_cert_expiry: IntGaugeVec::new(
                Opts::new(
                    "paygate_tls_cert_expiry_seconds",
                    "Seconds until a served TLS certificate expires, by name \
                     (gateway, admin, or an SNI server name)",
                ),
                &["name"],
            )?,
            tls_reloads: IntCounterVec::new(
                Opts::new(
                    "paygate_tls_reloads_total",
                    "Certificate re-reads on SIGHUP, by outcome (ok, error)",
                ),
                &["outcome"],
            )?,
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "paygate_config_reloads_total",
                    "Configuration reloads on SIGHUP (routes, upstreams, JWT issuers, x402), \
                     by outcome (ok, error: refused, the previous configuration stays)",
                ),
                &["outcome"],
            )?,
            store_rebuilds: IntCounter::new(
                "paygate_store_rebuilds_total",
                "Times the store had lost its data (its epoch marker was gone) and every \
                 customer's counters were rebuilt from the ledger",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.decisions.clone()))?;
        m.registry.register(Box::new(m.request_duration.clone()))?;
        m.registry.register(Box::new(m.gateway_overhead.clone()))?;
        m.registry.register(Box::new(m.store_errors.clone()))?;
        m.registry.register(Box::new(m.usage_events.clone()))?;
        m.registry.register(Box::new(m.usage_backlog.clone()))?;
        m.registry.register(Box::new(m.usage_drift.clone()))?;
        m.registry.register(Box::new(m.jwks_refresh.clone()))?;
        m.registry.register(Box::new(m.x402_payments.clone()))?;
        m.registry.register(Box::new(m.tls_cert_expiry.clone()))?;
        m.registry.register(Box::new(m.tls_reloads.clone()))?;
        m.registry.register(Box::new(m.config_reloads.clone()))?;
        m.registry.register(Box::new(m.store_rebuilds.clone()))?;
        Ok(m)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
