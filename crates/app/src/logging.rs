//! The process log and the access log (`[log]`), on standard output: text
//! (coloured only on a terminal) or one JSON object per line. Lines are
//! handed to a writer thread, so a slow terminal or pipe never holds up a
//! call; when that thread falls more than 128k lines behind, lines are
//! dropped rather than calls slowed.

use std::io::IsTerminal;
use std::sync::Mutex;

use paygate_config::{LogConfig, LogFormat};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Flushes the writer thread when taken and dropped (at exit).
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the process's logger; the first call wins. `PAYGATE_LOG` (a
/// tracing filter) overrides `level`; access lines are kept whatever the
/// level, as long as `access` is on.
pub fn init(cfg: &LogConfig) {
    let level = std::env::var("PAYGATE_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| cfg.level.clone());
    let filter = filter(&LogConfig {
        level,
        ..cfg.clone()
    });
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match cfg.format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if installed.is_ok() {
        if let Ok(mut g) = GUARD.lock() {
            *g = Some(guard);
        }
    }
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
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info,pingora=warn"))
}

/// Writes out what is queued; called once, as the process exits.
pub fn flush() {
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
