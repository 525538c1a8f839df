//! The simulated customs platform's side of the list intake, as docs/mqtt.md asks of a real one:
//! lists go out in batches (a JSON array a message), at most a window of them unacknowledged at
//! once, and each list is sent again until the intake's acknowledgement on `…/platform/ack`
//! names it, after a timeout that doubles with each attempt. The broker's PUBACK proves nothing
//! here: a broker that queued the message and then dropped it (Mosquitto beyond
//! `max_queued_messages`), restarted or stalled has acknowledged it too.

use super::DemoError;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use sortline::clock;
use sortline::manifest::Declaration;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How the platform paces itself.
#[derive(Clone, Debug)]
pub struct Pacing {
    /// Lists in one message.
    pub batch: usize,
    /// Lists sent and not yet acknowledged, at most.
    pub window: usize,
    /// Wait for an acknowledgement before the first resend; doubled at each attempt.
    pub ack_timeout: Duration,
    pub ack_timeout_max: Duration,
    /// Give up (an error) when not every list is acknowledged by then.
    pub limit: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            batch: 100,
            window: 400,
            ack_timeout: Duration::from_secs(5),
            ack_timeout_max: Duration::from_secs(60),
            limit: Duration::from_secs(300),
        }
    }
}

/// What the platform saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlatformReport {
    pub lists: u64,
    /// Messages published, resends included.
    pub messages: u64,
    /// Lists sent again for want of an acknowledgement.
    pub resent: u64,
    /// Acknowledgements of lists acknowledged already (a resend's, a redelivery's).
    pub duplicate_acks: u64,
    /// Lists the intake refused (acknowledged as such: not sent again).
    pub refused: u64,
}

#[derive(Deserialize)]
struct Ack {
    #[serde(default)]
    lists: Vec<ListAck>,
}

#[derive(Deserialize)]
struct ListAck {
    waybill: String,
    version: u64,
    status: String,
}

/// One list not yet acknowledged.
struct Pending {
    body: Box<serde_json::value::RawValue>,
    /// When it was last sent (ms since start) and how often.
    sent_at_ms: Option<u64>,
    attempts: u32,
}

/// Publishes every list on `lists_topic` of `broker` and returns once the intake has
/// acknowledged each one on `acks_topic`.
pub async fn publish(
    broker: &str,
    lists_topic: String,
    acks_topic: String,
    declarations: Vec<Declaration>,
    pacing: &Pacing,
) -> Result<PlatformReport, DemoError> {
    let failed = |detail: String| DemoError::Sim { what: "the simulated platform's publishing", detail };
    let (host, port) = broker.rsplit_once(':').ok_or_else(|| failed(format!("broker {broker:?}")))?;
    let port: u16 = port.parse().map_err(|_| failed(format!("broker {broker:?}")))?;
    let mut options = MqttOptions::new("sim-platform", host, port);
    options.set_keep_alive(Duration::from_secs(10)).set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut report = PlatformReport { lists: declarations.len() as u64, ..PlatformReport::default() };
    let mut pending: BTreeMap<(String, u64), Pending> = BTreeMap::new();
    let mut order: VecDeque<(String, u64)> = VecDeque::new();
    for d in &declarations {
        let key = (d.waybill.to_string(), d.version);
        let body = serde_json::value::to_raw_value(d).map_err(|e| failed(e.to_string()))?;
        pending.insert(key.clone(), Pending { body, sent_at_ms: None, attempts: 0 });
        order.push_back(key);
    }
    let started = clock::Stopwatch::start();
    let mut subscribed = false;
    while !pending.is_empty() {
        if started.elapsed() > pacing.limit {
            return Err(failed(format!(
                "{} of {} lists unacknowledged after {:?}",
                pending.len(),
                report.lists,
                pacing.limit
            )));
        }
        if subscribed {
            send_due(&client, &lists_topic, &mut pending, &mut order, pacing, started.elapsed_ms(), &mut report);
        }
        let polled = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
        match polled {
            Err(_) => {}
            // Subscribed afresh on every connection (a clean session forgets it): only then
            // can an acknowledgement reach us.
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                subscribed = false;
                if let Err(e) = client.try_subscribe(acks_topic.clone(), QoS::AtLeastOnce) {
                    // Unsubscribed, the platform sees no acknowledgement and resends until
                    // the next connection subscribes again.
                    tracing::warn!(error = %e, "platform: subscribing to the acknowledgements failed");
                }
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subscribed = true,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == acks_topic => {
                let Ok(ack) = serde_json::from_slice::<Ack>(&p.payload) else { continue };
                for list in ack.lists {
                    match pending.remove(&(list.waybill, list.version)) {
                        Some(_) if list.status == "refused" => report.refused += 1,
                        Some(_) => {}
                        None => report.duplicate_acks += 1,
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                // rumqttc connects again on the next poll; what was in flight is resent by
                // its timeout.
                tracing::debug!(error = %e, "simulated platform: broker connection lost");
                subscribed = false;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(report)
}

/// Sends, in batches, the lists never sent and those whose acknowledgement is overdue, keeping
/// at most `pacing.window` lists in flight.
fn send_due(
    client: &AsyncClient,
    topic: &str,
    pending: &mut BTreeMap<(String, u64), Pending>,
    order: &mut VecDeque<(String, u64)>,
    pacing: &Pacing,
    now_ms: u64,
    report: &mut PlatformReport,
) {
    let timeout_ms = |attempts: u32| {
        let ms = pacing.ack_timeout.as_millis() as u64;
        ms.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(pacing.ack_timeout_max.as_millis() as u64)
    };
    let in_flight = |p: &Pending| p.sent_at_ms.is_some_and(|at| now_ms < at + timeout_ms(p.attempts));
    let mut room = pacing.window.saturating_sub(pending.values().filter(|p| in_flight(p)).count());
    while room > 0 {
        let mut batch = Vec::new();
        // The queue keeps every list not yet acknowledged in sending order; an acknowledged
        // one is gone from `pending` and dropped here.
        let mut rest = VecDeque::with_capacity(order.len());
        while let Some(key) = order.pop_front() {
            match pending.get(&key) {
                None => continue,
                Some(p) if batch.len() < pacing.batch.min(room) && !in_flight(p) => batch.push(key.clone()),
                Some(_) => {}
            }
            rest.push_back(key);
        }
        *order = rest;
        if batch.is_empty() {
            return;
        }
        let bodies: Vec<&serde_json::value::RawValue> = batch.iter().map(|k| &*pending[k].body).collect();
        let payload = serde_json::to_vec(&bodies).unwrap_or_default();
        // Never wait on the broker: a full client queue is tried again on the next turn.
        if client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_err() {
            return;
        }
        report.messages += 1;
        for key in &batch {
            let p = pending.get_mut(key).expect("in the batch, so pending");
            report.resent += u64::from(p.attempts > 0);
            p.attempts += 1;
            p.sent_at_ms = Some(now_ms);
        }
        room = room.saturating_sub(batch.len());
    }
}
