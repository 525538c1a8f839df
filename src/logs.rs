//! Logging for the programs built on this library: tracing to standard error, filtered by
//! `RUST_LOG` (default `info`), as human-readable lines or, for a log collector, one JSON
//! object a line (`--log-format json` or `SORTLINE_LOG_FORMAT=json`). The embedded MQTT broker
//! logs every client that comes and goes at error level, noise to an operator, so it speaks
//! only when `RUST_LOG` asks it to.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The environment variable naming the format when no flag does.
pub const FORMAT_ENV: &str = "SORTLINE_LOG_FORMAT";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    /// One object a line: `timestamp`, `level`, `target`, `fields` (the message and the event's
    /// fields) and, inside a span, `span` with its name and fields (a parcel's `tracking`…).
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("log format {0:?}: text or json")]
pub struct UnknownFormat(String);

impl std::str::FromStr for LogFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<LogFormat, UnknownFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownFormat(other.into())),
        }
    }
}

/// Logs as the environment says (`SORTLINE_LOG_FORMAT`, text by default).
pub fn init() -> LogFormat {
    init_with(None)
}

/// Logs in `format`, or else as the environment says; returns the format in effect. An
/// unknown `SORTLINE_LOG_FORMAT` logs as text, with a warning: a typo must not silence the log.
pub fn init_with(format: Option<LogFormat>) -> LogFormat {
    let from_env = std::env::var(FORMAT_ENV).ok().map(|v| v.parse::<LogFormat>());
    let chosen = match (format, &from_env) {
        (Some(f), _) => f,
        (None, Some(Ok(f))) => *f,
        (None, _) => LogFormat::Text,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttd=off".into());
    match chosen {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
        LogFormat::Json => json(filter, std::io::stderr).init(),
    }
    if let (None, Some(Err(e))) = (format, from_env) {
        tracing::warn!("{FORMAT_ENV}: {e}; logging as text");
    }
    chosen
}

/// The JSON format: the event's current span only (the parcel's), not the list of every span
/// it sits in, which would repeat it.
pub(crate) fn json<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt().json().with_span_list(false).with_env_filter(filter).with_writer(writer).finish()
}
