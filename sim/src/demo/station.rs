//! The demo's X-ray station: the simulator images each parcel the tunnel sees (its declared
//! goods and any concealed item, by Beer–Lambert attenuation) and writes the image into the
//! daemon's watched folder, renamed into place, as a workstation does; the daemon takes it,
//! matches it, screens it. The station keeps the truth of what each image hides, so the summary
//! can score the pre-screen as the referee.

use super::DemoError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sim::xray::synth::{Concealed, Synth, SynthConfig};
use sim::xray::wire::{DualLayout, FileFormat, FolderWriter, FolderWriterConfig, WireFaults, WriteMode};
use sortline::audit;
use sortline::config::Loaded;
use sortline::manifest::DeclaredItem;
use sortline::xray::config::{EnergyMode, XrayConfig};
use sortline::xray::profile::{Calibration, Profiles};
use sortline::xray::screen::Screen;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate as sim;

/// The simulated detector: coarse (3.2 mm pitch, 200 × 150 pixels) so that a debug build
/// images and screens a parcel in milliseconds; the calibration's pitch is set to match.
pub fn synth_config() -> SynthConfig {
    SynthConfig { width: 200, height: 150, pixel_mm: 3.2, ..SynthConfig::default() }
}

/// The demo's `[xray]`: `line.toml`'s when it has one, with the watched folder in the data
/// directory, polled often (files are renamed into place, so they are complete on sight).
pub fn config(cfg: &Loaded, data_dir: &Path) -> Result<XrayConfig, DemoError> {
    let mut x = cfg.line.xray.clone().unwrap_or_else(|| XrayConfig {
        calibration: cfg.base_dir.join("xray/calibration.toml"),
        profiles: cfg.base_dir.join("xray/profiles.toml"),
        ..XrayConfig::default()
    });
    let folder = data_dir.join("xray-in");
    std::fs::create_dir_all(&folder)?;
    x.folder = Some(folder);
    x.tcp_listen = None;
    x.energy = EnergyMode::Dual;
    x.poll_interval_ms = 5;
    x.stable_polls = 0;
    x.pair_timeout_ms = 1_000;
    Ok(x)
}

/// The pre-screen with the shipped tables, at the simulated detector's pitch.
pub fn screen(x: &XrayConfig) -> Result<Screen, DemoError> {
    let table =
        |e: sortline::xray::profile::ProfileError| DemoError::Sim { what: "an X-ray table", detail: e.to_string() };
    let mut calibration = Calibration::load(&x.calibration).map_err(table)?;
    calibration.pixel_mm = synth_config().pixel_mm;
    Ok(Screen::new(calibration, Profiles::load(&x.profiles).map_err(table)?))
}

/// The station: images in, truth kept.
pub struct SimStation {
    synth: Synth,
    writer: FolderWriter,
    rng: ChaCha8Rng,
    /// Image sequence number → whether the parcel hides something an image can show.
    pub truth: Truth,
}

/// What each image hid, shared with the summary.
pub type Truth = std::sync::Arc<std::sync::Mutex<BTreeMap<u32, bool>>>;

impl SimStation {
    /// A station imaging with `detector` into `x`'s folder.
    pub fn new(x: &XrayConfig, seed: u64, detector: SynthConfig) -> Result<SimStation, DemoError> {
        let synth =
            Synth::new(detector).map_err(|e| DemoError::Sim { what: "an X-ray detector", detail: e.to_string() })?;
        let folder = x.folder.clone().unwrap_or_default();
        let writer = FolderWriter::new(
            folder,
            FolderWriterConfig {
                pattern: x.pattern.clone(),
                format: FileFormat::Tiff,
                bit_depth: 16,
                dual: DualLayout::TwoFiles,
                mode: WriteMode::Rename,
                faults: WireFaults::default(),
            },
        );
        Ok(SimStation { synth, writer, rng: ChaCha8Rng::seed_from_u64(seed ^ 0x58_52_41_59), truth: Truth::default() })
    }

    /// Images one parcel and writes the image into the watched folder.
    pub async fn image(
        &mut self,
        seq: u32,
        items: &[DeclaredItem],
        concealed: Option<Concealed>,
    ) -> Result<(), DemoError> {
        let made = self.synth.image(seq, items, concealed, &mut self.rng);
        self.writer
            .write(&made.image, None)
            .await
            .map_err(|e| DemoError::Sim { what: "an X-ray image file", detail: e.to_string() })?;
        self.truth.lock().unwrap_or_else(|e| e.into_inner()).insert(seq, concealed.is_some());
        Ok(())
    }
}

/// The pre-screen scored against the station's truth (`summary.xray`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct XraySummary {
    /// Parcels imaged.
    pub reviewed: u64,
    /// Of those, parcels carrying undeclared items an image can show.
    pub injected: u64,
    /// Of those, parcels the pre-screen flagged.
    pub detected: u64,
    /// Clean parcels the pre-screen flagged.
    pub false_flags: u64,
    /// Parcels imaged whose screening never reached the core.
    pub missing_images: u64,
}

/// Scores the run: the pre-screen's results as the chain in `db` recorded them, against
/// `truth` (in the simulator, image sequence number and tracking id are one number).
pub fn summary(db: &Path, truth: &BTreeMap<u32, bool>) -> Result<XraySummary, DemoError> {
    let (mut screened, mut flagged) = (BTreeSet::new(), BTreeSet::new());
    audit::entries(db, |e| {
        if e.kind == "xray_screened" {
            if let Some(t) = e.tracking {
                screened.insert(t);
                if e.payload["flags"].as_array().is_some_and(|f| !f.is_empty()) {
                    flagged.insert(t);
                }
            }
        }
        Ok(())
    })?;
    let mut s = XraySummary::default();
    for (seq, hides) in truth {
        s.reviewed += 1;
        s.missing_images += u64::from(!screened.contains(seq));
        match (hides, flagged.contains(seq)) {
            (true, found) => {
                s.injected += 1;
                s.detected += u64::from(found);
            }
            (false, found) => s.false_flags += u64::from(found),
        }
    }
    Ok(s)
}
