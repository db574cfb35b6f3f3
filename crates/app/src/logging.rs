//! The process log and the access log (`[log]`), on standard output: text
//! (coloured only on a terminal) or one JSON object per line. Lines are
//! handed to a writer thread, so a slow terminal or pipe never holds up a
//! call; when that thread falls more than 128k lines behind, lines are
//! dropped rather than calls slowed. With `[tracing]`, the gateway's spans
//! (target `paygate::trace`) go to an OTLP/HTTP collector, batched by a
//! thread of their own.

use std::io::IsTerminal;
use std::sync::Mutex;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use paygate_config::{LogConfig, LogFormat, TracingConfig};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Flushes the writer thread when taken and dropped (at exit).
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);
/// Exports the spans still batched when shut down (at exit).
static TRACER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the process's logger, and the span exporter when `tracing` is
/// set; the first call wins. `PAYGATE_LOG` (a tracing filter) overrides
/// `level`; access lines are kept whatever the level, as long as `access`
/// is on.
pub fn init(cfg: &LogConfig, tracing: Option<&TracingConfig>) {
    let level = std::env::var("PAYGATE_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| cfg.level.clone());
    let filter = filter(&LogConfig {
        level,
        ..cfg.clone()
    });
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let lines: Boxed = match cfg.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![lines];
    let provider = match tracing.map(exporter) {
        Some(Ok((layer, provider))) => {
            layers.push(layer);
            Some(provider)
        }
        Some(Err(e)) => {
            eprintln!("paygate: [tracing]: {e}; spans are not exported");
            None
        }
        None => None,
    };
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok()
    {
        if let Ok(mut g) = GUARD.lock() {
            *g = Some(guard);
        }
        if let Ok(mut t) = TRACER.lock() {
            *t = provider;
        }
    }
}

/// The OTLP/HTTP exporter and the layer that feeds it the gateway's spans
/// (and nothing else), sampled per trace by `sample_ratio` unless the
/// caller's `traceparent` decided.
fn exporter(t: &TracingConfig) -> Result<(Boxed, SdkTracerProvider), String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!(
            "{}/v1/traces",
            t.otlp_endpoint.trim_end_matches('/')
        ))
        .build()
        .map_err(|e| e.to_string())?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(t.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("paygate"))
        .with_filter(
            Targets::new().with_target(paygate_gateway::trace::TARGET, tracing::Level::TRACE),
        )
        .boxed();
    Ok((layer, provider))
}

/// `level`, with Pingora's own chatter kept to warnings unless named, and
/// the access lines at `info` when they are on.
fn filter(cfg: &LogConfig) -> EnvFilter {
    let mut directives = cfg.level.clone();
    if !directives.contains("pingora") {
        directives.push_str(",pingora=warn");
    }
    if cfg.access {
        directives.push_str(",paygate::access=info");
    }
    // Spans are for the exporter, not for log lines.
    directives.push_str(",paygate::trace=off");
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info,pingora=warn"))
}

/// Writes out what is queued, lines and spans; called once, as the
/// process exits.
pub fn flush() {
    if let Some(provider) = TRACER.lock().ok().and_then(|mut t| t.take()) {
        let _ = provider.shutdown();
    }
    if let Ok(mut g) = GUARD.lock() {
        g.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_survive_a_quiet_level() {
        let cfg = LogConfig {
            format: LogFormat::Json,
            access: true,
            level: "warn".into(),
        };
        let f = filter(&cfg).to_string();
        assert!(f.contains("paygate::access=info"), "{f}");
        assert!(f.contains("pingora=warn"), "{f}");
        let off = LogConfig {
            access: false,
            level: "debug,pingora=info".into(),
            ..cfg
        };
        let f = filter(&off).to_string();
        assert!(!f.contains("paygate::access"), "{f}");
        assert!(!f.contains("pingora=warn"), "{f}");
    }
}
