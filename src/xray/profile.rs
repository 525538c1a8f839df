//! The pre-screen's two tables (`docs/xray.md`, Profiles and calibration):
//! `firmware-config/xray/calibration.toml`, the station's detector and material calibration,
//! and `firmware-config/xray/profiles.toml`, what each kind of declared goods may show on an
//! image. Both are parsed and validated before use; every error names the file, the entry and
//! the field.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Entries a table may hold: bounds the work per image.
pub const MAX_PROFILES: usize = 512;
pub const MAX_BOUNDARIES: usize = 32;
/// Regions one declared piece may explain, per kind.
pub const MAX_PARTS: usize = 16;
/// Largest area any limit may name: a square metre; and the largest mass: 100 kg.
pub const MAX_AREA_CM2: f32 = 10_000.0;
pub const MAX_MASS_G: f32 = 100_000.0;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {entry}: {field}: {problem}")]
    Invalid { path: PathBuf, entry: String, field: &'static str, problem: String },
}

/// Collects the file name so that each check names only its entry and field.
struct Check<'a> {
    path: &'a Path,
}

impl Check<'_> {
    fn fail<T>(
        &self,
        entry: impl Into<String>,
        field: &'static str,
        problem: impl Into<String>,
    ) -> Result<T, ProfileError> {
        Err(ProfileError::Invalid { path: self.path.into(), entry: entry.into(), field, problem: problem.into() })
    }

    fn range(&self, entry: &str, field: &'static str, v: f32, lo: f32, hi: f32) -> Result<(), ProfileError> {
        if v.is_finite() && v > lo && v <= hi {
            Ok(())
        } else {
            self.fail(entry, field, format!("{v} is not above {lo} and at most {hi}"))
        }
    }
}

fn read(path: &Path) -> Result<String, ProfileError> {
    std::fs::read_to_string(path).map_err(|source| ProfileError::Io { path: path.into(), source })
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, path: &Path) -> Result<T, ProfileError> {
    toml::from_str(text).map_err(|e| ProfileError::Parse { path: path.into(), message: e.to_string() })
}

/// Smallest region, in cm², that counts for each kind of finding; smaller ones are noise,
/// buttons and rivets.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinRegions {
    pub dense_object_cm2: f32,
    pub metal_cm2: f32,
    pub battery_cm2: f32,
    pub liquid_cm2: f32,
}

/// One row of the material boundaries: at this high-energy log attenuation, a pixel whose
/// ratio of low- to high-energy log attenuation is below `organic_max` is organic, below
/// `mixed_max` mixed, otherwise metal.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boundary {
    pub high_atten: f32,
    pub organic_max: f32,
    pub mixed_max: f32,
}

/// The station's calibration: its detector and where its material classes lie.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Detector pitch (both directions), to turn pixel counts into areas.
    pub pixel_mm: f32,
    /// Counts (16-bit scale) at or below which nothing got through: impenetrable. On the
    /// high-energy channel of a dual-energy image, on the only one of a single-energy image.
    pub dark_max: u16,
    /// High-energy (or single-energy) log attenuation below which a pixel is background.
    pub background_atten: f32,
    /// Low-energy log attenuation from which an organic pixel may be liquid: about 4 cm of
    /// water; dry goods of ordinary size stay below.
    pub liquid_atten: f32,
    /// The range of a metal region's mean ratio that lithium cells give (their cobalt, nickel
    /// and copper mixed with light elements), below steel's and copper's.
    pub battery_ratio: [f32; 2],
    /// Mass attenuation coefficient (cm²/g) of steel at the high energy: turns a metal
    /// region's summed high-energy attenuation into grams of steel equivalent.
    pub steel_mu_rho_high: f32,
    pub min_region: MinRegions,
    /// Ascending by `high_atten`; linear between rows, flat beyond the first and last.
    pub boundary: Vec<Boundary>,
}

impl Calibration {
    pub fn load(path: &Path) -> Result<Calibration, ProfileError> {
        Calibration::from_toml(&read(path)?, path)
    }

    /// Parses `text`; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Calibration, ProfileError> {
        let cal: Calibration = parse(text, path)?;
        cal.validate(path)?;
        Ok(cal)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        let c = Check { path };
        c.range("calibration", "pixel_mm", self.pixel_mm, 0.01, 20.0)?;
        if self.dark_max == 0 || self.dark_max >= u16::MAX / 2 {
            return c.fail(
                "calibration",
                "dark_max",
                format!("{} is not between 1 and {}", self.dark_max, u16::MAX / 2),
            );
        }
        c.range("calibration", "background_atten", self.background_atten, 0.0, 2.0)?;
        c.range("calibration", "liquid_atten", self.liquid_atten, self.background_atten, 10.0)?;
        let [lo, hi] = self.battery_ratio;
        c.range("calibration", "battery_ratio", lo, 1.0, 20.0)?;
        c.range("calibration", "battery_ratio", hi, lo, 20.0)?;
        c.range("calibration", "steel_mu_rho_high", self.steel_mu_rho_high, 0.0, 10.0)?;
        let m = &self.min_region;
        for (field, v) in [
            ("dense_object_cm2", m.dense_object_cm2),
            ("metal_cm2", m.metal_cm2),
            ("battery_cm2", m.battery_cm2),
            ("liquid_cm2", m.liquid_cm2),
        ] {
            c.range("min_region", field, v, 0.0, MAX_AREA_CM2)?;
        }
        if self.boundary.is_empty() || self.boundary.len() > MAX_BOUNDARIES {
            return c.fail("calibration", "boundary", format!("needs 1 to {MAX_BOUNDARIES} rows"));
        }
        for (i, b) in self.boundary.iter().enumerate() {
            let entry = format!("boundary[{i}]");
            let after = if i == 0 { -1e-9 } else { self.boundary[i - 1].high_atten };
            c.range(&entry, "high_atten", b.high_atten, after, 20.0)?;
            c.range(&entry, "organic_max", b.organic_max, 1.0, 20.0)?;
            c.range(&entry, "mixed_max", b.mixed_max, b.organic_max, 20.0)?;
        }
        Ok(())
    }

    /// Pixels in `cm2` at this pitch, at least one.
    pub fn pixels_in(&self, cm2: f32) -> u32 {
        (cm2 * 100.0 / (self.pixel_mm * self.pixel_mm)).ceil().max(1.0) as u32
    }

    pub fn cm2_of(&self, pixels: u32) -> f32 {
        pixels as f32 * self.pixel_mm * self.pixel_mm / 100.0
    }

    /// Grams of steel equivalent in a region whose pixels' high-energy log attenuations sum to
    /// `atten_sum`: Σ A · pixel area = μ/ρ · mass.
    pub fn steel_g_of(&self, atten_sum: f32) -> f32 {
        atten_sum * self.pixel_mm * self.pixel_mm / 100.0 / self.steel_mu_rho_high
    }
}

/// What one kind of goods may show on an image. Each declared piece may explain one region
/// per listed area, of at most that area, of that kind; for metal and cells, also of at most
/// the mass listed beside it (grams of steel equivalent), if a mass list is given.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// An HS code prefix of 2 to 10 digits; a code takes the profile of its longest matching
    /// prefix.
    pub hs: String,
    /// What the entry covers, for people.
    pub goods: String,
    #[serde(default)]
    pub metal_cm2: Vec<f32>,
    /// Masses of the `metal_cm2` parts, one each; empty: no mass limit.
    #[serde(default)]
    pub metal_g: Vec<f32>,
    #[serde(default)]
    pub battery_cm2: Vec<f32>,
    #[serde(default)]
    pub battery_g: Vec<f32>,
    #[serde(default)]
    pub liquid_cm2: Vec<f32>,
    #[serde(default)]
    pub dense_object_cm2: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    pub profile: Vec<Profile>,
}

impl Profiles {
    pub fn load(path: &Path) -> Result<Profiles, ProfileError> {
        Profiles::from_toml(&read(path)?, path)
    }

    /// Parses `text`; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Profiles, ProfileError> {
        let profiles: Profiles = parse(text, path)?;
        profiles.validate(path)?;
        Ok(profiles)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        let c = Check { path };
        if self.profile.len() > MAX_PROFILES {
            return c.fail("profiles", "profile", format!("more than {MAX_PROFILES} entries"));
        }
        for (i, p) in self.profile.iter().enumerate() {
            let entry = format!("profile[{i}] (hs {:?})", p.hs);
            if !(2..=10).contains(&p.hs.len()) || !p.hs.bytes().all(|b| b.is_ascii_digit()) {
                return c.fail(entry, "hs", "must be 2 to 10 digits");
            }
            if self.profile[..i].iter().any(|q| q.hs == p.hs) {
                return c.fail(entry, "hs", "appears twice");
            }
            if p.goods.trim().is_empty() {
                return c.fail(entry, "goods", "must not be empty");
            }
            for (field, parts) in [
                ("metal_cm2", &p.metal_cm2),
                ("battery_cm2", &p.battery_cm2),
                ("liquid_cm2", &p.liquid_cm2),
                ("dense_object_cm2", &p.dense_object_cm2),
            ] {
                if parts.len() > MAX_PARTS {
                    return c.fail(entry, field, format!("more than {MAX_PARTS} parts"));
                }
                for &v in parts {
                    c.range(&entry, field, v, 0.0, MAX_AREA_CM2)?;
                }
            }
            for (field, masses, parts) in
                [("metal_g", &p.metal_g, &p.metal_cm2), ("battery_g", &p.battery_g, &p.battery_cm2)]
            {
                if !masses.is_empty() && masses.len() != parts.len() {
                    return c.fail(
                        entry,
                        field,
                        format!("needs one mass per area ({}), got {}", parts.len(), masses.len()),
                    );
                }
                for &v in masses {
                    c.range(&entry, field, v, 0.0, MAX_MASS_G)?;
                }
            }
        }
        Ok(())
    }

    /// The profile of the longest prefix of `hs_code`, if any.
    pub fn find(&self, hs_code: &str) -> Option<&Profile> {
        self.profile.iter().filter(|p| hs_code.starts_with(p.hs.as_str())).max_by_key(|p| p.hs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/xray").join(name)
    }

    fn calibration_with(edit: impl FnOnce(&mut toml::Table)) -> Result<Calibration, ProfileError> {
        let mut t: toml::Table = toml::from_str(&read(&shipped("calibration.toml")).unwrap()).unwrap();
        edit(&mut t);
        Calibration::from_toml(&toml::to_string(&t).unwrap(), Path::new("calibration.toml"))
    }

    fn profiles(text: &str) -> Result<Profiles, ProfileError> {
        Profiles::from_toml(text, Path::new("profiles.toml"))
    }

    #[test]
    fn the_shipped_tables_load() {
        let cal = Calibration::load(&shipped("calibration.toml")).unwrap();
        assert_eq!(cal.pixels_in(1.0) as f32, (100.0 / (cal.pixel_mm * cal.pixel_mm)).ceil());
        let p = Profiles::load(&shipped("profiles.toml")).unwrap();
        // The longest prefix wins: power banks carry cells, other electrical goods less.
        let bank = p.find("850760").unwrap();
        let chapter = p.find("851690").unwrap();
        assert_eq!((bank.hs.as_str(), chapter.hs.as_str()), ("8507", "85"));
        assert!(bank.battery_cm2.iter().sum::<f32>() > chapter.battery_cm2.iter().sum::<f32>());
        assert!(p.find("620442").unwrap().liquid_cm2.is_empty());
        assert!(!p.find("330300").unwrap().liquid_cm2.is_empty());
        assert!(p.find("000000").is_none());
    }

    #[test]
    fn calibration_errors_name_the_file_the_entry_and_the_field() {
        let msg = |r: Result<Calibration, ProfileError>| r.unwrap_err().to_string();
        let e = msg(calibration_with(|t| {
            t.insert("pixel_mm".into(), toml::Value::Float(0.0));
        }));
        assert!(e.starts_with("calibration.toml: calibration: pixel_mm:"), "{e}");
        let e = msg(calibration_with(|t| {
            let rows = t.get_mut("boundary").and_then(|b| b.as_array_mut()).unwrap();
            rows[1].as_table_mut().unwrap().insert("high_atten".into(), toml::Value::Float(-5.0));
        }));
        assert!(e.starts_with("calibration.toml: boundary[1]: high_atten:"), "{e}");
        let e = msg(calibration_with(|t| {
            let rows = t.get_mut("boundary").and_then(|b| b.as_array_mut()).unwrap();
            rows[0].as_table_mut().unwrap().insert("mixed_max".into(), toml::Value::Float(1.01));
        }));
        assert!(e.starts_with("calibration.toml: boundary[0]: mixed_max:"), "{e}");
        let e = msg(calibration_with(|t| {
            t.insert("battery_ratio".into(), toml::Value::try_from([5.0, 4.0]).unwrap());
        }));
        assert!(e.contains("battery_ratio"), "{e}");
        let e = msg(calibration_with(|t| {
            t.get_mut("min_region")
                .and_then(|m| m.as_table_mut())
                .unwrap()
                .insert("liquid_cm2".into(), f32::NAN.into());
        }));
        assert!(e.starts_with("calibration.toml: min_region: liquid_cm2:"), "{e}");
        let e = msg(calibration_with(|t| {
            t.insert("dark_level".into(), toml::Value::Integer(3));
        }));
        assert!(e.contains("calibration.toml") && e.contains("dark_level"), "{e}");
        let e = msg(calibration_with(|t| {
            t.insert("boundary".into(), toml::Value::Array(vec![]));
        }));
        assert!(e.contains("boundary"), "{e}");
    }

    #[test]
    fn profile_errors_name_the_entry_and_the_field() {
        let ok = "[[profile]]\nhs = \"61\"\ngoods = \"garments\"\nmetal_cm2 = [3.0]\n";
        assert_eq!(profiles(ok).unwrap().profile[0].metal_cm2, vec![3.0]);
        let cases = [
            ("[[profile]]\nhs = \"6\"\ngoods = \"g\"\n", "profile[0] (hs \"6\"): hs:"),
            ("[[profile]]\nhs = \"6a\"\ngoods = \"g\"\n", "hs: must be 2 to 10 digits"),
            (&format!("{ok}{ok}"), "profile[1] (hs \"61\"): hs: appears twice"),
            ("[[profile]]\nhs = \"61\"\ngoods = \" \"\n", "goods: must not be empty"),
            ("[[profile]]\nhs = \"61\"\ngoods = \"g\"\nliquid_cm2 = [-1.0]\n", "liquid_cm2: -1"),
            ("[[profile]]\nhs = \"61\"\ngoods = \"g\"\nbattery_cm2 = [1e9]\n", "battery_cm2:"),
            ("[[profile]]\nhs = \"61\"\ngoods = \"g\"\nmetal = [3.0]\n", "unknown field `metal`"),
            (
                "[[profile]]\nhs = \"61\"\ngoods = \"g\"\nmetal_cm2 = [3.0]\nmetal_g = [1.0, 2.0]\n",
                "metal_g: needs one mass",
            ),
            ("[[profile]]\nhs = \"61\"\ngoods = \"g\"\nbattery_cm2 = [3.0]\nbattery_g = [0.0]\n", "battery_g: 0"),
        ];
        for (text, want) in cases {
            let e = profiles(text).unwrap_err().to_string();
            assert!(e.starts_with("profiles.toml: ") && e.contains(want), "{e} / {want}");
        }
        let many = format!("[[profile]]\nhs = \"61\"\ngoods = \"g\"\nmetal_cm2 = [{}]\n", vec!["1.0"; 17].join(","));
        assert!(profiles(&many).unwrap_err().to_string().contains("more than 16 parts"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Profiles::load(Path::new("/nonexistent/profiles.toml")).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/profiles.toml: "), "{e}");
    }
}
