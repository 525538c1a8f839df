//! The MQTT tests' fixtures: a proxy to cut, a subscriber on the broker, a parcel report.

use serde_json::Value;
use sortline::core::{Lane, Millis, ParcelId, ParcelReport, TrackingId};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub const GUARD: Duration = Duration::from_secs(20);

/// A TCP proxy in front of the broker that the test can cut (every connection dropped, no
/// DISCONNECT: the broker fires the last will) and restore on the same port.
pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Proxy { addr, target, task: Some(tokio::spawn(Self::serve(listener, target))) }
    }

    async fn serve(listener: TcpListener, target: SocketAddr) {
        // Dropped with this task: every connection goes with it.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }

    pub fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(Self::serve(listener, self.target)));
    }
}

/// A subscriber on the broker itself (not through the proxy), every message on a channel.
pub struct Subscriber {
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

pub async fn subscriber(broker: SocketAddr, id: &str, filter: &str) -> Subscriber {
    let mut options = rumqttc::MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    // It also publishes for the tests, platform batches among them.
    options.set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.unwrap();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            match event {
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let message = (p.topic, p.payload.to_vec());
                    if tx.send(message).is_err() {
                        break;
                    }
                }
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    let _ = subscribed_tx.take().map(|s| s.send(()));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(GUARD, subscribed).await.expect("no SUBACK").unwrap();
    Subscriber { client, rx }
}

impl Subscriber {
    /// The next message whose topic ends with `suffix` (others are skipped), as JSON (null
    /// when it is not).
    pub async fn next(&mut self, suffix: &str) -> Value {
        serde_json::from_slice(&self.next_raw(suffix).await.1).unwrap_or(Value::Null)
    }

    /// Every message that has arrived so far, as JSON, without waiting.
    pub fn drain(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.rx.try_recv().ok())
            .map(|(_, payload)| serde_json::from_slice(&payload).unwrap_or(Value::Null))
            .collect()
    }

    /// The next message whose topic ends with `suffix`: its topic and payload.
    pub async fn next_raw(&mut self, suffix: &str) -> (String, Vec<u8>) {
        tokio::time::timeout(GUARD, async {
            loop {
                let (topic, payload) = self.rx.recv().await.expect("subscriber gone");
                if topic.ends_with(suffix) {
                    return (topic, payload);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing on …{suffix}"))
    }
}

pub fn report(tracking: u32) -> ParcelReport {
    ParcelReport {
        parcel: ParcelId { tracking: TrackingId(tracking), boot: 1, serial: u64::from(tracking) },
        waybill: None,
        channel: None,
        reasons: vec![],
        decided: Some(Lane::Hold),
        confirmed: Some(Lane::Hold),
        lost: false,
        held_by_plc: None,
        image_seq: None,
        entered_at: Millis(u64::from(tracking) * 100),
        decided_at: Some(Millis(u64::from(tracking) * 100 + 40)),
        done_at: Millis(u64::from(tracking) * 100 + 900),
    }
}
