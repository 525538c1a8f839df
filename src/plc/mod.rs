//! The PLC contract: register map, ring handshake (pure), and the Modbus (TCP or RTU) driver.
//!
//! The PLC owns motion; the host owns decisions. They share Modbus holding registers laid out
//! in `firmware-config/plc/register-map.toml` (described in `docs/register-map.md`, implemented
//! on the PLC side by `firmware-config/plc/sortline.st`):
//! - [`map`], [`codec`]: the map file, loaded and validated, and words to values and back; both
//!   live in the `sortline-plc-contract` crate (`firmware-config/plc/`), shared with the
//!   simulated PLC, and are re-exported here.
//! - [`protocol`]: the handshakes as pure state machines: [`EventReader`] (PLC→host events,
//!   each exactly once, resynchronised after a PLC restart), [`DestinationWriter`] (host→PLC
//!   destinations, back-pressure, re-sent after a reconnect but never twice), [`Heartbeat`].
//! - [`driver`]: the tokio-modbus client (TCP, or RTU over tokio-serial) that runs the handshake against a real PLC: every
//!   call under a timeout, reconnect with backoff, core inputs out, destinations in.
//! - [`error`]: the device said no ([`PlcError::Exception`]) versus the link broke
//!   ([`PlcError::Link`]), ring faults and their alarms.
//!
//! Whatever fails here, the parcel's lane is the PLC's default: hold.

pub mod driver;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;

/// The contract's model lives in its own crate (`firmware-config/plc/`, shared with the
/// simulator); re-exported so that `sortline::plc::map` and `sortline::plc::codec` stay the paths.
pub use sortline_plc_contract::{codec, map};

pub use codec::{crc16, DestSlot, Header, HostControl, PlcStatus, RawEvent, RegisterWrite, SlotFault};
pub use error::{DestinationError, LinkFault, ModbusException, Operation, PlcError, RingFault};
pub use map::{MapError, RegisterMap, MAP_VERSION};
pub use protocol::{
    check_identity, host_control, BeltWatch, DestPoll, DestWrite, Destination, DestinationWriter, Event, EventPoll,
    EventReader, Heartbeat, PlcEvent, Resync, ResyncCause, SlotSpan,
};

/// The shipped register map, compiled in for tests (the daemon loads the file).
#[cfg(test)]
pub(crate) mod tests_support {
    use super::RegisterMap;

    pub(crate) fn map() -> RegisterMap {
        sortline_plc_contract::shipped_map().clone()
    }
}

#[cfg(test)]
mod tests;
