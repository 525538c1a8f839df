//! # sortline-plc-contract
//!
//! The PLC contract's Rust model, beside the file it models (`register-map.toml`) and the
//! reference PLC program (`sortline.st`). The daemon (`sortline::plc`) and the simulated PLC
//! (`sortline-sim`) both depend on this crate, so they read one map with one set of codecs;
//! the simulator must not depend on `sortline`, which is why this is a crate of its own.
//!
//! # Layout
//! - [`map`]: the map file, loaded and validated; every address, bit and code comes from it.
//! - [`codec`]: words to values and back: the slot check word (CRC-16/MODBUS), event and
//!   destination slots, the header block, the host control block, the status word.
//!
//! Pure: no I/O beyond [`RegisterMap::load`], no clock, no knowledge of the host's core types.

pub mod codec;
pub mod map;

pub use codec::{crc16, crc16_bytes, DestSlot, Header, HostControl, PlcStatus, RawEvent, RegisterWrite, SlotFault};
pub use map::{MapError, RegisterMap, MAP_VERSION};

/// The shipped register map's text, compiled in (tests, simulator defaults, fuzzing); the
/// daemon loads the file named in its configuration.
pub const SHIPPED_MAP_TOML: &str = include_str!("../register-map.toml");

/// The shipped register map, parsed once.
pub fn shipped_map() -> &'static RegisterMap {
    static MAP: std::sync::OnceLock<RegisterMap> = std::sync::OnceLock::new();
    MAP.get_or_init(|| RegisterMap::parse(SHIPPED_MAP_TOML).expect("the shipped register map is valid"))
}
