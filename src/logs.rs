//! Logging for the programs built on this library: tracing to standard error, filtered by
//! `RUST_LOG` (default `info`). The embedded MQTT broker logs every client that comes and goes
//! at error level, noise to an operator, so it speaks only when `RUST_LOG` asks it to.

pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
