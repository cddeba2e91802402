//! Graceful shutdown: the first SIGINT or SIGTERM asks the service to stop taking work,
//! finish what is in flight, commit and flush; a second one exits at once.

use tokio_util::sync::CancellationToken;

/// Exit status after a second signal cut the shutdown short (128 + SIGINT).
const FORCED_EXIT: i32 = 130;

/// A token cancelled on the first SIGINT or SIGTERM. Must be called inside a tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight work (signal again to exit now)");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without finishing in-flight work");
        std::process::exit(FORCED_EXIT);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM, only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
