//! The `[xray]` section of `line.toml`: where images come from, what is accepted, how long
//! originals are kept. Parsed and validated before any folder or port is opened; every error
//! names its key.

use super::decode::ImageLimits;
use super::name::NamePattern;
use super::store::RetentionLimits;
use crate::core::Lane;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Whether the station delivers one energy or two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyMode {
    #[default]
    Single,
    /// Dual energy: one grey+alpha file (or frame of two energies), or two files paired by seq.
    Dual,
}

/// `[xray]`. Every key has a default; a section with neither `folder` nor `tcp_listen`
/// takes no images (and every parcel that needs one is held).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XrayConfig {
    /// The folder the station writes into; absent: no folder intake.
    pub folder: Option<PathBuf>,
    /// File names of images in the folder (see `xray::name`).
    pub pattern: String,
    pub poll_interval_ms: u64,
    /// Polls a file's size and modification time must stay unchanged before it is taken;
    /// 0 takes it on first sight (only for a station that renames finished files into place).
    pub stable_polls: u32,
    /// How long the first file of a two-file pair waits for its partner.
    pub pair_timeout_ms: u64,
    /// Files taken per poll, at most.
    pub max_files_per_poll: usize,
    /// The address to listen on for the station's TCP stream; absent: no TCP intake.
    pub tcp_listen: Option<SocketAddr>,
    /// Largest file, or frame from magic to CRC.
    pub max_bytes: u64,
    pub max_width: u32,
    pub max_height: u32,
    pub energy: EnergyMode,
    /// Originals older than this are deleted, unless their parcel is undecided.
    pub retention_max_age_s: u64,
    /// The originals' total size is kept under this, oldest first, unless undecided.
    pub retention_max_total_bytes: u64,
    /// Where a parcel otherwise bound for release goes when its image was not screened by the
    /// cut-off: `hold` (the default: DESIGN.md's "image missing ends in hold") or `inspection`.
    pub missing_image_lane: Lane,
    /// How long an image may wait for the PLC's report of its parcel in the tunnel.
    pub image_match_window_ms: u64,
    /// Decoded pixels kept in memory for the pre-screen, MiB (the newest images; an image
    /// dropped before it is screened leaves its parcel unscreened, so not released).
    pub image_cache_mb: u64,
    /// The pre-screen's tables, relative to the configuration file.
    pub calibration: PathBuf,
    pub profiles: PathBuf,
}

impl Default for XrayConfig {
    fn default() -> XrayConfig {
        XrayConfig {
            folder: None,
            pattern: "{seq}[_{barcode}][_{energy}].{ext}".into(),
            poll_interval_ms: 200,
            stable_polls: 2,
            pair_timeout_ms: 5_000,
            max_files_per_poll: 32,
            tcp_listen: None,
            max_bytes: 64 << 20,
            max_width: 8_192,
            max_height: 8_192,
            energy: EnergyMode::Single,
            retention_max_age_s: 30 * 24 * 3600,
            retention_max_total_bytes: 20 << 30,
            missing_image_lane: Lane::Hold,
            image_match_window_ms: 5_000,
            image_cache_mb: 64,
            calibration: "xray/calibration.toml".into(),
            profiles: "xray/profiles.toml".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[xray] {key}: {problem}")]
pub struct XrayConfigError {
    pub key: &'static str,
    pub problem: String,
}

impl XrayConfig {
    /// Checks what serde cannot; returns the compiled pattern.
    pub fn validate(&self) -> Result<NamePattern, XrayConfigError> {
        let invalid = |key, problem: &str| Err(XrayConfigError { key, problem: problem.to_owned() });
        let pattern = NamePattern::compile(&self.pattern)
            .map_err(|e| XrayConfigError { key: "pattern", problem: e.to_string() })?;
        if self.poll_interval_ms == 0 {
            return invalid("poll_interval_ms", "must be above 0");
        }
        if self.image_cache_mb == 0 {
            return invalid("image_cache_mb", "must be above 0");
        }
        if self.stable_polls > 100 {
            return invalid("stable_polls", "must be at most 100");
        }
        if self.pair_timeout_ms < self.poll_interval_ms {
            return invalid("pair_timeout_ms", "must be at least poll_interval_ms");
        }
        if !(1..=10_000).contains(&self.max_files_per_poll) {
            return invalid("max_files_per_poll", "must be 1 to 10000");
        }
        if self.max_bytes == 0 || self.max_bytes > 1 << 32 {
            return invalid("max_bytes", "must be above 0 and at most 4 GiB");
        }
        if !(1..=65_535).contains(&self.max_width) {
            return invalid("max_width", "must be 1 to 65535");
        }
        if !(1..=65_535).contains(&self.max_height) {
            return invalid("max_height", "must be 1 to 65535");
        }
        if self.retention_max_age_s == 0 {
            return invalid("retention_max_age_s", "must be above 0");
        }
        if self.retention_max_total_bytes < self.max_bytes {
            return invalid("retention_max_total_bytes", "must be at least max_bytes (one image)");
        }
        if self.missing_image_lane == Lane::Release {
            return invalid("missing_image_lane", "inspection or hold: a parcel never screened is not released");
        }
        if self.image_match_window_ms == 0 {
            return invalid("image_match_window_ms", "must be above 0");
        }
        if let Some(folder) = &self.folder {
            if folder.as_os_str().is_empty() {
                return invalid("folder", "must not be empty (leave it out for no folder intake)");
            }
        }
        Ok(pattern)
    }

    pub fn limits(&self) -> ImageLimits {
        ImageLimits { max_bytes: self.max_bytes, max_width: self.max_width, max_height: self.max_height }
    }

    pub fn retention(&self) -> RetentionLimits {
        RetentionLimits {
            max_age_ms: self.retention_max_age_s.saturating_mul(1000),
            max_total_bytes: self.retention_max_total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_takes_the_defaults_and_they_validate() {
        let c: XrayConfig = toml::from_str("").unwrap();
        assert_eq!(c, XrayConfig::default());
        assert!(c.validate().is_ok());
        assert_eq!(c.retention().max_age_ms, 30 * 24 * 3600 * 1000);
    }

    #[test]
    fn every_key_parses_and_unknown_keys_are_refused() {
        let c: XrayConfig = toml::from_str(
            r#"
            folder = "/var/lib/xray-in"
            pattern = "img_{seq}_{energy}.tif"
            poll_interval_ms = 100
            stable_polls = 0
            pair_timeout_ms = 2000
            max_files_per_poll = 8
            tcp_listen = "0.0.0.0:7070"
            max_bytes = 1048576
            max_width = 2048
            max_height = 1024
            energy = "dual"
            retention_max_age_s = 86400
            retention_max_total_bytes = 1073741824
            "#,
        )
        .unwrap();
        assert_eq!(c.energy, EnergyMode::Dual);
        assert_eq!(c.tcp_listen, Some("0.0.0.0:7070".parse().unwrap()));
        assert_eq!(c.limits(), ImageLimits { max_bytes: 1 << 20, max_width: 2048, max_height: 1024 });
        assert_eq!(c.validate().unwrap().as_str(), "img_{seq}_{energy}.tif");
        let e = toml::from_str::<XrayConfig>("poll_interval = 100").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(toml::from_str::<XrayConfig>(r#"energy = "triple""#).is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let key = |c: XrayConfig| c.validate().unwrap_err().key;
        let d = XrayConfig::default;
        assert_eq!(key(XrayConfig { pattern: "{barcode}.png".into(), ..d() }), "pattern");
        assert_eq!(key(XrayConfig { poll_interval_ms: 0, ..d() }), "poll_interval_ms");
        assert_eq!(key(XrayConfig { pair_timeout_ms: 10, ..d() }), "pair_timeout_ms");
        assert_eq!(key(XrayConfig { max_files_per_poll: 0, ..d() }), "max_files_per_poll");
        assert_eq!(key(XrayConfig { max_bytes: 0, ..d() }), "max_bytes");
        assert_eq!(key(XrayConfig { max_width: 0, ..d() }), "max_width");
        assert_eq!(key(XrayConfig { max_height: 70_000, ..d() }), "max_height");
        assert_eq!(key(XrayConfig { retention_max_age_s: 0, ..d() }), "retention_max_age_s");
        assert_eq!(key(XrayConfig { retention_max_total_bytes: 1, ..d() }), "retention_max_total_bytes");
        assert_eq!(key(XrayConfig { folder: Some(PathBuf::new()), ..d() }), "folder");
        let e = XrayConfig { pattern: "{seq}{barcode}".into(), ..d() }.validate().unwrap_err();
        assert!(e.to_string().starts_with("[xray] pattern: file-name pattern"), "{e}");
    }
}
