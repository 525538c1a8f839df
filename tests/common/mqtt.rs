//! The MQTT tests' fixtures: a proxy to cut, a subscriber on the broker, a parcel report.

use serde_json::Value;
use sortline::core::{Lane, Millis, ParcelId, ParcelReport, TrackingId};
use std::net::SocketAddr;
use std::path::Path;
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
        shadow: false,
        lost: false,
        held_by_plc: None,
        image_seq: None,
        entered_at: Millis(u64::from(tracking) * 100),
        decided_at: Some(Millis(u64::from(tracking) * 100 + 40)),
        done_at: Millis(u64::from(tracking) * 100 + 900),
    }
}

/// A Mosquitto broker of its own on a free loopback port, stopped when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// `None` when Mosquitto is not installed here (said on stderr); under CI that fails.
    pub async fn start() -> Option<Mosquitto> {
        Mosquitto::start_with(|_| String::new()).await
    }

    /// With `listener(dir)`'s lines added to its configuration (files it names go in `dir`).
    pub async fn start_with(listener: impl FnOnce(&Path) -> String) -> Option<Mosquitto> {
        let Some(bin) = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            assert!(std::env::var_os("CI").is_none(), "CI must run the Mosquitto interop tests: install mosquitto");
            eprintln!("Mosquitto interop NOT RUN: no mosquitto binary (apt-get install mosquitto)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        let extra = listener(dir.path());
        let text = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}");
        std::fs::write(&conf, text).unwrap();
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut broker = Mosquitto { child, addr, _dir: dir };
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return Some(broker);
            }
            assert!(broker.child.try_wait().unwrap().is_none(), "mosquitto exited at start");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("mosquitto did not listen on {addr}");
    }
}

impl Mosquitto {
    /// Freezes the broker (SIGSTOP) or lets it go on (SIGCONT): its sockets stay open, nothing
    /// moves, as a broker stalled on its disk or a VM paused.
    pub fn signal(&self, stop: bool) {
        let sig = if stop { "-STOP" } else { "-CONT" };
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
