//! The register map (`firmware-config/plc/register-map.toml`), loaded and validated before any
//! connection is opened. Every address, offset, bit and code the host uses comes from here, so
//! the daemon, the simulator and the reference PLC program share one source of truth.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The map version this host implements. A map file or a PLC with another version is refused.
/// Version 2 added `BOOT_NONCE` and made the boot and tracking counters persistent.
pub const MAP_VERSION: u16 = 2;

/// Modbus caps per request (PDU size): 125 registers read, 123 written.
const MODBUS_MAX_READ: u16 = 125;
const MODBUS_MAX_WRITE: u16 = 123;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("register map: {0}")]
    Parse(String),
    #[error("register map: {field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> MapError {
    MapError::Invalid { field: field.into(), problem: problem.into() }
}

/// A value's width on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordType {
    U16,
    /// Two registers, high word first.
    U32,
}

impl WordType {
    pub fn words(self) -> u16 {
        match self {
            WordType::U16 => 1,
            WordType::U32 => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            WordType::U16 => "u16",
            WordType::U32 => "u32",
        }
    }
}

/// Who writes a register. Each register has exactly one writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Writer {
    Plc,
    Host,
}

impl Writer {
    pub fn as_str(self) -> &'static str {
        match self {
            Writer::Plc => "plc",
            Writer::Host => "host",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub name: String,
    pub address: u16,
    #[serde(rename = "type")]
    pub ty: WordType,
    pub writer: Writer,
    pub doc: String,
}

/// A field of a ring slot, at a word offset from the slot's first register.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    pub offset: u16,
    #[serde(rename = "type")]
    pub ty: WordType,
    pub doc: String,
}

/// A ring of fixed-size slots. Index `i` (a u16 counter wrapping modulo 65536) lives in slot
/// `i mod slots`; `slots` is a power of two, so the slot sequence stays continuous across the wrap.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    pub base: u16,
    pub slots: u16,
    pub slot_words: u16,
    pub fields: Vec<Field>,
}

impl Ring {
    /// First register of the slot holding ring index `index`.
    pub fn slot_address(&self, index: u16) -> u16 {
        self.base + (index % self.slots) * self.slot_words
    }
    /// Registers the slots occupy.
    pub fn words(&self) -> u32 {
        u32::from(self.slots) * u32::from(self.slot_words)
    }
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    /// Entries written and not yet consumed: `(write - read) mod 65536`. Empty is 0, full is
    /// `slots`; anything above `slots` cannot happen between a correct writer and reader.
    pub fn unread(write_index: u16, read_index: u16) -> u16 {
        write_index.wrapping_sub(read_index)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    pub watchdog_ms: u64,
    pub host_heartbeat_period_ms: u64,
    pub plc_heartbeat_period_ms: u64,
    pub plc_heartbeat_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_read_registers: u16,
    pub max_write_registers: u16,
    pub torn_read_alarm_polls: u32,
}

/// Bit numbers of the STATUS register.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct StatusBits {
    pub running: u8,
    pub fault: u8,
    pub estop: u8,
    pub safe_mode: u8,
    pub jam: u8,
    pub lane_full_any: u8,
    pub event_ring_full: u8,
    pub induct_held: u8,
    pub watchdog_tripped: u8,
    pub dest_ring_error: u8,
    pub host_synced: u8,
}

impl StatusBits {
    pub fn entries(&self) -> [(&'static str, u8); 11] {
        [
            ("RUNNING", self.running),
            ("FAULT", self.fault),
            ("ESTOP", self.estop),
            ("SAFE_MODE", self.safe_mode),
            ("JAM", self.jam),
            ("LANE_FULL_ANY", self.lane_full_any),
            ("EVENT_RING_FULL", self.event_ring_full),
            ("INDUCT_HELD", self.induct_held),
            ("WATCHDOG_TRIPPED", self.watchdog_tripped),
            ("DEST_RING_ERROR", self.dest_ring_error),
            ("HOST_SYNCED", self.host_synced),
        ]
    }
}

/// Event codes (slot CODE).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct EventCodes {
    pub gate_entered: u16,
    pub xray_entered: u16,
    pub divert_confirmed: u16,
    pub parcel_lost: u16,
    pub lane_full_changed: u16,
    pub jam_changed: u16,
    pub safe_mode_changed: u16,
    pub dest_rejected: u16,
    pub forced_hold: u16,
    pub untracked_parcel: u16,
    pub weighed: u16,
}

impl EventCodes {
    pub fn entries(&self) -> [(&'static str, u16); 11] {
        [
            ("GATE_ENTERED", self.gate_entered),
            ("XRAY_ENTERED", self.xray_entered),
            ("DIVERT_CONFIRMED", self.divert_confirmed),
            ("PARCEL_LOST", self.parcel_lost),
            ("LANE_FULL_CHANGED", self.lane_full_changed),
            ("JAM_CHANGED", self.jam_changed),
            ("SAFE_MODE_CHANGED", self.safe_mode_changed),
            ("DEST_REJECTED", self.dest_rejected),
            ("FORCED_HOLD", self.forced_hold),
            ("UNTRACKED_PARCEL", self.untracked_parcel),
            ("WEIGHED", self.weighed),
        ]
    }
}

/// Event codes and the detail codes events carry in an argument. The host only names detail
/// codes (in alarms and records); it never branches on them, so they stay open tables.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Codes {
    pub event: EventCodes,
    pub lost: BTreeMap<String, u16>,
    pub reject: BTreeMap<String, u16>,
    pub forced_hold: BTreeMap<String, u16>,
    pub safe_mode_cause: BTreeMap<String, u16>,
}

impl Codes {
    /// The name of a detail code in `table`, or "code N" when the PLC sent one we do not know.
    pub fn name(table: &BTreeMap<String, u16>, value: u32) -> String {
        table.iter().find(|(_, v)| u32::from(**v) == value).map_or_else(|| format!("code {value}"), |(k, _)| k.clone())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    map_version: u16,
    timing: Timing,
    limits: Limits,
    registers: Vec<Register>,
    event_ring: Ring,
    dest_ring: Ring,
    status_bits: StatusBits,
    codes: Codes,
}

/// The addresses of the single registers, resolved by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub map_version: u16,
    pub status: u16,
    pub lane_full: u16,
    pub fault_code: u16,
    pub boot_count: u16,
    pub plc_heartbeat: u16,
    pub watchdog_ms: u16,
    pub event_write_index: u16,
    pub dest_read_index: u16,
    pub plc_time_ms: u16,
    pub boot_nonce: u16,
    pub host_heartbeat: u16,
    pub host_boot_ack: u16,
    pub event_read_index: u16,
    pub dest_write_index: u16,
    pub host_nonce_ack: u16,
}

/// Word offsets of the event slot's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSlotLayout {
    pub words: usize,
    pub seq: usize,
    pub code: usize,
    pub tracking: usize,
    pub arg1: usize,
    pub arg2: usize,
    pub time_ms: usize,
    /// The last word: CRC-16/MODBUS of all words before it.
    pub check: usize,
}

/// Word offsets of the destination slot's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestSlotLayout {
    pub words: usize,
    pub seq: usize,
    pub boot: usize,
    pub tracking: usize,
    pub lane_id: usize,
    /// The last word: CRC-16/MODBUS of all words before it.
    pub check: usize,
}

/// A named number of the contract, as the reference PLC program declares it
/// (`{prefix}{name} : UINT := {value};`) and the register-map document tabulates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constant {
    pub prefix: &'static str,
    pub name: String,
    pub value: u32,
}

impl Constant {
    pub fn st_name(&self) -> String {
        format!("{}{}", self.prefix, self.name)
    }
}

/// The validated register map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterMap {
    pub version: u16,
    pub timing: Timing,
    pub limits: Limits,
    /// Single registers, by address.
    pub registers: Vec<Register>,
    pub event_ring: Ring,
    pub dest_ring: Ring,
    pub status_bits: StatusBits,
    pub codes: Codes,
    pub addr: Addresses,
    pub event_slot: EventSlotLayout,
    pub dest_slot: DestSlotLayout,
}

/// The single registers the host relies on: name, type, writer.
const REQUIRED: [(&str, WordType, Writer); 16] = [
    ("MAP_VERSION", WordType::U16, Writer::Plc),
    ("STATUS", WordType::U16, Writer::Plc),
    ("LANE_FULL", WordType::U16, Writer::Plc),
    ("FAULT_CODE", WordType::U16, Writer::Plc),
    ("BOOT_COUNT", WordType::U16, Writer::Plc),
    ("PLC_HEARTBEAT", WordType::U16, Writer::Plc),
    ("WATCHDOG_MS", WordType::U16, Writer::Plc),
    ("EVENT_WRITE_INDEX", WordType::U16, Writer::Plc),
    ("DEST_READ_INDEX", WordType::U16, Writer::Plc),
    ("PLC_TIME_MS", WordType::U32, Writer::Plc),
    ("BOOT_NONCE", WordType::U32, Writer::Plc),
    ("HOST_HEARTBEAT", WordType::U16, Writer::Host),
    ("HOST_BOOT_ACK", WordType::U16, Writer::Host),
    ("EVENT_READ_INDEX", WordType::U16, Writer::Host),
    ("DEST_WRITE_INDEX", WordType::U16, Writer::Host),
    ("HOST_NONCE_ACK", WordType::U32, Writer::Host),
];

const EVENT_FIELDS: [(&str, WordType); 8] = [
    ("SEQ", WordType::U16),
    ("CODE", WordType::U16),
    ("TRACKING", WordType::U32),
    ("ARG1", WordType::U32),
    ("ARG2", WordType::U32),
    ("TIME_MS", WordType::U32),
    ("RESERVED", WordType::U16),
    ("CHECK", WordType::U16),
];

const DEST_FIELDS: [(&str, WordType); 5] = [
    ("SEQ", WordType::U16),
    ("BOOT", WordType::U16),
    ("TRACKING", WordType::U32),
    ("LANE_ID", WordType::U16),
    ("CHECK", WordType::U16),
];

impl RegisterMap {
    pub fn load(path: &Path) -> Result<RegisterMap, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Io { path: path.into(), source })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<RegisterMap, MapError> {
        let raw: RawMap = toml::from_str(text).map_err(|e| MapError::Parse(e.to_string()))?;
        if raw.map_version != MAP_VERSION {
            return Err(invalid(
                "map_version",
                format!("is {}, this host implements version {MAP_VERSION}", raw.map_version),
            ));
        }
        check_limits(&raw.limits)?;
        check_timing(&raw.timing)?;
        let mut registers = raw.registers;
        registers.sort_by_key(|r| r.address);
        let addr = check_registers(&registers, &raw.limits)?;
        let event_slot = check_ring("event_ring", &raw.event_ring, &EVENT_FIELDS, &raw.limits)?;
        let dest_slot = check_ring("dest_ring", &raw.dest_ring, &DEST_FIELDS, &raw.limits)?;
        check_overlaps(&registers, &raw.event_ring, &raw.dest_ring)?;
        check_bits(&raw.status_bits)?;
        check_codes(&raw.codes)?;
        let o = field_offset;
        let event_slot = EventSlotLayout {
            words: usize::from(raw.event_ring.slot_words),
            seq: o(&raw.event_ring, "SEQ"),
            code: o(&raw.event_ring, "CODE"),
            tracking: o(&raw.event_ring, "TRACKING"),
            arg1: o(&raw.event_ring, "ARG1"),
            arg2: o(&raw.event_ring, "ARG2"),
            time_ms: o(&raw.event_ring, "TIME_MS"),
            check: event_slot,
        };
        let dest_slot = DestSlotLayout {
            words: usize::from(raw.dest_ring.slot_words),
            seq: o(&raw.dest_ring, "SEQ"),
            boot: o(&raw.dest_ring, "BOOT"),
            tracking: o(&raw.dest_ring, "TRACKING"),
            lane_id: o(&raw.dest_ring, "LANE_ID"),
            check: dest_slot,
        };
        Ok(RegisterMap {
            version: raw.map_version,
            timing: raw.timing,
            limits: raw.limits,
            registers,
            event_ring: raw.event_ring,
            dest_ring: raw.dest_ring,
            status_bits: raw.status_bits,
            codes: raw.codes,
            addr,
            event_slot,
            dest_slot,
        })
    }

    pub fn register(&self, name: &str) -> Option<&Register> {
        self.registers.iter().find(|r| r.name == name)
    }

    /// The span of all single registers, `(first address, count)`: one read gets the PLC's
    /// header and the host's control block as the PLC holds them.
    pub fn header_span(&self) -> (u16, u16) {
        span(self.registers.iter())
    }

    /// The span of the host-written registers, `(first address, count)`: one write sets them.
    pub fn control_span(&self) -> (u16, u16) {
        span(self.registers.iter().filter(|r| r.writer == Writer::Host))
    }

    /// Every named number of the contract, grouped by the prefix the reference PLC program and
    /// the document use.
    pub fn constants(&self) -> Vec<Constant> {
        let mut out = Vec::new();
        let mut push = |prefix: &'static str, name: &str, value: u32| {
            out.push(Constant { prefix, name: name.to_string(), value });
        };
        push("CFG_", "MAP_VERSION", u32::from(self.version));
        push("CFG_", "WATCHDOG_MS", self.timing.watchdog_ms as u32);
        push("CFG_", "PLC_HEARTBEAT_PERIOD_MS", self.timing.plc_heartbeat_period_ms as u32);
        for r in &self.registers {
            push("REG_", &r.name, u32::from(r.address));
        }
        for (prefix, ring) in [("EVR_", &self.event_ring), ("DSR_", &self.dest_ring)] {
            push(prefix, "BASE", u32::from(ring.base));
            push(prefix, "SLOTS", u32::from(ring.slots));
            push(prefix, "SLOT_WORDS", u32::from(ring.slot_words));
        }
        for (prefix, ring) in [("EVS_", &self.event_ring), ("DSS_", &self.dest_ring)] {
            for f in &ring.fields {
                push(prefix, &f.name, u32::from(f.offset));
            }
        }
        for (name, bit) in self.status_bits.entries() {
            push("ST_", name, u32::from(bit));
        }
        for (name, code) in self.codes.event.entries() {
            push("EV_", name, u32::from(code));
        }
        let c = &self.codes;
        for (prefix, table) in
            [("LOST_", &c.lost), ("RJ_", &c.reject), ("FH_", &c.forced_hold), ("SMC_", &c.safe_mode_cause)]
        {
            let mut entries: Vec<(&String, &u16)> = table.iter().collect();
            entries.sort_by_key(|(_, v)| **v);
            for (name, v) in entries {
                push(prefix, name, u32::from(*v));
            }
        }
        out
    }

    /// The constants block of the reference PLC program, as `sortline.st` must contain it.
    pub fn structured_text_constants(&self) -> String {
        let mut s = String::from("VAR_GLOBAL CONSTANT\n");
        let mut prefix = "";
        for c in self.constants() {
            if c.prefix != prefix {
                prefix = c.prefix;
                s.push('\n');
            }
            s.push_str(&format!("    {} : UINT := {};\n", c.st_name(), c.value));
        }
        s.push_str("END_VAR\n");
        s
    }
}

fn span<'a>(regs: impl Iterator<Item = &'a Register>) -> (u16, u16) {
    let (mut lo, mut hi) = (u32::MAX, 0u32);
    for r in regs {
        lo = lo.min(u32::from(r.address));
        hi = hi.max(u32::from(r.address) + u32::from(r.ty.words()));
    }
    if lo == u32::MAX {
        return (0, 0);
    }
    (lo as u16, (hi - lo) as u16)
}

fn field_offset(ring: &Ring, name: &str) -> usize {
    // check_ring has established that every required field exists.
    ring.field(name).map_or(0, |f| usize::from(f.offset))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn check_limits(l: &Limits) -> Result<(), MapError> {
    if !(1..=MODBUS_MAX_READ).contains(&l.max_read_registers) {
        return Err(invalid("limits.max_read_registers", format!("must be 1..={MODBUS_MAX_READ}")));
    }
    if !(1..=MODBUS_MAX_WRITE).contains(&l.max_write_registers) {
        return Err(invalid("limits.max_write_registers", format!("must be 1..={MODBUS_MAX_WRITE}")));
    }
    if l.torn_read_alarm_polls == 0 {
        return Err(invalid("limits.torn_read_alarm_polls", "must be at least 1"));
    }
    Ok(())
}

fn check_timing(t: &Timing) -> Result<(), MapError> {
    if t.watchdog_ms == 0 || t.watchdog_ms > u64::from(u16::MAX) {
        return Err(invalid("timing.watchdog_ms", "must be 1..=65535 (it is published in a u16 register)"));
    }
    // Three heartbeats per watchdog period: one lost write must not trip the watchdog.
    if t.host_heartbeat_period_ms == 0 || t.host_heartbeat_period_ms * 3 > t.watchdog_ms {
        return Err(invalid("timing.host_heartbeat_period_ms", "must be non-zero and at most watchdog_ms / 3"));
    }
    if t.plc_heartbeat_period_ms == 0 || t.plc_heartbeat_period_ms * 3 > t.plc_heartbeat_timeout_ms {
        return Err(invalid(
            "timing.plc_heartbeat_period_ms",
            "must be non-zero and at most plc_heartbeat_timeout_ms / 3",
        ));
    }
    Ok(())
}

fn check_registers(regs: &[Register], limits: &Limits) -> Result<Addresses, MapError> {
    let mut names = BTreeSet::new();
    for r in regs {
        let field = format!("registers.{}", r.name);
        if !is_name(&r.name) {
            return Err(invalid(field, "name must be UPPER_SNAKE_CASE, at most 32 characters"));
        }
        if !names.insert(r.name.as_str()) {
            return Err(invalid(field, "defined twice"));
        }
        if r.ty == WordType::U32 && !r.address.is_multiple_of(2) {
            return Err(invalid(field + ".address", "a u32 must start at an even address"));
        }
        if u32::from(r.address) + u32::from(r.ty.words()) > 0x1_0000 {
            return Err(invalid(field + ".address", "runs past register 65535"));
        }
        let known = REQUIRED.iter().find(|(n, _, _)| *n == r.name);
        match known {
            Some((_, ty, writer)) if (r.ty, r.writer) != (*ty, *writer) => {
                return Err(invalid(field, format!("must be a {} written by the {}", ty.as_str(), writer.as_str())));
            }
            Some(_) => {}
            // Padding keeps reads contiguous; anything else would be a register nobody implements.
            None if r.name.starts_with("RESERVED_") && r.ty == WordType::U16 && r.writer == Writer::Plc => {}
            None => return Err(invalid(field, "unknown register (only RESERVED_n padding may be added)")),
        }
    }
    let get = |name: &str| -> Result<u16, MapError> {
        regs.iter()
            .find(|r| r.name == name)
            .map(|r| r.address)
            .ok_or_else(|| invalid(format!("registers.{name}"), "missing"))
    };
    let addr = Addresses {
        map_version: get("MAP_VERSION")?,
        status: get("STATUS")?,
        lane_full: get("LANE_FULL")?,
        fault_code: get("FAULT_CODE")?,
        boot_count: get("BOOT_COUNT")?,
        plc_heartbeat: get("PLC_HEARTBEAT")?,
        watchdog_ms: get("WATCHDOG_MS")?,
        event_write_index: get("EVENT_WRITE_INDEX")?,
        dest_read_index: get("DEST_READ_INDEX")?,
        plc_time_ms: get("PLC_TIME_MS")?,
        boot_nonce: get("BOOT_NONCE")?,
        host_heartbeat: get("HOST_HEARTBEAT")?,
        host_boot_ack: get("HOST_BOOT_ACK")?,
        event_read_index: get("EVENT_READ_INDEX")?,
        dest_write_index: get("DEST_WRITE_INDEX")?,
        host_nonce_ack: get("HOST_NONCE_ACK")?,
    };
    let (_, header_words) = span(regs.iter());
    if header_words > limits.max_read_registers {
        return Err(invalid(
            "registers",
            format!("span {header_words} registers; one read of max_read_registers must get them all"),
        ));
    }
    let host: Vec<&Register> = regs.iter().filter(|r| r.writer == Writer::Host).collect();
    let (_, control_words) = span(host.iter().copied());
    let host_words: u16 = host.iter().map(|r| r.ty.words()).sum();
    if control_words != host_words || control_words > limits.max_write_registers {
        return Err(invalid("registers", "host-written registers must be contiguous and fit one write"));
    }
    Ok(addr)
}

/// Validates a ring; returns the offset of its CHECK word.
fn check_ring(name: &str, ring: &Ring, required: &[(&str, WordType)], limits: &Limits) -> Result<usize, MapError> {
    if ring.slots == 0 || !ring.slots.is_power_of_two() || ring.slots > 0x8000 {
        // 65536 mod slots must be 0 for the slot of index i to be i mod slots across the wrap,
        // and slots <= 32768 keeps "full" (unread == slots) apart from an impossible unread.
        return Err(invalid(format!("{name}.slots"), "must be a power of two, 1..=32768"));
    }
    if ring.slot_words == 0 || ring.slot_words > limits.max_read_registers.min(limits.max_write_registers) {
        return Err(invalid(format!("{name}.slot_words"), "a slot must fit one read and one write"));
    }
    if u32::from(ring.base) + ring.words() > 0x1_0000 {
        return Err(invalid(format!("{name}.base"), "the ring runs past register 65535"));
    }
    let mut covered = vec![false; usize::from(ring.slot_words)];
    let mut names = BTreeSet::new();
    for f in &ring.fields {
        let field = format!("{name}.fields.{}", f.name);
        if !is_name(&f.name) || !names.insert(f.name.as_str()) {
            return Err(invalid(field, "name must be unique UPPER_SNAKE_CASE"));
        }
        match required.iter().find(|(n, _)| *n == f.name) {
            Some((_, ty)) if *ty != f.ty => return Err(invalid(field, format!("must be a {}", ty.as_str()))),
            Some(_) => {}
            None => return Err(invalid(field, "unknown field")),
        }
        if f.ty == WordType::U32 && !f.offset.is_multiple_of(2) {
            return Err(invalid(field + ".offset", "a u32 must start at an even offset"));
        }
        for w in f.offset..f.offset + f.ty.words() {
            match covered.get_mut(usize::from(w)) {
                None => return Err(invalid(field + ".offset", "runs past the end of the slot")),
                Some(true) => return Err(invalid(field + ".offset", "overlaps another field")),
                Some(c) => *c = true,
            }
        }
    }
    for (n, _) in required {
        if ring.field(n).is_none() {
            return Err(invalid(format!("{name}.fields.{n}"), "missing"));
        }
    }
    if covered.contains(&false) {
        return Err(invalid(format!("{name}.fields"), "leave no word of the slot undescribed"));
    }
    if !ring.base.is_multiple_of(2) || !ring.slot_words.is_multiple_of(2) {
        return Err(invalid(format!("{name}.base"), "base and slot_words must be even so u32 fields stay aligned"));
    }
    let check = ring.field("CHECK").map_or(0, |f| usize::from(f.offset));
    if check + 1 != usize::from(ring.slot_words) {
        return Err(invalid(format!("{name}.fields.CHECK"), "must be the last word of the slot"));
    }
    Ok(check)
}

fn check_overlaps(regs: &[Register], event: &Ring, dest: &Ring) -> Result<(), MapError> {
    let mut areas: Vec<(u32, u32, String)> = regs
        .iter()
        .map(|r| {
            (u32::from(r.address), u32::from(r.address) + u32::from(r.ty.words()), format!("registers.{}", r.name))
        })
        .collect();
    areas.push((u32::from(event.base), u32::from(event.base) + event.words(), "event_ring".into()));
    areas.push((u32::from(dest.base), u32::from(dest.base) + dest.words(), "dest_ring".into()));
    areas.sort();
    for pair in areas.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(invalid(pair[1].2.clone(), format!("overlaps {}", pair[0].2)));
        }
    }
    Ok(())
}

fn check_bits(bits: &StatusBits) -> Result<(), MapError> {
    let mut seen = BTreeSet::new();
    for (name, bit) in bits.entries() {
        if bit > 15 || !seen.insert(bit) {
            return Err(invalid(format!("status_bits.{name}"), "must be a distinct bit 0..=15"));
        }
    }
    Ok(())
}

fn check_codes(codes: &Codes) -> Result<(), MapError> {
    let mut seen = BTreeSet::new();
    for (name, code) in codes.event.entries() {
        // 0 is what a never-written slot holds.
        if code == 0 || !seen.insert(code) {
            return Err(invalid(format!("codes.event.{name}"), "must be a distinct non-zero code"));
        }
    }
    for (table, entries) in [
        ("lost", &codes.lost),
        ("reject", &codes.reject),
        ("forced_hold", &codes.forced_hold),
        ("safe_mode_cause", &codes.safe_mode_cause),
    ] {
        let mut seen = BTreeSet::new();
        if entries.is_empty() {
            return Err(invalid(format!("codes.{table}"), "empty"));
        }
        for (name, v) in entries {
            if !is_name(name) || *v == 0 || !seen.insert(*v) {
                return Err(invalid(
                    format!("codes.{table}.{name}"),
                    "must be UPPER_SNAKE_CASE with a distinct non-zero code",
                ));
            }
        }
    }
    Ok(())
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for WordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SHIPPED_MAP_TOML as MAP_TOML;

    fn with(from: &str, to: &str) -> Result<RegisterMap, MapError> {
        assert!(MAP_TOML.contains(from), "fixture text {from:?} not in the map");
        RegisterMap::parse(&MAP_TOML.replacen(from, to, 1))
    }

    fn field_of(e: MapError) -> String {
        match e {
            MapError::Invalid { field, .. } => field,
            other => panic!("expected a validation error, got {other}"),
        }
    }

    #[test]
    fn the_shipped_map_loads() {
        let map = RegisterMap::parse(MAP_TOML).unwrap();
        assert_eq!(map.version, MAP_VERSION);
        assert_eq!(map.header_span(), (0, 22));
        assert_eq!(map.control_span(), (16, 6));
        assert_eq!(map.addr.plc_time_ms, 10);
        assert_eq!(map.addr.boot_nonce, 12);
        assert_eq!(map.event_ring.slot_address(64 + 3), 32 + 3 * 12);
        assert_eq!(map.dest_ring.slot_address(u16::MAX), 800 + 31 * 6);
        assert_eq!(map.event_slot.check, 11);
        assert_eq!(map.dest_slot.lane_id, 4);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("map_version = 2", "map_version = 1", "map_version"),
            (r#"name = "STATUS", address = 1"#, r#"name = "STATUS", address = 0"#, "registers.STATUS"),
            (r#"address = 10, type = "u32""#, r#"address = 11, type = "u32""#, "registers.PLC_TIME_MS.address"),
            (r#"address = 12, type = "u32""#, r#"address = 13, type = "u32""#, "registers.BOOT_NONCE.address"),
            (
                r#"name = "BOOT_NONCE", address = 12, type = "u32""#,
                r#"name = "BOOT_NONCE", address = 12, type = "u16""#,
                "registers.BOOT_NONCE",
            ),
            ("slots = 64", "slots = 48", "event_ring.slots"),
            ("base = 800", "base = 780", "event_ring"),
            (r#"{ name = "ARG2", offset = 6"#, r#"{ name = "ARG2", offset = 5"#, "event_ring.fields.ARG2.offset"),
            (
                r#"name = "LANE_ID", offset = 4, type = "u16""#,
                r#"name = "LANE_ID", offset = 4, type = "u32""#,
                "dest_ring.fields.LANE_ID",
            ),
            ("JAM = 4", "JAM = 3", "status_bits.JAM"),
            ("XRAY_ENTERED = 2", "XRAY_ENTERED = 1", "codes.event.XRAY_ENTERED"),
            ("host_heartbeat_period_ms = 200", "host_heartbeat_period_ms = 400", "timing.host_heartbeat_period_ms"),
            ("max_read_registers = 125", "max_read_registers = 126", "limits.max_read_registers"),
            (r#"{ name = "FAULT_CODE""#, r#"{ name = "FAULT_CODES""#, "registers.FAULT_CODES"),
        ];
        for (from, to, field) in cases {
            let e = with(from, to).expect_err(to);
            let got = field_of(e);
            // Overlaps name either side; the rest name exactly the field changed.
            assert!(got.starts_with(field) || field == "event_ring" && got == "dest_ring", "{to}: {got}");
        }
    }

    #[test]
    fn a_missing_register_or_field_is_named() {
        let no_boot = MAP_TOML.lines().filter(|l| !l.contains(r#""BOOT_COUNT""#)).collect::<Vec<_>>().join("\n");
        assert_eq!(field_of(RegisterMap::parse(&no_boot).unwrap_err()), "registers.BOOT_COUNT");
        let no_nonce = MAP_TOML.lines().filter(|l| !l.contains(r#""BOOT_NONCE""#)).collect::<Vec<_>>().join("\n");
        assert_eq!(field_of(RegisterMap::parse(&no_nonce).unwrap_err()), "registers.BOOT_NONCE");
        let no_time = MAP_TOML.lines().filter(|l| !l.contains(r#""TIME_MS""#)).collect::<Vec<_>>().join("\n");
        assert_eq!(field_of(RegisterMap::parse(&no_time).unwrap_err()), "event_ring.fields.TIME_MS");
    }

    #[test]
    fn check_must_close_the_slot() {
        let swapped = MAP_TOML
            .replacen(r#"{ name = "RESERVED", offset = 10"#, r#"{ name = "RESERVED", offset = 11"#, 1)
            .replacen(
                r#"{ name = "CHECK", offset = 11, type = "u16", doc = "CRC-16/MODBUS of words 0..10"#,
                r#"{ name = "CHECK", offset = 10, type = "u16", doc = "CRC-16/MODBUS of words 0..10"#,
                1,
            );
        assert_eq!(field_of(RegisterMap::parse(&swapped).unwrap_err()), "event_ring.fields.CHECK");
    }

    #[test]
    fn constants_cover_every_name_once() {
        let map = RegisterMap::parse(MAP_TOML).unwrap();
        let consts = map.constants();
        let names: BTreeSet<String> = consts.iter().map(Constant::st_name).collect();
        assert_eq!(names.len(), consts.len(), "two constants share a name");
        assert!(names.contains("REG_DEST_WRITE_INDEX") && names.contains("EV_UNTRACKED_PARCEL"));
        assert!(map.structured_text_constants().contains("    EVS_CHECK : UINT := 11;\n"));
    }
}
