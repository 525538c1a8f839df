//! The PLC contract: register map, ring handshake (pure), and (later) the Modbus driver.
//!
//! The PLC owns motion; the host owns decisions. They share Modbus holding registers laid out
//! in `firmware-config/plc/register-map.toml` (described in `docs/register-map.md`, implemented
//! on the PLC side by `firmware-config/plc/sortline.st`):
//! - [`map`]: the map file, loaded and validated; every address the host uses comes from it.
//! - [`codec`]: words to values and back: the slot check word (CRC-16/MODBUS), event and
//!   destination slots, the header block, the host control block, the status word.
//! - [`protocol`]: the handshakes as pure state machines: [`EventReader`] (PLC→host events,
//!   each exactly once, resynchronised after a PLC restart), [`DestinationWriter`] (host→PLC
//!   destinations, back-pressure, re-sent after a reconnect but never twice), [`Heartbeat`].
//! - [`error`]: the device said no ([`PlcError::Exception`]) versus the link broke
//!   ([`PlcError::Link`]), ring faults and their alarms.
//!
//! Whatever fails here, the parcel's lane is the PLC's default: hold.

pub mod codec;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod map;
pub mod protocol;

pub use codec::{crc16, DestSlot, Header, HostControl, PlcStatus, RawEvent, RegisterWrite, SlotFault};
pub use error::{DestinationError, LinkFault, ModbusException, Operation, PlcError, RingFault};
pub use map::{MapError, RegisterMap, MAP_VERSION};
pub use protocol::{
    check_identity, host_control, DestPoll, DestWrite, Destination, DestinationWriter, Event, EventPoll, EventReader,
    Heartbeat, PlcEvent, Resync, ResyncCause, SlotSpan,
};

/// The shipped register map, compiled in for tests (the daemon loads the file).
#[cfg(test)]
pub(crate) mod tests_support {
    use super::RegisterMap;

    pub(crate) const MAP_TOML: &str = include_str!("../../firmware-config/plc/register-map.toml");

    pub(crate) fn map() -> RegisterMap {
        RegisterMap::parse(MAP_TOML).expect("the shipped register map is valid")
    }
}

#[cfg(test)]
mod tests;
