//! The publisher task and the sink the daemon's core hands its events to.

use super::command::{self, Action, Reply};
use super::intake::{Feed, Intake, IntakeStats};
use super::outbox::{self, Kind, Level, Outbox, Pushed};
use super::payload::{self, OutboxFigures};
use super::sparkplug::{self, Edge, Rendered};
use super::{MqttError, Output, Settings};
use crate::clock;
use crate::core::{Alarm, Input, ParcelReport, ReviewRequest, Severity};
use crate::daemon::{Command, CoreMsg, Screen};
use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// What the core hands over.
#[derive(Debug)]
pub enum SinkMsg {
    Parcel(ParcelReport, i64),
    Alarm(Alarm, i64),
    /// An `Input::InspectionResult` as recorded.
    Inspection(Input, i64),
    Checkpoint(crate::audit::SignedCheckpoint),
}

/// The daemon's side: a [`Screen`] whose events go to the publisher over a bounded channel.
/// A full channel blocks the core (parcel records and alarms are never dropped), but only for
/// as long as one outbox write: the publisher never waits on the network.
#[derive(Clone)]
pub struct MqttSink {
    tx: mpsc::Sender<SinkMsg>,
}

/// A sink and the receiver [`Publisher::start`] takes.
pub fn sink(capacity: usize) -> (MqttSink, mpsc::Receiver<SinkMsg>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (MqttSink { tx }, rx)
}

impl MqttSink {
    /// From a thread outside the runtime (the core thread).
    pub fn parcel_done(&self, report: ParcelReport) {
        // The publisher gone means the daemon is stopping; the record is in the audit chain.
        let _ = self.tx.blocking_send(SinkMsg::Parcel(report, clock::wall_ms()));
    }

    pub fn alarm(&self, alarm: &Alarm) {
        let _ = self.tx.blocking_send(SinkMsg::Alarm(alarm.clone(), clock::wall_ms()));
    }

    pub fn inspection_result(&self, result: &Input) {
        let _ = self.tx.blocking_send(SinkMsg::Inspection(result.clone(), clock::wall_ms()));
    }

    /// A signed checkpoint of the audit chain, to publish off the box (from the audit writer's
    /// thread, [`crate::audit::AuditLog::observe_checkpoints`]).
    pub fn checkpoint(&self, cp: &crate::audit::SignedCheckpoint) {
        let _ = self.tx.blocking_send(SinkMsg::Checkpoint(cp.clone()));
    }

    /// From async code.
    pub async fn send(&self, msg: SinkMsg) -> Result<(), MqttError> {
        self.tx.send(msg).await.map_err(|_| MqttError::Stopped)
    }
}

impl Screen for MqttSink {
    fn review_requested(&mut self, _: &ReviewRequest) {}

    fn parcel_done(&mut self, report: ParcelReport) {
        MqttSink::parcel_done(self, report)
    }

    fn alarm(&mut self, alarm: &Alarm) {
        MqttSink::alarm(self, alarm)
    }

    fn inspection_result(&mut self, result: &Input) {
        MqttSink::inspection_result(self, result)
    }
}

/// The publisher's counters, watched by tests and the demo.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MqttStats {
    pub connected: bool,
    /// The broker holds this connection's subscriptions (commands, platform intake).
    pub subscribed: bool,
    /// ConnAcks received.
    pub connects: u64,
    /// Connections that failed or broke (refused, TLS handshake, lost).
    pub connection_errors: u64,
    /// Publishes handed to the client (repeats after a reconnect included).
    pub published: u64,
    /// Events acknowledged by the broker and gone from the outbox.
    pub acked: u64,
    pub parcels: u64,
    pub alarms: u64,
    pub metrics: u64,
    /// Signed checkpoints of the audit chain handed to the outbox.
    pub checkpoints: u64,
    pub commands_accepted: u64,
    pub commands_refused: u64,
    pub outbox: OutboxFigures,
    /// The platform intake's counters (zero without it).
    pub intake: IntakeStats,
}

/// Room for a topic and the packet's header beside the largest payload taken in.
const MAX_TOPIC_BYTES: usize = 64 * 1024;
/// Largest packet published (a parcel record, metrics, Sparkplug births are a few KiB).
const MAX_OUTGOING_BYTES: usize = 256 * 1024;

/// How often the line's health is read for `state`.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Line figures for `metrics`, gathered by the caller (core stats, PLC driver, scanner).
pub type MetricsFn = Box<dyn Fn() -> serde_json::Map<String, serde_json::Value> + Send>;

/// What the retained `state` says of the line beyond "running", from the core and its links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub safe_mode: bool,
    /// The operator who stopped the line, while it is stopped.
    pub stopped_by: Option<String>,
    /// Shadow mode: decisions recorded, every parcel sent to hold.
    pub shadow: bool,
    /// Why the line runs degraded (`plc_link_down`, `scanner_link_down`, `mqtt_outbox_high`).
    pub degraded: Vec<&'static str>,
}

impl Health {
    /// The strongest condition names the state.
    pub fn state(&self) -> &'static str {
        if self.safe_mode {
            "safe_mode"
        } else if self.stopped_by.is_some() {
            "stopped"
        } else if !self.degraded.is_empty() {
            "degraded"
        } else {
            "running"
        }
    }
}

/// Read every second by the publisher; a change republishes the retained state.
pub type HealthFn = Box<dyn Fn() -> Health + Send>;

/// What the publisher asks of the daemon it serves.
pub struct Hooks {
    pub metrics: MetricsFn,
    pub health: HealthFn,
    pub reload: Option<ReloadFn>,
}

/// Reads the rule files again for `reload_rules` (the caller knows where they are): the
/// input that replaces the rules in force, or why not (already raised as an alarm).
pub type ReloadFn = Box<dyn Fn(&crate::core::OfficerId) -> Result<crate::core::Input, String> + Send>;

/// The running publisher.
pub struct Publisher {
    stop: Option<oneshot::Sender<Duration>>,
    task: tokio::task::JoinHandle<Result<MqttStats, MqttError>>,
    stats: watch::Receiver<MqttStats>,
}

impl Publisher {
    /// Starts the publisher: `events` from the [`sink`], accepted commands and alarms to the
    /// core through `inputs`. Call inside a multi-threaded tokio runtime.
    pub fn start(
        settings: Settings,
        outbox: Outbox,
        events: mpsc::Receiver<SinkMsg>,
        inputs: crossbeam_channel::Sender<CoreMsg>,
        hooks: Hooks,
        intake: Option<Intake>,
    ) -> Publisher {
        let (stop, stop_rx) = oneshot::channel();
        let (stats_tx, stats) = watch::channel(MqttStats::default());
        let (replies, replies_rx) = mpsc::unbounded_channel();
        let edge = match &settings.output {
            Output::Json => None,
            Output::SparkplugB(c) => Some(Edge::new(c.ids.clone(), &sparkplug::figures_template())),
        };
        let task = Task {
            started_wall_ms: clock::wall_ms(),
            edge,
            settings,
            outbox,
            inputs,
            metrics: hooks.metrics,
            health: hooks.health,
            health_now: Health::default(),
            reload: hooks.reload,
            intake,
            stats: MqttStats::default(),
            stats_tx,
            level: Level::Normal,
            conn: None,
            generation: 0,
            replies,
        };
        Publisher { stop: Some(stop), task: tokio::spawn(task.run(events, stop_rx, replies_rx)), stats }
    }

    pub fn stats(&self) -> watch::Receiver<MqttStats> {
        self.stats.clone()
    }

    /// Publishes the `stopped` state, delivers what the outbox holds (for at most
    /// `drain_limit`), disconnects cleanly (no last will) and returns the counters.
    pub async fn stop(mut self, drain_limit: Duration) -> Result<MqttStats, MqttError> {
        let _ = self.stop.take().map(|s| s.send(drain_limit));
        (&mut self.task).await.map_err(|_| MqttError::Stopped)?
    }
}

/// What a publish handed to the client was, until its packet id is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Event(i64),
    State,
}

/// One connection: a fresh client and event loop.
struct Conn {
    client: AsyncClient,
    generation: u64,
    connected: bool,
    /// Handed to the client, packet id not yet seen (rumqttc reports them in order).
    sent: VecDeque<Tag>,
    /// Awaiting their PUBACK.
    pkids: HashMap<u16, Tag>,
    /// The last event id handed to this connection.
    cursor: i64,
    poll: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

struct Task {
    settings: Settings,
    /// Sparkplug B output: the edge node's session.
    edge: Option<Edge>,
    started_wall_ms: i64,
    outbox: Outbox,
    inputs: crossbeam_channel::Sender<CoreMsg>,
    metrics: MetricsFn,
    health: HealthFn,
    /// As last published in `state`.
    health_now: Health,
    reload: Option<ReloadFn>,
    intake: Option<Intake>,
    stats: MqttStats,
    stats_tx: watch::Sender<MqttStats>,
    level: Level,
    conn: Option<Conn>,
    generation: u64,
    /// Where the core answers commands once it has stored, taken and recorded them. Unbounded,
    /// but never longer than the commands waiting in the core's own bounded queue.
    replies: mpsc::UnboundedSender<Reply>,
}

type Polled = (u64, Result<Event, ConnectionError>);

impl Task {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<SinkMsg>,
        mut stop: oneshot::Receiver<Duration>,
        mut replies: mpsc::UnboundedReceiver<Reply>,
    ) -> Result<MqttStats, MqttError> {
        let (polled_tx, mut polled) = mpsc::channel::<Polled>(256);
        let mut backoff = self.settings.reconnect_min;
        let mut next_attempt = clock::tokio_now();
        let mut metrics = tokio::time::interval_at(
            clock::tokio_now() + self.settings.metrics_every,
            self.settings.metrics_every.max(Duration::from_millis(10)),
        );
        metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = tokio::time::interval(HEALTH_EVERY);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set once stopping: until when to deliver, and whether `stopped` is acknowledged.
        let mut stopping: Option<Instant> = None;
        let mut stopped_acked = false;
        let mut events_open = true;
        self.publish_stats();
        loop {
            if self.conn.is_none() && clock::tokio_now() >= next_attempt {
                self.connect(polled_tx.clone(), stopping.is_some());
            }
            tokio::select! {
                biased;
                limit = &mut stop, if stopping.is_none() => {
                    stopping = Some(clock::tokio_now() + limit.unwrap_or_default());
                    self.publish_state(true);
                }
                Some((generation, event)) = polled.recv() => {
                    if self.conn.as_ref().is_some_and(|c| c.generation == generation) {
                        match event {
                            Ok(event) => {
                                if self.event(event, stopping.is_some())? {
                                    stopped_acked = true;
                                }
                                backoff = self.settings.reconnect_min;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection lost");
                                self.conn = None;
                                self.stats.connected = false;
                                self.stats.subscribed = false;
                                self.stats.connection_errors += 1;
                                next_attempt = clock::tokio_now() + backoff;
                                backoff = (backoff * 2).min(self.settings.reconnect_max);
                            }
                        }
                    }
                }
                msg = events.recv(), if events_open => match msg {
                    Some(msg) => self.take(msg)?,
                    None => events_open = false,
                },
                Some(reply) = replies.recv() => self.reply(reply)?,
                _ = metrics.tick(), if stopping.is_none() => self.push_metrics()?,
                _ = health.tick(), if stopping.is_none() => self.check_health(),
                () = tokio::time::sleep_until(next_attempt), if self.conn.is_none() => {}
                () = tokio::time::sleep_until(stopping.unwrap_or_else(clock::tokio_now)), if stopping.is_some() => break,
            }
            self.pump()?;
            self.publish_stats();
            if stopping.is_some() && stopped_acked && self.outbox.depth() == 0 && events.is_empty() {
                break;
            }
        }
        self.publish_death();
        if let Some(conn) = self.conn.take() {
            // A clean DISCONNECT: the broker discards the last will. Waiting for the event loop
            // to send it is bounded by the poll task's own end.
            if conn.client.try_disconnect().is_ok() {
                let mut conn = conn;
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut conn.poll).await;
            }
        }
        self.stats.connected = false;
        self.publish_stats();
        Ok(self.stats)
    }

    fn connect(&mut self, polled: mpsc::Sender<Polled>, stopping: bool) {
        let ndeath = self.sparkplug_will();
        let s = &self.settings;
        self.generation += 1;
        let generation = self.generation;
        let mut options = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
        options
            .set_keep_alive(s.keep_alive)
            .set_clean_session(s.clean_session)
            .set_inflight(s.inflight)
            // Acknowledged once handled: a platform message only once it is durable.
            .set_manual_acks(true)
            // rumqttc's 10 KiB default would refuse a batch of a few dozen declarations (and
            // drop the connection over it, again on every redelivery).
            .set_max_packet_size(super::intake::MAX_PAYLOAD + MAX_TOPIC_BYTES, MAX_OUTGOING_BYTES)
            .set_last_will(LastWill::new(
                s.topics.state(),
                self.state_payload("offline", None),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some((user, password)) = &s.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &s.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
        }
        if let Some(will) = ndeath {
            options.set_last_will(will);
        }
        // Room for every in-flight publish, the subscription, the state and a disconnect: a
        // `try_` call never finds it full.
        let (client, mut eventloop) = AsyncClient::new(options, usize::from(s.inflight) + 16);
        let poll = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if polled.send((generation, event)).await.is_err() || failed {
                    // A new connection is a new event loop: this one never reconnects.
                    break;
                }
            }
        });
        tracing::debug!(generation, stopping, host = %s.host, port = s.port, "MQTT connecting");
        self.conn = Some(Conn {
            client,
            generation,
            connected: false,
            sent: VecDeque::new(),
            pkids: HashMap::new(),
            cursor: 0,
            poll,
        });
    }

    /// Handles one event of the current connection; true when the `stopped` state was
    /// acknowledged while stopping.
    fn event(&mut self, event: Event, stopping: bool) -> Result<bool, MqttError> {
        let Some(conn) = self.conn.as_mut() else { return Ok(false) };
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                conn.connected = true;
                self.stats.connected = true;
                self.stats.connects += 1;
                // Replay from the oldest unacknowledged event: consumers drop repeats by id.
                conn.cursor = self.outbox.oldest()?.map_or(i64::MAX, |id| id - 1);
                if conn.cursor == i64::MAX {
                    conn.cursor = 0;
                }
                if ack.session_present {
                    self.stats.subscribed = true;
                } else {
                    // A clean session forgot the subscriptions; a kept one still has them.
                    let topics = &self.settings.topics;
                    let mut filters = vec![topics.commands()];
                    if self.intake.is_some() {
                        filters.extend([topics.platform_manifests(), topics.platform_targets()]);
                    }
                    let filters = filters.into_iter().map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                    let _ = conn.client.try_subscribe_many(filters);
                }
                tracing::info!(session_present = ack.session_present, "MQTT connected");
                self.publish_state(stopping);
            }
            Event::Incoming(Packet::SubAck(_)) => self.stats.subscribed = true,
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(tag) = conn.sent.pop_front() {
                    conn.pkids.insert(pkid, tag);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => match conn.pkids.remove(&ack.pkid) {
                Some(Tag::Event(id)) => {
                    self.outbox.ack(id)?;
                    self.stats.acked += 1;
                }
                Some(Tag::State) => return Ok(stopping),
                None => {}
            },
            Event::Incoming(Packet::Publish(p)) => {
                let durable = match self.settings.topics.feed_of(&p.topic) {
                    Some(feed) => self.intake(feed, &p),
                    None => {
                        if let Some(name) = self.settings.topics.command_of(&p.topic).map(str::to_string) {
                            self.command(&name, &p.payload)?;
                        }
                        true
                    }
                };
                // Unacknowledged, the broker delivers it again (after a reconnect).
                if let Some(conn) = self.conn.as_ref().filter(|_| durable) {
                    let _ = conn.client.try_ack(&p);
                }
                self.node_command(&p.topic, &p.payload);
            }
            _ => {}
        }
        Ok(false)
    }

    fn command(&mut self, name: &str, payload: &[u8]) -> Result<(), MqttError> {
        let parsed = command::parse(name, payload).and_then(|accepted| {
            let input = match &accepted.action {
                Action::Core(input) => Ok(input.clone()),
                Action::ReloadRules => match &self.reload {
                    Some(reload) => reload(&accepted.operator),
                    None => Err("this daemon cannot reload its rules".into()),
                },
            };
            input.map(|input| (accepted.clone(), input)).map_err(|error| command::Refusal {
                command: accepted.command.into(),
                request_id: Some(accepted.request_id.clone()),
                operator: Some(accepted.operator.as_str().into()),
                error,
            })
        });
        let reply = match parsed {
            Ok((accepted, input)) => {
                // The core stores what it changes, takes it, records the command and the input,
                // and answers through `replies` only then.
                let reply = Reply::accepted(&accepted);
                let command = Command { reply: reply.clone(), input: Some(input), respond: Some(self.replies.clone()) };
                if self.to_core(CoreMsg::Command(Box::new(command))) {
                    return Ok(());
                }
                reply.refused_with("the line is stopping".into())
            }
            Err(refusal) => {
                let reply = Reply::refused(&refusal);
                let command = Command { reply: reply.clone(), input: None, respond: None };
                self.to_core(CoreMsg::Command(Box::new(command)));
                self.to_core(CoreMsg::Alarm(Alarm {
                    code: "mqtt_command_refused",
                    severity: Severity::Warning,
                    tracking: None,
                    message: format!(
                        "command {} request {} by {} refused: {}",
                        refusal.command,
                        refusal.request_id.as_deref().unwrap_or("(none)"),
                        refusal.operator.as_deref().unwrap_or("(none)"),
                        refusal.error
                    ),
                }));
                reply
            }
        };
        self.reply(reply)
    }

    /// Publishes a command's reply (through the outbox, as every event).
    fn reply(&mut self, reply: Reply) -> Result<(), MqttError> {
        match reply.status {
            "accepted" => self.stats.commands_accepted += 1,
            _ => self.stats.commands_refused += 1,
        }
        let topic = self.settings.topics.reply(&reply.command);
        let text = serde_json::to_string(&payload::ReplyEvent { reply, wall_ms: clock::wall_ms() }).unwrap_or_default();
        self.push(Kind::Reply, &topic, &text)
    }

    /// A platform message into the manifest store, then to the core; true once it is durable
    /// (stored, or a dead letter), false when the store failed and it must not be acknowledged.
    fn intake(&mut self, feed: Feed, p: &Publish) -> bool {
        let Some(intake) = self.intake.as_mut() else { return true };
        let taken = tokio::task::block_in_place(|| intake.take(feed, &p.topic, &p.payload, clock::wall_ms()));
        self.stats.intake = intake.stats.clone();
        let (msgs, durable): (Vec<CoreMsg>, bool) = match taken {
            Ok(taken) => {
                // The platform's proof of delivery, durable before the broker's PUBACK: a
                // message whose answer could not be kept is taken again on redelivery.
                let ack = payload::AckEvent { ack: &taken.ack, wall_ms: clock::wall_ms() };
                let text = serde_json::to_string(&ack).unwrap_or_default();
                let answered = self.push(Kind::Ack, &self.settings.topics.platform_acks(), &text);
                if let Err(e) = &answered {
                    tracing::warn!(error = %e, "platform acknowledgement not kept; the message is left for redelivery");
                }
                let refused = taken.refused.into_iter().map(|why| {
                    CoreMsg::Alarm(Alarm {
                        code: "platform_message_refused",
                        severity: Severity::Warning,
                        tracking: None,
                        message: format!("platform message on {} refused (dead letter kept): {why}", p.topic),
                    })
                });
                (refused.chain(taken.inputs.into_iter().map(CoreMsg::Input)).collect(), answered.is_ok())
            }
            Err(e) => {
                intake.stats.store_failures += 1;
                self.stats.intake.store_failures += 1;
                let alarm = Alarm {
                    code: "platform_intake_failed",
                    severity: Severity::Critical,
                    tracking: None,
                    message: format!(
                        "platform message on {} not stored, left for the broker to redeliver: {e}",
                        p.topic
                    ),
                };
                (vec![CoreMsg::Alarm(alarm)], false)
            }
        };
        for msg in msgs {
            self.to_core(msg);
        }
        durable
    }

    /// To the core's bounded queue; false when the core is gone.
    fn to_core(&self, msg: CoreMsg) -> bool {
        let inputs = &self.inputs;
        tokio::task::block_in_place(|| inputs.send(msg)).is_ok()
    }

    fn take(&mut self, msg: SinkMsg) -> Result<(), MqttError> {
        match msg {
            SinkMsg::Parcel(report, wall) => {
                self.stats.parcels += 1;
                let text = serde_json::to_string(&payload::Parcel::new(&report, wall)).unwrap_or_default();
                let topic = self.settings.topics.parcel();
                self.push(Kind::Parcel, &topic, &text)
            }
            SinkMsg::Alarm(alarm, wall) => {
                self.stats.alarms += 1;
                let text = serde_json::to_string(&payload::AlarmEvent::new(&alarm, wall)).unwrap_or_default();
                let topic = self.settings.topics.alarm();
                self.push(Kind::Alarm, &topic, &text)
            }
            SinkMsg::Inspection(input, wall) => {
                let Some(event) = payload::InspectionEvent::new(&input, wall) else { return Ok(()) };
                let text = serde_json::to_string(&event).unwrap_or_default();
                let topic = self.settings.topics.inspection();
                self.push(Kind::Parcel, &topic, &text)
            }
            SinkMsg::Checkpoint(cp) => {
                self.stats.checkpoints += 1;
                let text = serde_json::to_string(&cp).unwrap_or_default();
                let topic = self.settings.topics.checkpoint();
                self.push(Kind::Checkpoint, &topic, &text)
            }
        }
    }

    fn push_metrics(&mut self) -> Result<(), MqttError> {
        let mut body = (self.metrics)();
        body.insert("wall_ms".into(), clock::wall_ms().into());
        body.insert("outbox".into(), serde_json::to_value(self.figures()).unwrap_or_default());
        self.stats.metrics += 1;
        let topic = self.settings.topics.metrics();
        self.push(Kind::Metrics, &topic, &serde_json::Value::Object(body).to_string())
    }

    fn push(&mut self, kind: Kind, topic: &str, text: &str) -> Result<(), MqttError> {
        if self.outbox.push(kind, topic, text)? == Pushed::Dropped {
            tracing::debug!(dropped = self.outbox.dropped, "outbox full: metrics dropped");
        }
        let level = self.outbox.level();
        if level != self.level {
            let (depth, capacity) = (self.outbox.depth(), self.outbox.capacity());
            let alarm = match level {
                Level::High if self.level == Level::Normal => Some(Alarm {
                    code: "mqtt_outbox_high",
                    severity: Severity::Warning,
                    tracking: None,
                    message: format!("MQTT outbox at {depth} of {capacity} events: the broker is not taking them"),
                }),
                Level::Full => Some(Alarm {
                    code: "mqtt_outbox_full",
                    severity: Severity::Critical,
                    tracking: None,
                    message: format!(
                        "MQTT outbox full ({depth} of {capacity}): metrics are dropped from now on, \
                         parcel records, alarms and replies kept beyond capacity"
                    ),
                }),
                _ => None,
            };
            if let Some(alarm) = alarm {
                self.to_core(CoreMsg::Alarm(alarm));
            }
            self.level = level;
        }
        self.stats.outbox = self.figures();
        Ok(())
    }

    fn figures(&self) -> OutboxFigures {
        OutboxFigures {
            depth: self.outbox.depth(),
            capacity: self.outbox.capacity(),
            dropped: self.outbox.dropped,
            over_capacity: self.outbox.over_capacity,
        }
    }

    /// Hands the client what the outbox holds past this connection's cursor, up to the
    /// in-flight window.
    fn pump(&mut self) -> Result<(), MqttError> {
        let window = usize::from(self.settings.inflight);
        let Some(conn) = self.conn.as_mut().filter(|c| c.connected) else { return Ok(()) };
        let room = window.saturating_sub(conn.sent.len() + conn.pkids.len());
        if room == 0 {
            return Ok(());
        }
        let retained = self.settings.topics.checkpoint();
        for event in self.outbox.after(conn.cursor, room)? {
            // The latest checkpoint stays on the broker for whoever subscribes later.
            let retain = event.topic == retained;
            let (topic, body, data) = render(self.edge.as_ref(), &event);
            if conn.client.try_publish(topic, QoS::AtLeastOnce, retain, body).is_err() {
                // Full or closed: the next ConnAck replays from the oldest unacknowledged.
                break;
            }
            if let Some(edge) = self.edge.as_mut().filter(|_| data) {
                edge.sent();
            }
            conn.sent.push_back(Tag::Event(event.id));
            conn.cursor = event.id;
            self.stats.published += 1;
        }
        Ok(())
    }

    /// `state` with the conditions behind it (none for `offline` and a clean `stopped`).
    fn state_payload(&self, state: &str, health: Option<&Health>) -> String {
        let s = &self.settings;
        let (site, line) = s.topics.site_line();
        serde_json::to_string(&payload::State {
            state,
            site,
            line,
            version: env!("CARGO_PKG_VERSION"),
            schema: payload::SCHEMA_VERSION,
            started_wall_ms: self.started_wall_ms,
            wall_ms: clock::wall_ms(),
            conditions: health.map(|h| h.degraded.clone()).unwrap_or_default(),
            safe_mode: health.is_some_and(|h| h.safe_mode),
            stopped_by: health.and_then(|h| h.stopped_by.as_deref()),
            shadow: health.is_some_and(|h| h.shadow),
        })
        .unwrap_or_default()
    }

    /// Reads the line's health; a change republishes the state.
    fn check_health(&mut self) {
        let mut now = (self.health)();
        if self.level != Level::Normal {
            now.degraded.push("mqtt_outbox_high");
        }
        if now != self.health_now {
            tracing::info!(state = now.state(), conditions = ?now.degraded, "line state changed");
            self.health_now = now;
            self.publish_state(false);
        }
    }

    /// Retained, outside the outbox: it is the line's current state, not an event. `stopping`:
    /// the daemon stops cleanly.
    fn publish_state(&mut self, stopping: bool) {
        if self.edge.is_some() {
            let state = if stopping { "stopped" } else { self.health_now.state() };
            return self.publish_sparkplug_state(state);
        }
        let text = match stopping {
            true => self.state_payload("stopped", None),
            false => self.state_payload(self.health_now.state(), Some(&self.health_now)),
        };
        let Some(conn) = self.conn.as_mut().filter(|c| c.connected) else { return };
        if conn.client.try_publish(self.settings.topics.state(), QoS::AtLeastOnce, true, text).is_ok() {
            conn.sent.push_back(Tag::State);
        }
    }

    /// Sparkplug's state: the births, first in a connection (after subscribing to the node's
    /// commands: the broker keeps no subscription of a clean session, and one made under the
    /// JSON output is not there either); a DDATA of the `state` metric after them.
    fn publish_sparkplug_state(&mut self, state: &str) {
        let Some(edge) = self.edge.as_mut() else { return };
        if edge.born() {
            let data = edge.state(state, wall_u64());
            if self.publish_tagged(data.topic, data.payload) {
                if let Some(edge) = self.edge.as_mut() {
                    edge.sent();
                }
            }
            return;
        }
        edge.set_state(state);
        let ncmd = edge.ids().topic(sparkplug::MessageType::NCmd);
        if let Some(conn) = self.conn.as_ref().filter(|c| c.connected) {
            let _ = conn.client.try_subscribe(ncmd, QoS::AtLeastOnce);
            self.publish_births();
        }
    }

    fn publish_births(&mut self) {
        let mut figures = (self.metrics)();
        figures.insert("outbox".into(), serde_json::to_value(self.figures()).unwrap_or_default());
        let started_wall_ms = self.started_wall_ms;
        let Some(edge) = self.edge.as_mut() else { return };
        for birth in edge.births(&figures, env!("CARGO_PKG_VERSION"), started_wall_ms, wall_u64()) {
            self.publish_tagged(birth.topic, birth.payload);
        }
    }

    /// A Sparkplug NCMD: `Node Control/Rebirth` publishes the births again (same bdSeq, seq
    /// from 0). Changes nothing on the line, so it is logged, not recorded.
    fn node_command(&mut self, topic: &str, payload: &[u8]) {
        let Some(edge) = self.edge.as_ref() else { return };
        if topic != edge.ids().topic(sparkplug::MessageType::NCmd) {
            return;
        }
        match Edge::is_rebirth(payload) {
            Ok(true) => {
                tracing::info!("Sparkplug rebirth requested");
                self.publish_births();
            }
            Ok(false) => tracing::warn!("Sparkplug NCMD ignored: only Node Control/Rebirth is supported"),
            Err(e) => tracing::warn!(error = %e, "Sparkplug NCMD ignored"),
        }
    }

    /// A Sparkplug message outside the outbox: QoS 1, not retained, tagged as the state; true
    /// when the client took it.
    fn publish_tagged(&mut self, topic: String, payload: Vec<u8>) -> bool {
        let Some(conn) = self.conn.as_mut().filter(|c| c.connected) else { return false };
        let taken = conn.client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok();
        if taken {
            conn.sent.push_back(Tag::State);
        }
        taken
    }

    /// Sparkplug: the last will of a new connection, the NDEATH of a new bdSeq (one past the
    /// last, kept on disk when a file is configured).
    fn sparkplug_will(&mut self) -> Option<LastWill> {
        let edge = self.edge.as_mut()?;
        let file = match &self.settings.output {
            Output::SparkplugB(c) => c.bd_seq_file.as_deref(),
            Output::Json => None,
        };
        // The file matters at this process's first connection; after it, memory is the truth
        // (and stays so if a write fails).
        let last = edge.bd_seq().or_else(|| {
            file.and_then(|f| {
                read_bd_seq(f).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "Sparkplug bdSeq file unreadable: starting again from 0");
                    None
                })
            })
        });
        let bd_seq = Edge::next_bd_seq(last);
        if let Some(Err(e)) = file.map(|f| write_bd_seq(f, bd_seq)) {
            tracing::warn!(error = %e, bd_seq, "Sparkplug bdSeq not saved: a restart may repeat it");
        }
        let death = edge.connect(bd_seq, wall_u64());
        // Retain false: a host takes a death for the session it saw born, never a stale one.
        Some(LastWill::new(death.topic, death.payload, QoS::AtLeastOnce, false))
    }

    /// Sparkplug, on a clean stop: the NDEATH ahead of the DISCONNECT (which discards the will).
    fn publish_death(&mut self) {
        let Some(death) = self.edge.as_ref().map(|e| e.death(wall_u64())) else { return };
        self.publish_tagged(death.topic, death.payload);
    }

    fn publish_stats(&mut self) {
        self.stats.outbox = self.figures();
        let stats = self.stats.clone();
        self.stats_tx.send_if_modified(|s| {
            let changed = *s != stats;
            *s = stats;
            changed
        });
    }
}

/// An outbox event as published: its topic, body, and whether it is a Sparkplug message (which
/// takes the session's next seq). Rendered now, not when stored: seq belongs to the session
/// that sends it, and a replay after a reconnect is a new session.
fn render(edge: Option<&Edge>, event: &outbox::Stored) -> (String, Vec<u8>, bool) {
    let as_stored = || (event.topic.clone(), outbox::with_event_id(event.id, &event.payload).into_bytes(), false);
    let Some(edge) = edge else { return as_stored() };
    match edge.render(&event.topic, &event.payload, event.id, wall_u64()) {
        Ok(Rendered::Data(p)) => (p.topic, p.payload, true),
        Ok(Rendered::AsStored) => as_stored(),
        Err(e) => {
            // Delivered as stored rather than held forever: the record is never lost.
            tracing::warn!(error = %e, event_id = event.id, "event not renderable as Sparkplug: published as JSON");
            as_stored()
        }
    }
}

fn wall_u64() -> u64 {
    sparkplug::datetime(clock::wall_ms())
}

/// The bdSeq of the last connection, `None` when there was none (no file yet).
fn read_bd_seq(file: &Path) -> std::io::Result<Option<u8>> {
    match std::fs::read_to_string(file) {
        Ok(text) => text
            .trim()
            .parse::<u8>()
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Written whole and synced before the CONNECT that carries it: a power cut leaves the old
/// value or the new one, never a torn file.
fn write_bd_seq(file: &Path, bd_seq: u8) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{bd_seq}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bd_seq_file_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(sparkplug::BD_SEQ_FILE);
        assert_eq!(read_bd_seq(&file).unwrap(), None, "no file: no connection yet");
        write_bd_seq(&file, 255).unwrap();
        assert_eq!(read_bd_seq(&file).unwrap(), Some(255));
        write_bd_seq(&file, 0).unwrap();
        assert_eq!(read_bd_seq(&file).unwrap(), Some(0));
        std::fs::write(&file, "256\n").unwrap();
        let e = read_bd_seq(&file).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(sparkplug::BD_SEQ_FILE), "{e}");
    }
}
