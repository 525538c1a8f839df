//! Material classes per pixel (`docs/xray.md`, Pre-screen).
//!
//! Transmission is `T = I / I0` with `I0 = u16::MAX` (the open beam); log attenuation is
//! `A = -ln T`, the line integral of the attenuation along the ray (Beer–Lambert). Of a
//! dual-energy pixel, the ratio `A_low / A_high` depends on the material's atomic number and
//! not on its thickness: about 1.3 for organic matter, 2 for aluminium and glass, 6 for steel.
//! The calibration's boundary table says where the classes part, by `A_high`.

use super::profile::Calibration;

/// Steps per unit of high-energy log attenuation in the boundary lookup table, and its reach:
/// beyond it the low channel is saturated anyway.
const BOUND_STEPS_PER_ATTEN: f32 = 64.0;
const BOUND_MAX_ATTEN: f32 = 12.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Material {
    /// Nothing, or hardly anything, in the beam.
    Background,
    /// Plastics, paper, textiles, food, water.
    Organic,
    /// Light metals, glass, salts, or organic over metal.
    Mixed,
    /// Iron, copper, heavier elements.
    Metal,
    /// Nothing got through.
    Impenetrable,
    /// A single-energy pixel that attenuates: no material can be told.
    Unclassified,
}

/// One classified pixel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pixel {
    pub material: Material,
    /// Low-energy (or the single) log attenuation.
    pub atten_low: f32,
    /// High-energy log attenuation; 0 for a single-energy pixel.
    pub atten_high: f32,
}

impl Pixel {
    /// `A_low / A_high`; 0 for a single-energy pixel.
    pub fn ratio(&self) -> f32 {
        if self.atten_high > 0.0 {
            self.atten_low / self.atten_high
        } else {
            0.0
        }
    }
}

/// The calibration turned into lookup tables.
#[derive(Clone, Debug)]
pub struct Classifier {
    /// `-ln(max(c, 1) / 65535)` for every count `c`.
    log_atten: Vec<f32>,
    /// (organic_max, mixed_max) by `A_high · BOUND_STEPS_PER_ATTEN`.
    bounds: Vec<(f32, f32)>,
    dark_max: u16,
    background_atten: f32,
}

impl Classifier {
    pub fn new(cal: &Calibration) -> Classifier {
        let full = f32::from(u16::MAX);
        let log_atten = (0..=u16::MAX).map(|c| -(f32::from(c.max(1)) / full).ln()).collect();
        let steps = (BOUND_MAX_ATTEN * BOUND_STEPS_PER_ATTEN) as usize;
        let bounds = (0..=steps).map(|i| interpolate(cal, i as f32 / BOUND_STEPS_PER_ATTEN)).collect();
        Classifier { log_atten, bounds, dark_max: cal.dark_max, background_atten: cal.background_atten }
    }

    #[inline]
    pub fn atten(&self, counts: u16) -> f32 {
        self.log_atten[usize::from(counts)]
    }

    /// Classifies one pixel: `high` is `None` for a single-energy image.
    #[inline]
    pub fn classify(&self, low: u16, high: Option<u16>) -> Pixel {
        let atten_low = self.atten(low);
        let Some(high) = high else {
            let material = if low <= self.dark_max {
                Material::Impenetrable
            } else if atten_low < self.background_atten {
                Material::Background
            } else {
                Material::Unclassified
            };
            return Pixel { material, atten_low, atten_high: 0.0 };
        };
        let atten_high = self.atten(high);
        if high <= self.dark_max {
            return Pixel { material: Material::Impenetrable, atten_low, atten_high };
        }
        if atten_high < self.background_atten {
            return Pixel { material: Material::Background, atten_low, atten_high };
        }
        let step = ((atten_high * BOUND_STEPS_PER_ATTEN) as usize).min(self.bounds.len() - 1);
        let (organic_max, mixed_max) = self.bounds[step];
        // The ratio compared without dividing: atten_high is above the background here.
        let material = if atten_low < organic_max * atten_high {
            Material::Organic
        } else if atten_low < mixed_max * atten_high {
            Material::Mixed
        } else {
            Material::Metal
        };
        Pixel { material, atten_low, atten_high }
    }
}

/// The boundary table at `atten_high`: linear between rows, flat beyond the ends.
fn interpolate(cal: &Calibration, atten_high: f32) -> (f32, f32) {
    let rows = &cal.boundary;
    let Some(first) = rows.first() else { return (f32::INFINITY, f32::INFINITY) };
    if atten_high <= first.high_atten {
        return (first.organic_max, first.mixed_max);
    }
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if atten_high <= b.high_atten {
            let t = (atten_high - a.high_atten) / (b.high_atten - a.high_atten);
            return (
                a.organic_max + t * (b.organic_max - a.organic_max),
                a.mixed_max + t * (b.mixed_max - a.mixed_max),
            );
        }
    }
    rows.last().map_or((f32::INFINITY, f32::INFINITY), |l| (l.organic_max, l.mixed_max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shipped() -> Calibration {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/xray/calibration.toml");
        Calibration::load(&path).unwrap()
    }

    /// Counts that a material with this low and high log attenuation gives.
    fn counts(atten: f32) -> u16 {
        (65535.0 * (-atten).exp()).round() as u16
    }

    #[test]
    fn ratios_classify_as_the_physics_says() {
        let c = Classifier::new(&shipped());
        let class = |al: f32, ah: f32| c.classify(counts(al), Some(counts(ah))).material;
        // 5 cm of water, 3 mm of aluminium, 5 mm of steel, 1 cm of lead.
        assert_eq!(class(1.03, 0.77), Material::Organic);
        assert_eq!(class(0.225, 0.115), Material::Mixed);
        assert_eq!(class(4.74, 0.81), Material::Metal);
        assert_eq!(c.classify(counts(57.0), Some(counts(27.0))).material, Material::Impenetrable);
        assert_eq!(class(0.01, 0.01), Material::Background);
        assert_eq!(c.classify(counts(0.5), None).material, Material::Unclassified);
        assert_eq!(c.classify(0, None).material, Material::Impenetrable);
        assert_eq!(c.classify(u16::MAX, None).material, Material::Background);
    }

    #[test]
    fn boundaries_interpolate_between_rows_and_stay_flat_beyond() {
        let cal = shipped();
        let (first, last) = (&cal.boundary[0], &cal.boundary[cal.boundary.len() - 1]);
        assert_eq!(interpolate(&cal, 0.0), (first.organic_max, first.mixed_max));
        assert_eq!(interpolate(&cal, 100.0), (last.organic_max, last.mixed_max));
        let (a, b) = (&cal.boundary[0], &cal.boundary[1]);
        let (o, m) = interpolate(&cal, (a.high_atten + b.high_atten) / 2.0);
        assert!((o - (a.organic_max + b.organic_max) / 2.0).abs() < 1e-5);
        assert!((m - (a.mixed_max + b.mixed_max) / 2.0).abs() < 1e-5);
    }

    #[test]
    fn log_attenuation_of_the_open_beam_is_zero_and_of_nothing_is_finite() {
        let c = Classifier::new(&shipped());
        assert_eq!(c.atten(u16::MAX), 0.0);
        assert!((c.atten(0) - 65535f32.ln()).abs() < 1e-4);
        assert!((c.atten(counts(2.0)) - 2.0).abs() < 1e-3);
    }
}
