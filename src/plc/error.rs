//! Errors and alarms of the PLC link. Two layers, as in tokio-modbus: the device said no (a
//! Modbus exception: the link works, the request or the PLC program is wrong) versus the link
//! broke (timeout, I/O, a malformed frame: drop the connection and connect afresh). They raise
//! different alarms because they need different people: a programmer versus an electrician.
//! Either way every parcel not yet confirmed ends in hold, by the PLC's own default.

use crate::core::{Alarm, Severity, TrackingId};
use std::fmt;

/// A Modbus exception code (the function code's high bit set in the reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModbusException {
    IllegalFunction,
    IllegalDataAddress,
    IllegalDataValue,
    ServerDeviceFailure,
    Acknowledge,
    ServerDeviceBusy,
    MemoryParityError,
    GatewayPathUnavailable,
    GatewayTargetDevice,
    Other(u8),
}

impl ModbusException {
    pub fn from_code(code: u8) -> ModbusException {
        match code {
            0x01 => ModbusException::IllegalFunction,
            0x02 => ModbusException::IllegalDataAddress,
            0x03 => ModbusException::IllegalDataValue,
            0x04 => ModbusException::ServerDeviceFailure,
            0x05 => ModbusException::Acknowledge,
            0x06 => ModbusException::ServerDeviceBusy,
            0x08 => ModbusException::MemoryParityError,
            0x0A => ModbusException::GatewayPathUnavailable,
            0x0B => ModbusException::GatewayTargetDevice,
            other => ModbusException::Other(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            ModbusException::IllegalFunction => 0x01,
            ModbusException::IllegalDataAddress => 0x02,
            ModbusException::IllegalDataValue => 0x03,
            ModbusException::ServerDeviceFailure => 0x04,
            ModbusException::Acknowledge => 0x05,
            ModbusException::ServerDeviceBusy => 0x06,
            ModbusException::MemoryParityError => 0x08,
            ModbusException::GatewayPathUnavailable => 0x0A,
            ModbusException::GatewayTargetDevice => 0x0B,
            ModbusException::Other(c) => c,
        }
    }

    /// Busy and acknowledge mean "ask again later"; the rest will not fix themselves.
    pub fn is_transient(self) -> bool {
        matches!(self, ModbusException::ServerDeviceBusy | ModbusException::Acknowledge)
    }
}

impl fmt::Display for ModbusException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ModbusException::IllegalFunction => "illegal function",
            ModbusException::IllegalDataAddress => "illegal data address",
            ModbusException::IllegalDataValue => "illegal data value",
            ModbusException::ServerDeviceFailure => "server device failure",
            ModbusException::Acknowledge => "acknowledge",
            ModbusException::ServerDeviceBusy => "server device busy",
            ModbusException::MemoryParityError => "memory parity error",
            ModbusException::GatewayPathUnavailable => "gateway path unavailable",
            ModbusException::GatewayTargetDevice => "gateway target device failed to respond",
            ModbusException::Other(_) => "exception",
        };
        write!(f, "{name} ({:#04x})", self.code())
    }
}

/// What the driver was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Connect,
    ReadHeader,
    ReadEvents,
    WriteDestinations,
    WriteControl,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Connect => "connect",
            Operation::ReadHeader => "read header",
            Operation::ReadEvents => "read event slots",
            Operation::WriteDestinations => "write destination slots",
            Operation::WriteControl => "write control block",
        })
    }
}

/// How the link broke. After any of these the context is dropped and a new one connected: a late
/// reply to a timed-out request could otherwise be taken for the next request's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkFault {
    #[error("no reply within {after_ms} ms")]
    Timeout { after_ms: u64 },
    #[error("I/O: {0}")]
    Io(String),
    #[error("malformed reply: {0}")]
    Protocol(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlcError {
    /// The device said no.
    #[error("PLC refused to {op} ({count} registers at {address}): {exception}")]
    Exception { op: Operation, address: u16, count: u16, exception: ModbusException },
    /// The link broke.
    #[error("link to the PLC broke during {op}: {fault}")]
    Link { op: Operation, fault: LinkFault },
    #[error("PLC implements register map version {found}; this host implements {expected}: refusing to drive it")]
    MapVersion { expected: u16, found: u16 },
    #[error("PLC watchdog is {found} ms; the register map says {expected} ms: refusing to drive it")]
    Watchdog { expected: u64, found: u16 },
    #[error("PLC heartbeat unchanged for {for_ms} ms: the PLC program is not running")]
    PlcStalled { for_ms: u64 },
}

impl PlcError {
    /// The alarm to raise. Codes are stable: monitoring keys on them.
    pub fn alarm(&self) -> Alarm {
        let (code, severity) = match self {
            PlcError::Exception { exception, .. } if exception.is_transient() => ("plc_busy", Severity::Warning),
            PlcError::Exception { .. } => ("plc_exception", Severity::Critical),
            PlcError::Link { .. } => ("plc_link_down", Severity::Critical),
            PlcError::MapVersion { .. } | PlcError::Watchdog { .. } => ("plc_incompatible", Severity::Critical),
            PlcError::PlcStalled { .. } => ("plc_stalled", Severity::Critical),
        };
        Alarm { code, severity, tracking: None, message: self.to_string() }
    }

    /// Whether the driver must drop the connection and connect afresh.
    pub fn needs_reconnect(&self) -> bool {
        matches!(self, PlcError::Link { .. } | PlcError::PlcStalled { .. })
    }
}

/// Something wrong in what the PLC wrote into the rings, found by the handshake itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingFault {
    #[error("event write index {write} is {unread} ahead of read index {read}, more than the {slots} slots: events lost, every parcel held until the PLC restarts")]
    EventIndexJump { read: u16, write: u16, unread: u16, slots: u16 },
    #[error("event slot at index {index} failed {polls} polls in a row: {fault}")]
    EventSlotStuck { index: u16, polls: u32, fault: super::codec::SlotFault },
    #[error("destination read index {read} is outside the {in_ring} slots written since {base}")]
    DestIndexJump { base: u16, read: u16, in_ring: u16 },
    #[error("PLC restarted (boot {previous} -> {boot}): {orphaned} parcels in flight lost their windows")]
    PlcRestart { previous: u16, boot: u16, orphaned: usize },
    #[error("host parcel table full: forgot {tracking}, the oldest in flight")]
    InFlightOverflow { tracking: TrackingId },
    #[error("event at index {index} is well formed but not understood: code {code}")]
    UnknownEvent { index: u16, code: u16 },
}

impl RingFault {
    pub fn alarm(&self) -> Alarm {
        let (code, severity, tracking) = match self {
            RingFault::EventIndexJump { .. } => ("plc_event_index_jump", Severity::Critical, None),
            RingFault::EventSlotStuck { .. } => ("plc_event_slot_stuck", Severity::Critical, None),
            RingFault::DestIndexJump { .. } => ("plc_dest_index_jump", Severity::Critical, None),
            RingFault::PlcRestart { .. } => ("plc_restarted", Severity::Critical, None),
            RingFault::InFlightOverflow { tracking } => ("plc_in_flight_overflow", Severity::Warning, Some(*tracking)),
            RingFault::UnknownEvent { .. } => ("plc_unknown_event", Severity::Warning, None),
        };
        Alarm { code, severity, tracking, message: self.to_string() }
    }
}

/// Why a destination was not queued. The parcel then keeps the PLC default: hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("destination for {tracking} refused: ring and queue full ({capacity} waiting); the PLC is not taking destinations")]
    Full { tracking: TrackingId, capacity: usize },
    #[error("destination for {tracking} refused: the PLC restarted, or lost events, and no longer tracks it")]
    Orphaned { tracking: TrackingId },
    #[error("destination for {tracking} of PLC boot {boot} refused: the PLC runs boot {current}")]
    OtherBoot { tracking: TrackingId, boot: u16, current: u16 },
}

impl DestinationError {
    pub fn alarm(&self) -> Alarm {
        let (code, tracking) = match self {
            DestinationError::Full { tracking, .. } => ("plc_dest_backpressure", *tracking),
            DestinationError::Orphaned { tracking } | DestinationError::OtherBoot { tracking, .. } => {
                ("plc_dest_orphaned", *tracking)
            }
        };
        Alarm { code, severity: Severity::Critical, tracking: Some(tracking), message: self.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(ModbusException::from_code(c).code(), c);
        }
        assert_eq!(ModbusException::from_code(2).to_string(), "illegal data address (0x02)");
    }

    #[test]
    fn the_device_saying_no_is_not_the_link_breaking() {
        let no = PlcError::Exception {
            op: Operation::ReadEvents,
            address: 32,
            count: 120,
            exception: ModbusException::IllegalDataAddress,
        };
        let broke = PlcError::Link { op: Operation::ReadEvents, fault: LinkFault::Timeout { after_ms: 250 } };
        assert_eq!(no.alarm().code, "plc_exception");
        assert_eq!(broke.alarm().code, "plc_link_down");
        assert!(!no.needs_reconnect() && broke.needs_reconnect());
        let busy = PlcError::Exception {
            op: Operation::WriteControl,
            address: 16,
            count: 4,
            exception: ModbusException::ServerDeviceBusy,
        };
        assert_eq!(busy.alarm().severity, Severity::Warning);
    }
}
