//! The embedded broker (rumqttd) for the demo and tests: MQTT 3.1.1 on 127.0.0.1, no TLS, no
//! authentication, on a port chosen at run time.

use super::MqttError;
use std::collections::HashMap;
use std::net::SocketAddr;

/// A broker running on its own threads for the rest of the process (rumqttd has no stop).
pub struct Embedded {
    addr: SocketAddr,
}

impl Embedded {
    pub fn start() -> Result<Embedded, MqttError> {
        // rumqttd binds the address itself and does not say which port it got: take a free
        // one from the kernel and hand it over. Another process could take it in between;
        // the connection then fails and says so.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| MqttError::Broker(e.to_string()))?;
        Embedded::start_on(addr)
    }

    /// A broker on `addr` (`sortline-sim line`'s, on the address its configuration names).
    pub fn start_on(addr: SocketAddr) -> Result<Embedded, MqttError> {
        // A port taken (another broker) is refused here, not probed below as if it were ours.
        drop(std::net::TcpListener::bind(addr).map_err(|e| MqttError::Broker(format!("{addr}: {e}")))?);
        let server = rumqttd::ServerSettings {
            name: "v4-embedded".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 5000,
                // A platform batch of declarations fits (docs/mqtt.md, "Platform intake").
                max_payload_size: super::intake::MAX_PAYLOAD + 64 * 1024,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: 64,
                max_outgoing_packet_count: 1000,
                max_segment_size: 8 * 1024 * 1024,
                max_segment_count: 10,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(HashMap::from([("embedded".to_string(), server)])),
            v5: None,
            ws: None,
            cluster: None,
            console: None,
            bridge: None,
            prometheus: None,
            metrics: None,
        };
        let mut broker = rumqttd::Broker::new(config);
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(|e| MqttError::Broker(e.to_string()))?;
        // rumqttd binds on its own thread and says nothing when it is listening: probe the port
        // (bounded) so that no client's first connect is refused.
        let ready = (0..500).any(|_| {
            let up = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(100)).is_ok();
            if !up {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            up
        });
        if !ready {
            return Err(MqttError::Broker(format!("the embedded broker is not listening on {addr}")));
        }
        tracing::info!(%addr, "embedded MQTT broker started");
        Ok(Embedded { addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
