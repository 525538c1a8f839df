//! The handshake with the PLC as pure state machines over register values: no sockets, no
//! clock. The driver reads registers, hands them in, and writes back what it is given.
//!
//! One poll, in this order (docs/register-map.md, "Host side"):
//! 1. read the header span ([`RegisterMap::header_span`]) and decode a [`Header`];
//!    [`check_identity`] once per connection; [`Heartbeat::handle_plc`];
//! 2. [`EventReader::plan`], read those slots, [`EventReader::handle`]: events in order, plus a
//!    [`Resync`] when the PLC restarted;
//! 3. [`DestinationWriter::handle_header`]: the destinations the PLC took (feed
//!    `DestinationWritten`) or, after a restart, dropped;
//! 4. [`DestinationWriter::poll_write`], write those slots, [`DestinationWriter::commit`];
//! 5. write the [`HostControl`] block last: heartbeat, boot ack, event read index, destination
//!    write index. The PLC never sees an index before the slots it covers.

use super::codec::{DestSlot, Header, HostControl, PlcStatus, RawEvent, RegisterWrite, SlotFault};
use super::error::{DestinationError, PlcError, RingFault};
use super::map::{Codes, DestSlotLayout, EventCodes, EventSlotLayout, RegisterMap, Ring};
use crate::core::{Alarm, Input, Millis, PlcHoldCause, Severity, SyncCause, TrackingId, TriggerCount};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// The map version and the watchdog the PLC publishes must be the ones the map says.
pub fn check_identity(map: &RegisterMap, header: &Header) -> Result<(), PlcError> {
    if header.map_version != map.version {
        return Err(PlcError::MapVersion { expected: map.version, found: header.map_version });
    }
    if u64::from(header.watchdog_ms) != map.timing.watchdog_ms {
        return Err(PlcError::Watchdog { expected: map.timing.watchdog_ms, found: header.watchdog_ms });
    }
    Ok(())
}

/// What an event slot says, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlcEvent {
    GateEntered {
        tracking: TrackingId,
        trigger: TriggerCount,
        length_mm: Option<u32>,
    },
    XrayEntered {
        tracking: TrackingId,
        image_seq: u32,
    },
    /// The lane whose mouth eye saw the parcel (the hold lane: the end of the line).
    DivertConfirmed {
        tracking: TrackingId,
        lane_id: u16,
    },
    ParcelLost {
        tracking: TrackingId,
        reason: u32,
    },
    LaneFull {
        lane_id: u16,
        on: bool,
    },
    Jam {
        eye: u32,
        on: bool,
    },
    SafeMode {
        cause: u32,
        on: bool,
    },
    DestinationRejected {
        tracking: TrackingId,
        lane_id: u16,
        reason: u32,
    },
    ForcedHold {
        tracking: TrackingId,
        reason: u32,
    },
    /// The line scale's reading for the parcel (never 0: an empty scale sends nothing).
    Weighed {
        tracking: TrackingId,
        weight_g: u32,
    },
    UntrackedParcel {
        eye: u32,
    },
    /// A well-formed slot with a code or argument this host does not know. Consumed (the PLC
    /// meant it) and alarmed, never dropped silently.
    Unrecognised,
}

impl PlcEvent {
    /// Tracking id 0 is never given to a parcel, so a parcel event carrying it is unrecognised.
    pub fn classify(codes: &EventCodes, raw: &RawEvent) -> PlcEvent {
        let parcel = (raw.tracking != 0).then_some(TrackingId(raw.tracking));
        let lane = u16::try_from(raw.arg1).ok();
        let on = match raw.arg2 {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        };
        let c = raw.code;
        let ev = if c == codes.gate_entered {
            parcel.map(|tracking| PlcEvent::GateEntered {
                tracking,
                trigger: TriggerCount(raw.arg1),
                length_mm: (raw.arg2 != 0).then_some(raw.arg2),
            })
        } else if c == codes.xray_entered {
            parcel.map(|tracking| PlcEvent::XrayEntered { tracking, image_seq: raw.arg1 })
        } else if c == codes.divert_confirmed {
            parcel.zip(lane).map(|(tracking, lane_id)| PlcEvent::DivertConfirmed { tracking, lane_id })
        } else if c == codes.parcel_lost {
            parcel.map(|tracking| PlcEvent::ParcelLost { tracking, reason: raw.arg1 })
        } else if c == codes.lane_full_changed {
            lane.zip(on).map(|(lane_id, on)| PlcEvent::LaneFull { lane_id, on })
        } else if c == codes.jam_changed {
            on.map(|on| PlcEvent::Jam { eye: raw.arg1, on })
        } else if c == codes.safe_mode_changed {
            on.map(|on| PlcEvent::SafeMode { cause: raw.arg1, on })
        } else if c == codes.dest_rejected {
            parcel.zip(lane).map(|(tracking, lane_id)| PlcEvent::DestinationRejected {
                tracking,
                lane_id,
                reason: raw.arg2,
            })
        } else if c == codes.forced_hold {
            parcel.map(|tracking| PlcEvent::ForcedHold { tracking, reason: raw.arg1 })
        } else if c == codes.weighed {
            parcel.filter(|_| raw.arg1 > 0).map(|tracking| PlcEvent::Weighed { tracking, weight_g: raw.arg1 })
        } else if c == codes.untracked_parcel {
            Some(PlcEvent::UntrackedParcel { eye: raw.arg1 })
        } else {
            None
        };
        ev.unwrap_or(PlcEvent::Unrecognised)
    }

    pub fn tracking(&self) -> Option<TrackingId> {
        match self {
            PlcEvent::GateEntered { tracking, .. }
            | PlcEvent::XrayEntered { tracking, .. }
            | PlcEvent::DivertConfirmed { tracking, .. }
            | PlcEvent::ParcelLost { tracking, .. }
            | PlcEvent::DestinationRejected { tracking, .. }
            | PlcEvent::ForcedHold { tracking, .. }
            | PlcEvent::Weighed { tracking, .. } => Some(*tracking),
            _ => None,
        }
    }

    /// The core input this event is; `at` is when it happened in line time, if known (see
    /// [`event_time`]). Rejected destinations and forced holds tell the core the parcel goes to
    /// hold whatever was decided (named from the map's `codes.reject`); they also raise alarms
    /// ([`Event::alarm`]), as do lane full, jam and untracked parcels.
    pub fn to_input(&self, codes: &Codes, at: Option<Millis>) -> Option<Input> {
        Some(match *self {
            PlcEvent::GateEntered { tracking, trigger, length_mm } => Input::Gate { tracking, trigger, length_mm, at },
            PlcEvent::XrayEntered { tracking, image_seq } => Input::XrayEntered { tracking, image_seq },
            PlcEvent::DivertConfirmed { tracking, lane_id } => Input::Divert { tracking, lane_id },
            PlcEvent::ParcelLost { tracking, .. } => Input::Lost { tracking },
            PlcEvent::SafeMode { on, .. } => Input::PlcStatus { safe_mode: on },
            PlcEvent::DestinationRejected { tracking, reason, .. } => {
                let late = codes.reject.get(AFTER_LATCH).is_some_and(|&c| u32::from(c) == reason);
                let cause = if late { PlcHoldCause::Late } else { PlcHoldCause::Rejected { code: reason } };
                Input::PlcHold { tracking, cause }
            }
            PlcEvent::ForcedHold { tracking, reason } => {
                Input::PlcHold { tracking, cause: PlcHoldCause::Forced { code: reason } }
            }
            PlcEvent::Weighed { tracking, weight_g } => Input::Weighed { tracking, weight_g },
            _ => return None,
        })
    }
}

/// Longest an event may have waited in the ring and still be placed by the PLC's clock: older,
/// the mapping is not trusted (a PLC clock set back, a garbled slot) and the host's receive
/// time stands.
pub const MAX_EVENT_AGE_MS: u32 = 60_000;

/// When an event happened, in line time: the PLC stamped it `event_ms` by its clock, which read
/// `plc_now_ms` in the header the host requested at line time `header_at`. The mapping is made
/// afresh at every poll (so at every PLC boot too, and no clock drift builds up); it is early by
/// at most the header request's own delay, never late. `None` when the stamp is not within
/// [`MAX_EVENT_AGE_MS`] before the header's clock.
pub fn event_time(header_at: Millis, plc_now_ms: u32, event_ms: u32) -> Option<Millis> {
    let age_ms = plc_now_ms.wrapping_sub(event_ms);
    (age_ms <= MAX_EVENT_AGE_MS).then(|| Millis(header_at.0.saturating_sub(u64::from(age_ms))))
}

/// The `codes.reject` entry for a destination that came after the latch point.
const AFTER_LATCH: &str = "AFTER_LATCH";

/// One event taken from the ring: where, when, the slot as read, and what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub boot: u16,
    pub index: u16,
    pub plc_time_ms: u32,
    pub raw: RawEvent,
    pub event: PlcEvent,
}

impl Event {
    /// The alarm this event raises, if any; detail codes are named from the map.
    pub fn alarm(&self, map: &RegisterMap) -> Option<Alarm> {
        let name = super::map::Codes::name;
        let c = &map.codes;
        let (code, severity, message) = match &self.event {
            PlcEvent::LaneFull { lane_id, on: true } => {
                ("plc_lane_full", Severity::Warning, format!("lane id {lane_id} full"))
            }
            PlcEvent::Jam { eye, on: true } => ("plc_jam", Severity::Critical, format!("jam at eye {eye}")),
            // The core raises the critical "plc_safe_mode" from the input; this names the cause.
            PlcEvent::SafeMode { cause, on: true } => (
                "plc_safe_mode_cause",
                Severity::Warning,
                format!("PLC safe mode because of {}", name(&c.safe_mode_cause, *cause)),
            ),
            PlcEvent::DestinationRejected { lane_id, reason, .. } => (
                "plc_dest_rejected",
                Severity::Critical,
                format!("PLC refused lane id {lane_id} ({}): parcel held", name(&c.reject, *reason)),
            ),
            PlcEvent::ForcedHold { reason, .. } => (
                "plc_forced_hold",
                Severity::Warning,
                format!("PLC forced the parcel to hold ({})", name(&c.forced_hold, *reason)),
            ),
            PlcEvent::ParcelLost { reason, .. } => {
                ("plc_parcel_lost", Severity::Warning, format!("parcel lost ({})", name(&c.lost, *reason)))
            }
            PlcEvent::UntrackedParcel { eye } => {
                ("plc_untracked_parcel", Severity::Critical, format!("something outside every window at eye {eye}"))
            }
            PlcEvent::Unrecognised => {
                return Some(RingFault::UnknownEvent { index: self.index, code: self.raw.code }.alarm())
            }
            _ => return None,
        };
        Some(Alarm { code, severity, tracking: self.event.tracking(), message })
    }
}

/// Ring indices `first_index ..` (`count` of them, wrapping) to read in one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotSpan {
    pub first_index: u16,
    pub count: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncCause {
    /// This host's first header: it continues from the read index the PLC holds for this boot.
    FirstContact,
    /// BOOT_COUNT changed: the PLC restarted, its rings and windows are gone.
    PlcRestart { previous: u16 },
    /// The event write index jumped past what the ring can hold: events were lost. The host
    /// continues from the write index, and nothing it knew of the PLC's parcels holds.
    EventsLost,
}

/// The host adopted a PLC boot, or lost track of it. After a restart or lost events,
/// `orphaned` are the parcels the host knew in flight (gate seen, no divert or loss yet): the
/// PLC no longer tracks them, or nothing it did with them is known, so no destination is sent
/// for them again. The core orphans every parcel of its own on [`Resync::input`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resync {
    pub cause: ResyncCause,
    pub boot: u16,
    pub orphaned: Vec<TrackingId>,
}

impl Resync {
    /// The core's input: which boot the events from now on belong to, and why.
    pub fn input(&self) -> Input {
        let cause = match self.cause {
            ResyncCause::FirstContact => SyncCause::FirstContact,
            ResyncCause::PlcRestart { .. } => SyncCause::Restart,
            ResyncCause::EventsLost => SyncCause::EventsLost,
        };
        Input::PlcSync { boot: self.boot, cause }
    }
}

/// What one poll of the event ring produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPoll {
    pub resync: Option<Resync>,
    /// New events, in ring order, each exactly once.
    pub events: Vec<Event>,
    pub faults: Vec<RingFault>,
    /// The boot and read index to write back (HOST_BOOT_ACK, EVENT_READ_INDEX).
    pub boot: u16,
    pub read_index: u16,
}

/// Tracking ids with a gate event and no divert or loss yet, oldest first; bounded.
#[derive(Clone, Debug, Default)]
struct InFlight {
    by_order: BTreeMap<u64, TrackingId>,
    by_id: HashMap<TrackingId, u64>,
    next: u64,
    cap: usize,
}

impl InFlight {
    fn insert(&mut self, t: TrackingId) -> Option<TrackingId> {
        self.remove(t);
        self.next += 1;
        self.by_order.insert(self.next, t);
        self.by_id.insert(t, self.next);
        if self.by_id.len() > self.cap {
            let (_, oldest) = self.by_order.pop_first()?;
            self.by_id.remove(&oldest);
            return Some(oldest);
        }
        None
    }
    fn remove(&mut self, t: TrackingId) {
        if let Some(order) = self.by_id.remove(&t) {
            self.by_order.remove(&order);
        }
    }
    fn drain(&mut self) -> Vec<TrackingId> {
        self.by_id.clear();
        std::mem::take(&mut self.by_order).into_values().collect()
    }
}

/// One start of the PLC, as its header tells it: the boot count and the boot nonce. Either
/// changing is a restart (a memory reset starts the count from 1 again; the nonce still moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlcBoot {
    pub count: u16,
    pub nonce: u32,
}

impl PlcBoot {
    pub fn of(h: &Header) -> PlcBoot {
        PlcBoot { count: h.boot_count, nonce: h.boot_nonce }
    }

    /// A host (this one or one before it) acknowledged this very boot, count and nonce.
    fn acknowledged_in(h: &Header) -> bool {
        h.host_boot_ack == h.boot_count && h.host_nonce_ack == h.boot_nonce
    }
}

/// Consumes the PLC's event ring: every event exactly once, in order, within a boot.
#[derive(Clone, Debug)]
pub struct EventReader {
    ring: Ring,
    layout: EventSlotLayout,
    codes: EventCodes,
    max_read_registers: u16,
    stuck_alarm_polls: u32,
    boot: Option<PlcBoot>,
    read_index: u16,
    /// The slot that failed to decode at the read index, and in how many polls in a row.
    stuck: Option<(u16, u32)>,
    in_flight: InFlight,
}

/// Where reading starts after a header, and why it moved.
struct Position {
    boot: u16,
    read_index: u16,
    cause: Option<ResyncCause>,
    jump: Option<RingFault>,
}

impl EventReader {
    /// `max_in_flight` bounds the parcels remembered for restart reports (the line's limit).
    pub fn new(map: &RegisterMap, max_in_flight: usize) -> EventReader {
        EventReader {
            ring: map.event_ring.clone(),
            layout: map.event_slot,
            codes: map.codes.event.clone(),
            max_read_registers: map.limits.max_read_registers,
            stuck_alarm_polls: map.limits.torn_read_alarm_polls,
            boot: None,
            read_index: 0,
            stuck: None,
            in_flight: InFlight { cap: max_in_flight.max(1), ..InFlight::default() },
        }
    }

    /// The boot count of the boot the reader follows.
    pub fn boot(&self) -> Option<u16> {
        self.boot.map(|b| b.count)
    }

    /// That boot's nonce (0 before the first header).
    pub fn nonce(&self) -> u32 {
        self.boot.map_or(0, |b| b.nonce)
    }

    pub fn read_index(&self) -> u16 {
        self.read_index
    }

    /// Parcels in flight as far as the events tell, oldest first.
    pub fn in_flight(&self) -> Vec<TrackingId> {
        self.in_flight.by_order.values().copied().collect()
    }

    fn position(&self, h: &Header) -> Position {
        let (read_index, cause) = match self.boot {
            Some(b) if b == PlcBoot::of(h) => (self.read_index, None),
            Some(previous) => (0, Some(ResyncCause::PlcRestart { previous: previous.count })),
            // The PLC keeps our last acknowledged index for its current boot; any other value in
            // EVENT_READ_INDEX is from before its restart, and its ring started again at 0.
            None if PlcBoot::acknowledged_in(h) => (h.event_read_index, Some(ResyncCause::FirstContact)),
            None => (0, Some(ResyncCause::FirstContact)),
        };
        let unread = Ring::unread(h.event_write_index, read_index);
        if unread > self.ring.slots {
            let jump = RingFault::EventIndexJump {
                read: read_index,
                write: h.event_write_index,
                unread,
                slots: self.ring.slots,
            };
            return Position { boot: h.boot_count, read_index: h.event_write_index, cause, jump: Some(jump) };
        }
        Position { boot: h.boot_count, read_index, cause, jump: None }
    }

    /// The slots to read after `header`, at most `max_slots` of them; `None` when none are new.
    pub fn plan(&self, header: &Header, max_slots: u16) -> Option<SlotSpan> {
        let p = self.position(header);
        let count = Ring::unread(header.event_write_index, p.read_index).min(max_slots);
        (count > 0).then_some(SlotSpan { first_index: p.read_index, count })
    }

    /// The register reads that cover `span`, `(address, count)` in ring order: split where the
    /// ring wraps and where a read would exceed the map's `max_read_registers`, whole slots only.
    pub fn reads(&self, span: SlotSpan) -> Vec<(u16, u16)> {
        ring_requests(&self.ring, span, self.max_read_registers)
    }

    /// Takes the header and the slots read for `span` (the reads' words concatenated). Slots
    /// from a span that no longer starts at the read index (stale plan) are ignored.
    pub fn handle(&mut self, header: &Header, slots: Option<(SlotSpan, &[u16])>) -> EventPoll {
        let p = self.position(header);
        let mut faults = Vec::new();
        let mut resync = None;
        if let Some(cause) = p.cause {
            let orphaned = match cause {
                ResyncCause::PlcRestart { previous } => {
                    let orphaned = self.in_flight.drain();
                    faults.push(RingFault::PlcRestart { previous, boot: p.boot, orphaned: orphaned.len() });
                    orphaned
                }
                ResyncCause::FirstContact | ResyncCause::EventsLost => Vec::new(),
            };
            tracing::info!(boot = p.boot, read_index = p.read_index, ?cause, "event ring resynchronised");
            resync = Some(Resync { cause, boot: p.boot, orphaned });
            self.stuck = None;
        }
        if let Some(jump) = p.jump {
            // What the skipped slots held is gone: a fault, never a quiet resync.
            tracing::error!(%jump, "event ring index jump: events lost");
            faults.push(jump);
            self.stuck = None;
            let mut orphaned = resync.take().map(|r: Resync| r.orphaned).unwrap_or_default();
            orphaned.extend(self.in_flight.drain());
            resync = Some(Resync { cause: ResyncCause::EventsLost, boot: p.boot, orphaned });
        }
        self.boot = Some(PlcBoot::of(header));
        self.read_index = p.read_index;
        let mut events = Vec::new();
        let unread = Ring::unread(header.event_write_index, self.read_index);
        if let Some((span, words)) = slots.filter(|(s, _)| s.first_index == self.read_index) {
            let sw = self.layout.words;
            let count = span.count.min(unread);
            for (k, slot) in words.chunks(sw).take(usize::from(count)).enumerate() {
                let index = span.first_index.wrapping_add(k as u16);
                match self.layout.decode(slot, index) {
                    Ok(raw) => {
                        let event = PlcEvent::classify(&self.codes, &raw);
                        self.track(&event, &mut faults);
                        events.push(Event { boot: p.boot, index, plc_time_ms: raw.time_ms, raw, event });
                        self.read_index = index.wrapping_add(1);
                        self.stuck = None;
                    }
                    Err(fault) => {
                        self.note_stuck(index, fault, &mut faults);
                        break;
                    }
                }
            }
        }
        EventPoll { resync, events, faults, boot: p.boot, read_index: self.read_index }
    }

    fn track(&mut self, event: &PlcEvent, faults: &mut Vec<RingFault>) {
        match *event {
            PlcEvent::GateEntered { tracking, .. } => {
                if let Some(tracking) = self.in_flight.insert(tracking) {
                    faults.push(RingFault::InFlightOverflow { tracking });
                }
            }
            PlcEvent::DivertConfirmed { tracking, .. } | PlcEvent::ParcelLost { tracking, .. } => {
                self.in_flight.remove(tracking)
            }
            _ => {}
        }
    }

    /// A torn or not-yet-written slot is retried next poll; only a slot that stays bad for the
    /// map's number of polls raises an alarm (again every as many polls). It is never skipped:
    /// the PLC then fills its ring and holds induct, the same as a host that stopped reading.
    fn note_stuck(&mut self, index: u16, fault: SlotFault, faults: &mut Vec<RingFault>) {
        let polls = match self.stuck {
            Some((i, n)) if i == index => n + 1,
            _ => 1,
        };
        self.stuck = Some((index, polls));
        tracing::debug!(index, polls, %fault, "event slot not taken");
        if polls % self.stuck_alarm_polls == 0 {
            faults.push(RingFault::EventSlotStuck { index, polls, fault });
        }
    }
}

/// Splits `span` into reads or writes of whole slots: at the ring's end and at `max_words`.
fn ring_requests(ring: &Ring, span: SlotSpan, max_words: u16) -> Vec<(u16, u16)> {
    let per_request = (max_words / ring.slot_words).max(1);
    let mut out = Vec::new();
    let (mut index, mut left) = (span.first_index, span.count.min(ring.slots));
    while left > 0 {
        let to_end = ring.slots - index % ring.slots;
        let n = left.min(to_end).min(per_request);
        out.push((ring.slot_address(index), n * ring.slot_words));
        index = index.wrapping_add(n);
        left -= n;
    }
    out
}

/// A destination for one parcel, as the core decided it: for its tracking id in the PLC boot
/// it entered the line in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub boot: u16,
    pub tracking: TrackingId,
    pub lane_id: u16,
}

impl Destination {
    /// The input that records that the PLC took this destination.
    pub fn written_input(&self) -> Input {
        Input::DestinationWritten { tracking: self.tracking, lane_id: self.lane_id }
    }
}

/// What the destination ring did since the last header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestPoll {
    /// Taken by the PLC (its read index passed them), in order: feed `DestinationWritten`.
    pub taken: Vec<Destination>,
    /// After a PLC restart: not known to be taken, and now meaningless. Their parcels run on
    /// into hold; they are not re-sent.
    pub dropped: Vec<Destination>,
    pub fault: Option<RingFault>,
}

/// The slot writes of one poll, and the write index to publish once they succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestWrite {
    pub slots: Vec<RegisterWrite>,
    pub write_index: u16,
}

#[derive(Clone, Copy, Debug)]
struct InRing {
    dest: Destination,
    /// A write of its slot succeeded on the current connection.
    written: bool,
}

/// Feeds the PLC's destination ring: queues destinations, writes their slots, and lets go of
/// one only when the PLC's read index shows it was taken.
#[derive(Clone, Debug)]
pub struct DestinationWriter {
    ring: Ring,
    layout: DestSlotLayout,
    max_write_registers: u16,
    max_queued: usize,
    boot: Option<PlcBoot>,
    /// The PLC's read index as last seen.
    plc_read: u16,
    /// Ring index of `in_ring[0]`; at or after `plc_read` (a previous host's entries may lie
    /// between them after a first contact).
    base: u16,
    in_ring: VecDeque<InRing>,
    queue: VecDeque<Destination>,
    /// Parcels of the boot before the last restart: refused, the PLC no longer tracks them.
    orphaned: HashSet<TrackingId>,
}

impl DestinationWriter {
    /// `max_queued` bounds the destinations waiting for room in the ring.
    pub fn new(map: &RegisterMap, max_queued: usize) -> DestinationWriter {
        DestinationWriter {
            ring: map.dest_ring.clone(),
            layout: map.dest_slot,
            max_write_registers: map.limits.max_write_registers,
            max_queued,
            boot: None,
            plc_read: 0,
            base: 0,
            in_ring: VecDeque::new(),
            queue: VecDeque::new(),
            orphaned: HashSet::new(),
        }
    }

    /// Queues a destination. Refused when the queue is full (the PLC is not taking them: the
    /// caller raises the alarm, the parcel keeps the PLC default) or the PLC forgot the parcel.
    pub fn push(&mut self, dest: Destination) -> Result<(), DestinationError> {
        if self.orphaned.contains(&dest.tracking) {
            return Err(DestinationError::Orphaned { tracking: dest.tracking });
        }
        // A parcel of another boot: its tracking id may be a new parcel's now.
        if let Some(boot) = self.boot.filter(|b| b.count != dest.boot) {
            return Err(DestinationError::OtherBoot { tracking: dest.tracking, boot: dest.boot, current: boot.count });
        }
        if self.queue.len() >= self.max_queued {
            return Err(DestinationError::Full { tracking: dest.tracking, capacity: self.max_queued });
        }
        self.queue.push_back(dest);
        Ok(())
    }

    /// Destinations not yet taken by the PLC: in its ring, then queued.
    pub fn pending(&self) -> usize {
        self.in_ring.len() + self.queue.len()
    }

    /// The next ring index this host writes.
    pub fn write_index(&self) -> u16 {
        self.base.wrapping_add(self.in_ring.len() as u16)
    }

    /// The write index the PLC may act on: up to the first slot not known written.
    pub fn published_index(&self) -> u16 {
        let written = self.in_ring.iter().take_while(|e| e.written).count();
        self.base.wrapping_add(written as u16)
    }

    /// Takes the header: what the PLC took, or a restart. `orphaned` are the parcels the event
    /// reader reported in flight at that restart; destinations for them are refused from now on.
    pub fn handle_header(&mut self, h: &Header, orphaned: &[TrackingId]) -> DestPoll {
        let mut poll = DestPoll::default();
        match self.boot {
            None => {
                // A previous host's entries for this boot stay where they are; continue after them.
                let start = if PlcBoot::acknowledged_in(h) { h.dest_write_index } else { h.dest_read_index };
                let unread = Ring::unread(start, h.dest_read_index);
                self.plc_read = h.dest_read_index;
                self.base = if unread <= self.ring.slots { start } else { h.dest_read_index };
                self.boot = Some(PlcBoot::of(h));
                self.in_ring.clear();
                // Queued before the host knew the boot: only those for this boot may go out.
                let (dropped, kept): (VecDeque<_>, VecDeque<_>) =
                    self.queue.drain(..).partition(|d| d.boot != h.boot_count);
                self.queue = kept;
                poll.dropped = dropped.into();
                return poll;
            }
            Some(b) if b != PlcBoot::of(h) => {
                poll.dropped = self.in_ring.drain(..).map(|e| e.dest).chain(self.queue.drain(..)).collect();
                self.orphaned = orphaned.iter().copied().chain(poll.dropped.iter().map(|d| d.tracking)).collect();
                self.boot = Some(PlcBoot::of(h));
                self.plc_read = h.dest_read_index;
                self.base = h.dest_read_index;
                if !poll.dropped.is_empty() {
                    tracing::warn!(n = poll.dropped.len(), "PLC restarted: destinations dropped, parcels to hold");
                }
                return poll;
            }
            Some(_) => {}
        }
        let ahead = Ring::unread(h.dest_read_index, self.plc_read);
        let span = Ring::unread(self.write_index(), self.plc_read);
        if ahead > span {
            // The PLC claims to have taken slots never written: a PLC bug. Believe nothing.
            poll.fault = Some(RingFault::DestIndexJump { base: self.plc_read, read: h.dest_read_index, in_ring: span });
            return poll;
        }
        let before_ours = Ring::unread(self.base, self.plc_read);
        let ours = ahead.saturating_sub(before_ours);
        poll.taken = self.in_ring.drain(..usize::from(ours)).map(|e| e.dest).collect();
        self.base = self.base.wrapping_add(ours);
        self.plc_read = h.dest_read_index;
        poll
    }

    /// Moves queued destinations into free slots and returns the slot writes not yet known to
    /// have succeeded (a rewrite is the same words at the same index: the PLC cannot take it
    /// twice). Nothing before the first header.
    pub fn poll_write(&mut self) -> DestWrite {
        let Some(boot) = self.boot.map(|b| b.count) else {
            return DestWrite { slots: Vec::new(), write_index: self.published_index() };
        };
        while Ring::unread(self.write_index(), self.plc_read) < self.ring.slots {
            let Some(dest) = self.queue.pop_front() else { break };
            self.in_ring.push_back(InRing { dest, written: false });
        }
        let mut slots = Vec::new();
        let first_dirty = self.in_ring.iter().position(|e| !e.written);
        if let Some(first) = first_dirty {
            let span = SlotSpan {
                first_index: self.base.wrapping_add(first as u16),
                count: (self.in_ring.len() - first) as u16,
            };
            let mut k = first;
            for (address, words) in ring_requests(&self.ring, span, self.max_write_registers) {
                let n = usize::from(words / self.ring.slot_words);
                let mut buf = Vec::with_capacity(usize::from(words));
                for (j, e) in self.in_ring.range(k..k + n).enumerate() {
                    buf.extend(self.layout.encode(&DestSlot {
                        seq: self.base.wrapping_add((k + j) as u16),
                        boot,
                        tracking: e.dest.tracking.0,
                        lane_id: e.dest.lane_id,
                    }));
                }
                slots.push(RegisterWrite { address, words: buf });
                k += n;
            }
        }
        DestWrite { slots, write_index: self.write_index() }
    }

    /// Events were lost: nothing more goes out for the parcels in flight then, queued or not
    /// (what is in the ring is the PLC's already). Returns the destinations dropped.
    pub fn forget(&mut self, orphaned: &[TrackingId]) -> Vec<Destination> {
        self.orphaned.extend(orphaned.iter().copied());
        let (dropped, kept): (VecDeque<_>, VecDeque<_>) =
            self.queue.drain(..).partition(|d| self.orphaned.contains(&d.tracking));
        self.queue = kept;
        dropped.into()
    }

    /// Every slot of `write` was written: the PLC may be told up to `write.write_index`.
    pub fn commit(&mut self, write: &DestWrite) {
        let n = usize::from(Ring::unread(write.write_index, self.base)).min(self.in_ring.len());
        for e in self.in_ring.range_mut(..n) {
            e.written = true;
        }
    }

    /// The link broke: what the slots hold is unknown, so everything not taken is written
    /// again on the next connection, after its header shows what the PLC took meanwhile.
    pub fn link_lost(&mut self) {
        for e in &mut self.in_ring {
            e.written = false;
        }
    }
}

/// The belt as the PLC's status word tells it, reported on change: the running bit is a core
/// input (deadlines tied to a parcel's position wait while the belt stands), a pressed
/// emergency stop a critical alarm. Jams come as `JAM_CHANGED` events.
#[derive(Clone, Debug)]
pub struct BeltWatch {
    running: bool,
    estop: bool,
}

impl Default for BeltWatch {
    /// The core starts with the belt running.
    fn default() -> Self {
        BeltWatch { running: true, estop: false }
    }
}

impl BeltWatch {
    pub fn handle(&mut self, status: &PlcStatus) -> (Option<Input>, Option<Alarm>) {
        let input = (status.running != self.running).then_some(Input::Belt { running: status.running });
        let alarm = (status.estop && !self.estop).then(|| Alarm {
            code: "plc_estop",
            severity: Severity::Critical,
            tracking: None,
            message: "emergency stop pressed: belt stopped".into(),
        });
        self.running = status.running;
        self.estop = status.estop;
        (input, alarm)
    }
}

/// Heartbeats both ways. The host's counter changes at least once per period (the PLC's
/// watchdog sees it); the PLC's must change within the timeout, or its program has stopped.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    period_ms: u64,
    timeout_ms: u64,
    host_counter: u16,
    host_changed_at: Option<Millis>,
    plc_counter: Option<u16>,
    plc_changed_at: Millis,
}

impl Heartbeat {
    pub fn new(map: &RegisterMap) -> Heartbeat {
        Heartbeat {
            period_ms: map.timing.host_heartbeat_period_ms,
            timeout_ms: map.timing.plc_heartbeat_timeout_ms,
            host_counter: 0,
            host_changed_at: None,
            plc_counter: None,
            plc_changed_at: Millis(0),
        }
    }

    /// The HOST_HEARTBEAT value to write at `now`: advanced once a period has passed.
    pub fn host_counter(&mut self, now: Millis) -> u16 {
        if self.host_changed_at.is_none_or(|at| now.since(at) >= self.period_ms) {
            self.host_counter = self.host_counter.wrapping_add(1);
            self.host_changed_at = Some(now);
        }
        self.host_counter
    }

    /// When the host must write again at the latest to keep its heartbeat moving.
    pub fn next_write_at(&self) -> Millis {
        self.host_changed_at.map_or(Millis(0), |at| at.saturating_add(self.period_ms))
    }

    /// Takes PLC_HEARTBEAT as read at `now`.
    pub fn handle_plc(&mut self, counter: u16, now: Millis) -> Result<(), PlcError> {
        if self.plc_counter != Some(counter) {
            self.plc_counter = Some(counter);
            self.plc_changed_at = now;
            return Ok(());
        }
        let for_ms = now.since(self.plc_changed_at);
        if for_ms > self.timeout_ms {
            return Err(PlcError::PlcStalled { for_ms });
        }
        Ok(())
    }

    /// After a reconnect the stall timer starts afresh: the outage was the link's, not the PLC's.
    pub fn reconnected(&mut self) {
        self.plc_counter = None;
    }
}

/// The control block for this poll.
pub fn host_control(heartbeat: u16, reader: &EventReader, writer: &DestinationWriter) -> Option<HostControl> {
    let boot = reader.boot()?;
    Some(HostControl {
        host_heartbeat: heartbeat,
        host_boot_ack: boot,
        event_read_index: reader.read_index(),
        dest_write_index: writer.published_index(),
        host_nonce_ack: reader.nonce(),
    })
}
