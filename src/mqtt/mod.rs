//! Monitoring and steering over MQTT (`docs/mqtt.md`): topics under
//! `sortline/v1/<site>/<line>/`, a publisher whose events go through a durable outbox
//! ([`outbox`]) before they are published, commands parsed and validated in [`command`]
//! (pure), the platform intake of declaration lists and targeting ([`intake`]), and an
//! embedded broker for the demo and tests ([`broker`]).
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
pub mod intake;
pub mod outbox;
pub mod payload;
pub mod sparkplug;
pub mod wiring;

pub use client::{MqttSink, MqttStats, Publisher};

use std::path::Path;
use std::sync::Arc;
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
    /// TLS to the broker ([`tls_config`]); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Take declaration lists and targeting from the platform on `platform/manifest` and
    /// `platform/target` ([`intake`]).
    pub platform_intake: bool,
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
    pub fn inspection(&self) -> String {
        format!("{}inspection", self.prefix)
    }
    pub fn metrics(&self) -> String {
        format!("{}metrics", self.prefix)
    }
    /// Every signed checkpoint of the audit chain, retained: the site keeps them as anchors.
    pub fn checkpoint(&self) -> String {
        format!("{}audit/checkpoint", self.prefix)
    }
    /// The intake's acknowledgement of each platform message it took: stored (or refused, on
    /// record), so the platform may stop resending it.
    pub fn platform_acks(&self) -> String {
        format!("{}platform/ack", self.prefix)
    }
    /// Where the platform publishes declaration lists (one, or a JSON array of them).
    pub fn platform_manifests(&self) -> String {
        format!("{}platform/manifest", self.prefix)
    }
    /// Where the platform publishes targeting instructions.
    pub fn platform_targets(&self) -> String {
        format!("{}platform/target", self.prefix)
    }
    pub fn feed_of(&self, topic: &str) -> Option<intake::Feed> {
        match topic.strip_prefix(self.prefix.as_str())? {
            "platform/manifest" => Some(intake::Feed::Manifests),
            "platform/target" => Some(intake::Feed::Targets),
            _ => None,
        }
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

/// A TLS client configuration that trusts the CA certificates in the PEM file `ca_file` (and
/// nothing else) and, given a certificate chain and its private key (PEM), authenticates with
/// them. The broker's name (or IP address) must be in its certificate.
pub fn tls_config(ca_file: &Path, client: Option<(&Path, &Path)>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let shown = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let certs = |p: &Path| {
        CertificateDer::pem_file_iter(p)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| shown(p, &e))
            .and_then(|c| if c.is_empty() { Err(shown(p, &"no certificate in it")) } else { Ok(c) })
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_file)? {
        roots.add(cert).map_err(|e| shown(ca_file, &e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| shown(key_file, &e))?;
            builder.with_client_auth_cert(certs(cert_file)?, key).map_err(|e| shown(cert_file, &e))?
        }
    };
    Ok(Arc::new(config))
}
