//! Configuration: `line.toml` and the interception rule files, parsed and
//! validated before anything starts. Every error names the field at fault.

use crate::core::policy::RuleError;
use crate::core::{Carriers, InterceptionRule, Lane, LaneMap, LineSettings, PerChannel, Policy, RuleSet, SiteSecret};
use crate::plc::driver::{DataBits, PlcLink, SerialLink, StopBits};
use crate::scanner::link::{ScannerLinkConfig, ScannerLinkError};
use crate::scanner::FrameProfile;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("{path}: {source}")]
    Rule { path: PathBuf, source: crate::core::policy::RuleError },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, problem: problem.into() }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub site: Site,
    pub lanes: LaneMap,
    pub geometry: Geometry,
    pub timing: Timing,
    pub sampling: Sampling,
    pub limits: Limits,
    pub data: Data,
    pub rules: Rules,
    pub audit: Audit,
    pub plc: Plc,
    /// Optional: carriers' own waybill formats.
    #[serde(default)]
    pub waybills: Waybills,
    pub scanner: Scanner,
    /// Optional: the manifest store's import batches and retention.
    #[serde(default)]
    pub manifests: Manifests,
    /// Optional: monitoring and commands over MQTT (`docs/mqtt.md`).
    #[serde(default)]
    pub mqtt: Option<Mqtt>,
    /// Optional: the weight check against the line scale (`pct`, `min_g`); absent: none.
    #[serde(default)]
    pub weight: Option<crate::core::WeightTolerance>,
    /// Optional: the X-ray station (docs/xray.md); absent: the line has none, and no parcel
    /// waits for a pre-screen.
    #[serde(default)]
    pub xray: Option<crate::xray::config::XrayConfig>,
    /// Optional: the officer console (docs/console.md); absent: none, and a parcel selected
    /// for review is held at its cut-off.
    #[serde(default)]
    pub console: Option<Console>,
    /// Optional: switches for bringing the line into service; absent: the line runs live.
    #[serde(default)]
    pub commissioning: Commissioning,
}

/// `[commissioning]`: switches for bringing the line into service (docs/operations.md).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commissioning {
    /// Shadow mode: every decision made and recorded as it would be, the PLC told hold for
    /// every parcel.
    #[serde(default)]
    pub shadow: bool,
}

/// `[console]`: the officers' screens over HTTP, users in `console.db` of the data directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// `HOST:PORT` to listen on.
    pub listen: String,
    /// A session ends this long after its login.
    #[serde(default = "Console::default_session_minutes")]
    pub session_minutes: u32,
}

impl Console {
    fn default_session_minutes() -> u32 {
        480
    }

    pub fn validate(&self) -> Result<std::net::SocketAddr, ConfigError> {
        if !(1..=24 * 60).contains(&self.session_minutes) {
            return Err(invalid("console.session_minutes", format!("must be 1 to 1440, got {}", self.session_minutes)));
        }
        self.listen.parse().map_err(|e| {
            invalid("console.listen", format!("{:?} is not HOST:PORT with an IP address: {e}", self.listen))
        })
    }
}

/// `[manifests]`: the declaration store (`manifests.db` in the data directory).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifests {
    /// Declarations a version older than this many days (by when they were received) are
    /// removed by `sortline manifest purge`, whole history at once.
    #[serde(default = "Manifests::default_retention_days")]
    pub retention_days: u32,
    /// Declarations per import transaction: a batch is stored whole or not at all.
    #[serde(default = "Manifests::default_batch_size")]
    pub batch_size: usize,
}

impl Manifests {
    /// Declarations last received before this wall time (ms) are past retention.
    pub fn retention_cutoff_ms(&self, wall_now_ms: i64) -> i64 {
        wall_now_ms - i64::from(self.retention_days) * 86_400_000
    }

    fn default_retention_days() -> u32 {
        180
    }

    fn default_batch_size() -> usize {
        5000
    }
}

impl Default for Manifests {
    fn default() -> Self {
        Manifests { retention_days: Self::default_retention_days(), batch_size: Self::default_batch_size() }
    }
}

/// The reading gate's scanner: how its frames look and how it is reached.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scanner {
    /// Frame profile file (`firmware-config/scanners/`), relative to this file.
    pub profile: PathBuf,
    pub link: ScannerLinkConfig,
}

/// Waybill formats beyond UPU S10 and GS1 SSCC, which are always known.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waybills {
    /// Checked (names present, patterns compile) as the file is read.
    #[serde(default)]
    pub carriers: Carriers,
}

/// How the host reaches and polls the PLC (Modbus TCP or RTU).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plc {
    /// `tcp` (default) or `rtu` (a serial line, `[plc.serial]`).
    #[serde(default)]
    pub transport: Transport,
    /// `host:port` of the PLC's Modbus TCP server, an IP address (no name lookup at start).
    /// Required for `tcp`, unused for `rtu`.
    #[serde(default)]
    pub address: String,
    /// Modbus unit id (slave id), 0 to 255; 1 to 247 over RTU.
    pub unit_id: u16,
    pub poll_period_ms: u64,
    /// Per Modbus request and per connection attempt.
    pub request_timeout_ms: u64,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// The register map file; relative paths are under the config file's folder.
    pub map: PathBuf,
    /// The serial line, for `transport = "rtu"`.
    pub serial: Option<Serial>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Rtu,
}

/// `[plc.serial]`: the RTU line. Defaults are Modbus RTU's: 19200 baud, 8 data bits, even
/// parity, 1 stop bit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    /// The serial device, e.g. `/dev/ttyUSB0`.
    pub path: String,
    #[serde(default = "Serial::default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: crate::plc::driver::Parity,
    #[serde(default = "Serial::default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "Serial::default_stop_bits")]
    pub stop_bits: u8,
}

impl Serial {
    fn default_baud() -> u32 {
        19_200
    }

    fn default_data_bits() -> u8 {
        8
    }

    fn default_stop_bits() -> u8 {
        1
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// A signed checkpoint after this many entries…
    pub checkpoint_every: u64,
    /// …or this long after the last one, whichever comes first.
    pub checkpoint_interval_s: u64,
    /// Where `sortline audit archive` writes old segments; relative paths are under the data directory.
    pub archive_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub site_id: String,
    pub line_id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    pub belt_speed_mm_s: i64,
    pub gate_mm: i64,
    pub xray_mm: i64,
    pub review_cutoff_mm: i64,
    /// The PLC takes a destination until the parcel is this far before the first diverter.
    pub latch_margin_mm: i64,
    pub end_mm: i64,
    pub diverters: Vec<Diverter>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diverter {
    pub lane: Lane,
    pub position_mm: i64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    pub scan_timeout_ms: u64,
    pub scan_match_window_ms: u64,
    /// For scanners that send no trigger count: the gate's time window (0, 0: not matched).
    #[serde(default)]
    pub untriggered_scan_after_ms: u64,
    #[serde(default)]
    pub untriggered_scan_before_ms: u64,
    pub confirm_grace_ms: u64,
    /// Worst case from a decision to its destination being in the PLC.
    pub plc_write_budget_ms: u64,
    /// An officer's time for a review at most (the cut-off being the limit anyway); absent:
    /// until the cut-off. Changeable at run time (`set_rates`).
    #[serde(default)]
    pub review_window_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    pub sample_rate: PerChannel<f64>,
    pub xray_review_ratio: PerChannel<f64>,
    pub secret: SecretSource,
}

/// Where the site secret for keyed sampling comes from. Never the file itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    /// A file holding 32 hex characters; relative paths are under the data directory.
    File { file: PathBuf },
    /// An environment variable holding 32 hex characters.
    Env { env: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_in_flight: usize,
    pub max_pending_scans: usize,
    pub max_parcel_length_mm: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Folder of `*.toml` rule files; relative paths are under the config file's folder.
    pub dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<InterceptionRule>,
}

/// A validated configuration with its rules loaded.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub line: LineConfig,
    pub rules: Arc<RuleSet>,
    pub rules_dir: PathBuf,
    /// `plc.map`, resolved against the config file's folder.
    pub plc_map: PathBuf,
    /// `scanner.profile`, resolved likewise.
    pub scanner_profile: PathBuf,
    /// The configuration file's folder, against which its relative paths are resolved.
    pub base_dir: PathBuf,
}

impl Loaded {
    /// `line` read from `path`, its relative paths resolved against `path`'s folder.
    fn new(mut line: LineConfig, rules: RuleSet, path: &Path) -> Loaded {
        let base = path.parent().unwrap_or(Path::new("."));
        let rules_dir = base.join(&line.rules.dir);
        let plc_map = base.join(&line.plc.map);
        let scanner_profile = base.join(&line.scanner.profile);
        if let Some(x) = line.xray.as_mut() {
            let relative = [Some(&mut x.calibration), Some(&mut x.profiles), x.folder.as_mut()];
            for file in relative.into_iter().flatten() {
                *file = base.join(&*file);
            }
        }
        if let Some(t) = line.mqtt.as_mut().and_then(|m| m.tls.as_mut()) {
            for file in
                [Some(&mut t.ca_file), t.client_cert_file.as_mut(), t.client_key_file.as_mut()].into_iter().flatten()
            {
                *file = base.join(&*file);
            }
        }
        Loaded { line, rules: Arc::new(rules), rules_dir, plc_map, scanner_profile, base_dir: base.to_path_buf() }
    }

    /// The register map `plc.map` names, loaded and validated.
    pub fn register_map(&self) -> Result<crate::plc::RegisterMap, ConfigError> {
        crate::plc::RegisterMap::load(&self.plc_map)
            .map_err(|e| ConfigError::Parse { path: self.plc_map.clone(), message: e.to_string() })
    }

    /// The X-ray pre-screen with the tables `[xray]` names, loaded and validated; `None`
    /// without an X-ray station.
    pub fn xray_screen(&self) -> Result<Option<crate::xray::screen::Screen>, ConfigError> {
        let Some((calibration, profiles)) = self.xray_tables() else { return Ok(None) };
        Ok(Some(crate::xray::screen::Screen::new(calibration?, profiles?)))
    }

    /// The two tables `[xray]` names, each loaded on its own, so that both can be reported.
    #[allow(clippy::type_complexity)]
    fn xray_tables(
        &self,
    ) -> Option<(
        Result<crate::xray::profile::Calibration, ConfigError>,
        Result<crate::xray::profile::Profiles, ConfigError>,
    )> {
        use crate::xray::profile::{Calibration, Profiles};
        let x = self.line.xray.as_ref()?;
        let parse = |path: &Path, e: crate::xray::profile::ProfileError| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        Some((
            Calibration::load(&x.calibration).map_err(|e| parse(&x.calibration, e)),
            Profiles::load(&x.profiles).map_err(|e| parse(&x.profiles, e)),
        ))
    }

    /// The frame profile `scanner.profile` names, loaded and validated.
    pub fn scanner_profile(&self) -> Result<FrameProfile, ConfigError> {
        FrameProfile::load(&self.scanner_profile)
            .map_err(|e| ConfigError::Parse { path: self.scanner_profile.clone(), message: e.to_string() })
    }

    /// What `sortline check-config` checks past parsing, to the first error: the files the
    /// configuration names load and fit.
    pub fn check(&self) -> Result<Checked, ConfigError> {
        self.check_files().map_err(ConfigErrors::into_first)
    }

    /// The files the configuration names (register map, scanner profile, X-ray tables, MQTT
    /// TLS files), each loaded and validated; every error found.
    fn check_files(&self) -> Result<Checked, ConfigErrors> {
        let (map, mut errors) = match self.register_map() {
            Ok(map) => (Some(map), Vec::new()),
            Err(e) => (None, vec![e]),
        };
        errors.extend(self.scanner_profile().err());
        if let Some((calibration, profiles)) = self.xray_tables() {
            errors.extend(calibration.err());
            errors.extend(profiles.err());
        }
        if let Some(t) = self.line.mqtt.as_ref().and_then(|m| m.tls.as_ref()) {
            errors.extend(t.client_config().err());
        }
        match map {
            Some(map) if errors.is_empty() => {
                let s = self.line.settings();
                Ok(Checked {
                    rules: self.rules.len(),
                    gate_to_cutoff_ms: s.gate_to_cutoff_ms,
                    gate_to_end_ms: s.gate_to_end_ms,
                    map_version: map.version,
                })
            }
            // Not empty: without a map, its error is in.
            _ => Err(ConfigErrors { errors, stopped: false }),
        }
    }
}

/// Every error found in a configuration, in the order found: what `sortline check-config`
/// reports. Never empty.
#[derive(Debug, thiserror::Error)]
#[error("{}", listing(.errors, *.stopped))]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
    stopped: bool,
}

fn listing(errors: &[ConfigError], stopped: bool) -> String {
    let mut text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    if stopped {
        text.push_str("\n(checked no further: the rest needs this fixed first)");
    }
    text
}

impl ConfigErrors {
    /// `errors` and then `more`'s; `Ok` only when there are none.
    fn gather<T>(mut errors: Vec<ConfigError>, more: Result<T, ConfigErrors>) -> Result<T, ConfigErrors> {
        match more {
            Ok(t) if errors.is_empty() => Ok(t),
            Ok(_) => Err(ConfigErrors { errors, stopped: false }),
            Err(e) => {
                errors.extend(e.errors);
                Err(ConfigErrors { errors, stopped: e.stopped })
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.errors.iter()
    }

    /// The last error stopped the check (the configuration file unreadable, or not parsing):
    /// nothing past it was checked.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// What a check to the first error would have stopped at.
    pub fn into_first(mut self) -> ConfigError {
        // Never empty: each is made with an error in it.
        self.errors.swap_remove(0)
    }
}

/// What [`Loaded::check`] found.
#[derive(Clone, Debug)]
pub struct Checked {
    pub rules: usize,
    pub gate_to_cutoff_ms: u64,
    pub gate_to_end_ms: u64,
    pub map_version: u16,
}

impl LineConfig {
    /// `line.toml`'s text, parsed and validated.
    pub fn parse(text: &str, path: &Path) -> Result<LineConfig, ConfigError> {
        let cfg = LineConfig::parse_only(text, path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn parse_only(text: &str, path: &Path) -> Result<LineConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })
    }

    /// Reads `line.toml` and the rule files it names, to the first error.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let line = LineConfig::parse(&LineConfig::read(path)?, path)?;
        let rules = load_rules(&path.parent().unwrap_or(Path::new(".")).join(&line.rules.dir))?;
        Ok(Loaded::new(line, rules, path))
    }

    /// Everything `sortline check-config` checks, with every error found: `line.toml` (which
    /// must parse before anything else can be checked), the rule files, and the files it names.
    pub fn check_all(path: &Path) -> Result<(Loaded, Checked), ConfigErrors> {
        let line = LineConfig::read(path)
            .and_then(|text| LineConfig::parse_only(&text, path))
            .map_err(|e| ConfigErrors { errors: vec![e], stopped: true })?;
        let mut errors = line.problems();
        let (rules, rule_errors) = read_rules(&path.parent().unwrap_or(Path::new(".")).join(&line.rules.dir));
        errors.extend(rule_errors);
        let loaded = Loaded::new(line, rules, path);
        let checked = ConfigErrors::gather(errors, loaded.check_files())?;
        Ok((loaded, checked))
    }

    /// The first error [`LineConfig::problems`] finds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.problems().into_iter().next().map_or(Ok(()), Err)
    }

    /// Every section's first error, in the file's terms. A section stops at its first error,
    /// since its later checks build on its earlier ones; sections are checked independently.
    pub fn problems(&self) -> Vec<ConfigError> {
        let geometry = self.validate_geometry();
        let geometry_ok = geometry.is_ok();
        [
            self.console.as_ref().map_or(Ok(()), |c| c.validate().map(|_| ())),
            self.xray
                .as_ref()
                .map_or(Ok(()), |x| x.validate().map(|_| ()))
                .map_err(|e| invalid("xray", format!("{}: {}", e.key, e.problem))),
            self.validate_weight(),
            self.validate_mqtt(),
            self.validate_site(),
            self.validate_lanes(),
            geometry,
            self.validate_timing(geometry_ok),
            self.validate_sampling(),
            self.validate_manifests(),
            self.validate_audit(),
            self.validate_limits(),
            self.validate_scanner_link(),
            self.validate_plc(),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect()
    }

    fn validate_weight(&self) -> Result<(), ConfigError> {
        if let Some(w) = &self.weight {
            if !(w.pct.is_finite() && (0.0..=100.0).contains(&w.pct)) {
                return Err(invalid("weight.pct", format!("must be 0 to 100, got {}", w.pct)));
            }
        }
        Ok(())
    }

    fn validate_mqtt(&self) -> Result<(), ConfigError> {
        if let Some(m) = &self.mqtt {
            m.validate()?;
            if let Some(spb) = &m.sparkplug {
                spb.ids(&self.site)?;
            }
        }
        Ok(())
    }

    fn validate_site(&self) -> Result<(), ConfigError> {
        for (field, id) in [("site.site_id", &self.site.site_id), ("site.line_id", &self.site.line_id)] {
            // They become MQTT topic levels and file names.
            if id.is_empty()
                || id.len() > 32
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(field, format!("{id:?} must be 1 to 32 of A-Z a-z 0-9 - _")));
            }
        }
        Ok(())
    }

    fn validate_lanes(&self) -> Result<(), ConfigError> {
        let l = &self.lanes;
        if l.release == l.inspection || l.release == l.hold || l.inspection == l.hold {
            return Err(invalid("lanes", "release, inspection and hold need three different lane ids"));
        }
        Ok(())
    }

    fn validate_geometry(&self) -> Result<(), ConfigError> {
        let g = &self.geometry;
        if !(1..=5000).contains(&g.belt_speed_mm_s) {
            return Err(invalid("geometry.belt_speed_mm_s", format!("must be 1 to 5000, got {}", g.belt_speed_mm_s)));
        }
        for (field, v) in [
            ("geometry.gate_mm", g.gate_mm),
            ("geometry.xray_mm", g.xray_mm),
            ("geometry.review_cutoff_mm", g.review_cutoff_mm),
            ("geometry.latch_margin_mm", g.latch_margin_mm),
            ("geometry.end_mm", g.end_mm),
        ] {
            if !(0..=1_000_000).contains(&v) {
                return Err(invalid(field, format!("must be 0 to 1000000 mm, got {v}")));
            }
        }
        if g.xray_mm <= g.gate_mm {
            return Err(invalid("geometry.xray_mm", "the X-ray must come after the reading gate"));
        }
        if g.review_cutoff_mm <= g.xray_mm {
            return Err(invalid("geometry.review_cutoff_mm", "the review cut-off must come after the X-ray"));
        }
        for lane in [Lane::Release, Lane::Inspection] {
            match g.diverters.iter().filter(|d| d.lane == lane).count() {
                1 => {}
                n => return Err(invalid("geometry.diverters", format!("need exactly one {lane} diverter, found {n}"))),
            }
        }
        if let Some(d) = g.diverters.iter().find(|d| d.lane == Lane::Hold) {
            // A missed divert must end in hold, so hold is the end of the line, not a diverter.
            return Err(invalid(
                "geometry.diverters",
                format!("the hold lane is the end of the line, not a diverter (at {} mm)", d.position_mm),
            ));
        }
        if g.diverters.windows(2).any(|w| w[0].position_mm >= w[1].position_mm) {
            return Err(invalid("geometry.diverters", "list diverters in belt order, strictly increasing position_mm"));
        }
        let first = g.diverters.iter().map(|d| d.position_mm).min().unwrap_or(0);
        let last = g.diverters.iter().map(|d| d.position_mm).max().unwrap_or(0);
        if g.end_mm <= last {
            return Err(invalid("geometry.end_mm", "the end of the line must come after the last diverter"));
        }
        let latch_mm = first - g.latch_margin_mm;
        let budget_mm = (self.timing.plc_write_budget_ms as i64).saturating_mul(g.belt_speed_mm_s) / 1000;
        if g.review_cutoff_mm + budget_mm > latch_mm {
            return Err(invalid(
                "geometry.review_cutoff_mm",
                format!(
                    "a decision at the cut-off ({} mm) plus the PLC write budget ({} mm of belt) must reach the PLC before its latch point ({} mm)",
                    g.review_cutoff_mm, budget_mm, latch_mm
                ),
            ));
        }
        Ok(())
    }

    /// `geometry_ok`: whether the review cut-off can be placed, for the scan timeout's check
    /// against it (a bad geometry is its own error, not the timing's too).
    fn validate_timing(&self, geometry_ok: bool) -> Result<(), ConfigError> {
        let t = &self.timing;
        if t.scan_timeout_ms == 0 || (geometry_ok && t.scan_timeout_ms >= self.settings_unchecked().gate_to_cutoff_ms) {
            return Err(invalid("timing.scan_timeout_ms", "must be above 0 and end before the review cut-off"));
        }
        if t.scan_match_window_ms == 0 {
            return Err(invalid("timing.scan_match_window_ms", "must be above 0"));
        }
        if t.untriggered_scan_after_ms > t.scan_timeout_ms {
            return Err(invalid("timing.untriggered_scan_after_ms", "must not exceed scan_timeout_ms"));
        }
        if t.untriggered_scan_before_ms > t.scan_match_window_ms {
            return Err(invalid("timing.untriggered_scan_before_ms", "must not exceed scan_match_window_ms"));
        }
        Ok(())
    }

    fn validate_sampling(&self) -> Result<(), ConfigError> {
        let s = &self.sampling;
        for (field, v) in [
            ("sampling.sample_rate.green", s.sample_rate.green),
            ("sampling.sample_rate.red", s.sample_rate.red),
            ("sampling.xray_review_ratio.green", s.xray_review_ratio.green),
            ("sampling.xray_review_ratio.red", s.xray_review_ratio.red),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(field, format!("must be between 0 and 1, got {v}")));
            }
        }
        Ok(())
    }

    fn validate_manifests(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.manifests.batch_size) {
            return Err(invalid(
                "manifests.batch_size",
                format!("must be 1 to 100000, got {}", self.manifests.batch_size),
            ));
        }
        if self.manifests.retention_days == 0 {
            return Err(invalid("manifests.retention_days", "must be above 0"));
        }
        Ok(())
    }

    fn validate_audit(&self) -> Result<(), ConfigError> {
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_interval_s == 0 {
            return Err(invalid("audit", "checkpoint_every and checkpoint_interval_s must be above 0"));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let lim = &self.limits;
        if lim.max_in_flight == 0 || lim.max_pending_scans == 0 || lim.max_parcel_length_mm == 0 {
            return Err(invalid("limits", "every limit must be above 0"));
        }
        Ok(())
    }

    fn validate_scanner_link(&self) -> Result<(), ConfigError> {
        self.scanner.link.validate().map_err(|e| match e {
            ScannerLinkError::Config { field, problem } => invalid("scanner.link", format!("{field} {problem}")),
            other => invalid("scanner.link", other.to_string()),
        })
    }

    fn validate_plc(&self) -> Result<(), ConfigError> {
        let p = &self.plc;
        match p.transport {
            Transport::Tcp => {
                if p.address.parse::<std::net::SocketAddr>().is_err() {
                    return Err(invalid(
                        "plc.address",
                        format!("{:?} must be an IP address and port, e.g. 10.0.0.5:502", p.address),
                    ));
                }
                if p.unit_id > 255 {
                    return Err(invalid("plc.unit_id", format!("must be 0 to 255, got {}", p.unit_id)));
                }
            }
            Transport::Rtu => {
                // 0 is broadcast (no reply) and 248 to 255 are reserved on a serial line.
                if !(1..=247).contains(&p.unit_id) {
                    return Err(invalid("plc.unit_id", format!("must be 1 to 247 over RTU, got {}", p.unit_id)));
                }
                let Some(s) = &p.serial else {
                    return Err(invalid("plc.serial", "transport = \"rtu\" needs a [plc.serial] section"));
                };
                Self::validate_serial(s)?;
            }
        }
        // The PLC's watchdog trips on a host heartbeat older than about a second.
        if !(1..=1000).contains(&p.poll_period_ms) {
            return Err(invalid("plc.poll_period_ms", format!("must be 1 to 1000, got {}", p.poll_period_ms)));
        }
        if !(1..=10_000).contains(&p.request_timeout_ms) {
            return Err(invalid("plc.request_timeout_ms", format!("must be 1 to 10000, got {}", p.request_timeout_ms)));
        }
        if p.reconnect_backoff_min_ms == 0 {
            return Err(invalid("plc.reconnect_backoff_min_ms", "must be above 0"));
        }
        if !(p.reconnect_backoff_min_ms..=600_000).contains(&p.reconnect_backoff_max_ms) {
            return Err(invalid(
                "plc.reconnect_backoff_max_ms",
                format!(
                    "must be from reconnect_backoff_min_ms ({}) to 600000, got {}",
                    p.reconnect_backoff_min_ms, p.reconnect_backoff_max_ms
                ),
            ));
        }
        if p.map.as_os_str().is_empty() {
            return Err(invalid("plc.map", "must name the register map file"));
        }
        Ok(())
    }

    fn validate_serial(s: &Serial) -> Result<(), ConfigError> {
        if s.path.is_empty() {
            return Err(invalid("plc.serial.path", "must name the serial device, e.g. /dev/ttyUSB0"));
        }
        if !(300..=921_600).contains(&s.baud) {
            return Err(invalid("plc.serial.baud", format!("must be 300 to 921600, got {}", s.baud)));
        }
        if !(7..=8).contains(&s.data_bits) {
            return Err(invalid("plc.serial.data_bits", format!("must be 7 or 8, got {}", s.data_bits)));
        }
        if !(1..=2).contains(&s.stop_bits) {
            return Err(invalid("plc.serial.stop_bits", format!("must be 1 or 2, got {}", s.stop_bits)));
        }
        Ok(())
    }

    /// The serial line of `[plc.serial]` (Modbus RTU's defaults where absent) on port `path`.
    pub fn serial_link(&self, path: &str) -> SerialLink {
        let mut link = SerialLink::new(path);
        if let Some(s) = &self.plc.serial {
            link.baud = s.baud;
            link.parity = s.parity;
            link.data_bits = if s.data_bits == 7 { DataBits::Seven } else { DataBits::Eight };
            link.stop_bits = if s.stop_bits == 2 { StopBits::Two } else { StopBits::One };
        }
        link
    }

    /// How `[plc]` says to reach the PLC.
    pub fn plc_link(&self) -> PlcLink {
        let p = &self.plc;
        match (p.transport, &p.serial) {
            (Transport::Rtu, Some(s)) => PlcLink::Serial(self.serial_link(&s.path)),
            // Validated at parse; the fallback is unreachable for a validated config.
            _ => PlcLink::Tcp(p.address.parse().unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 502)))),
        }
    }

    /// The PLC driver's settings; `link` overrides `[plc]`'s (the demo's simulated PLC).
    pub fn driver_config(&self, link: Option<PlcLink>) -> crate::plc::driver::DriverConfig {
        let p = &self.plc;
        crate::plc::driver::DriverConfig {
            unit_id: u8::try_from(p.unit_id).unwrap_or(u8::MAX),
            poll_period: std::time::Duration::from_millis(p.poll_period_ms),
            request_timeout: std::time::Duration::from_millis(p.request_timeout_ms),
            backoff_initial: std::time::Duration::from_millis(p.reconnect_backoff_min_ms),
            backoff_max: std::time::Duration::from_millis(p.reconnect_backoff_max_ms),
            max_in_flight: self.limits.max_in_flight,
            ..crate::plc::driver::DriverConfig::with_link(link.unwrap_or_else(|| self.plc_link()))
        }
    }

    fn settings_unchecked(&self) -> LineSettings {
        let g = &self.geometry;
        let ms = |from: i64, to: i64| ((to - from).max(0) as u64 * 1000) / g.belt_speed_mm_s.max(1) as u64;
        LineSettings {
            lanes: self.lanes,
            gate_to_cutoff_ms: ms(g.gate_mm, g.review_cutoff_mm),
            gate_to_end_ms: ms(g.gate_mm, g.end_mm),
            scan_timeout_ms: self.timing.scan_timeout_ms,
            scan_match_window_ms: self.timing.scan_match_window_ms,
            confirm_grace_ms: self.timing.confirm_grace_ms,
            max_in_flight: self.limits.max_in_flight,
            max_pending_scans: self.limits.max_pending_scans,
            carriers: self.waybills.carriers.clone(),
            untriggered_after_ms: self.timing.untriggered_scan_after_ms,
            untriggered_before_ms: self.timing.untriggered_scan_before_ms,
            review_window_ms: self.timing.review_window_ms,
            xray: self.xray.as_ref().map(|x| crate::core::XraySettings {
                missing_image_lane: x.missing_image_lane,
                image_match_window_ms: x.image_match_window_ms,
            }),
            shadow: self.commissioning.shadow,
        }
    }

    /// The core's timing, derived from geometry and belt speed.
    pub fn settings(&self) -> LineSettings {
        self.settings_unchecked()
    }

    pub fn policy(&self, secret: SiteSecret, rules: Arc<RuleSet>) -> Policy {
        Policy {
            secret,
            sample_rate: self.sampling.sample_rate,
            xray_review_ratio: self.sampling.xray_review_ratio,
            rules,
            targets: Vec::new(),
            max_parcel_length_mm: self.limits.max_parcel_length_mm,
            weight_tolerance: self.weight,
        }
    }
}

impl SecretSource {
    pub fn resolve(&self, data_dir: &Path) -> Result<SiteSecret, ConfigError> {
        let bad = |what: String| invalid("sampling.secret", what);
        match self {
            SecretSource::File { file } => {
                let path = data_dir.join(file);
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
                SiteSecret::from_hex(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
            }
            SecretSource::Env { env } => {
                let text = std::env::var(env).map_err(|_| bad(format!("environment variable {env} is not set")))?;
                SiteSecret::from_hex(&text).map_err(|e| bad(format!("{env}: {e}")))
            }
        }
    }
}

/// `[mqtt]`: the broker and the publisher's limits (`docs/mqtt.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `host:port`; absent: none (the demo starts its own broker).
    #[serde(default)]
    pub broker: Option<String>,
    /// Default `sortline-<site>-<line>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub keep_alive_s: u64,
    /// `false`: a persistent session (the broker keeps subscriptions and queued commands).
    pub clean_session: bool,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    pub metrics_every_s: u64,
    /// `[mqtt.sparkplug]`: present, the monitoring output is Sparkplug B instead of JSON.
    #[serde(default)]
    pub sparkplug: Option<Sparkplug>,
    /// Events held while the broker is away; alarm at 80 %, metrics dropped at 100 %.
    pub outbox_capacity: u64,
    /// QoS 1 publishes awaiting acknowledgement at once.
    pub inflight: u16,
    /// Take declaration lists and targeting from the platform over MQTT (`platform/manifest`,
    /// `platform/target` under the line's prefix).
    #[serde(default = "yes")]
    pub platform_intake: bool,
    /// TLS to the broker; absent: plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTls>,
}

/// `[mqtt.tls]`: PEM files, relative to the configuration file's folder.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// The CA certificates the broker's certificate must chain to (only these are trusted).
    pub ca_file: PathBuf,
    /// A client certificate chain and its key, for brokers that authenticate clients by them.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl MqttTls {
    /// The TLS client's settings, its files loaded.
    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
        crate::mqtt::tls_config(&self.ca_file, self.client_cert_file.as_deref().zip(self.client_key_file.as_deref()))
            .map_err(|e| invalid("mqtt.tls", e))
    }
}

fn yes() -> bool {
    true
}

impl Mqtt {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(b) = &self.broker {
            broker_addr(b)?;
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid("mqtt.client_id", format!("{id:?} must be 1 to 64 printable ASCII characters")));
            }
        }
        if self.username.is_none() && self.password.is_some() {
            return Err(invalid("mqtt.password", "given without mqtt.username"));
        }
        if let Some(t) = &self.tls {
            if t.client_cert_file.is_some() != t.client_key_file.is_some() {
                return Err(invalid("mqtt.tls.client_key_file", "client_cert_file and client_key_file go together"));
            }
        }
        if !(1..=65535).contains(&self.keep_alive_s) {
            return Err(invalid("mqtt.keep_alive_s", format!("must be 1 to 65535, got {}", self.keep_alive_s)));
        }
        if self.reconnect_backoff_min_ms == 0 || self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms {
            return Err(invalid("mqtt.reconnect_backoff_min_ms", "must be at least 1 and at most the maximum"));
        }
        if self.metrics_every_s == 0 {
            return Err(invalid("mqtt.metrics_every_s", "must be at least 1"));
        }
        if self.outbox_capacity < 10 {
            return Err(invalid("mqtt.outbox_capacity", format!("must be at least 10, got {}", self.outbox_capacity)));
        }
        if !(1..=1000).contains(&self.inflight) {
            return Err(invalid("mqtt.inflight", format!("must be 1 to 1000, got {}", self.inflight)));
        }
        Ok(())
    }

    /// The publisher's settings for `site`'s broker at `broker` (`host:port`).
    pub fn settings(&self, broker: &str, site: &Site) -> Result<crate::mqtt::Settings, ConfigError> {
        let (host, port) = broker_addr(broker)?;
        Ok(crate::mqtt::Settings {
            host,
            port,
            client_id: self.client_id.clone().unwrap_or_else(|| format!("sortline-{}-{}", site.site_id, site.line_id)),
            credentials: self.username.clone().map(|u| (u, self.password.clone().unwrap_or_default())),
            keep_alive: std::time::Duration::from_secs(self.keep_alive_s),
            clean_session: self.clean_session,
            reconnect_min: std::time::Duration::from_millis(self.reconnect_backoff_min_ms),
            reconnect_max: std::time::Duration::from_millis(self.reconnect_backoff_max_ms),
            metrics_every: std::time::Duration::from_secs(self.metrics_every_s),
            outbox_capacity: self.outbox_capacity,
            inflight: self.inflight,
            platform_intake: self.platform_intake,
            tls: self.tls.as_ref().map(MqttTls::client_config).transpose()?,
            topics: crate::mqtt::Topics::new(&site.site_id, &site.line_id),
            output: match &self.sparkplug {
                None => crate::mqtt::Output::Json,
                // The bdSeq file goes in the data directory, which `wiring` knows.
                Some(spb) => crate::mqtt::Output::SparkplugB(crate::mqtt::sparkplug::Config {
                    ids: spb.ids(site)?,
                    bd_seq_file: None,
                }),
            },
        })
    }
}

/// `[mqtt.sparkplug]`: the Sparkplug B names of this line (`docs/mqtt.md`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sparkplug {
    /// Default: `site.site_id`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// The edge box. Default: `site.line_id`.
    #[serde(default)]
    pub edge_node_id: Option<String>,
    /// The line. Default: `line`.
    #[serde(default)]
    pub device_id: Option<String>,
}

impl Sparkplug {
    fn ids(&self, site: &Site) -> Result<crate::mqtt::sparkplug::Ids, ConfigError> {
        let or = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.to_string());
        crate::mqtt::sparkplug::Ids::new(
            &or(&self.group_id, &site.site_id),
            &or(&self.edge_node_id, &site.line_id),
            &or(&self.device_id, "line"),
        )
        .map_err(|e| invalid("mqtt.sparkplug", e.to_string()))
    }
}

/// `host:port` of a broker.
pub fn broker_addr(s: &str) -> Result<(String, u16), ConfigError> {
    let bad = || invalid("mqtt.broker", format!("{s:?} is not host:port"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// The rule files in `dir` read again, as the core input that replaces the rules in force
/// (SIGHUP, the `reload_rules` command). An error leaves the rules in force as they are.
pub fn rules_input(dir: &Path, officer: Option<crate::core::OfficerId>) -> Result<crate::core::Input, ConfigError> {
    Ok(crate::core::Input::Rules { rules: load_rules(dir)?.rules().to_vec(), officer })
}

/// Loads every `*.toml` in `dir`, in name order, into one validated set; the first error.
pub fn load_rules(dir: &Path) -> Result<RuleSet, ConfigError> {
    let (rules, errors) = read_rules(dir);
    errors.into_iter().next().map_or(Ok(rules), Err)
}

/// The good rules of every `*.toml` in `dir`, in name order, and an error for each file or
/// rule that is not good (a file that does not parse gives none of its rules).
fn read_rules(dir: &Path) -> (RuleSet, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(source) => {
            errors.push(ConfigError::Io { path: dir.into(), source });
            Vec::new()
        }
    };
    files.sort();
    let mut good: Vec<InterceptionRule> = Vec::new();
    for path in &files {
        let file = LineConfig::read(path).and_then(|text| {
            toml::from_str::<RuleFile>(&text)
                .map_err(|e| ConfigError::Parse { path: path.clone(), message: e.to_string() })
        });
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for rule in file.rule {
            let rule = rule.validated().and_then(|rule| match good.iter().any(|r| r.id == rule.id) {
                true => Err(RuleError { rule: rule.id.to_string(), field: "id", problem: "defined twice".into() }),
                false => Ok(rule),
            });
            match rule {
                Ok(rule) => good.push(rule),
                Err(source) => errors.push(ConfigError::Rule { path: path.clone(), source }),
            }
        }
    }
    // Validated and with unique ids, the set takes them all; were it to refuse, that is reported.
    let rules = RuleSet::new(good).unwrap_or_else(|source| {
        errors.push(ConfigError::Rule { path: dir.into(), source });
        RuleSet::default()
    });
    (rules, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../firmware-config/line.toml");

    fn with(edit: impl FnOnce(&mut toml::Table)) -> Result<LineConfig, ConfigError> {
        let mut t: toml::Table = toml::from_str(SHIPPED).unwrap();
        edit(&mut t);
        LineConfig::parse(&toml::to_string(&t).unwrap(), Path::new("line.toml"))
    }

    fn field(r: Result<LineConfig, ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
        t.get_mut(key).and_then(|v| v.as_table_mut()).unwrap()
    }

    #[test]
    fn shipped_config_and_rules_load() {
        let loaded =
            LineConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/line.toml")).unwrap();
        assert!(!loaded.rules.is_empty());
        let map = loaded.register_map().unwrap();
        assert_eq!(map.version, crate::plc::MAP_VERSION);
        let d = loaded.line.driver_config(None);
        assert_eq!(d.link, PlcLink::Tcp("127.0.0.1:502".parse().unwrap()));
        assert!(d.backoff_initial <= d.backoff_max && d.poll_period < d.request_timeout * 4);
        let s = loaded.line.settings();
        assert!(s.gate_to_cutoff_ms > s.scan_timeout_ms);
        assert!(s.gate_to_end_ms > s.gate_to_cutoff_ms);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field(with(|t| {
                table(t, "geometry").insert("belt_speed_mm_s".into(), (-5).into());
            })),
            "geometry.belt_speed_mm_s"
        );
        assert_eq!(
            field(with(|t| {
                table(t, "lanes").insert("hold".into(), 1.into());
            })),
            "lanes"
        );
        assert_eq!(
            field(with(|t| {
                table(t, "geometry").insert("review_cutoff_mm".into(), 17_900.into());
            })),
            "geometry.review_cutoff_mm"
        );
        assert_eq!(
            field(with(|t| {
                table(t, "geometry").insert("xray_mm".into(), 0.into());
            })),
            "geometry.xray_mm"
        );
        assert_eq!(
            field(with(|t| {
                table(t, "geometry").insert("end_mm".into(), 100.into());
            })),
            "geometry.end_mm"
        );
        assert_eq!(
            field(with(|t| {
                table(t, "site").insert("line_id".into(), "a/b".into());
            })),
            "site.line_id"
        );
        assert_eq!(
            field(with(|t| {
                table(table(t, "sampling"), "sample_rate").insert("red".into(), 1.5.into());
            })),
            "sampling.sample_rate.red"
        );
        assert_eq!(
            field(with(|t| {
                table(t, "timing").insert("scan_timeout_ms".into(), 0.into());
            })),
            "timing.scan_timeout_ms"
        );
        for (key, value, name) in [
            ("address", toml::Value::from("plc.local:502"), "plc.address"),
            ("unit_id", 256.into(), "plc.unit_id"),
            ("poll_period_ms", 0.into(), "plc.poll_period_ms"),
            ("poll_period_ms", 5000.into(), "plc.poll_period_ms"),
            ("request_timeout_ms", 0.into(), "plc.request_timeout_ms"),
            ("reconnect_backoff_min_ms", 0.into(), "plc.reconnect_backoff_min_ms"),
            ("reconnect_backoff_max_ms", 1.into(), "plc.reconnect_backoff_max_ms"),
            ("map", "".into(), "plc.map"),
        ] {
            assert_eq!(
                field(with(|t| {
                    table(t, "plc").insert(key.into(), value);
                })),
                name,
                "{key}"
            );
        }
        let missing_lane = with(|t| {
            let d = table(t, "geometry").get_mut("diverters").unwrap().as_array_mut().unwrap();
            d.retain(|x| x.get("lane").and_then(|l| l.as_str()) != Some("release"));
        });
        assert_eq!(field(missing_lane), "geometry.diverters");
    }

    #[test]
    fn the_console_section_is_checked_and_optional() {
        let console = |listen: &'static str, minutes: i64| {
            move |t: &mut toml::Table| {
                let mut c = toml::Table::new();
                c.insert("listen".into(), listen.into());
                c.insert("session_minutes".into(), minutes.into());
                t.insert("console".into(), c.into());
            }
        };
        assert!(with(|_| {}).unwrap().console.is_none());
        let cfg = with(console("127.0.0.1:8470", 60)).unwrap();
        assert_eq!(cfg.console.unwrap().validate().unwrap().port(), 8470);
        assert_eq!(field(with(console("console.local:80", 60))), "console.listen");
        assert_eq!(field(with(console("127.0.0.1:8470", 0))), "console.session_minutes");
        assert_eq!(field(with(console("127.0.0.1:8470", 2000))), "console.session_minutes");
    }

    fn rtu<'a>(serial: &'a [(&'a str, toml::Value)]) -> impl FnOnce(&mut toml::Table) + 'a {
        move |t| {
            let plc = table(t, "plc");
            plc.insert("transport".into(), "rtu".into());
            let mut s = toml::Table::new();
            s.insert("path".into(), "/dev/ttyUSB0".into());
            for (k, v) in serial {
                s.insert((*k).into(), v.clone());
            }
            plc.insert("serial".into(), s.into());
        }
    }

    #[test]
    fn rtu_transport_defaults_to_the_modbus_rtu_line() {
        let cfg = with(rtu(&[])).unwrap();
        let d = cfg.driver_config(None);
        assert_eq!(d.link, PlcLink::Serial(SerialLink::new("/dev/ttyUSB0")));
        let cfg = with(rtu(&[("baud", 9600.into()), ("parity", "none".into()), ("stop_bits", 2.into())])).unwrap();
        let PlcLink::Serial(link) = cfg.plc_link() else { panic!("not serial") };
        assert_eq!(
            (link.baud, link.parity, link.data_bits, link.stop_bits),
            (9600, crate::plc::driver::Parity::None, DataBits::Eight, StopBits::Two)
        );
        // The TCP address is not needed over RTU.
        assert!(with(|t| {
            rtu(&[])(t);
            table(t, "plc").remove("address");
        })
        .is_ok());
    }

    #[test]
    fn rtu_errors_name_the_field() {
        for (key, value, name) in [
            ("path", toml::Value::from(""), "plc.serial.path"),
            ("baud", 0.into(), "plc.serial.baud"),
            ("data_bits", 9.into(), "plc.serial.data_bits"),
            ("stop_bits", 3.into(), "plc.serial.stop_bits"),
        ] {
            assert_eq!(field(with(rtu(&[(key, value)]))), name, "{key}");
        }
        for unit in [0, 248] {
            let r = with(|t| {
                rtu(&[])(t);
                table(t, "plc").insert("unit_id".into(), unit.into());
            });
            assert_eq!(field(r), "plc.unit_id", "unit {unit}");
        }
        let no_serial = with(|t| {
            table(t, "plc").insert("transport".into(), "rtu".into());
            table(t, "plc").remove("serial");
        });
        assert_eq!(field(no_serial), "plc.serial");
        for (key, value) in [("parity", toml::Value::from("mark")), ("baud_rate", 9600.into())] {
            let r = with(rtu(&[(key, value)]));
            assert!(matches!(r, Err(ConfigError::Parse { ref message, .. }) if message.contains(key)), "{r:?}");
        }
        let r = with(|t| {
            table(t, "plc").insert("transport".into(), "udp".into());
        });
        assert!(matches!(r, Err(ConfigError::Parse { ref message, .. }) if message.contains("udp")), "{r:?}");
    }

    #[test]
    fn carrier_formats_are_checked_as_the_file_is_read() {
        let carriers = |pattern: &str| {
            with(|t| {
                let mut f = toml::Table::new();
                f.insert("name".into(), "SF Express".into());
                f.insert("pattern".into(), pattern.into());
                table(t, "waybills").insert("carriers".into(), toml::Value::Array(vec![f.into()]));
            })
        };
        let ok = carriers("SF[0-9]{12}").unwrap();
        assert_eq!(ok.settings().carriers.formats().len(), 1);
        let r = carriers("SF[0-9");
        assert!(
            matches!(r, Err(ConfigError::Parse { ref message, .. }) if message.contains("SF Express") && message.contains("waybills")),
            "{r:?}"
        );
    }

    #[test]
    fn sparkplug_table_switches_the_output() {
        let site = Site { site_id: "zjg".into(), line_id: "line-1".into() };
        let json = with(|_| {}).unwrap();
        let m = json.mqtt.as_ref().unwrap();
        assert_eq!(m.settings("h:1", &site).unwrap().output, crate::mqtt::Output::Json);
        let sparkplug = |keys: &[(&str, &str)]| {
            with(|t| {
                let mut s = toml::Table::new();
                for (k, v) in keys {
                    s.insert((*k).into(), (*v).into());
                }
                table(t, "mqtt").insert("sparkplug".into(), s.into());
            })
        };
        let ids = |cfg: LineConfig| match cfg.mqtt.unwrap().settings("h:1", &site).unwrap().output {
            crate::mqtt::Output::SparkplugB(c) => c.ids.topic(crate::mqtt::sparkplug::MessageType::DData),
            other => panic!("{other:?}"),
        };
        assert_eq!(ids(sparkplug(&[]).unwrap()), "spBv1.0/zjg/DDATA/line-1/line");
        let named = sparkplug(&[("group_id", "Customs"), ("edge_node_id", "box-7"), ("device_id", "L1")]);
        assert_eq!(ids(named.unwrap()), "spBv1.0/Customs/DDATA/box-7/L1");
        let e = sparkplug(&[("device_id", "a/b")]).unwrap_err();
        assert!(e.to_string().starts_with("mqtt.sparkplug: device_id: \"a/b\""), "{e}");
        let r = sparkplug(&[("groupid", "x")]);
        assert!(matches!(r, Err(ConfigError::Parse { ref message, .. }) if message.contains("groupid")), "{r:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r = with(|t| {
            table(t, "geometry").insert("belt_sped_mm_s".into(), 5.into());
        });
        assert!(
            matches!(r, Err(ConfigError::Parse { ref message, .. }) if message.contains("belt_sped_mm_s")),
            "{r:?}"
        );
    }

    #[test]
    fn bad_rule_file_names_file_rule_and_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            "[[rule]]\nid = \"X1\"\naction = \"release\"\nreason = \"r\"\nhs_prefixes = [\"01\"]\n",
        )
        .unwrap();
        let e = load_rules(dir.path()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("a.toml") && text.contains("X1") && text.contains("action"), "{text}");
    }

    fn fields(errors: &ConfigErrors) -> Vec<String> {
        errors
            .iter()
            .map(|e| match e {
                ConfigError::Invalid { field, .. } => field.to_string(),
                ConfigError::Io { path, .. } | ConfigError::Parse { path, .. } | ConfigError::Rule { path, .. } => {
                    path.file_name().unwrap().to_string_lossy().into_owned()
                }
            })
            .collect()
    }

    /// The shipped configuration folder copied to a temporary one, `line.toml` edited.
    fn shipped_copy(edit: impl FnOnce(&mut toml::Table)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config");
        for sub in ["rules", "plc", "scanners", "xray"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            for f in std::fs::read_dir(from.join(sub)).unwrap().map(|f| f.unwrap().path()) {
                if f.extension().is_some_and(|x| x == "toml") {
                    std::fs::copy(&f, dir.path().join(sub).join(f.file_name().unwrap())).unwrap();
                }
            }
        }
        let mut t: toml::Table = toml::from_str(SHIPPED).unwrap();
        edit(&mut t);
        let path = dir.path().join("line.toml");
        std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
        (dir, path)
    }

    #[test]
    fn every_section_reports_its_error() {
        let cfg: LineConfig = toml::from_str(SHIPPED).unwrap();
        assert!(cfg.problems().is_empty());
        let mut t: toml::Table = toml::from_str(SHIPPED).unwrap();
        table(&mut t, "plc").insert("unit_id".into(), 256.into());
        table(&mut t, "site").insert("line_id".into(), "a/b".into());
        // A belt that cannot move places no cut-off: the geometry's error, not the timing's too.
        table(&mut t, "geometry").insert("belt_speed_mm_s".into(), 0.into());
        let cfg: LineConfig = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        let found: Vec<_> = cfg
            .problems()
            .into_iter()
            .map(|e| match e {
                ConfigError::Invalid { field, .. } => field,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(found, ["site.line_id", "geometry.belt_speed_mm_s", "plc.unit_id"]);
        assert_eq!(field(LineConfig::parse(&toml::to_string(&t).unwrap(), Path::new("line.toml"))), "site.line_id");
    }

    #[test]
    fn check_all_lists_every_error_in_the_line_its_rules_and_its_files() {
        let (dir, path) = shipped_copy(|t| {
            table(t, "plc").insert("unit_id".into(), 256.into());
            table(t, "scanner").insert("profile".into(), "scanners/missing.toml".into());
        });
        let errors = LineConfig::check_all(&path).unwrap_err();
        assert!(!errors.stopped());
        assert_eq!(fields(&errors), ["plc.unit_id", "missing.toml"]);

        let rule = "[[rule]]\nid = \"X1\"\naction = \"release\"\nreason = \"r\"\nhs_prefixes = [\"01\"]\n";
        std::fs::write(dir.path().join("rules/a-bad.toml"), rule).unwrap();
        std::fs::write(dir.path().join("rules/b-broken.toml"), "[[rule]\n").unwrap();
        let again = "[[rule]]\nid = \"CIQ-SEEDS\"\naction = \"hold\"\nreason = \"r\"\nhs_prefixes = [\"1209\"]\n";
        std::fs::write(dir.path().join("rules/zz-again.toml"), again).unwrap();
        let errors = LineConfig::check_all(&path).unwrap_err();
        assert_eq!(
            fields(&errors),
            ["plc.unit_id", "a-bad.toml", "b-broken.toml", "zz-again.toml", "missing.toml"],
            "{errors}"
        );
        assert!(errors.to_string().contains("defined twice"), "{errors}");
        // The first error is what `load` and `check` stop at.
        assert!(matches!(errors.into_first(), ConfigError::Invalid { field: "plc.unit_id", .. }));
    }

    #[test]
    fn check_all_stops_where_the_file_does_not_parse() {
        let (_dir, path) = shipped_copy(|_| {});
        let (_, checked) = LineConfig::check_all(&path).unwrap();
        assert_eq!(checked.map_version, crate::plc::MAP_VERSION);
        std::fs::write(&path, SHIPPED.replace("[limits]", "[limits")).unwrap();
        let errors = LineConfig::check_all(&path).unwrap_err();
        assert!(errors.stopped());
        assert_eq!(fields(&errors), ["line.toml"]);
    }

    #[test]
    fn secret_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "00112233445566778899aabbccddeeff\n").unwrap();
        assert!(SecretSource::File { file: "s".into() }.resolve(dir.path()).is_ok());
        assert!(SecretSource::File { file: "missing".into() }.resolve(dir.path()).is_err());
        let e = SecretSource::Env { env: "SORTLINE_TEST_SURELY_UNSET".into() }.resolve(dir.path()).unwrap_err();
        assert!(e.to_string().contains("sampling.secret"));
    }
}
