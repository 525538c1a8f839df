//! The handshake against a model PLC that implements the PLC side of the contract over a
//! register array, with register vectors for the edge cases and property tests over random
//! interleavings of PLC writes, host polls, link failures, torn slots, wraps and restarts.

use super::codec::{Header, PlcStatus, RawEvent};
use super::map::{RegisterMap, Ring};
use super::protocol::*;
use super::tests_support::map;
use super::{fuzzing, PlcError, RingFault};
use crate::core::{Input, Millis, PlcHoldCause, SyncCause, TrackingId, TriggerCount};
use proptest::prelude::*;
use std::collections::HashSet;

/// The PLC side, as docs/register-map.md describes it (the parts that touch the rings).
struct ModelPlc {
    map: RegisterMap,
    regs: Vec<u16>,
    boot: u16,
    event_write: u16,
    dest_read: u16,
    heartbeat: u16,
    /// Retentive: tracking ids never repeat across restarts.
    next_tracking: u32,
    /// Parcels with a gate event and no divert yet, this boot.
    in_flight: Vec<u32>,
    /// A slot written with a stale check word: the host may read it before it is finished.
    torn: Option<(usize, Vec<u16>)>,
    emitted: Vec<(u16, RawEvent)>,
    taken: Vec<(u16, Destination)>,
}

impl ModelPlc {
    fn new(map: &RegisterMap) -> ModelPlc {
        let end = usize::from(map.dest_ring.base) + map.dest_ring.words() as usize;
        let mut plc = ModelPlc {
            map: map.clone(),
            regs: vec![0; end],
            boot: 1,
            event_write: 0,
            dest_read: 0,
            heartbeat: 0,
            next_tracking: 1,
            in_flight: Vec::new(),
            torn: None,
            emitted: Vec::new(),
            taken: Vec::new(),
        };
        plc.publish();
        plc
    }

    /// The host's indices count only once it acknowledged this boot.
    fn synced(&self) -> bool {
        self.regs[usize::from(self.map.addr.host_boot_ack)] == self.boot
    }

    fn host_event_read(&self) -> u16 {
        if self.synced() {
            self.regs[usize::from(self.map.addr.event_read_index)]
        } else {
            0
        }
    }

    fn publish(&mut self) {
        let a = self.map.addr;
        let full = Ring::unread(self.event_write, self.host_event_read()) >= self.map.event_ring.slots;
        let status = PlcStatus {
            running: true,
            event_ring_full: full,
            induct_held: full,
            host_synced: self.synced(),
            ..PlcStatus::default()
        };
        self.heartbeat = self.heartbeat.wrapping_add(1);
        for (addr, v) in [
            (a.map_version, self.map.version),
            (a.status, status.encode(&self.map.status_bits)),
            (a.boot_count, self.boot),
            (a.plc_heartbeat, self.heartbeat),
            (a.watchdog_ms, self.map.timing.watchdog_ms as u16),
            (a.event_write_index, self.event_write),
            (a.dest_read_index, self.dest_read),
        ] {
            self.regs[usize::from(addr)] = v;
        }
    }

    fn finish_torn(&mut self) {
        if let Some((at, words)) = self.torn.take() {
            self.regs[at..at + words.len()].copy_from_slice(&words);
        }
    }

    /// Writes one event; `false` when the ring is full (the PLC then holds induct, never drops).
    fn emit(&mut self, code: u16, tracking: u32, arg1: u32, arg2: u32, torn: bool) -> bool {
        self.finish_torn();
        if Ring::unread(self.event_write, self.host_event_read()) >= self.map.event_ring.slots {
            self.publish();
            return false;
        }
        let raw = RawEvent { seq: self.event_write, code, tracking, arg1, arg2, time_ms: u32::from(self.heartbeat) };
        let mut words = self.map.event_slot.encode(&raw);
        let at = usize::from(self.map.event_ring.slot_address(self.event_write));
        if torn {
            // The check word is written last; until then it is anything but right.
            let good = words.clone();
            words[self.map.event_slot.check] ^= 0x5A5A;
            self.torn = Some((at, good));
        }
        self.regs[at..at + words.len()].copy_from_slice(&words);
        self.event_write = self.event_write.wrapping_add(1);
        self.emitted.push((self.boot, raw));
        self.publish();
        true
    }

    fn gate(&mut self, torn: bool) {
        let t = self.next_tracking;
        if self.emit(self.map.codes.event.gate_entered, t, t * 7, 300, torn) {
            self.next_tracking += 1;
            self.in_flight.push(t);
        }
    }

    fn divert(&mut self) {
        if let Some(&t) = self.in_flight.first() {
            if self.emit(self.map.codes.event.divert_confirmed, t, 3, 0, false) {
                self.in_flight.remove(0);
            }
        }
    }

    /// Takes every destination the host published, checking what the PLC must check.
    fn consume(&mut self) {
        if self.synced() {
            let host_write = self.regs[usize::from(self.map.addr.dest_write_index)];
            assert!(Ring::unread(host_write, self.dest_read) <= self.map.dest_ring.slots, "destination ring overrun");
            while self.dest_read != host_write {
                let at = usize::from(self.map.dest_ring.slot_address(self.dest_read));
                let words = &self.regs[at..at + self.map.dest_slot.words];
                let slot =
                    self.map.dest_slot.decode(words, self.dest_read).expect("an index published before its slot");
                assert_eq!(slot.boot, self.boot, "a destination for another boot");
                self.taken.push((
                    self.boot,
                    Destination { boot: slot.boot, tracking: TrackingId(slot.tracking), lane_id: slot.lane_id },
                ));
                self.dest_read = self.dest_read.wrapping_add(1);
            }
        }
        self.publish();
    }

    /// Power cycle: retentive boot counter and tracking ids survive, everything else is zero.
    fn restart(&mut self) {
        self.regs.fill(0);
        self.boot = self.boot.wrapping_add(1).max(1);
        self.event_write = 0;
        self.dest_read = 0;
        self.torn = None;
        self.in_flight.clear();
        self.publish();
    }

    fn read(&self, address: u16, count: u16) -> Vec<u16> {
        self.regs[usize::from(address)..usize::from(address) + usize::from(count)].to_vec()
    }

    fn write(&mut self, address: u16, words: &[u16]) {
        let a = usize::from(address);
        self.regs[a..a + words.len()].copy_from_slice(words);
    }
}

/// A link failure injected at one step of a poll: before the request reached the PLC, or
/// after it was applied and the reply was lost.
#[derive(Clone, Copy, Debug)]
struct Fail {
    step: u8,
    applied: bool,
}

/// The host side: the driver's poll loop without the sockets.
struct Host {
    map: RegisterMap,
    reader: EventReader,
    writer: DestinationWriter,
    heartbeat: Heartbeat,
    now: Millis,
    events: Vec<Event>,
    resyncs: Vec<Resync>,
    taken: Vec<(u16, Destination)>,
    dropped: Vec<Destination>,
    refused: Vec<Destination>,
    pushed: Vec<Destination>,
    faults: Vec<RingFault>,
}

impl Host {
    fn new(map: &RegisterMap, max_queued: usize) -> Host {
        Host {
            map: map.clone(),
            reader: EventReader::new(map, 1024),
            writer: DestinationWriter::new(map, max_queued),
            heartbeat: Heartbeat::new(map),
            now: Millis(0),
            events: Vec::new(),
            resyncs: Vec::new(),
            taken: Vec::new(),
            dropped: Vec::new(),
            refused: Vec::new(),
            pushed: Vec::new(),
            faults: Vec::new(),
        }
    }

    fn push(&mut self, d: Destination) {
        self.pushed.push(d);
        if self.writer.push(d).is_err() {
            self.refused.push(d);
        }
    }

    /// One poll; `false` when the injected failure broke it.
    fn poll(&mut self, plc: &mut ModelPlc, max_slots: u16, fail: Option<Fail>, corrupt: Option<usize>) -> bool {
        self.now = self.now.saturating_add(50);
        let fails = |step: u8| fail.filter(|f| f.step == step);
        let (first, count) = self.map.header_span();
        if fails(0).is_some() {
            return self.broke();
        }
        let header = Header::decode(&self.map, &plc.read(first, count)).unwrap();
        check_identity(&self.map, &header).unwrap();
        self.heartbeat.handle_plc(header.plc_heartbeat, self.now).unwrap();
        let span = self.reader.plan(&header, max_slots);
        let mut words = Vec::new();
        if let Some(span) = span {
            if fails(1).is_some() {
                return self.broke();
            }
            for (address, count) in self.reader.reads(span) {
                words.extend(plc.read(address, count));
            }
            if let Some(i) = corrupt.filter(|_| !words.is_empty()) {
                let i = i % words.len();
                words[i] ^= 0x0400; // one bit flipped in transit
            }
        }
        let poll = self.reader.handle(&header, span.map(|s| (s, &words[..])));
        let orphaned = poll.resync.as_ref().map(|r| r.orphaned.clone()).unwrap_or_default();
        self.events.extend(poll.events);
        self.resyncs.extend(poll.resync);
        self.faults.extend(poll.faults);
        let dest = self.writer.handle_header(&header, &orphaned);
        self.taken.extend(dest.taken.iter().map(|d| (header.boot_count, *d)));
        self.dropped.extend(dest.dropped);
        self.faults.extend(dest.fault);
        let write = self.writer.poll_write();
        for w in &write.slots {
            if let Some(f) = fails(2) {
                if f.applied {
                    plc.write(w.address, &w.words);
                }
                return self.broke();
            }
            plc.write(w.address, &w.words);
        }
        self.writer.commit(&write);
        let hb = self.heartbeat.host_counter(self.now);
        let control = host_control(hb, &self.reader, &self.writer).unwrap().encode(&self.map);
        if let Some(f) = fails(3) {
            if f.applied {
                plc.write(control.address, &control.words);
            }
            return self.broke();
        }
        plc.write(control.address, &control.words);
        true
    }

    fn broke(&mut self) -> bool {
        self.writer.link_lost();
        self.heartbeat.reconnected();
        false
    }

    /// Polls with a healthy link until both rings are drained.
    fn drain(&mut self, plc: &mut ModelPlc) {
        plc.finish_torn();
        for _ in 0..200 {
            plc.consume();
            self.poll(plc, 64, None, None);
            let caught_up = self.reader.boot() == Some(plc.boot) && self.reader.read_index() == plc.event_write;
            if caught_up && self.writer.pending() == 0 && plc.dest_read == self.writer.write_index() {
                plc.consume();
                self.poll(plc, 64, None, None);
                return;
            }
        }
        panic!("the rings did not drain");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Gate { torn: bool },
    Divert,
    Consume,
    Poll { max_slots: u16, fail: Option<Fail>, corrupt: Option<usize> },
    Push(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let fail = prop::option::weighted(0.15, (0u8..4, any::<bool>()).prop_map(|(step, applied)| Fail { step, applied }));
    prop_oneof![
        6 => any::<bool>().prop_map(|t| Op::Gate { torn: t }),
        3 => Just(Op::Divert),
        4 => Just(Op::Consume),
        6 => (1u16..80, fail, prop::option::weighted(0.1, any::<usize>()))
            .prop_map(|(max_slots, fail, corrupt)| Op::Poll { max_slots, fail, corrupt }),
        3 => (1u8..12).prop_map(Op::Push),
        1 => Just(Op::Restart),
    ]
}

/// Runs `ops`, drains, and checks that no event and no destination was lost or duplicated.
/// `start`: the ring indices a previous host left acknowledged in this boot (near 65535, the
/// indices wrap during the run).
fn run(ops: &[Op], max_queued: usize, start: (u16, u16)) {
    let map = map();
    let mut plc = ModelPlc::new(&map);
    let a = map.addr;
    (plc.event_write, plc.dest_read) = start;
    for (addr, v) in [(a.host_boot_ack, 1), (a.event_read_index, start.0), (a.dest_write_index, start.1)] {
        plc.regs[usize::from(addr)] = v;
    }
    plc.publish();
    let mut host = Host::new(&map, max_queued);
    let mut next_dest = 1_000_000u32;
    for op in ops {
        match *op {
            Op::Gate { torn } => plc.gate(torn),
            Op::Divert => plc.divert(),
            Op::Consume => plc.consume(),
            Op::Poll { max_slots, fail, corrupt } => {
                host.poll(&mut plc, max_slots, fail, corrupt);
            }
            Op::Push(n) => {
                for _ in 0..n {
                    next_dest += 1;
                    // For a parcel of the boot the host knows (the core tags its parcels so); before
                    // the first header, of the model's first boot.
                    let boot = host.reader.boot().unwrap_or(1);
                    let lane_id = (next_dest % 3) as u16 + 1;
                    host.push(Destination { boot, tracking: TrackingId(next_dest), lane_id });
                }
            }
            Op::Restart => plc.restart(),
        }
    }
    host.drain(&mut plc);

    // Events: per boot, what the host took is what the PLC wrote, in order, from index 0; all
    // of it for the last boot. A restart loses only what was unread (the ring is not retentive).
    let boots: Vec<u16> = (1..=plc.boot).collect();
    for &boot in &boots {
        let written: Vec<RawEvent> = plc.emitted.iter().filter(|(b, _)| *b == boot).map(|(_, r)| *r).collect();
        let read: Vec<&Event> = host.events.iter().filter(|e| e.boot == boot).collect();
        assert!(read.len() <= written.len(), "boot {boot}: more events read than written");
        let first = if boot == 1 { start.0 } else { 0 };
        for (i, e) in read.iter().enumerate() {
            assert_eq!(e.index, first.wrapping_add(i as u16), "boot {boot}: event {i} out of place");
            assert_eq!(e.raw, written[i], "boot {boot}: event {i} differs");
        }
        if boot == plc.boot {
            assert_eq!(read.len(), written.len(), "last boot: events left unread");
        }
    }
    // Destinations: every one pushed is taken, dropped at a restart, or refused; exactly one.
    let mut seen = HashSet::new();
    for (_, d) in &plc.taken {
        assert!(seen.insert(d.tracking), "the PLC took {} twice", d.tracking);
    }
    let mut outcome = HashSet::new();
    for d in host.taken.iter().map(|(_, d)| d).chain(&host.dropped).chain(&host.refused) {
        assert!(outcome.insert(d.tracking), "{} reported twice", d.tracking);
    }
    let pushed: HashSet<TrackingId> = host.pushed.iter().map(|d| d.tracking).collect();
    assert_eq!(outcome, pushed, "a destination without an outcome");
    for &boot in &boots {
        let plc_took: Vec<Destination> = plc.taken.iter().filter(|(b, _)| *b == boot).map(|(_, d)| *d).collect();
        let host_saw: Vec<Destination> = host.taken.iter().filter(|(b, _)| *b == boot).map(|(_, d)| *d).collect();
        assert!(plc_took.starts_with(&host_saw), "boot {boot}: taken reported out of order or never taken");
        if boot == plc.boot {
            assert_eq!(plc_took, host_saw, "last boot: a take not reported");
        }
    }
    // Restart reports: the orphans are exactly the parcels the host saw enter and not leave.
    for r in &host.resyncs {
        let ResyncCause::PlcRestart { previous } = r.cause else { continue };
        let mut open: Vec<TrackingId> = Vec::new();
        for e in host.events.iter().filter(|e| e.boot == previous) {
            match e.event {
                PlcEvent::GateEntered { tracking, .. } => open.push(tracking),
                PlcEvent::DivertConfirmed { tracking, .. } => open.retain(|t| *t != tracking),
                _ => {}
            }
        }
        assert_eq!(r.orphaned, open, "orphans at the restart to boot {}", r.boot);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_event_or_destination_lost_or_duplicated(ops in prop::collection::vec(op(), 1..300)) {
        run(&ops, 16, (0, 0));
    }

    #[test]
    fn the_same_with_a_queue_that_pushes_back(ops in prop::collection::vec(op(), 1..300)) {
        run(&ops, 2, (0, 0));
    }

    #[test]
    fn the_same_across_the_u16_wrap(
        ops in prop::collection::vec(op(), 1..300),
        event_start in 65_400u16..,
        dest_start in 65_450u16..,
    ) {
        run(&ops, 8, (event_start, dest_start));
    }

    /// The fuzz target's harness, under stable: arbitrary bytes.
    #[test]
    fn register_blocks_arbitrary(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::check_register_polls(&data);
    }

    /// The fuzz target's harness from valid ring snapshots with words overwritten.
    #[test]
    fn register_blocks_mutated(
        n in 0usize..70,
        start in any::<u16>(),
        edits in prop::collection::vec((any::<usize>(), any::<u16>()), 0..6),
    ) {
        let mut data = valid_polls(n, start);
        for (at, w) in edits {
            let i = at % (data.len() / 2).max(1) * 2;
            if i + 1 < data.len() {
                data[i..i + 2].copy_from_slice(&w.to_be_bytes());
            }
        }
        fuzzing::check_register_polls(&data);
    }
}

/// `n` events from ring index `start`, in one ring snapshot per poll (two polls), encoded as
/// the fuzz harness reads them.
fn valid_polls(n: usize, start: u16) -> Vec<u8> {
    let map = fuzzing::shipped_map();
    let mut plc = ModelPlc::new(map);
    plc.boot = 7;
    plc.event_write = start;
    // The host acknowledged this boot and consumed everything before `start`.
    plc.regs[usize::from(map.addr.host_boot_ack)] = 7;
    plc.regs[usize::from(map.addr.event_read_index)] = start;
    for _ in 0..n {
        plc.gate(false);
    }
    let (first, count) = map.header_span();
    let header = plc.read(first, count);
    let written = plc.event_write.wrapping_sub(start).min(map.event_ring.slots);
    let span = SlotSpan { first_index: start, count: written };
    let reader = EventReader::new(map, 64);
    let slots: Vec<u16> = reader.reads(span).into_iter().flat_map(|(a, c)| plc.read(a, c)).collect();
    let mut data = fuzzing::encode_poll(&header, &slots);
    data.extend(fuzzing::encode_poll(&header, &[]));
    data
}

// --- register vectors

fn header(map: &RegisterMap, boot: u16, write: u16, ack: u16, read: u16) -> Header {
    let mut words = vec![0u16; usize::from(map.header_span().1)];
    words[usize::from(map.addr.map_version)] = map.version;
    words[usize::from(map.addr.watchdog_ms)] = 1000;
    words[usize::from(map.addr.boot_count)] = boot;
    words[usize::from(map.addr.event_write_index)] = write;
    words[usize::from(map.addr.host_boot_ack)] = ack;
    words[usize::from(map.addr.event_read_index)] = read;
    Header::decode(map, &words).unwrap()
}

fn gate_slot(map: &RegisterMap, index: u16, tracking: u32) -> Vec<u16> {
    let raw = RawEvent { seq: index, code: 1, tracking, arg1: 40 + tracking, arg2: 0, time_ms: 5 };
    map.event_slot.encode(&raw)
}

#[test]
fn first_contact_resumes_from_the_index_the_plc_holds() {
    let map = map();
    let mut r = EventReader::new(&map, 8);
    let h = header(&map, 3, 12, 3, 10);
    let span = r.plan(&h, 64).unwrap();
    assert_eq!(span, SlotSpan { first_index: 10, count: 2 });
    assert_eq!(r.reads(span), vec![(32 + 10 * 12, 24)]);
    let words = [gate_slot(&map, 10, 100), gate_slot(&map, 11, 101)].concat();
    let poll = r.handle(&h, Some((span, &words)));
    assert_eq!(poll.resync.unwrap().cause, ResyncCause::FirstContact);
    assert_eq!(poll.events.len(), 2);
    assert_eq!(
        poll.events[1].event.to_input(&map.codes, None),
        Some(Input::Gate { tracking: TrackingId(101), trigger: TriggerCount(141), length_mm: None, at: None })
    );
    assert_eq!((poll.boot, poll.read_index), (3, 12));
    // Without an acknowledgement of this boot, the index in the PLC is from before its restart.
    let r = EventReader::new(&map, 8);
    assert_eq!(r.plan(&header(&map, 3, 12, 2, 10), 64), Some(SlotSpan { first_index: 0, count: 12 }));
}

#[test]
fn indices_wrap_at_65536_and_reads_split_at_the_ring_end() {
    let map = map();
    let mut r = EventReader::new(&map, 8);
    let h = header(&map, 1, 3, 1, 65530);
    let span = r.plan(&h, 64).unwrap();
    assert_eq!(span, SlotSpan { first_index: 65530, count: 9 });
    // 65530 mod 64 = 58: slots 58..=63, then 0..=2.
    assert_eq!(r.reads(span), vec![(32 + 58 * 12, 6 * 12), (32, 3 * 12)]);
    let words: Vec<u16> = (0..9).flat_map(|k| gate_slot(&map, 65530u16.wrapping_add(k), 1 + u32::from(k))).collect();
    let poll = r.handle(&h, Some((span, &words)));
    let indices: Vec<u16> = poll.events.iter().map(|e| e.index).collect();
    assert_eq!(indices, [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2]);
    assert_eq!(poll.read_index, 3);
}

#[test]
fn reads_fit_the_modbus_limit() {
    let map = map();
    let r = EventReader::new(&map, 8);
    let reads = r.reads(SlotSpan { first_index: 0, count: 64 });
    assert!(reads.iter().all(|(_, n)| *n <= 125 && n % 12 == 0));
    assert_eq!(reads.iter().map(|(_, n)| u32::from(*n)).sum::<u32>(), 64 * 12);
    assert_eq!(reads[0], (32, 120));
}

#[test]
fn a_torn_slot_is_retried_not_consumed_and_alarmed_when_it_stays_bad() {
    let map = map();
    let mut r = EventReader::new(&map, 8);
    let h = header(&map, 1, 2, 1, 0);
    let good = [gate_slot(&map, 0, 1), gate_slot(&map, 1, 2)].concat();
    let mut torn = good.clone();
    torn[12 + 3] ^= 1; // slot 1 read half old, half new
    let span = r.plan(&h, 64).unwrap();
    let poll = r.handle(&h, Some((span, &torn)));
    assert_eq!(poll.events.len(), 1);
    assert_eq!(poll.read_index, 1, "the torn slot is not consumed");
    for polls in 2..=5 {
        let span = r.plan(&h, 64).unwrap();
        let poll = r.handle(&h, Some((span, &torn[12..])));
        assert!(poll.events.is_empty());
        let stuck = poll.faults.iter().any(|f| matches!(f, RingFault::EventSlotStuck { index: 1, polls: 5, .. }));
        assert_eq!(stuck, polls == 5, "alarm after the map's torn_read_alarm_polls");
    }
    let span = r.plan(&h, 64).unwrap();
    let poll = r.handle(&h, Some((span, &good[12..])));
    assert_eq!(poll.events.len(), 1);
    assert_eq!(poll.events[0].event.tracking(), Some(TrackingId(2)));
    // A stale slot from the previous lap (index 1 - 64) is not taken for index 1 either.
    let mut r = EventReader::new(&map, 8);
    let stale = gate_slot(&map, 1u16.wrapping_sub(64), 9);
    let h = header(&map, 1, 2, 1, 1);
    let span = r.plan(&h, 64).unwrap();
    assert!(r.handle(&h, Some((span, &stale))).events.is_empty());
}

#[test]
fn a_write_index_jump_is_lost_events_with_an_alarm() {
    let map = map();
    let mut r = EventReader::new(&map, 8);
    let h = header(&map, 1, 5, 1, 5);
    r.handle(&h, None);
    let jumped = header(&map, 1, 5 + 65, 1, 5);
    assert_eq!(r.plan(&jumped, 64), None, "nothing to read after the jump");
    let poll = r.handle(&jumped, None);
    assert!(matches!(poll.faults[..], [RingFault::EventIndexJump { read: 5, write: 70, unread: 65, slots: 64 }]));
    assert_eq!(poll.read_index, 70);
    assert_eq!(poll.faults[0].alarm().code, "plc_event_index_jump");
    // Never a quiet resync: the core is told events were lost.
    let resync = poll.resync.expect("a jump resynchronises as lost events");
    assert_eq!(resync.input(), Input::PlcSync { boot: 1, cause: SyncCause::EventsLost });
    // A write index behind the read index is a jump too (unread wraps to a huge number).
    let poll = r.handle(&header(&map, 1, 60, 1, 70), None);
    assert!(matches!(poll.faults[..], [RingFault::EventIndexJump { .. }]));
}

#[test]
fn a_plc_restart_reports_the_parcels_in_flight() {
    let map = map();
    let mut r = EventReader::new(&map, 8);
    let h = header(&map, 4, 3, 4, 0);
    let divert = map.event_slot.encode(&RawEvent { seq: 2, code: 3, tracking: 1, arg1: 3, arg2: 0, time_ms: 9 });
    let words = [gate_slot(&map, 0, 1), gate_slot(&map, 1, 2), divert].concat();
    let span = r.plan(&h, 64).unwrap();
    let poll = r.handle(&h, Some((span, &words)));
    assert_eq!(
        poll.events[2].event.to_input(&map.codes, None),
        Some(Input::Divert { tracking: TrackingId(1), lane_id: 3 })
    );
    assert_eq!(r.in_flight(), vec![TrackingId(2)]);
    // Restart: boot 5, ring empty again; our ack (4) is stale.
    let after = header(&map, 5, 0, 0, 0);
    let poll = r.handle(&after, None);
    let resync = poll.resync.unwrap();
    assert_eq!(resync.cause, ResyncCause::PlcRestart { previous: 4 });
    assert_eq!(resync.orphaned, vec![TrackingId(2)]);
    assert_eq!(resync.input(), Input::PlcSync { boot: 5, cause: SyncCause::Restart });
    assert_eq!((poll.boot, poll.read_index), (5, 0));
    assert!(r.in_flight().is_empty());
}

#[test]
fn events_map_to_core_inputs_and_alarms() {
    let map = map();
    let c = &map.codes.event;
    let raw = |code, tracking, arg1, arg2| RawEvent { seq: 0, code, tracking, arg1, arg2, time_ms: 0 };
    let t = TrackingId(77);
    let cases = [
        (
            raw(c.gate_entered, 77, 5, 420),
            Some(Input::Gate { tracking: t, trigger: TriggerCount(5), length_mm: Some(420), at: Some(Millis(7)) }),
        ),
        (raw(c.xray_entered, 77, 9001, 0), Some(Input::XrayEntered { tracking: t, image_seq: 9001 })),
        (raw(c.divert_confirmed, 77, 2, 0), Some(Input::Divert { tracking: t, lane_id: 2 })),
        (raw(c.parcel_lost, 77, 1, 0), Some(Input::Lost { tracking: t })),
        (raw(c.safe_mode_changed, 0, 1, 1), Some(Input::PlcStatus { safe_mode: true })),
        (raw(c.safe_mode_changed, 0, 1, 0), Some(Input::PlcStatus { safe_mode: false })),
        (raw(c.lane_full_changed, 0, 3, 1), None),
        (raw(c.dest_rejected, 77, 1, 1), Some(Input::PlcHold { tracking: t, cause: PlcHoldCause::Late })),
        (
            raw(c.dest_rejected, 77, 1, 5),
            Some(Input::PlcHold { tracking: t, cause: PlcHoldCause::Rejected { code: 5 } }),
        ),
        (raw(c.forced_hold, 77, 1, 0), Some(Input::PlcHold { tracking: t, cause: PlcHoldCause::Forced { code: 1 } })),
        (raw(c.untracked_parcel, 0, 4, 0), None),
    ];
    for (raw, input) in cases {
        assert_eq!(PlcEvent::classify(c, &raw).to_input(&map.codes, Some(Millis(7))), input, "{raw:?}");
    }
    for bad in [
        raw(99, 77, 0, 0),                      // unknown code
        raw(c.gate_entered, 0, 5, 0),           // tracking id 0
        raw(c.divert_confirmed, 77, 70_000, 0), // lane id beyond u16
        raw(c.jam_changed, 0, 1, 2),            // on/off neither 0 nor 1
    ] {
        assert_eq!(PlcEvent::classify(c, &bad), PlcEvent::Unrecognised, "{bad:?}");
    }
    let ev = |raw: RawEvent| Event { boot: 1, index: 4, plc_time_ms: 0, raw, event: PlcEvent::classify(c, &raw) };
    let a = ev(raw(c.dest_rejected, 77, 1, 1)).alarm(&map).unwrap();
    assert_eq!((a.code, a.tracking), ("plc_dest_rejected", Some(t)));
    assert!(a.message.contains("AFTER_LATCH"), "{}", a.message);
    assert_eq!(ev(raw(99, 0, 0, 0)).alarm(&map).unwrap().code, "plc_unknown_event");
    assert!(ev(raw(c.lane_full_changed, 0, 3, 0)).alarm(&map).is_none(), "lane no longer full: no alarm");
}

// --- destination ring

fn dest_header(map: &RegisterMap, boot: u16, plc_read: u16, ack: u16, host_write: u16) -> Header {
    let mut h = header(map, boot, 0, ack, 0);
    h.dest_read_index = plc_read;
    h.dest_write_index = host_write;
    h
}

/// A destination for tracking id `t` of PLC boot `boot`.
fn d(boot: u16, t: u32, lane_id: u16) -> Destination {
    Destination { boot, tracking: TrackingId(t), lane_id }
}

#[test]
fn destinations_are_written_then_released_when_taken() {
    let map = map();
    let mut w = DestinationWriter::new(&map, 4);
    w.push(d(2, 10, 1)).unwrap();
    assert!(w.poll_write().slots.is_empty(), "nothing is written before the first header");
    w.handle_header(&dest_header(&map, 2, 0, 0, 0), &[]);
    w.push(d(2, 11, 2)).unwrap();
    let write = w.poll_write();
    assert_eq!(write.write_index, 2);
    assert_eq!(write.slots.len(), 1);
    assert_eq!(write.slots[0].address, 800);
    assert_eq!(&write.slots[0].words[..5], &[0, 2, 0, 10, 1], "seq 0, boot 2, tracking 10, lane 1");
    assert_eq!(w.published_index(), 0, "not published before the slots are written");
    w.commit(&write);
    assert_eq!(w.published_index(), 2);
    assert!(w.poll_write().slots.is_empty(), "nothing rewritten on a healthy link");
    let poll = w.handle_header(&dest_header(&map, 2, 1, 2, 2), &[]);
    assert_eq!(poll.taken, vec![d(2, 10, 1)]);
    assert_eq!(poll.taken[0].written_input(), Input::DestinationWritten { tracking: TrackingId(10), lane_id: 1 });
    assert_eq!(w.pending(), 1);
}

#[test]
fn after_a_reconnect_only_what_the_plc_did_not_take_is_sent_again() {
    let map = map();
    let mut w = DestinationWriter::new(&map, 8);
    w.handle_header(&dest_header(&map, 1, 0, 0, 0), &[]);
    for t in 1..=3 {
        w.push(d(1, t, 1)).unwrap();
    }
    let first = w.poll_write();
    w.commit(&first);
    w.link_lost();
    // Reconnected: the PLC took index 0 meanwhile.
    let poll = w.handle_header(&dest_header(&map, 1, 1, 1, 3), &[]);
    assert_eq!(poll.taken, vec![d(1, 1, 1)]);
    let again = w.poll_write();
    assert_eq!(again.slots.len(), 1);
    assert_eq!(again.slots[0].address, 806, "from index 1, not 0");
    assert_eq!(again.slots[0].words[..], first.slots[0].words[6..], "same words at the same index");
    assert_eq!(again.write_index, 3);
}

#[test]
fn a_full_ring_pushes_back_with_a_clear_error() {
    let map = map();
    let mut w = DestinationWriter::new(&map, 3);
    w.handle_header(&dest_header(&map, 1, 0, 0, 0), &[]);
    for t in 0..32 {
        w.push(d(1, t, 1)).unwrap();
        w.poll_write();
    }
    for t in 32..35 {
        w.push(d(1, t, 1)).unwrap();
    }
    let write = w.poll_write();
    assert_eq!(write.write_index, 32, "the ring holds 32 slots; the rest wait");
    let e = w.push(d(1, 99, 1)).unwrap_err();
    assert!(e.to_string().contains("ring and queue full"), "{e}");
    assert_eq!(e.alarm().code, "plc_dest_backpressure");
    w.commit(&write);
    w.handle_header(&dest_header(&map, 1, 2, 1, 32), &[]);
    assert_eq!(w.poll_write().write_index, 34, "room made by the PLC is used at once");
}

#[test]
fn a_plc_restart_drops_and_then_refuses_destinations_of_the_old_boot() {
    let map = map();
    let mut w = DestinationWriter::new(&map, 8);
    w.handle_header(&dest_header(&map, 1, 0, 0, 0), &[]);
    w.push(d(1, 1, 1)).unwrap();
    w.push(d(1, 2, 2)).unwrap();
    let write = w.poll_write();
    w.commit(&write);
    w.push(d(1, 3, 1)).unwrap();
    let poll = w.handle_header(&dest_header(&map, 2, 0, 0, 0), &[TrackingId(4)]);
    assert_eq!(poll.dropped, vec![d(1, 1, 1), d(1, 2, 2), d(1, 3, 1)]);
    assert_eq!(w.pending(), 0);
    for t in [3, 4] {
        assert!(matches!(w.push(d(1, t, 1)), Err(crate::plc::DestinationError::Orphaned { .. })));
    }
    // A parcel of the old boot never gets a destination under the new one, tracking id reused or not.
    assert!(matches!(w.push(d(1, 9, 1)), Err(crate::plc::DestinationError::OtherBoot { boot: 1, current: 2, .. })));
    w.push(d(2, 5, 1)).unwrap();
    let write = w.poll_write();
    assert_eq!(write.slots[0].words[..2], [0, 2], "index 0 of boot 2");
}

#[test]
fn first_contact_continues_after_a_previous_hosts_entries() {
    let map = map();
    let mut w = DestinationWriter::new(&map, 8);
    // The previous daemon wrote up to 7 for this boot; the PLC has taken up to 5.
    w.handle_header(&dest_header(&map, 3, 5, 3, 7), &[]);
    w.push(d(3, 1, 1)).unwrap();
    let write = w.poll_write();
    assert_eq!(write.slots[0].address, 800 + 7 * 6);
    w.commit(&write);
    let poll = w.handle_header(&dest_header(&map, 3, 7, 3, 8), &[]);
    assert!(poll.taken.is_empty(), "the PLC took the previous host's entries, not ours");
    let poll = w.handle_header(&dest_header(&map, 3, 8, 3, 8), &[]);
    assert_eq!(poll.taken, vec![d(3, 1, 1)]);
    // A read index beyond anything written is a PLC fault: believed by nobody.
    let poll = w.handle_header(&dest_header(&map, 3, 20, 3, 8), &[]);
    assert!(matches!(poll.fault, Some(RingFault::DestIndexJump { .. })));
}

// --- heartbeat and identity

#[test]
fn heartbeats_both_ways() {
    let map = map();
    let mut hb = Heartbeat::new(&map);
    assert_eq!(hb.host_counter(Millis(0)), 1);
    assert_eq!(hb.host_counter(Millis(150)), 1, "within the period");
    assert_eq!(hb.host_counter(Millis(200)), 2);
    assert_eq!(hb.next_write_at(), Millis(400));
    hb.handle_plc(10, Millis(0)).unwrap();
    hb.handle_plc(10, Millis(1000)).unwrap();
    assert_eq!(hb.handle_plc(10, Millis(1001)), Err(PlcError::PlcStalled { for_ms: 1001 }));
    hb.handle_plc(11, Millis(1100)).unwrap();
    hb.reconnected();
    hb.handle_plc(11, Millis(5000)).unwrap();
}

#[test]
fn a_plc_with_another_map_version_is_refused() {
    let map = map();
    let mut h = header(&map, 1, 0, 0, 0);
    check_identity(&map, &h).unwrap();
    // A PLC still running the version 1 program (no BOOT_NONCE) is refused.
    h.map_version = 1;
    let e = check_identity(&map, &h).unwrap_err();
    assert_eq!(e.to_string(), "PLC implements register map version 1; this host implements 2: refusing to drive it");
    h.map_version = 2;
    h.watchdog_ms = 5000;
    assert!(matches!(check_identity(&map, &h), Err(PlcError::Watchdog { expected: 1000, found: 5000 })));
}

#[test]
fn the_model_plc_holds_induct_when_the_host_stops_reading() {
    let map = map();
    let mut plc = ModelPlc::new(&map);
    for _ in 0..70 {
        plc.gate(false);
    }
    assert_eq!(plc.emitted.len(), 64, "never overwrites an unread slot");
    let status = PlcStatus::decode(&map.status_bits, plc.regs[usize::from(map.addr.status)], 0);
    assert!(status.event_ring_full && status.induct_held);
    let mut host = Host::new(&map, 8);
    host.drain(&mut plc);
    assert_eq!(host.events.len(), 64);
}

#[test]
fn the_in_flight_table_is_bounded() {
    let map = map();
    let mut r = EventReader::new(&map, 2);
    let h = header(&map, 1, 3, 1, 0);
    let words: Vec<u16> = (0..3).flat_map(|k| gate_slot(&map, k, 1 + u32::from(k))).collect();
    let span = r.plan(&h, 64).unwrap();
    let poll = r.handle(&h, Some((span, &words)));
    assert_eq!(poll.faults, vec![RingFault::InFlightOverflow { tracking: TrackingId(1) }]);
    assert_eq!(r.in_flight(), vec![TrackingId(2), TrackingId(3)]);
}

#[test]
fn the_belt_is_reported_on_change_and_an_emergency_stop_once() {
    use super::codec::PlcStatus;
    let mut w = BeltWatch::default();
    let running = PlcStatus { running: true, ..PlcStatus::default() };
    assert_eq!(w.handle(&running), (None, None));
    let estop = PlcStatus { estop: true, ..PlcStatus::default() };
    let (input, alarm) = w.handle(&estop);
    assert_eq!(input, Some(Input::Belt { running: false }));
    assert_eq!(alarm.map(|a| a.code), Some("plc_estop"));
    assert_eq!(w.handle(&estop), (None, None), "a standing belt is reported once");
    assert_eq!(w.handle(&running).0, Some(Input::Belt { running: true }));
}

#[test]
fn a_new_boot_nonce_under_the_same_boot_count_is_a_restart() {
    let map = map();
    let mut r = EventReader::new(&map, 8);
    let mut w = DestinationWriter::new(&map, 8);
    let mut h = header(&map, 1, 2, 1, 0);
    h.boot_nonce = 0xAAAA_0001;
    let words = [gate_slot(&map, 0, 1), gate_slot(&map, 1, 2)].concat();
    let span = r.plan(&h, 64).unwrap();
    r.handle(&h, Some((span, &words)));
    w.handle_header(&h, &[]);
    w.push(d(1, 1, 1)).unwrap();
    // A memory reset: boot 1 again, ring empty, our acknowledgement of the old boot stale.
    let mut after = header(&map, 1, 0, 1, 2);
    after.boot_nonce = 0xBBBB_0002;
    after.host_nonce_ack = 0xAAAA_0001;
    let poll = r.handle(&after, None);
    let resync = poll.resync.expect("a restart");
    assert_eq!(
        (resync.cause, resync.orphaned.clone()),
        (ResyncCause::PlcRestart { previous: 1 }, vec![TrackingId(1), TrackingId(2)])
    );
    assert_eq!(poll.read_index, 0, "the stale acknowledged index is not followed");
    let dest = w.handle_header(&after, &resync.orphaned);
    assert_eq!(dest.dropped, vec![d(1, 1, 1)]);
    assert!(w.push(d(1, 2, 1)).is_err(), "a parcel the PLC forgot gets no destination");
    // The control block acknowledges the new nonce.
    let control = host_control(1, &r, &w).unwrap();
    assert_eq!((control.host_boot_ack, control.host_nonce_ack), (1, 0xBBBB_0002));
}

#[test]
fn first_contact_follows_the_acknowledged_index_only_for_the_acknowledged_nonce() {
    let map = map();
    for (ack, expected) in [(0x1234, 5), (0x9999, 0)] {
        let mut r = EventReader::new(&map, 8);
        let mut h = header(&map, 3, 5, 3, 5);
        h.boot_nonce = 0x1234;
        h.host_nonce_ack = ack;
        assert_eq!(r.handle(&h, None).read_index, expected, "nonce acknowledged {ack:#x}");
    }
}
