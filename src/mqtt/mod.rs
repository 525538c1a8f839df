//! Monitoring and steering over MQTT (`docs/mqtt.md`): topics under
//! `sortline/v1/<site>/<line>/`, a publisher whose events go through a durable outbox
//! ([`outbox`]) before they are published, commands parsed and validated in [`command`]
//! (pure), and an embedded broker for the demo and tests ([`broker`]).
//!
//! The publisher ([`client::Publisher`]) is one tokio task; each connection's rumqttc event
//! loop is polled by a task of its own and never awaited from the publisher (the request
//! channel is bounded: awaiting the client inside the loop that polls it deadlocks). A new
//! connection is a new client and event loop: rumqttc's memory-only in-flight queue is dropped
//! and the outbox, which is durable, is replayed from its oldest unacknowledged event instead.
//!
//! [`Settings::output`] switches the monitoring output to Sparkplug B ([`sparkplug`]): the
//! outbox holds the same JSON events, rendered to Sparkplug as they are published.

pub mod broker;
pub mod client;
pub mod command;
pub mod outbox;
pub mod payload;
pub mod sparkplug;
pub mod wiring;

pub use client::{MqttSink, MqttStats, Publisher};

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("{0}")]
    Outbox(#[from] outbox::OutboxError),
    #[error("broker: {0}")]
    Broker(String),
    #[error("the MQTT publisher stopped unexpectedly")]
    Stopped,
}

/// Everything the publisher needs to reach its broker and shape its traffic.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `host:port`.
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    /// `false`: the broker keeps the subscriptions (and queued commands) across reconnects.
    pub clean_session: bool,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub metrics_every: Duration,
    pub outbox_capacity: u64,
    /// QoS 1 publishes awaiting their PUBACK at once.
    pub inflight: u16,
    pub topics: Topics,
    pub output: Output,
}

/// What the monitoring topics carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `sortline/v1/<site>/<line>/…` JSON (the default).
    Json,
    /// `spBv1.0/…` Sparkplug B; commands and their replies stay JSON.
    SparkplugB(sparkplug::Config),
}

/// The topic tree of one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    site: String,
    line: String,
}

impl Topics {
    /// `site` and `line` are single topic levels: `/`, `+`, `#` and NUL become `_`.
    pub fn new(site: &str, line: &str) -> Topics {
        let level =
            |s: &str| s.chars().map(|c| if matches!(c, '/' | '+' | '#' | '\0') { '_' } else { c }).collect::<String>();
        let (site, line) = (level(site), level(line));
        Topics { prefix: format!("sortline/v1/{site}/{line}/"), site, line }
    }
    pub fn site_line(&self) -> (&str, &str) {
        (&self.site, &self.line)
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn state(&self) -> String {
        format!("{}state", self.prefix)
    }
    pub fn parcel(&self) -> String {
        format!("{}parcel", self.prefix)
    }
    pub fn alarm(&self) -> String {
        format!("{}alarm", self.prefix)
    }
    pub fn metrics(&self) -> String {
        format!("{}metrics", self.prefix)
    }
    /// Subscribed by the line: every command.
    pub fn commands(&self) -> String {
        format!("{}cmd/+", self.prefix)
    }
    pub fn reply(&self, command: &str) -> String {
        format!("{}cmd/{command}/result", self.prefix)
    }
    /// The command name of a topic under `cmd/`, if it is one (replies are not).
    pub fn command_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.strip_prefix(self.prefix.as_str())?.strip_prefix("cmd/").filter(|n| !n.contains('/'))
    }
}
