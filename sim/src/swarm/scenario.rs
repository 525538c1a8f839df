//! Scenario files (`sim/scenarios/*.toml`): named, readable situations with the outcome they
//! must have. A scenario is a run of the swarm whose faults are written out instead of drawn
//! (per-parcel faults may be given as shares, drawn from the seed), or a configuration that
//! `sortline check-config` must refuse. See `docs/simulation.md` for the format.

use super::{Fault, Outcome, Plan, Regime};
use crate::Scenario;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    pub about: String,
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default = "default_parcels")]
    pub parcels: u32,
    #[serde(default)]
    pub world: World,
    #[serde(default)]
    pub station_reads_barcode: bool,
    /// Per-parcel fault shares by kind name (as the swarm's regime has them).
    #[serde(default)]
    pub per_parcel: BTreeMap<String, f64>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Tables merged over `line.toml` (arrays replaced whole).
    #[serde(default)]
    pub config: Option<toml::Table>,
    pub expect: Expect,
}

fn one() -> u64 {
    1
}

fn default_parcels() -> u32 {
    1_000
}

/// Changes to the World's mix (the demo's otherwise, without its physical faults).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    pub arrival_period_ms: Option<[u64; 2]>,
    pub no_read: Option<f64>,
    pub misread: Option<f64>,
    pub missing_manifest: Option<f64>,
    pub rejected: Option<f64>,
    pub red: Option<f64>,
    pub undeclared: Option<f64>,
    pub officer_slow: Option<f64>,
    pub manual_transfer: Option<f64>,
    pub bounce: Option<f64>,
    pub close_gap: Option<f64>,
    pub missed_divert: Option<f64>,
    pub slip: Option<f64>,
}

/// What the run must show. Unsafe releases and failed checks are always 0; these add to it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `sortline check-config` refuses the merged configuration, naming this key.
    pub refused_key: Option<String>,
    #[serde(default)]
    pub unaccounted: u32,
    pub min_disrupted: Option<u32>,
    pub max_disrupted: Option<u32>,
    /// Faults injected, exactly, by kind.
    #[serde(default)]
    pub faults: BTreeMap<String, u64>,
    pub min_release: Option<u32>,
    pub min_inspection: Option<u32>,
    pub min_hold: Option<u32>,
    pub max_release: Option<u32>,
}

impl ScenarioFile {
    pub fn load(path: &Path) -> Result<ScenarioFile, ScenarioError> {
        let err = |message: String| ScenarioError::File { path: path.into(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let s: ScenarioFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let known = Regime::draw(0, 1).0.per_parcel;
        if let Some(k) = s.per_parcel.keys().find(|k| !known.contains_key(k.as_str())) {
            return Err(err(format!("per_parcel: unknown fault {k:?} (known: {:?})", known.keys())));
        }
        Ok(s)
    }

    /// The run it describes.
    pub fn plan(&self) -> Plan {
        let mut sc = Scenario::demo(self.parcels, self.seed);
        let w = &self.world;
        if let Some([lo, hi]) = w.arrival_period_ms {
            sc.arrival_period_ms = lo..=hi.max(lo);
        }
        for (field, value) in [
            (&mut sc.no_read, w.no_read),
            (&mut sc.misread, w.misread),
            (&mut sc.missing_manifest, w.missing_manifest),
            (&mut sc.rejected, w.rejected),
            (&mut sc.red, w.red),
            (&mut sc.undeclared, w.undeclared),
            (&mut sc.officer_slow, w.officer_slow),
            (&mut sc.manual_transfer, w.manual_transfer),
            (&mut sc.bounce, w.bounce),
            (&mut sc.close_gap, w.close_gap),
            (&mut sc.missed_divert, w.missed_divert),
            (&mut sc.slip, w.slip),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        let mut regime = Regime::draw(self.seed, self.parcels).0;
        regime.per_hour.clear();
        for (k, v) in regime.per_parcel.iter_mut() {
            *v = self.per_parcel.get(*k).copied().unwrap_or(0.0);
        }
        let mut faults = regime.schedule(self.seed, self.parcels, super::span_ms(&sc));
        faults.extend(self.faults.iter().cloned());
        faults.sort_by_key(|f| f.at().unwrap_or(0));
        Plan { seed: self.seed, scenario: sc, station_reads_barcode: self.station_reads_barcode, faults }
    }

    /// `line.toml` with this scenario's `[config]` merged over it, with the files it names
    /// made absolute so that the result may be written anywhere.
    pub fn merged_config(&self, line_toml: &Path) -> Result<String, ScenarioError> {
        let err = |message: String| ScenarioError::File { path: line_toml.into(), message };
        let text = std::fs::read_to_string(line_toml).map_err(|e| err(e.to_string()))?;
        let mut base: toml::Table = text.parse().map_err(|e: toml::de::Error| err(e.to_string()))?;
        let dir = line_toml.parent().unwrap_or(Path::new(".")).canonicalize().map_err(|e| err(e.to_string()))?;
        for (table, key) in [("rules", "dir"), ("plc", "map"), ("scanner", "profile")] {
            if let Some(toml::Value::String(p)) = base.get_mut(table).and_then(|t| t.get_mut(key)) {
                *p = dir.join(&*p).display().to_string();
            }
        }
        if let Some(patch) = &self.config {
            merge(&mut base, patch);
        }
        toml::to_string(&base).map_err(|e| err(e.to_string()))
    }

    /// What the run showed against what it must; empty when it passed.
    pub fn judge(&self, o: &Outcome) -> Vec<String> {
        let e = &self.expect;
        let mut wrong: Vec<String> =
            o.failures.iter().map(|f| format!("at {} ms: {}: {}", f.at, f.check, f.detail)).collect();
        let mut want = |ok: bool, what: String| {
            if !ok {
                wrong.push(what);
            }
        };
        want(o.unsafe_releases == 0, format!("{} unsafe releases", o.unsafe_releases));
        want(
            o.unaccounted <= e.unaccounted,
            format!("{} unaccounted, expected at most {}", o.unaccounted, e.unaccounted),
        );
        if let Some(min) = e.min_disrupted {
            want(o.disrupted >= min, format!("{} parcels disrupted, expected at least {min}", o.disrupted));
        }
        if let Some(max) = e.max_disrupted {
            want(o.disrupted <= max, format!("{} parcels disrupted, expected at most {max}", o.disrupted));
        }
        for (kind, &n) in &e.faults {
            let got = o.faults.get(kind.as_str()).copied().unwrap_or(0);
            want(got == n, format!("{got} faults {kind:?} injected, expected {n}"));
        }
        for (got, min, lane) in [
            (o.lanes.release, e.min_release, "release"),
            (o.lanes.inspection, e.min_inspection, "inspection"),
            (o.lanes.hold, e.min_hold, "hold"),
        ] {
            if let Some(min) = min {
                want(got >= min, format!("{got} parcels in {lane}, expected at least {min}"));
            }
        }
        if let Some(max) = e.max_release {
            want(o.lanes.release <= max, format!("{} parcels released, expected at most {max}", o.lanes.release));
        }
        wrong
    }
}

impl ScenarioFile {
    /// Runs it against `line_toml` with its `[config]` merged in: a configuration scenario is
    /// loaded and checked as `sortline check-config` does, a line scenario runs in the swarm.
    /// Returns the run (if one ran) and what went against the expectations (empty: passed).
    pub fn run(&self, line_toml: &Path) -> Result<(Option<Outcome>, Vec<String>), ScenarioError> {
        let err = |message: String| ScenarioError::File { path: line_toml.into(), message };
        let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let merged = dir.path().join("line.toml");
        std::fs::write(&merged, self.merged_config(line_toml)?).map_err(|e| err(e.to_string()))?;
        let loaded = sortline::config::LineConfig::load(&merged).and_then(|c| c.check().map(|_| c));
        match (&self.expect.refused_key, loaded) {
            (Some(key), Err(e)) if e.to_string().contains(key.as_str()) => Ok((None, Vec::new())),
            (Some(key), Err(e)) => Ok((None, vec![format!("refused, but not for {key:?}: {e}")])),
            (Some(key), Ok(_)) => Ok((None, vec![format!("accepted; expected a refusal naming {key:?}")])),
            (None, Err(e)) => Err(err(format!("the merged configuration does not load: {e}"))),
            (None, Ok(cfg)) => {
                let outcome = super::run_plan(&super::line_config(&cfg), self.plan()).map_err(err)?;
                let problems = self.judge(&outcome);
                Ok((Some(outcome), problems))
            }
        }
    }
}

/// Tables merge key by key; anything else (arrays included) is replaced.
fn merge(base: &mut toml::Table, patch: &toml::Table) {
    for (k, v) in patch {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(p)) => merge(b, p),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The scenario files in `dir`, by name.
pub fn all(dir: &Path) -> Result<Vec<(PathBuf, ScenarioFile)>, ScenarioError> {
    let err = |message: String| ScenarioError::File { path: dir.into(), message };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| ScenarioFile::load(&p).map(|s| (p, s))).collect()
}
