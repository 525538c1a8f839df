//! Register-level encoding, pure functions over `u16` words: the slot check word, event and
//! destination slots, the header block, the host control block and the status word.
//! Layouts come from the [`RegisterMap`]; nothing here knows an address of its own.

use crate::map::{DestSlotLayout, EventSlotLayout, RegisterMap, StatusBits};

/// CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF) over the words' big-endian
/// bytes, the same CRC as a Modbus RTU frame so that every PLC library already has it.
pub fn crc16(words: &[u16]) -> u16 {
    crc16_bytes(words.iter().flat_map(|w| w.to_be_bytes()))
}

/// CRC-16/MODBUS over bytes: a Modbus RTU frame's check, sent low byte first.
pub fn crc16_bytes(bytes: impl IntoIterator<Item = u8>) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

/// A u32 from two registers, high word first.
pub fn get_u32(words: &[u16], at: usize) -> u32 {
    (u32::from(words[at]) << 16) | u32::from(words[at + 1])
}

/// Stores a u32 into two registers, high word first.
pub fn put_u32(words: &mut [u16], at: usize, value: u32) {
    words[at] = (value >> 16) as u16;
    words[at + 1] = value as u16;
}

/// Why a slot was not taken. Never consumed: the reader retries it on the next poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotFault {
    #[error("slot read has {found} words, expected {expected}")]
    Short { expected: usize, found: usize },
    #[error("check word {found:#06x}, computed {computed:#06x}: torn or corrupt")]
    Check { found: u16, computed: u16 },
    #[error("slot holds ring index {found}, expected {expected}: not written yet, or torn")]
    Seq { expected: u16, found: u16 },
}

/// An event slot as the PLC wrote it. `seq` is the ring index it was written at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawEvent {
    pub seq: u16,
    pub code: u16,
    pub tracking: u32,
    pub arg1: u32,
    pub arg2: u32,
    pub time_ms: u32,
}

/// A slot of either ring is well formed when it has its length, its check
/// word matches and it holds the index expected. The check is tested before
/// the index so that a torn slot is never mistaken for a stale one.
fn well_formed(words: &[u16], len: usize, check: usize, seq: usize, expected_seq: u16) -> Result<(), SlotFault> {
    if words.len() != len {
        return Err(SlotFault::Short { expected: len, found: words.len() });
    }
    let computed = crc16(&words[..check]);
    if words[check] != computed {
        return Err(SlotFault::Check { found: words[check], computed });
    }
    if words[seq] != expected_seq {
        return Err(SlotFault::Seq { expected: expected_seq, found: words[seq] });
    }
    Ok(())
}

impl EventSlotLayout {
    /// The host side's read of an event slot, if it is well formed (see `well_formed`).
    pub fn decode(&self, words: &[u16], expected_seq: u16) -> Result<RawEvent, SlotFault> {
        well_formed(words, self.words, self.check, self.seq, expected_seq)?;
        Ok(RawEvent {
            seq: words[self.seq],
            code: words[self.code],
            tracking: get_u32(words, self.tracking),
            arg1: get_u32(words, self.arg1),
            arg2: get_u32(words, self.arg2),
            time_ms: get_u32(words, self.time_ms),
        })
    }

    /// The slot's words, reserved words 0 and the check word last (the PLC side; tests, simulator).
    pub fn encode(&self, ev: &RawEvent) -> Vec<u16> {
        let mut w = vec![0u16; self.words];
        w[self.seq] = ev.seq;
        w[self.code] = ev.code;
        put_u32(&mut w, self.tracking, ev.tracking);
        put_u32(&mut w, self.arg1, ev.arg1);
        put_u32(&mut w, self.arg2, ev.arg2);
        put_u32(&mut w, self.time_ms, ev.time_ms);
        w[self.check] = crc16(&w[..self.check]);
        w
    }
}

/// A destination slot. `boot` fences it to one PLC run: a slot written for an earlier boot is
/// refused by the PLC, so a stale destination can never steer a parcel of a later run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestSlot {
    pub seq: u16,
    pub boot: u16,
    pub tracking: u32,
    pub lane_id: u16,
}

impl DestSlotLayout {
    pub fn encode(&self, slot: &DestSlot) -> Vec<u16> {
        let mut w = vec![0u16; self.words];
        w[self.seq] = slot.seq;
        w[self.boot] = slot.boot;
        put_u32(&mut w, self.tracking, slot.tracking);
        w[self.lane_id] = slot.lane_id;
        w[self.check] = crc16(&w[..self.check]);
        w
    }

    /// The PLC side's read of a destination slot (simulator, tests), if it is well formed.
    pub fn decode(&self, words: &[u16], expected_seq: u16) -> Result<DestSlot, SlotFault> {
        well_formed(words, self.words, self.check, self.seq, expected_seq)?;
        Ok(DestSlot {
            seq: words[self.seq],
            boot: words[self.boot],
            tracking: get_u32(words, self.tracking),
            lane_id: words[self.lane_id],
        })
    }
}

/// The STATUS and LANE_FULL registers, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlcStatus {
    pub running: bool,
    pub fault: bool,
    pub estop: bool,
    pub safe_mode: bool,
    pub jam: bool,
    pub lane_full_any: bool,
    pub event_ring_full: bool,
    pub induct_held: bool,
    pub watchdog_tripped: bool,
    pub dest_ring_error: bool,
    pub host_synced: bool,
    /// Bit n set: lane id n is full.
    pub lane_full: u16,
}

impl PlcStatus {
    /// Bits the map does not name are ignored: a newer PLC may add some within one map version.
    pub fn decode(bits: &StatusBits, status: u16, lane_full: u16) -> PlcStatus {
        let on = |bit: u8| status & (1 << bit) != 0;
        PlcStatus {
            running: on(bits.running),
            fault: on(bits.fault),
            estop: on(bits.estop),
            safe_mode: on(bits.safe_mode),
            jam: on(bits.jam),
            lane_full_any: on(bits.lane_full_any),
            event_ring_full: on(bits.event_ring_full),
            induct_held: on(bits.induct_held),
            watchdog_tripped: on(bits.watchdog_tripped),
            dest_ring_error: on(bits.dest_ring_error),
            host_synced: on(bits.host_synced),
            lane_full,
        }
    }

    /// The STATUS word (the PLC side; simulator, tests).
    pub fn encode(&self, bits: &StatusBits) -> u16 {
        let mut w = 0u16;
        for (set, bit) in [
            (self.running, bits.running),
            (self.fault, bits.fault),
            (self.estop, bits.estop),
            (self.safe_mode, bits.safe_mode),
            (self.jam, bits.jam),
            (self.lane_full_any, bits.lane_full_any),
            (self.event_ring_full, bits.event_ring_full),
            (self.induct_held, bits.induct_held),
            (self.watchdog_tripped, bits.watchdog_tripped),
            (self.dest_ring_error, bits.dest_ring_error),
            (self.host_synced, bits.host_synced),
        ] {
            w |= u16::from(set) << bit;
        }
        w
    }

    pub fn lane_is_full(&self, lane_id: u16) -> bool {
        lane_id < 16 && self.lane_full & (1 << lane_id) != 0
    }
}

/// All single registers as one read returned them: the PLC's header and the host's control
/// block as the PLC holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub map_version: u16,
    pub status: PlcStatus,
    pub fault_code: u16,
    pub boot_count: u16,
    pub plc_heartbeat: u16,
    pub watchdog_ms: u16,
    pub event_write_index: u16,
    pub dest_read_index: u16,
    pub plc_time_ms: u32,
    /// New at every PLC start and never the previous start's: with `boot_count`, what tells the
    /// host that the PLC restarted even when a memory reset has started the count from 1 again.
    pub boot_nonce: u32,
    pub host_heartbeat: u16,
    pub host_boot_ack: u16,
    pub event_read_index: u16,
    pub dest_write_index: u16,
    pub host_nonce_ack: u32,
}

impl Header {
    /// `words` starts at `map.header_span().0`; `None` when it is shorter than the span.
    pub fn decode(map: &RegisterMap, words: &[u16]) -> Option<Header> {
        let (first, count) = map.header_span();
        if words.len() < usize::from(count) {
            return None;
        }
        let at = |a: u16| usize::from(a - first);
        let w = |a: u16| words[at(a)];
        let a = &map.addr;
        Some(Header {
            map_version: w(a.map_version),
            status: PlcStatus::decode(&map.status_bits, w(a.status), w(a.lane_full)),
            fault_code: w(a.fault_code),
            boot_count: w(a.boot_count),
            plc_heartbeat: w(a.plc_heartbeat),
            watchdog_ms: w(a.watchdog_ms),
            event_write_index: w(a.event_write_index),
            dest_read_index: w(a.dest_read_index),
            plc_time_ms: get_u32(words, at(a.plc_time_ms)),
            boot_nonce: get_u32(words, at(a.boot_nonce)),
            host_heartbeat: w(a.host_heartbeat),
            host_boot_ack: w(a.host_boot_ack),
            event_read_index: w(a.event_read_index),
            dest_write_index: w(a.dest_write_index),
            host_nonce_ack: get_u32(words, at(a.host_nonce_ack)),
        })
    }

    /// The header block's words (the PLC side; simulator, tests, fuzz seeds).
    pub fn encode(&self, map: &RegisterMap) -> Vec<u16> {
        let (first, count) = map.header_span();
        let mut words = vec![0u16; usize::from(count)];
        let a = &map.addr;
        let at = |addr: u16| usize::from(addr - first);
        for (addr, v) in [
            (a.map_version, self.map_version),
            (a.status, self.status.encode(&map.status_bits)),
            (a.lane_full, self.status.lane_full),
            (a.fault_code, self.fault_code),
            (a.boot_count, self.boot_count),
            (a.plc_heartbeat, self.plc_heartbeat),
            (a.watchdog_ms, self.watchdog_ms),
            (a.event_write_index, self.event_write_index),
            (a.dest_read_index, self.dest_read_index),
            (a.host_heartbeat, self.host_heartbeat),
            (a.host_boot_ack, self.host_boot_ack),
            (a.event_read_index, self.event_read_index),
            (a.dest_write_index, self.dest_write_index),
        ] {
            words[at(addr)] = v;
        }
        put_u32(&mut words, at(a.plc_time_ms), self.plc_time_ms);
        put_u32(&mut words, at(a.boot_nonce), self.boot_nonce);
        put_u32(&mut words, at(a.host_nonce_ack), self.host_nonce_ack);
        words
    }
}

/// Registers to write with one FC16 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterWrite {
    pub address: u16,
    pub words: Vec<u16>,
}

/// The host-written control block, written every poll after any destination slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostControl {
    pub host_heartbeat: u16,
    /// The BOOT_COUNT the indices below belong to; the PLC ignores them while it differs.
    pub host_boot_ack: u16,
    pub event_read_index: u16,
    pub dest_write_index: u16,
    /// The BOOT_NONCE they belong to, likewise: a boot count that a memory reset started from 1
    /// again is not the boot the host acknowledged.
    pub host_nonce_ack: u32,
}

impl HostControl {
    pub fn encode(&self, map: &RegisterMap) -> RegisterWrite {
        let (first, count) = map.control_span();
        let mut words = vec![0u16; usize::from(count)];
        let a = &map.addr;
        for (addr, v) in [
            (a.host_heartbeat, self.host_heartbeat),
            (a.host_boot_ack, self.host_boot_ack),
            (a.event_read_index, self.event_read_index),
            (a.dest_write_index, self.dest_write_index),
        ] {
            words[usize::from(addr - first)] = v;
        }
        put_u32(&mut words, usize::from(a.host_nonce_ack - first), self.host_nonce_ack);
        RegisterWrite { address: first, words }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn map() -> RegisterMap {
        crate::shipped_map().clone()
    }

    #[test]
    fn crc_is_crc16_modbus() {
        // The standard check value: CRC-16/MODBUS("123456789") = 0x4B37.
        let words = [0x3132, 0x3334, 0x3536, 0x3738];
        let mut crc = crc16(&words);
        // "9" is an odd byte out; fold it in by hand to reuse the catalogue value.
        crc ^= u16::from(b'9');
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
        assert_eq!(crc, 0x4B37);
        assert_eq!(crc16_bytes(*b"123456789"), 0x4B37);
        assert_eq!(crc16(&[]), 0xFFFF);
    }

    #[test]
    fn event_slot_vector() {
        let m = map();
        let ev = RawEvent { seq: 0x0102, code: 1, tracking: 0x0A0B_0C0D, arg1: 7, arg2: 450, time_ms: 0xDEAD_BEEF };
        let w = m.event_slot.encode(&ev);
        assert_eq!(&w[..11], &[0x0102, 1, 0x0A0B, 0x0C0D, 0, 7, 0, 450, 0xDEAD, 0xBEEF, 0]);
        assert_eq!(w[11], crc16(&w[..11]));
        assert_eq!(m.event_slot.decode(&w, 0x0102), Ok(ev));
        assert!(matches!(m.event_slot.decode(&w, 0x0103), Err(SlotFault::Seq { .. })));
        // Every single-word change is caught by the check word (a CRC catches all 16-bit bursts).
        for i in 0..w.len() {
            let mut bad = w.clone();
            bad[i] ^= 0x0100;
            assert!(m.event_slot.decode(&bad, 0x0102).is_err(), "word {i}");
        }
        // A zeroed (never written) slot is never taken, even at index 0.
        assert!(matches!(m.event_slot.decode(&[0; 12], 0), Err(SlotFault::Check { .. })));
        assert!(matches!(m.event_slot.decode(&w[..11], 0x0102), Err(SlotFault::Short { .. })));
    }

    #[test]
    fn dest_slot_vector() {
        let m = map();
        let s = DestSlot { seq: 65535, boot: 9, tracking: 70_000, lane_id: 2 };
        let w = m.dest_slot.encode(&s);
        assert_eq!(&w[..5], &[65535, 9, 0x0001, 0x1170, 2]);
        assert_eq!(m.dest_slot.decode(&w, 65535), Ok(s));
    }

    #[test]
    fn status_and_header_round_trip() {
        let m = map();
        // RUNNING (bit 0), SAFE_MODE (3), HOST_SYNCED (10); lane 3 full.
        let st = PlcStatus::decode(&m.status_bits, 0b100_0000_1001, 1 << 3);
        assert!(st.running && st.safe_mode && st.host_synced && !st.fault && !st.jam);
        assert!(st.lane_is_full(3) && !st.lane_is_full(1) && !st.lane_is_full(40));
        assert_eq!(st.encode(&m.status_bits), 0b100_0000_1001);
        let h = Header {
            map_version: 2,
            status: st,
            fault_code: 0,
            boot_count: 4,
            plc_heartbeat: 77,
            watchdog_ms: 1000,
            event_write_index: 65535,
            dest_read_index: 3,
            plc_time_ms: 0x0001_0002,
            boot_nonce: 0xCAFE_F00D,
            host_heartbeat: 5,
            host_boot_ack: 4,
            event_read_index: 65530,
            dest_write_index: 6,
            host_nonce_ack: 0xCAFE_F00D,
        };
        let words = h.encode(&m);
        assert_eq!(words.len(), 22);
        assert_eq!(&words[..12], &[2, 0b100_0000_1001, 8, 0, 4, 77, 1000, 65535, 3, 0, 1, 2]);
        // BOOT_NONCE at 12-13, high word first; 14-15 unused.
        assert_eq!(&words[12..16], &[0xCAFE, 0xF00D, 0, 0]);
        // The host block, HOST_NONCE_ACK at 20-21.
        assert_eq!(&words[16..], &[5, 4, 65530, 6, 0xCAFE, 0xF00D]);
        assert_eq!(Header::decode(&m, &words), Some(h));
        assert_eq!(Header::decode(&m, &words[..21]), None);
        let c = HostControl {
            host_heartbeat: 9,
            host_boot_ack: 4,
            event_read_index: 1,
            dest_write_index: 2,
            host_nonce_ack: 0x0102_0304,
        };
        assert_eq!(c.encode(&m), RegisterWrite { address: 16, words: vec![9, 4, 1, 2, 0x0102, 0x0304] });
    }
}
