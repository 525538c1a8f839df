//! The host's scanner link against the simulated scanner, over a real pseudo-terminal and
//! over TCP on 127.0.0.1 port 0: every byte the device wrote arrives, in order, through noise,
//! split frames, duplicates and disconnects; silence is raised once and cleared by bytes.

use sortline::scanner::link::{LinkEvent, Parity, ScannerLink, ScannerLinkConfig, ScannerLinkError, Transport};
use sortline_sim as sim;
use sortline_sim::scanner::{ScannerFaults, SimFraming, SimScanner, SimScannerConfig};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A guard against a hung test, never a synchronisation.
const GUARD: Duration = Duration::from_secs(10);

/// The scanner's readings of a simulated run, in order.
fn scans(parcels: u32, seed: u64) -> Vec<sim::SimEvent> {
    let mut world = sim::World::new(sim::Scenario::demo(parcels, seed), sim::Geometry::demo());
    let mut out = Vec::new();
    while let Some(t) = world.next_event_time() {
        world.advance(t, &mut out);
    }
    let scans: Vec<_> = out.into_iter().map(|(_, e)| e).filter(|e| matches!(e, sim::SimEvent::Scan { .. })).collect();
    assert!(scans.len() >= parcels as usize * 9 / 10);
    scans
}

fn device(faults: ScannerFaults) -> SimScannerConfig {
    SimScannerConfig {
        framing: SimFraming {
            start: vec![0x02],
            stop: vec![0x03],
            delimiter: b";".to_vec(),
            no_read: "NoRead".into(),
            trigger_first: true,
            heartbeat: None,
        },
        faults,
        heartbeat_every: None,
    }
}

fn noisy(seed: u64) -> ScannerFaults {
    ScannerFaults { seed, noise: 0.2, noise_max_bytes: 12, split: 0.3, duplicate: 0.05, disconnect: 0.0 }
}

fn link_config(transport: Transport, silence_timeout_ms: Option<u64>) -> ScannerLinkConfig {
    ScannerLinkConfig {
        transport,
        connect_timeout_ms: 1_000,
        backoff_initial_ms: 10,
        backoff_max_ms: 200,
        silence_timeout_ms,
    }
}

/// A running link: its events, and its stop.
struct Running {
    events: mpsc::Receiver<LinkEvent>,
    stats: std::sync::Arc<std::sync::Mutex<sortline::scanner::link::ScannerLinkStats>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn start(link: ScannerLink, events: mpsc::Receiver<LinkEvent>) -> Running {
    let stats = link.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(link.run(async {
        let _ = stopped.await;
    }));
    Running { events, stats, stop: Some(stop), task }
}

impl Running {
    async fn next(&mut self) -> LinkEvent {
        tokio::time::timeout(GUARD, self.events.recv()).await.expect("no link event in time").expect("link ended")
    }

    /// Collects Bytes events until `n` bytes have come; any other event fails the test.
    async fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.next().await {
                LinkEvent::Bytes(b) => got.extend(b),
                other => panic!("{other:?} after {} of {n} bytes", got.len()),
            }
        }
        got
    }

    fn stats(&self) -> sortline::scanner::link::ScannerLinkStats {
        self.stats.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(GUARD, self.task).await.expect("link did not stop").unwrap();
    }
}

/// Sends `events` through the device and checks the link delivered exactly what it wrote.
async fn through(scanner: &SimScanner, link: &mut Running, events: &[sim::SimEvent]) -> usize {
    for e in events {
        assert!(scanner.send(e));
    }
    assert!(scanner.wait_idle(GUARD).await);
    let written = scanner.take_written();
    let got = link.bytes(written.len()).await;
    assert_eq!(got, written);
    written.len()
}

#[tokio::test]
async fn serial_over_a_pty_delivers_every_byte_in_order() {
    let scanner = SimScanner::pty(device(noisy(1))).unwrap();
    let path = scanner.slave_path().unwrap().to_path_buf();
    let transport = Transport::Serial { path, baud: 9600, parity: Parity::None, data_bits: 8, stop_bits: 1 };
    let (tx, rx) = mpsc::channel(16);
    let mut link = start(ScannerLink::bind(link_config(transport, None), tx).await.unwrap(), rx);
    assert_eq!(link.next().await, LinkEvent::Up);

    let scans = scans(300, 1);
    let (first, second) = scans.split_at(scans.len() / 2);
    let mut total = through(&scanner, &mut link, first).await;
    // On a serial line a "disconnect" is a burst of garbage; the link stays up.
    scanner.disconnect();
    total += through(&scanner, &mut link, second).await;

    let s = scanner.stats();
    assert!(s.noise_bytes > 0 && s.splits > 0 && s.duplicates > 0 && s.disconnects == 1, "{s:?}");
    assert_eq!(s.bytes_dropped, 0);
    let l = link.stats();
    assert_eq!((l.connects, l.disconnects, l.bytes), (1, 0, total as u64));
    link.stop().await;
}

#[tokio::test]
async fn tcp_client_reconnects_after_the_scanner_drops_it_and_the_stream_resumes() {
    let scanner = SimScanner::tcp_listen(device(noisy(2))).await.unwrap();
    let transport = Transport::TcpConnect { addr: scanner.addr().unwrap().to_string() };
    let (tx, rx) = mpsc::channel(16);
    let mut link = start(ScannerLink::bind(link_config(transport, None), tx).await.unwrap(), rx);
    assert_eq!(link.next().await, LinkEvent::Up);
    assert!(scanner.wait_connections(1, GUARD).await);

    let scans = scans(200, 2);
    let (first, second) = scans.split_at(scans.len() / 2);
    let mut total = through(&scanner, &mut link, first).await;
    scanner.disconnect();
    assert_eq!(link.next().await, LinkEvent::Down(ScannerLinkError::Closed));
    assert_eq!(link.next().await, LinkEvent::Up);
    assert!(scanner.wait_connections(2, GUARD).await);
    total += through(&scanner, &mut link, second).await;

    let l = link.stats();
    assert_eq!((l.connects, l.disconnects, l.bytes), (2, 1, total as u64));
    assert_eq!(scanner.stats().bytes_dropped, 0);
    link.stop().await;
}

#[tokio::test]
async fn tcp_server_takes_the_scanner_again_after_it_reconnects() {
    let (tx, rx) = mpsc::channel(16);
    let transport = Transport::TcpListen { addr: "127.0.0.1:0".parse().unwrap() };
    let bound = ScannerLink::bind(link_config(transport, None), tx).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let mut link = start(bound, rx);
    // A scanner in client mode connects when it first has something to say.
    let scanner = SimScanner::tcp_connect(device(noisy(3)), addr);

    let scans = scans(200, 3);
    let (first, second) = scans.split_at(scans.len() / 2);
    for e in first {
        assert!(scanner.send(e));
    }
    assert_eq!(link.next().await, LinkEvent::Up);
    assert!(scanner.wait_idle(GUARD).await);
    let written = scanner.take_written();
    assert_eq!(link.bytes(written.len()).await, written);

    scanner.disconnect();
    for e in second {
        assert!(scanner.send(e));
    }
    // The old socket's end and the new one's arrival race: either way, one Down then Up.
    match link.next().await {
        LinkEvent::Down(ScannerLinkError::Closed | ScannerLinkError::Replaced { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(link.next().await, LinkEvent::Up);
    assert!(scanner.wait_idle(GUARD).await);
    let written = scanner.take_written();
    assert_eq!(link.bytes(written.len()).await, written);

    assert_eq!(scanner.stats().connections, 2);
    let l = link.stats();
    assert_eq!((l.connects, l.disconnects), (2, 1));
    link.stop().await;
}

#[tokio::test]
async fn a_silent_scanner_is_raised_once_and_cleared_by_bytes() {
    let scanner = SimScanner::tcp_listen(device(ScannerFaults::default())).await.unwrap();
    let transport = Transport::TcpConnect { addr: scanner.addr().unwrap().to_string() };
    let (tx, rx) = mpsc::channel(16);
    let mut link = start(ScannerLink::bind(link_config(transport, Some(100)), tx).await.unwrap(), rx);
    assert_eq!(link.next().await, LinkEvent::Up);
    assert!(scanner.wait_connections(1, GUARD).await);

    let scans = scans(5, 4);
    through(&scanner, &mut link, &scans[..1]).await;
    assert_eq!(link.next().await, LinkEvent::Silent { for_ms: 100 });
    // Raised once: several silence timeouts pass without another event.
    assert!(tokio::time::timeout(Duration::from_millis(350), link.events.recv()).await.is_err());
    assert_eq!(link.stats().silences, 1);

    assert!(scanner.send(&scans[1]));
    assert_eq!(link.next().await, LinkEvent::Alive);
    assert!(scanner.wait_idle(GUARD).await);
    let written = scanner.take_written();
    assert_eq!(link.bytes(written.len()).await, written);
    assert_eq!(link.next().await, LinkEvent::Silent { for_ms: 100 });
    assert_eq!(link.stats().silences, 2);
    link.stop().await;
}
