//! The PLC's side of the register map (docs/register-map.md, "PLC side, every scan"), pure:
//! time is passed in, nothing here knows a socket. [`crate::modbus`] serves the bank over
//! Modbus TCP and feeds it the [`crate::World`]'s events; tests drive it directly.
//!
//! Two clocks, because the simulated line runs faster than real time while the host's
//! heartbeat runs on the real one: `scan(plc_ms, line_ms)` takes the PLC's own scan clock
//! (heartbeats, watchdog: real milliseconds) and the line's clock (the conveyor's virtual
//! milliseconds, published as `PLC_TIME_MS` and stamped on events, the time base of the
//! parcel events the host reads). On a real PLC the two are the same clock.

use std::collections::VecDeque;

use sortline_plc_contract::codec::put_u32;
use sortline_plc_contract::{DestSlot, PlcStatus, RawEvent, RegisterMap};

/// Events the PLC queues locally while the ring is full. A real PLC stops the belt at its stop
/// level; the simulator's belt does not stop, so this is only a safety cap (never reached in
/// a run where the host reads).
const EVENT_QUEUE_CAP: usize = 100_000;
/// Destination slots taken per scan at most (the reference program's bound).
const DEST_PER_SCAN: usize = 8;
/// Scans a malformed destination slot may stay malformed before DEST_RING_ERROR is set.
const DEST_STUCK_SCANS: u32 = 50;
/// Mixed into the start count to make `BOOT_NONCE` (any constant would do; deterministic).
const NONCE_KEY: u32 = 0x5EED_B007;

/// A bijection on u32 (Wellons' lowbias32): distinct start counts give distinct nonces.
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

/// Why a Modbus request cannot be served: answered with exception 0x02, illegal data address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterFault {
    /// Outside the bank.
    OutOfRange { address: u16, count: u16 },
    /// A write touching a register the PLC writes (one writer per register).
    NotHostWritable { address: u16 },
}

/// What one scan did that the rest of the simulated line must act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlcScan {
    /// Well-formed destination slots taken this scan, in ring order, with this run's boot
    /// (slots of another boot are rejected here, `BAD_SLOT`). The caller applies each and
    /// answers the ones that cannot be applied with [`PlcRegisters::reject`].
    pub taken: Vec<DestSlot>,
    /// Safe mode switched (`true` on, `false` off) during this scan.
    pub safe_mode_changed: Option<bool>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    code: u16,
    tracking: u32,
    arg1: u32,
    arg2: u32,
    time_ms: u32,
}

/// The register bank and the PLC side of every handshake.
#[derive(Clone, Debug)]
pub struct PlcRegisters {
    map: RegisterMap,
    bank: Vec<u16>,
    /// Persistent: survives [`PlcRegisters::restart`], not [`PlcRegisters::memory_reset`].
    boot_count: u16,
    /// This start's `BOOT_NONCE`; persistent like the boot count, so the next differs from it.
    boot_nonce: u32,
    /// Every start ever, memory resets included: the stand-in for the PLC's nonce source (its
    /// real-time clock), which no reset clears.
    starts: u32,
    line_ms: u64,
    // Event ring.
    queue: VecDeque<Pending>,
    write_index: u16,
    /// The last EVENT_READ_INDEX taken while synced (docs: "acked").
    acked: u16,
    // Destination ring.
    read_index: u16,
    dest_stuck_scans: u32,
    dest_ring_error: bool,
    /// Fault: no destination is taken before this line ms (a PLC task overrun).
    dest_paused_until_ms: u64,
    /// LANE_FULL: bit n set while lane id n is full.
    lanes_full: u16,
    /// Eyes reporting a jam, and the emergency stop: either stops the belt.
    jams: std::collections::BTreeSet<u32>,
    estop: bool,
    // Heartbeats and safe mode.
    host_heartbeat: Option<u16>,
    host_heartbeat_at_ms: u64,
    plc_heartbeat_at_ms: u64,
    watchdog_tripped: bool,
    synced: bool,
    safe_mode: bool,
    plc_heartbeat_stopped: bool,
    watchdog_broken: bool,
}

impl PlcRegisters {
    /// A PLC at its first start (`BOOT_COUNT` 1) at PLC time `plc_ms`.
    pub fn new(map: &RegisterMap, plc_ms: u64) -> PlcRegisters {
        let end = [
            map.header_span().0 as usize + map.header_span().1 as usize,
            usize::from(map.event_ring.base) + map.event_ring.words() as usize,
            usize::from(map.dest_ring.base) + map.dest_ring.words() as usize,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let mut plc = PlcRegisters {
            map: map.clone(),
            bank: vec![0; end],
            boot_count: 0,
            boot_nonce: 0,
            starts: 0,
            line_ms: 0,
            queue: VecDeque::new(),
            write_index: 0,
            acked: 0,
            read_index: 0,
            dest_stuck_scans: 0,
            dest_ring_error: false,
            dest_paused_until_ms: 0,
            lanes_full: 0,
            jams: std::collections::BTreeSet::new(),
            estop: false,
            host_heartbeat: None,
            host_heartbeat_at_ms: plc_ms,
            plc_heartbeat_at_ms: plc_ms,
            watchdog_tripped: false,
            synced: false,
            safe_mode: false,
            plc_heartbeat_stopped: false,
            watchdog_broken: false,
        };
        plc.start(plc_ms);
        plc
    }

    /// Step 1 of the PLC side: boot count up (skipping 0), a new nonce, everything else
    /// cleared, safe mode until the host acknowledges the new boot.
    fn start(&mut self, plc_ms: u64) {
        self.boot_count = self.boot_count.wrapping_add(1).max(1);
        self.starts = self.starts.wrapping_add(1);
        let mut nonce = mix32(self.starts ^ NONCE_KEY);
        if nonce == self.boot_nonce {
            // The contract's guarantee, as sortline.st gives it (mix32 alone never repeats here).
            nonce ^= 1;
        }
        self.boot_nonce = nonce;
        self.bank.iter_mut().for_each(|w| *w = 0);
        self.queue.clear();
        self.write_index = 0;
        self.acked = 0;
        self.read_index = 0;
        self.dest_stuck_scans = 0;
        self.dest_ring_error = false;
        self.host_heartbeat = None;
        self.host_heartbeat_at_ms = plc_ms;
        self.plc_heartbeat_at_ms = plc_ms;
        self.watchdog_tripped = false;
        self.synced = false;
        self.safe_mode = true;
        let cause = self.cause("NOT_SYNCED");
        self.push(self.map.codes.event.safe_mode_changed, 0, cause, 1);
        self.publish();
    }

    /// A PLC restart (power cycle, cold reset, program download): rings and queues reset, boot
    /// count up, a new nonce.
    pub fn restart(&mut self, plc_ms: u64) {
        self.start(plc_ms);
    }

    /// A memory reset (CODESYS or TwinCAT Reset Origin, a Siemens MRES) or a replaced CPU, then
    /// a start: the persistent memory is gone, so this is boot 1 again and only `BOOT_NONCE`
    /// shows the host the restart. The previous nonce is gone too; the new one still differs.
    pub fn memory_reset(&mut self, plc_ms: u64) {
        self.boot_count = 0;
        self.boot_nonce = 0;
        self.start(plc_ms);
    }

    /// Fault knob: the PLC program hangs (its heartbeat stops moving); the bank stays served.
    pub fn stop_heartbeat(&mut self, stopped: bool) {
        self.plc_heartbeat_stopped = stopped;
    }

    /// Fault knob: the PLC program's watchdog never trips (a host that stops is not noticed).
    pub fn break_watchdog(&mut self, broken: bool) {
        self.watchdog_broken = broken;
    }

    /// The lane-full sensor of `lane_id` (0..=15) changed: its LANE_FULL bit and an event.
    pub fn set_lane_full(&mut self, line_ms: u64, lane_id: u16, on: bool) {
        let Some(bit) = 1u16.checked_shl(u32::from(lane_id)) else {
            return;
        };
        let before = self.lanes_full;
        self.lanes_full = if on { before | bit } else { before & !bit };
        if self.lanes_full != before {
            let code = self.map.codes.event.lane_full_changed;
            self.event(line_ms, code, 0, u32::from(lane_id), u32::from(on));
        }
    }

    /// No new parcel is let onto the belt: safe mode, or events waiting for room in the ring.
    pub fn induct_held(&self) -> bool {
        self.safe_mode || !self.queue.is_empty()
    }

    /// The belt runs unless a jam eye is blocked or the emergency stop is pressed.
    pub fn belt_running(&self) -> bool {
        self.jams.is_empty() && !self.estop
    }

    /// The line ms of the latest scan.
    pub fn line_ms(&self) -> u64 {
        self.line_ms
    }

    /// A jam eye blocked or cleared: `JAM_CHANGED` on a change.
    pub fn set_jam(&mut self, line_ms: u64, eye: u32, on: bool) {
        let changed = if on { self.jams.insert(eye) } else { self.jams.remove(&eye) };
        if changed {
            let code = self.map.codes.event.jam_changed;
            self.event(line_ms, code, 0, eye, u32::from(on));
        }
    }

    pub fn set_estop(&mut self, on: bool) {
        self.estop = on;
    }

    /// Fault: the destination ring is not read for the next `line_ms` of line time; what the
    /// host wrote meanwhile is taken afterwards, late for the parcels already past the latch.
    pub fn pause_destinations(&mut self, line_ms: u64) {
        self.dest_paused_until_ms = self.line_ms.saturating_add(line_ms);
    }

    pub fn map(&self) -> &RegisterMap {
        &self.map
    }

    pub fn boot_count(&self) -> u16 {
        self.boot_count
    }

    pub fn boot_nonce(&self) -> u32 {
        self.boot_nonce
    }

    pub fn safe_mode(&self) -> bool {
        self.safe_mode
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Events queued locally, not yet in the ring (the ring is full).
    pub fn queued_events(&self) -> usize {
        self.queue.len()
    }

    fn cause(&self, name: &str) -> u32 {
        self.map.codes.safe_mode_cause.get(name).copied().map_or(0, u32::from)
    }

    /// A detail code by name from one of the map's tables (0 when the map lacks it).
    pub fn code(table: &std::collections::BTreeMap<String, u16>, name: &str) -> u32 {
        table.get(name).copied().map_or(0, u32::from)
    }

    fn push(&mut self, code: u16, tracking: u32, arg1: u32, arg2: u32) {
        self.event(self.line_ms, code, tracking, arg1, arg2);
    }

    /// Queues an event that happened at line time `line_ms` (`TIME_MS` wraps like `PLC_TIME_MS`).
    pub fn event(&mut self, line_ms: u64, code: u16, tracking: u32, arg1: u32, arg2: u32) {
        if self.queue.len() >= EVENT_QUEUE_CAP {
            // A real PLC has stopped the belt long before; the simulator says so loudly.
            tracing::error!(code, tracking, "simulated PLC event queue full: event dropped");
            return;
        }
        self.queue.push_back(Pending { code, tracking, arg1, arg2, time_ms: line_ms as u32 });
    }

    /// Answers a taken destination that could not be applied (`RJ_` code by name).
    pub fn reject(&mut self, line_ms: u64, slot: &DestSlot, reason: &str) {
        let code = Self::code(&self.map.codes.reject, reason);
        self.event(line_ms, self.map.codes.event.dest_rejected, slot.tracking, u32::from(slot.lane_id), code);
    }

    /// Reads `count` registers from `address`.
    pub fn read(&self, address: u16, count: u16) -> Result<Vec<u16>, RegisterFault> {
        let (a, n) = (usize::from(address), usize::from(count));
        self.bank.get(a..a + n).map(<[u16]>::to_vec).ok_or(RegisterFault::OutOfRange { address, count })
    }

    /// Writes registers from `address`: only the host block and the destination ring.
    pub fn write(&mut self, address: u16, words: &[u16]) -> Result<(), RegisterFault> {
        let (a, n) = (usize::from(address), words.len());
        if a + n > self.bank.len() {
            return Err(RegisterFault::OutOfRange { address, count: n as u16 });
        }
        let (c0, cn) = self.map.control_span();
        let dest = &self.map.dest_ring;
        let (d0, dn) = (usize::from(dest.base), dest.words() as usize);
        let host =
            |r: usize| (usize::from(c0)..usize::from(c0) + usize::from(cn)).contains(&r) || (d0..d0 + dn).contains(&r);
        if let Some(r) = (a..a + n).find(|&r| !host(r)) {
            return Err(RegisterFault::NotHostWritable { address: r as u16 });
        }
        self.bank[a..a + n].copy_from_slice(words);
        Ok(())
    }

    fn reg(&self, address: u16) -> u16 {
        self.bank[usize::from(address)]
    }

    /// One PLC scan at PLC time `plc_ms` with the line at `line_ms`: sync, watchdog, events into
    /// the ring, destinations out of it, status. The caller applies `taken` to the conveyor.
    pub fn scan(&mut self, plc_ms: u64, line_ms: u64) -> PlcScan {
        self.line_ms = self.line_ms.max(line_ms);
        let mut out = PlcScan::default();
        let a = self.map.addr;
        // 2. Sync.
        let was_synced = self.synced;
        // Both acknowledgements: after a memory reset the boot count alone repeats.
        let nonce_ack = u32::from(self.reg(a.host_nonce_ack)) << 16 | u32::from(self.reg(a.host_nonce_ack + 1));
        self.synced = self.reg(a.host_boot_ack) == self.boot_count && nonce_ack == self.boot_nonce;
        // 3. Watchdog: restarted by every change of the host's heartbeat.
        let hb = self.reg(a.host_heartbeat);
        if self.host_heartbeat != Some(hb) {
            self.host_heartbeat = Some(hb);
            self.host_heartbeat_at_ms = plc_ms;
            if self.watchdog_tripped {
                self.watchdog_tripped = false;
                let cause = self.cause("WATCHDOG");
                self.push(self.map.codes.event.safe_mode_changed, 0, cause, 0);
            }
        } else if !self.watchdog_tripped
            && !self.watchdog_broken
            && plc_ms.saturating_sub(self.host_heartbeat_at_ms) > self.map.timing.watchdog_ms
        {
            self.watchdog_tripped = true;
            tracing::warn!(plc_ms, "simulated PLC watchdog tripped: safe mode");
            let cause = self.cause("WATCHDOG");
            self.push(self.map.codes.event.safe_mode_changed, 0, cause, 1);
        }
        if self.synced && !was_synced {
            let cause = self.cause("NOT_SYNCED");
            self.push(self.map.codes.event.safe_mode_changed, 0, cause, 0);
        }
        let safe_mode = !self.synced || self.watchdog_tripped;
        if safe_mode != self.safe_mode {
            self.safe_mode = safe_mode;
            out.safe_mode_changed = Some(safe_mode);
        }
        // 4. Events: the acknowledged index moves only while synced, and only forward.
        if self.synced {
            let r = self.reg(a.event_read_index);
            if ring_unread(r, self.acked) <= ring_unread(self.write_index, self.acked) {
                self.acked = r;
            }
        }
        while ring_unread(self.write_index, self.acked) < self.map.event_ring.slots {
            let Some(p) = self.queue.pop_front() else { break };
            let raw = RawEvent {
                seq: self.write_index,
                code: p.code,
                tracking: p.tracking,
                arg1: p.arg1,
                arg2: p.arg2,
                time_ms: p.time_ms,
            };
            let words = self.map.event_slot.encode(&raw);
            let at = usize::from(self.map.event_ring.slot_address(self.write_index));
            // The slot's words, CHECK last (a whole slot per scan is atomic to a Modbus read here,
            // but the order is the contract's).
            let check = self.map.event_slot.check;
            for (k, w) in words.iter().enumerate().filter(|(k, _)| *k != check) {
                self.bank[at + k] = *w;
            }
            self.bank[at + check] = words[check];
            self.write_index = self.write_index.wrapping_add(1);
        }
        // 5. Destinations.
        if self.synced && self.line_ms >= self.dest_paused_until_ms {
            self.take_destinations(&mut out);
        }
        // 6/7. Heartbeat and status.
        if !self.plc_heartbeat_stopped
            && plc_ms.saturating_sub(self.plc_heartbeat_at_ms) >= self.map.timing.plc_heartbeat_period_ms
        {
            self.plc_heartbeat_at_ms = plc_ms;
            let hb = self.reg(a.plc_heartbeat).wrapping_add(1);
            self.bank[usize::from(a.plc_heartbeat)] = hb;
        }
        self.publish();
        out
    }

    fn take_destinations(&mut self, out: &mut PlcScan) {
        let a = self.map.addr;
        let ring = self.map.dest_ring.clone();
        let write = self.reg(a.dest_write_index);
        if ring_unread(write, self.read_index) > ring.slots {
            self.dest_ring_error = true;
            return;
        }
        for _ in 0..DEST_PER_SCAN {
            if write == self.read_index {
                break;
            }
            let at = ring.slot_address(self.read_index);
            let words = self.read(at, ring.slot_words).unwrap_or_default();
            let slot = match self.map.dest_slot.decode(&words, self.read_index) {
                Ok(slot) => slot,
                Err(fault) => {
                    // Not finished writing: wait, never skip.
                    self.dest_stuck_scans += 1;
                    if self.dest_stuck_scans >= DEST_STUCK_SCANS {
                        self.dest_ring_error = true;
                    }
                    tracing::debug!(index = self.read_index, %fault, "destination slot not taken");
                    break;
                }
            };
            self.dest_stuck_scans = 0;
            self.dest_ring_error = false;
            self.read_index = self.read_index.wrapping_add(1);
            if slot.boot != self.boot_count {
                let line_ms = self.line_ms;
                self.reject(line_ms, &slot, "BAD_SLOT");
                continue;
            }
            out.taken.push(slot);
        }
    }

    fn publish(&mut self) {
        let a = self.map.addr;
        let status = PlcStatus {
            running: self.belt_running(),
            jam: !self.jams.is_empty(),
            estop: self.estop,
            safe_mode: self.safe_mode,
            event_ring_full: ring_unread(self.write_index, self.acked) >= self.map.event_ring.slots,
            induct_held: self.induct_held(),
            watchdog_tripped: self.watchdog_tripped,
            dest_ring_error: self.dest_ring_error,
            host_synced: self.synced,
            lane_full_any: self.lanes_full != 0,
            ..PlcStatus::default()
        };
        let words = [
            (a.map_version, self.map.version),
            (a.status, status.encode(&self.map.status_bits)),
            (a.lane_full, self.lanes_full),
            (a.fault_code, 0),
            (a.boot_count, self.boot_count),
            (a.watchdog_ms, self.map.timing.watchdog_ms as u16),
            (a.event_write_index, self.write_index),
            (a.dest_read_index, self.read_index),
        ];
        for (address, v) in words {
            self.bank[usize::from(address)] = v;
        }
        // The line's clock, wrapping at 2^32 ms as the contract says.
        put_u32(&mut self.bank, usize::from(a.plc_time_ms), self.line_ms as u32);
        put_u32(&mut self.bank, usize::from(a.boot_nonce), self.boot_nonce);
    }
}

fn ring_unread(write: u16, read: u16) -> u16 {
    write.wrapping_sub(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sortline_plc_contract::{shipped_map, Header, HostControl};

    fn header(plc: &PlcRegisters) -> Header {
        let (first, count) = plc.map().header_span();
        Header::decode(plc.map(), &plc.read(first, count).unwrap()).unwrap()
    }

    /// The host's control block, acknowledging `boot` with the PLC's current nonce.
    fn control(plc: &mut PlcRegisters, hb: u16, boot: u16, read: u16, write: u16) {
        let host_nonce_ack = plc.boot_nonce();
        let w = HostControl {
            host_heartbeat: hb,
            host_boot_ack: boot,
            event_read_index: read,
            dest_write_index: write,
            host_nonce_ack,
        }
        .encode(plc.map());
        plc.write(w.address, &w.words).unwrap();
    }

    #[test]
    fn boots_unsynced_in_safe_mode_and_syncs_on_the_host_ack() {
        let map = shipped_map();
        let mut plc = PlcRegisters::new(map, 0);
        let h = header(&plc);
        assert_eq!((h.map_version, h.boot_count, h.watchdog_ms), (2, 1, 1000));
        assert_eq!(h.boot_nonce, plc.boot_nonce());
        assert!(h.status.safe_mode && !h.status.host_synced);
        let scan = plc.scan(10, 0);
        assert_eq!(scan.safe_mode_changed, None);
        // The NOT_SYNCED event is in the ring at index 0 once scanned.
        let h = header(&plc);
        assert_eq!(h.event_write_index, 1);
        control(&mut plc, 1, 1, 0, 0);
        let scan = plc.scan(20, 0);
        assert_eq!(scan.safe_mode_changed, Some(false));
        assert!(header(&plc).status.host_synced);
    }

    #[test]
    fn the_ring_never_overwrites_an_unread_slot() {
        let map = shipped_map();
        let mut plc = PlcRegisters::new(map, 0);
        control(&mut plc, 1, 1, 0, 0);
        for t in 1..=100 {
            plc.event(5, map.codes.event.gate_entered, t, t, 300);
        }
        plc.scan(1, 5);
        let h = header(&plc);
        assert_eq!(h.event_write_index, 64);
        assert!(h.status.event_ring_full);
        // 102 queued: safe mode on (boot), 100 gates, off (synced). The host acknowledges 30:
        // 30 more move in, in order, and 8 wait.
        assert_eq!(plc.queued_events(), 102 - 64);
        control(&mut plc, 2, 1, 30, 0);
        plc.scan(2, 5);
        let h = header(&plc);
        assert_eq!(h.event_write_index, 94);
        let slot = plc.read(map.event_ring.slot_address(93), map.event_ring.slot_words).unwrap();
        let ev = map.event_slot.decode(&slot, 93).unwrap();
        assert_eq!((ev.code, ev.tracking, ev.time_ms), (map.codes.event.gate_entered, 93, 5));
        assert_eq!(plc.queued_events(), 8);
        // An acknowledgement behind the last one is ignored.
        control(&mut plc, 3, 1, 10, 0);
        plc.scan(3, 5);
        assert_eq!(header(&plc).event_write_index, 94);
    }

    #[test]
    fn destinations_are_taken_in_order_and_a_stale_boot_is_rejected() {
        let map = shipped_map();
        let mut plc = PlcRegisters::new(map, 0);
        for (i, boot) in [(0u16, 1u16), (1, 7)] {
            let w = map.dest_slot.encode(&DestSlot { seq: i, boot, tracking: 10 + u32::from(i), lane_id: 1 });
            plc.write(map.dest_ring.slot_address(i), &w).unwrap();
        }
        // Not synced: nothing taken.
        control(&mut plc, 1, 0, 0, 2);
        assert!(plc.scan(1, 0).taken.is_empty());
        control(&mut plc, 2, 1, 0, 2);
        let scan = plc.scan(2, 0);
        assert_eq!(scan.taken.len(), 1);
        assert_eq!(scan.taken[0].tracking, 10);
        assert_eq!(header(&plc).dest_read_index, 2);
        // Writes to PLC registers are refused.
        assert_eq!(plc.write(0, &[2]), Err(RegisterFault::NotHostWritable { address: 0 }));
        assert!(plc.read(990, 10).is_err());
    }

    #[test]
    fn the_watchdog_trips_and_clears_and_a_restart_counts_the_boot() {
        let map = shipped_map();
        let mut plc = PlcRegisters::new(map, 0);
        control(&mut plc, 1, 1, 0, 0);
        assert_eq!(plc.scan(100, 0).safe_mode_changed, Some(false));
        assert_eq!(plc.scan(1_100, 0).safe_mode_changed, None);
        assert_eq!(plc.scan(1_101, 0).safe_mode_changed, Some(true));
        assert!(header(&plc).status.watchdog_tripped);
        control(&mut plc, 2, 1, 0, 0);
        assert_eq!(plc.scan(1_200, 0).safe_mode_changed, Some(false));
        let nonce = header(&plc).boot_nonce;
        plc.restart(1_300);
        let h = header(&plc);
        assert_eq!((h.boot_count, h.event_write_index, h.dest_read_index), (2, 0, 0));
        assert_ne!(h.boot_nonce, nonce);
        assert!(h.status.safe_mode);
        // The host block is cleared too; the heartbeat moves with the PLC's clock.
        assert_eq!(h.host_boot_ack, 0);
        plc.scan(1_500, 0);
        assert_eq!(header(&plc).plc_heartbeat, 1);
    }

    #[test]
    fn a_memory_reset_is_boot_1_again_with_a_new_nonce() {
        let map = shipped_map();
        let mut plc = PlcRegisters::new(map, 0);
        let first = header(&plc);
        plc.restart(100);
        let second = header(&plc);
        assert_eq!((first.boot_count, second.boot_count), (1, 2));
        assert_ne!(first.boot_nonce, second.boot_nonce);
        control(&mut plc, 1, 2, 0, 0);
        plc.scan(200, 0);
        assert!(plc.synced());
        plc.memory_reset(300);
        let h = header(&plc);
        // The boot count cannot tell this boot from the first; the nonce can.
        assert_eq!((h.boot_count, h.event_write_index, h.host_boot_ack), (1, 0, 0));
        assert!(h.boot_nonce != second.boot_nonce && h.boot_nonce != first.boot_nonce);
        assert!(h.status.safe_mode && !h.status.host_synced);
        // A host that has not noticed acknowledges boot 1 with the first boot's nonce: the PLC
        // does not take it for this boot's acknowledgement.
        let stale = HostControl {
            host_heartbeat: 2,
            host_boot_ack: 1,
            event_read_index: 0,
            dest_write_index: 0,
            host_nonce_ack: first.boot_nonce,
        };
        let w = stale.encode(plc.map());
        plc.write(w.address, &w.words).unwrap();
        plc.scan(310, 0);
        assert!(!plc.synced(), "a stale nonce does not sync");
        control(&mut plc, 3, 1, 0, 0);
        plc.scan(320, 0);
        assert!(plc.synced());
        // Boots go on from 1, each with a nonce unlike the one before.
        let mut nonces = vec![h.boot_nonce];
        for k in 0..20 {
            plc.restart(400 + k);
            nonces.push(header(&plc).boot_nonce);
        }
        assert_eq!(header(&plc).boot_count, 21);
        assert!(nonces.windows(2).all(|w| w[0] != w[1]), "{nonces:?}");
    }
}
