//! How a running [`crate::App`] is told to stop: by the process's signals,
//! or by a trigger its owner holds (tests, an embedding program).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::watch;

/// What stops a running app.
pub enum Shutdown {
    /// SIGTERM (drain, then stop) or SIGINT (stop now); the gateway also
    /// takes SIGQUIT for Pingora's graceful upgrade.
    Signals,
    /// [`ShutdownTrigger::stop`]: drain, then stop.
    Trigger(ShutdownListener),
}

/// Held by whoever may stop the app; cheap to clone.
#[derive(Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

/// The app's end of a [`ShutdownTrigger`].
#[derive(Clone)]
pub struct ShutdownListener(watch::Receiver<bool>);

impl ShutdownTrigger {
    pub fn new() -> (Self, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Self(Arc::new(tx)), Shutdown::Trigger(ShutdownListener(rx)))
    }

    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl ShutdownListener {
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        // An error means the trigger is gone: nobody can stop us any more
        // than this, so stop.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownListener {
    async fn recv(&self) -> ShutdownSignal {
        self.stopped().await;
        ShutdownSignal::GracefulTerminate
    }
}

/// SIGTERM or SIGINT, for the processes Pingora does not run.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "SIGTERM handler not installed; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl Shutdown {
    /// Resolves when the app should stop (for the roles Pingora does not run).
    pub async fn wait(&self) {
        match self {
            Shutdown::Signals => signal().await,
            Shutdown::Trigger(l) => l.stopped().await,
        }
    }

    /// What Pingora waits on.
    pub(crate) fn into_pingora(self) -> pingora::server::RunArgs {
        match self {
            Shutdown::Signals => pingora::server::RunArgs::default(),
            Shutdown::Trigger(l) => pingora::server::RunArgs {
                shutdown_signal: Box::new(l),
            },
        }
    }
}
