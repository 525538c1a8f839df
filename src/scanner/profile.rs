//! Scanner frame profiles: `firmware-config/scanners/*.toml`, parsed and validated before a
//! parser is built from one. Every error names the field at fault. Reference: `docs/scanners.md`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Longest start, stop or delimiter sequence: scanners use one or two control characters.
pub const MAX_MARKER_LEN: usize = 8;

/// Bounds of `max_frame_len`: room for a few codes, and a buffer that stays small.
pub const FRAME_LEN_RANGE: std::ops::RangeInclusive<usize> = 16..=65536;

/// The profiles shipped in `firmware-config/scanners/`, compiled in so that the fuzz target and
/// the tests check the same files the installer copies (a test keeps this list complete).
pub const SHIPPED: [(&str, &str); 3] = [
    ("cognex-dataman.toml", include_str!("../../firmware-config/scanners/cognex-dataman.toml")),
    ("sick-clv.toml", include_str!("../../firmware-config/scanners/sick-clv.toml")),
    ("datalogic-dx.toml", include_str!("../../firmware-config/scanners/datalogic-dx.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    InFile { path: PathBuf, source: Box<ProfileError> },
    #[error("{0}")]
    Toml(String),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ProfileError {
    ProfileError::Invalid { field, problem: problem.into() }
}

/// Where the trigger count sits in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerField {
    /// The frame carries no trigger count.
    None,
    /// The first field, decimal, before the codes.
    First,
}

/// How one scanner frames its output. Byte sequences are TOML strings of ASCII characters;
/// control characters are written with escapes (`"\u0002"`, `"\r\n"`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameProfile {
    /// Opens a frame (STX). Absent: frames are delimited by `stop` alone.
    #[serde(default)]
    pub start: Option<String>,
    /// Closes a frame (ETX, or a CR LF terminator).
    pub stop: String,
    /// Between fields: the trigger count and each code.
    pub delimiter: String,
    /// What the scanner sends in place of a code when it read nothing.
    pub no_read: String,
    pub trigger_field: TriggerField,
    /// A keep-alive frame's whole content, if the scanner sends one.
    #[serde(default)]
    pub heartbeat: Option<String>,
    /// Longest frame content between `start` and `stop`, in bytes.
    pub max_frame_len: usize,
}

impl FrameProfile {
    /// Reads and validates a profile file; errors carry the path and the field.
    pub fn load(path: &Path) -> Result<FrameProfile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io { path: path.into(), source })?;
        FrameProfile::from_toml(&text).map_err(|e| ProfileError::InFile { path: path.into(), source: Box::new(e) })
    }

    pub fn from_toml(text: &str) -> Result<FrameProfile, ProfileError> {
        let profile: FrameProfile = toml::from_str(text).map_err(|e| ProfileError::Toml(e.to_string()))?;
        profile.validate()?;
        Ok(profile)
    }

    /// The longest of `start` and `stop`: how far back the parser must look to find either.
    pub(crate) fn marker_window(&self) -> usize {
        self.start.as_ref().map_or(0, String::len).max(self.stop.len())
    }

    pub fn validate(&self) -> Result<(), ProfileError> {
        let mut markers = vec![("stop", self.stop.as_str()), ("delimiter", self.delimiter.as_str())];
        if let Some(start) = &self.start {
            markers.insert(0, ("start", start.as_str()));
        }
        for &(field, m) in &markers {
            if m.is_empty() || m.len() > MAX_MARKER_LEN || !m.is_ascii() {
                return Err(invalid(field, format!("must be 1 to {MAX_MARKER_LEN} ASCII characters, got {m:?}")));
            }
        }
        // One marker inside another would make the frame boundaries ambiguous. The later field
        // in start, stop, delimiter order is named: it is the likelier mistake.
        for (i, &(field, m)) in markers.iter().enumerate() {
            if let Some((other, o)) = markers[..i].iter().find(|(_, o)| m.contains(o) || o.contains(m)) {
                return Err(invalid(field, format!("{m:?} overlaps {other} {o:?}")));
            }
        }
        if !FRAME_LEN_RANGE.contains(&self.max_frame_len) {
            return Err(invalid(
                "max_frame_len",
                format!("must be {} to {}, got {}", FRAME_LEN_RANGE.start(), FRAME_LEN_RANGE.end(), self.max_frame_len),
            ));
        }
        self.check_token("no_read", &self.no_read, &markers)?;
        if let Some(hb) = &self.heartbeat {
            self.check_token("heartbeat", hb, &markers)?;
            if *hb == self.no_read {
                return Err(invalid("heartbeat", "must differ from no_read"));
            }
        }
        Ok(())
    }

    /// A token compared with a trimmed field: printable, unpadded, free of markers.
    fn check_token(&self, field: &'static str, token: &str, markers: &[(&str, &str)]) -> Result<(), ProfileError> {
        if token.is_empty() || token.trim() != token || token.chars().any(char::is_control) {
            return Err(invalid(field, format!("{token:?} must be printable, non-empty, without surrounding spaces")));
        }
        if token.len() > self.max_frame_len {
            return Err(invalid(field, "longer than max_frame_len"));
        }
        match markers.iter().find(|(_, m)| token.contains(m)) {
            Some((other, m)) => Err(invalid(field, format!("{token:?} contains the {other} {m:?}"))),
            None => Ok(()),
        }
    }
}
