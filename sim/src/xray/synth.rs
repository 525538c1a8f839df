//! Synthesised X-ray images of a parcel's contents (`docs/xray.md`, Simulated X-ray).
//!
//! Each declared piece of goods becomes a few simple solids (slabs, rods, domes, pucks) of
//! materials with low- and high-energy attenuation; they are laid out in a cardboard box, and
//! the detector sees `I = I0 · exp(-Σ μ·path)` per pixel (Beer–Lambert, one effective energy
//! per channel), slightly blurred, with photon (Poisson-like) and electronic noise. An
//! undeclared item ([`Concealed`]) can be added anywhere in the box, over the declared goods.
//!
//! The projection is top-down through the parcel: image x runs along the belt, y across it,
//! and a solid's depth is its extent along the beam. One random stream determines the image.

use super::SimImage;
use crate::platform;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sortline::manifest::DeclaredItem;
use std::f32::consts::{FRAC_PI_2, PI};

/// Bounds of the image size, so that a configuration cannot ask for an absurd allocation.
pub const SIZE_RANGE_PX: std::ops::RangeInclusive<u32> = 32..=4096;
/// Pieces drawn per declared line at most: a quantity of 500 T-shirts still draws a few.
const MAX_PIECES_PER_ITEM: u32 = 4;
/// Declared lines drawn at most.
const MAX_ITEMS: usize = 16;
/// Positions tried when laying out a piece; the one overlapping least is taken.
const PLACEMENT_TRIES: u32 = 12;
/// Cardboard wall thickness and the box's margin to the image edge.
const WALL_MM: f32 = 4.0;
const MARGIN_MM: f32 = 15.0;
/// How far the detector spreads light (scintillator and focal spot together).
const DETECTOR_BLUR_MM: f32 = 1.0;
/// Electronic noise of a detector element, in photon equivalents.
const ELECTRONIC_NOISE_PHOTONS: f32 = 3.0;

/// Mass attenuation coefficients μ/ρ (cm²/g) at the two effective energies, about 60 keV (low)
/// and 140 keV (high). Elements from the NIST XCOM / X-ray mass attenuation tables (Hubbell and
/// Seltzer), log-log interpolated to 140 keV; compounds and mixtures (cellulose, glass, PVC,
/// a lithium-ion cell of LiCoO2, copper and aluminium foil, graphite, electrolyte and a steel
/// can) are mass-fraction sums of their elements. Orders of magnitude, not a certified model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Material {
    pub name: &'static str,
    pub mu_rho_low: f32,
    pub mu_rho_high: f32,
}

pub const CELLULOSE: Material = Material { name: "cellulose", mu_rho_low: 0.193, mu_rho_high: 0.146 };
/// Book paper: cellulose with kaolin and chalk fillers.
pub const PAPER: Material = Material { name: "paper", mu_rho_low: 0.205, mu_rho_high: 0.148 };
/// PE, PET, ABS: carbon, hydrogen, some oxygen.
pub const PLASTIC: Material = Material { name: "plastic", mu_rho_low: 0.190, mu_rho_high: 0.146 };
pub const PVC: Material = Material { name: "pvc", mu_rho_low: 0.320, mu_rho_high: 0.150 };
pub const WATER: Material = Material { name: "water", mu_rho_low: 0.206, mu_rho_high: 0.154 };
/// Soda-lime glass.
pub const GLASS: Material = Material { name: "glass", mu_rho_low: 0.266, mu_rho_high: 0.143 };
pub const ALUMINIUM: Material = Material { name: "aluminium", mu_rho_low: 0.278, mu_rho_high: 0.142 };
pub const STEEL: Material = Material { name: "steel", mu_rho_low: 1.205, mu_rho_high: 0.205 };
pub const COPPER: Material = Material { name: "copper", mu_rho_low: 1.593, mu_rho_high: 0.234 };
/// Above its K edge (88 keV) lead absorbs the high energy strongly too.
pub const LEAD: Material = Material { name: "lead", mu_rho_low: 5.021, mu_rho_high: 2.39 };
/// A lithium-ion cell as a whole (see above).
pub const LITHIUM_CELL: Material = Material { name: "lithium cell", mu_rho_low: 0.75, mu_rho_high: 0.18 };

/// Densities in g/cm³: solids, and the bulk densities of goods that are partly air.
mod rho {
    pub const CARDBOARD_BULK: f32 = 0.14;
    pub const TEXTILE_BULK: f32 = 0.25;
    pub const PAPER: f32 = 0.85;
    pub const PLASTIC: f32 = 1.05;
    pub const PVC: f32 = 1.4;
    pub const WATER: f32 = 1.0;
    pub const GLASS: f32 = 2.5;
    pub const ALUMINIUM: f32 = 2.70;
    pub const STEEL: f32 = 7.87;
    pub const COPPER: f32 = 8.96;
    pub const LEAD: f32 = 11.35;
    /// An 18650 cell: 45 g in 16.5 cm³.
    pub const LITHIUM_CELL: f32 = 2.7;
}

/// What a simulated parcel may carry besides its declared goods; the world's undeclared kinds
/// but licence goods, which look like any declared goods on an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Concealed {
    /// A spanner, knife or screwdriver.
    MetalTool,
    /// Lithium cells: a few 18650s or a pouch cell.
    Battery,
    /// A plastic bottle of liquid.
    Liquid,
    /// A lead or steel block the beam does not get through.
    DenseObject,
}

impl Concealed {
    pub const ALL: [Concealed; 4] =
        [Concealed::MetalTool, Concealed::Battery, Concealed::Liquid, Concealed::DenseObject];

    /// The same label the world gives its undeclared kinds.
    pub fn label(self) -> &'static str {
        match self {
            Concealed::MetalTool => "metal_tool",
            Concealed::Battery => "battery",
            Concealed::Liquid => "liquid",
            Concealed::DenseObject => "dense_object",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Image size in pixels: width along the belt, height across it.
    pub width: u32,
    pub height: u32,
    /// Detector pitch, both directions.
    pub pixel_mm: f32,
    /// Two channels (low and high energy); otherwise one, at the high energy, as a
    /// single-energy tunnel of 140-160 kV sees.
    pub dual_energy: bool,
    /// Open-beam photons per pixel per channel: sets the noise.
    pub photons_low: f32,
    pub photons_high: f32,
}

impl Default for SynthConfig {
    fn default() -> SynthConfig {
        SynthConfig {
            width: 640,
            height: 480,
            pixel_mm: 1.0,
            dual_energy: true,
            photons_low: 20_000.0,
            photons_high: 40_000.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SynthError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

/// A pixel rectangle, `x0..x1` × `y0..y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl PixelBox {
    pub fn intersects(&self, x0: u32, y0: u32, x1: u32, y1: u32) -> bool {
        self.x0 < x1 && x0 < self.x1 && self.y0 < y1 && y0 < self.y1
    }
}

/// One image and its ground truth.
#[derive(Clone, Debug)]
pub struct Synthesised {
    pub image: SimImage,
    /// The undeclared item, if any, and where it lies on the image.
    pub concealed: Option<(Concealed, PixelBox)>,
}

/// How a solid's path length varies over its footprint (local axes u, v; half extents hu, hv).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// A box: `depth` everywhere on the rectangle.
    Slab,
    /// A cylinder lying along u, radius hv: `depth · √(1 − (v/hv)²)` on the rectangle.
    Rod,
    /// An ellipsoid: `depth · √(1 − (u/hu)² − (v/hv)²)` on the ellipse.
    Dome,
    /// A cylinder standing along the beam: `depth` on the ellipse.
    Puck,
}

/// A solid in millimetres with its linear attenuation (per mm, per channel). A negative
/// attenuation carves a hollow out of a solid drawn before it.
#[derive(Clone, Copy, Debug)]
struct Solid {
    cx: f32,
    cy: f32,
    hu: f32,
    hv: f32,
    angle: f32,
    depth: f32,
    form: Form,
    mu_low: f32,
    mu_high: f32,
}

/// Linear attenuation per mm of `material` at `density`.
fn mu(material: Material, density: f32) -> (f32, f32) {
    (material.mu_rho_low * density / 10.0, material.mu_rho_high * density / 10.0)
}

fn solid(form: Form, (cx, cy): (f32, f32), (hu, hv): (f32, f32), depth: f32, (mu_low, mu_high): (f32, f32)) -> Solid {
    Solid { cx, cy, hu, hv, angle: 0.0, depth, form, mu_low, mu_high }
}

/// A hollow: the same solid with the attenuation taken away.
fn carve(s: Solid) -> Solid {
    Solid { mu_low: -s.mu_low, mu_high: -s.mu_high, ..s }
}

/// One physical object: solids relative to its centre, and its footprint's half extents.
struct Piece {
    hu: f32,
    hv: f32,
    solids: Vec<Solid>,
}

impl Piece {
    fn depth(&self) -> f32 {
        self.solids.iter().map(|s| s.depth).fold(0.0, f32::max)
    }

    /// Half extents of the footprint's axis-aligned bounding box once turned by `angle`.
    fn turned_half(&self, angle: f32) -> (f32, f32) {
        let (s, c) = angle.sin_cos();
        (self.hu * c.abs() + self.hv * s.abs(), self.hu * s.abs() + self.hv * c.abs())
    }

    fn place(self, cx: f32, cy: f32, angle: f32, out: &mut Vec<Solid>) {
        let (s, c) = angle.sin_cos();
        out.extend(self.solids.into_iter().map(|p| Solid {
            cx: cx + p.cx * c - p.cy * s,
            cy: cy + p.cx * s + p.cy * c,
            angle: p.angle + angle,
            ..p
        }));
    }
}

fn range<R: Rng>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    rng.random_range(lo..=hi)
}

/// The goods a declared HS code stands for, by the longest matching prefix.
fn goods<R: Rng>(hs: &str, rng: &mut R) -> Piece {
    let chapter = hs.get(..2).unwrap_or("");
    let heading = hs.get(..4).unwrap_or("");
    match (chapter, heading) {
        (_, "8507") => power_bank(rng),
        (_, "8518") => earphones(rng),
        (_, "8544") => cable(rng),
        (_, "3303") => perfume(rng),
        (_, "9617") => vacuum_flask(rng),
        ("61" | "62" | "63", _) => garment(rng),
        ("42", _) => bag(rng),
        ("49", _) => book(rng),
        ("64", _) => shoes(rng),
        ("33", _) => cosmetic(rng),
        ("85", _) => gadget(rng),
        ("91", _) => watch(rng),
        (c, _) if ("01"..="24").contains(&c) => food(rng),
        // Plastics, toys and anything unknown: plastic things of some size.
        _ => plastic_thing(rng),
    }
}

fn garment<R: Rng>(rng: &mut R) -> Piece {
    let (hu, hv) = (range(rng, 110.0, 170.0), range(rng, 90.0, 130.0));
    let mut solids =
        vec![solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 15.0, 45.0), mu(CELLULOSE, rho::TEXTILE_BULK))];
    // Buttons or a zip pull: small bits of metal every garment may carry.
    for _ in 0..rng.random_range(0..=3u32) {
        let at = (range(rng, -hu * 0.8, hu * 0.8), range(rng, -hv * 0.8, hv * 0.8));
        solids.push(solid(Form::Puck, at, (5.0, 5.0), 1.5, mu(STEEL, rho::STEEL)));
    }
    Piece { hu, hv, solids }
}

fn bag<R: Rng>(rng: &mut R) -> Piece {
    let (hu, hv) = (range(rng, 150.0, 200.0), range(rng, 110.0, 150.0));
    let mut solids = vec![solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 30.0, 60.0), mu(CELLULOSE, 0.15))];
    // Zip runs and buckles.
    solids.push(solid(Form::Slab, (0.0, -hv * 0.7), (hu * 0.8, 2.0), 3.0, mu(PLASTIC, rho::PLASTIC)));
    for _ in 0..rng.random_range(1..=3u32) {
        let at = (range(rng, -hu * 0.8, hu * 0.8), range(rng, -hv * 0.8, hv * 0.8));
        solids.push(solid(Form::Slab, at, (10.0, 6.0), 2.0, mu(STEEL, rho::STEEL)));
    }
    Piece { hu, hv, solids }
}

fn book<R: Rng>(rng: &mut R) -> Piece {
    let (hu, hv) = (range(rng, 95.0, 130.0), range(rng, 70.0, 90.0));
    let solids = vec![solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 12.0, 40.0), mu(PAPER, rho::PAPER))];
    Piece { hu, hv, solids }
}

fn shoes<R: Rng>(rng: &mut R) -> Piece {
    // A pair side by side, soles of rubber and uppers of textile, as bulk.
    let (hu, hv) = (range(rng, 130.0, 160.0), range(rng, 45.0, 55.0));
    let solids = [-1.0f32, 1.0]
        .into_iter()
        .map(|side| solid(Form::Dome, (0.0, side * hv * 1.05), (hu, hv), range(rng, 80.0, 110.0), mu(PLASTIC, 0.35)))
        .collect();
    Piece { hu, hv: hv * 2.1, solids }
}

fn food<R: Rng>(rng: &mut R) -> Piece {
    let (hu, hv) = (range(rng, 50.0, 90.0), range(rng, 40.0, 60.0));
    let solids =
        vec![solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 20.0, 70.0), mu(CELLULOSE, range(rng, 0.3, 0.5)))];
    Piece { hu, hv, solids }
}

fn plastic_thing<R: Rng>(rng: &mut R) -> Piece {
    let (hu, hv) = (range(rng, 30.0, 110.0), range(rng, 25.0, 70.0));
    let form = if rng.random_bool(0.5) { Form::Dome } else { Form::Slab };
    let depth = range(rng, 10.0, 60.0);
    let solids = vec![solid(form, (0.0, 0.0), (hu, hv), depth, mu(PLASTIC, range(rng, 0.2, 0.6)))];
    Piece { hu, hv, solids }
}

fn cosmetic<R: Rng>(rng: &mut R) -> Piece {
    // A lipstick: an aluminium tube around wax.
    let (hu, r) = (range(rng, 35.0, 42.0), range(rng, 9.0, 11.0));
    let tube = solid(Form::Rod, (0.0, 0.0), (hu, r), 2.0 * r, mu(ALUMINIUM, rho::ALUMINIUM));
    let bore = solid(Form::Rod, (0.0, 0.0), (hu, r - 0.5), 2.0 * (r - 0.5), mu(ALUMINIUM, rho::ALUMINIUM));
    let wax = solid(Form::Rod, (0.0, 0.0), (hu * 0.7, r - 1.0), 2.0 * (r - 1.0), mu(PLASTIC, 0.9));
    Piece { hu, hv: r, solids: vec![tube, carve(bore), wax] }
}

/// A bottle lying down: a wall of `wall` mm of `material` around a liquid `fill` of its length.
fn bottle(hu: f32, r: f32, wall: f32, material: (f32, f32), fill: f32) -> Vec<Solid> {
    let outer = solid(Form::Rod, (0.0, 0.0), (hu, r), 2.0 * r, material);
    let inner = solid(Form::Rod, (0.0, 0.0), (hu - wall, r - wall), 2.0 * (r - wall), material);
    let liquid_hu = (hu - wall) * fill;
    let liquid = solid(
        Form::Rod,
        (liquid_hu - (hu - wall), 0.0),
        (liquid_hu, r - wall),
        2.0 * (r - wall),
        mu(WATER, rho::WATER),
    );
    vec![outer, carve(inner), liquid]
}

fn perfume<R: Rng>(rng: &mut R) -> Piece {
    let (hu, r) = (range(rng, 45.0, 60.0), range(rng, 20.0, 28.0));
    let mut solids = bottle(hu, r, range(rng, 2.5, 4.0), mu(GLASS, rho::GLASS), range(rng, 0.6, 0.9));
    // The cap and spray head.
    solids.push(solid(Form::Puck, (hu + 8.0, 0.0), (8.0, 10.0), 20.0, mu(PLASTIC, rho::PLASTIC)));
    // In its carton.
    solids.push(solid(Form::Slab, (5.0, 0.0), (hu + 20.0, r + 5.0), 2.0 * r + 10.0, mu(CELLULOSE, 0.05)));
    Piece { hu: hu + 20.0, hv: r + 5.0, solids }
}

fn power_bank<R: Rng>(rng: &mut R) -> Piece {
    let (hu, hv, depth) = (range(rng, 65.0, 75.0), range(rng, 33.0, 38.0), range(rng, 20.0, 25.0));
    let case = mu(if rng.random_bool(0.5) { ALUMINIUM } else { PLASTIC }, 0.1 * rho::ALUMINIUM);
    let mut solids = vec![solid(Form::Slab, (0.0, 0.0), (hu, hv), depth, case)];
    if rng.random_bool(0.5) {
        // Two or three 18650s side by side along the length.
        let cells = rng.random_range(2..=3u32);
        for i in 0..cells {
            let y = (i as f32 - (cells - 1) as f32 / 2.0) * 18.5;
            solids.push(solid(Form::Rod, (-8.0, y), (32.5, 9.0), 18.0, mu(LITHIUM_CELL, rho::LITHIUM_CELL)));
        }
    } else {
        solids.push(solid(Form::Slab, (-5.0, 0.0), (hu - 15.0, hv - 5.0), 8.0, mu(LITHIUM_CELL, 2.3)));
    }
    // Circuit board with its connector.
    solids.push(solid(Form::Slab, (hu - 10.0, 0.0), (8.0, hv - 6.0), 1.6, mu(GLASS, 1.9)));
    solids.push(solid(Form::Slab, (hu - 4.0, 0.0), (4.0, 5.0), 3.0, mu(STEEL, rho::STEEL)));
    Piece { hu, hv, solids }
}

fn earphones<R: Rng>(rng: &mut R) -> Piece {
    let (hu, hv) = (range(rng, 28.0, 35.0), range(rng, 22.0, 28.0));
    let mut solids = vec![solid(Form::Dome, (0.0, 0.0), (hu, hv), 25.0, mu(PLASTIC, 0.6))];
    // The charging case's cell, and in each bud a tiny cell and a magnet.
    solids.push(solid(Form::Slab, (0.0, hv * 0.4), (12.0, 7.0), 6.0, mu(LITHIUM_CELL, 2.3)));
    for side in [-1.0f32, 1.0] {
        let at = (side * hu * 0.5, -hv * 0.3);
        solids.push(solid(Form::Puck, at, (5.0, 5.0), 4.0, mu(LITHIUM_CELL, 2.3)));
        solids.push(solid(Form::Puck, (at.0, at.1 - 8.0), (4.0, 4.0), 2.0, mu(STEEL, rho::STEEL)));
    }
    Piece { hu, hv, solids }
}

fn cable<R: Rng>(rng: &mut R) -> Piece {
    // A coil: a ring of PVC around a few copper conductors, and two connectors.
    let r = range(rng, 35.0, 50.0);
    let thick = range(rng, 8.0, 12.0);
    let bundle = |r: f32, m: (f32, f32)| solid(Form::Puck, (0.0, 0.0), (r, r), thick, m);
    let pvc = mu(PVC, rho::PVC * 0.6);
    let cu = mu(COPPER, rho::COPPER * 0.05);
    let ring = (pvc.0 + cu.0, pvc.1 + cu.1);
    let mut solids = vec![bundle(r, ring), carve(bundle(r - 10.0, ring))];
    for side in [-1.0f32, 1.0] {
        solids.push(solid(Form::Slab, (side * (r - 5.0), r * 0.3), (7.0, 4.0), 4.0, mu(STEEL, rho::STEEL)));
    }
    Piece { hu: r, hv: r, solids }
}

fn gadget<R: Rng>(rng: &mut R) -> Piece {
    // Some electrical thing: a plastic body, a board, a steel part.
    let (hu, hv) = (range(rng, 40.0, 80.0), range(rng, 30.0, 50.0));
    let solids = vec![
        solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 20.0, 40.0), mu(PLASTIC, 0.4)),
        solid(Form::Slab, (0.0, 0.0), (hu * 0.7, hv * 0.7), 1.6, mu(GLASS, 1.9)),
        solid(Form::Slab, (hu * 0.5, 0.0), (8.0, 6.0), 4.0, mu(STEEL, rho::STEEL)),
    ];
    Piece { hu, hv, solids }
}

fn watch<R: Rng>(rng: &mut R) -> Piece {
    let r = range(rng, 19.0, 22.0);
    let band_hu = range(rng, 80.0, 100.0);
    let case = solid(Form::Puck, (0.0, 0.0), (r, r), 3.0, mu(STEEL, rho::STEEL));
    let band = if rng.random_bool(0.5) {
        solid(Form::Slab, (0.0, 0.0), (band_hu, 10.0), 2.0, mu(STEEL, rho::STEEL * 0.5))
    } else {
        solid(Form::Slab, (0.0, 0.0), (band_hu, 10.0), 3.0, mu(CELLULOSE, 0.9))
    };
    // In a gift box.
    let gift = solid(Form::Slab, (0.0, 0.0), (band_hu + 5.0, r + 15.0), 60.0, mu(CELLULOSE, 0.06));
    Piece { hu: band_hu + 5.0, hv: r + 15.0, solids: vec![gift, band, case] }
}

fn vacuum_flask<R: Rng>(rng: &mut R) -> Piece {
    // Two stainless shells 0.6 mm thick with a vacuum between them, and a plastic lid.
    let (hu, r) = (range(rng, 100.0, 130.0), range(rng, 33.0, 40.0));
    let steel = mu(STEEL, rho::STEEL);
    let shell = |hu: f32, r: f32| {
        let outer = solid(Form::Rod, (0.0, 0.0), (hu, r), 2.0 * r, steel);
        [outer, carve(solid(Form::Rod, (0.0, 0.0), (hu - 0.6, r - 0.6), 2.0 * (r - 0.6), steel))]
    };
    let mut solids: Vec<Solid> = shell(hu, r).into_iter().chain(shell(hu - 5.0, r - 5.0)).collect();
    solids.push(solid(Form::Rod, (hu + 12.0, 0.0), (12.0, r), 2.0 * r, mu(PLASTIC, 0.3)));
    Piece { hu: hu + 24.0, hv: r, solids }
}

fn concealed<R: Rng>(kind: Concealed, rng: &mut R) -> Piece {
    let steel = mu(STEEL, rho::STEEL);
    match kind {
        Concealed::MetalTool => match rng.random_range(0..3u32) {
            0 => {
                let (hu, hv) = (range(rng, 70.0, 120.0), range(rng, 10.0, 14.0));
                let depth = range(rng, 5.0, 8.0);
                let jaw = solid(Form::Puck, (hu, 0.0), (hv * 1.6, hv * 1.6), depth, steel);
                Piece {
                    hu: hu + hv * 1.6,
                    hv: hv * 1.6,
                    solids: vec![solid(Form::Slab, (0.0, 0.0), (hu, hv), depth, steel), jaw],
                }
            }
            1 => {
                let (hu, hv) = (range(rng, 70.0, 100.0), range(rng, 10.0, 15.0));
                let blade = solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 2.5, 4.0), steel);
                let handle = solid(Form::Slab, (hu + 50.0, 0.0), (50.0, hv), 20.0, mu(PLASTIC, rho::PLASTIC));
                Piece { hu: hu + 100.0, hv, solids: vec![blade, handle] }
            }
            _ => {
                let (hu, r) = (range(rng, 60.0, 90.0), range(rng, 3.5, 5.0));
                let shaft = solid(Form::Rod, (0.0, 0.0), (hu, r), 2.0 * r, steel);
                let handle = solid(Form::Rod, (hu + 45.0, 0.0), (45.0, 14.0), 28.0, mu(PLASTIC, 0.9));
                Piece { hu: hu + 90.0, hv: 14.0, solids: vec![shaft, handle] }
            }
        },
        Concealed::Battery => {
            if rng.random_bool(0.5) {
                let cells = rng.random_range(1..=4u32);
                let solids = (0..cells)
                    .map(|i| {
                        let y = (i as f32 - (cells - 1) as f32 / 2.0) * 18.5;
                        solid(Form::Rod, (0.0, y), (32.5, 9.0), 18.0, mu(LITHIUM_CELL, rho::LITHIUM_CELL))
                    })
                    .collect();
                Piece { hu: 32.5, hv: 9.25 * cells as f32, solids }
            } else {
                let (hu, hv) = (range(rng, 30.0, 55.0), range(rng, 22.0, 35.0));
                let depth = range(rng, 6.0, 10.0);
                Piece { hu, hv, solids: vec![solid(Form::Slab, (0.0, 0.0), (hu, hv), depth, mu(LITHIUM_CELL, 2.3))] }
            }
        }
        Concealed::Liquid => {
            // Half a litre to a litre and a half.
            let (hu, r) = (range(rng, 75.0, 120.0), range(rng, 31.0, 40.0));
            let pet = mu(PLASTIC, 1.38);
            Piece { hu, hv: r, solids: bottle(hu, r, 0.4, pet, range(rng, 0.8, 0.95)) }
        }
        Concealed::DenseObject => {
            let (hu, hv) = (range(rng, 25.0, 45.0), range(rng, 25.0, 45.0));
            let block = if rng.random_bool(0.5) {
                solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 10.0, 25.0), mu(LEAD, rho::LEAD))
            } else {
                solid(Form::Slab, (0.0, 0.0), (hu, hv), range(rng, 40.0, 70.0), steel)
            };
            Piece { hu, hv, solids: vec![block] }
        }
    }
}

/// A declaration drawn from the simulated platform's catalogue, as the world draws its lists.
pub fn catalogue_items(rng: &mut ChaCha8Rng) -> Vec<DeclaredItem> {
    platform::catalogue_items(rng)
}

pub struct Synth {
    config: SynthConfig,
}

impl Synth {
    pub fn new(config: SynthConfig) -> Result<Synth, SynthError> {
        let invalid = |field, problem: String| Err(SynthError::Invalid { field, problem });
        for (field, v) in [("width", config.width), ("height", config.height)] {
            if !SIZE_RANGE_PX.contains(&v) {
                return invalid(field, format!("{v} is outside {SIZE_RANGE_PX:?}"));
            }
        }
        if !(0.1..=10.0).contains(&config.pixel_mm) {
            return invalid("pixel_mm", format!("{} is outside 0.1 to 10", config.pixel_mm));
        }
        for (field, v) in [("photons_low", config.photons_low), ("photons_high", config.photons_high)] {
            if !(100.0..=1e7).contains(&v) {
                return invalid(field, format!("{v} is outside 100 to 10^7"));
            }
        }
        Ok(Synth { config })
    }

    /// The image of a parcel holding `items` (and `concealed`, if any) with sequence `seq`.
    pub fn image<R: Rng>(
        &self,
        seq: u32,
        items: &[DeclaredItem],
        concealed_kind: Option<Concealed>,
        rng: &mut R,
    ) -> Synthesised {
        let cfg = &self.config;
        let field = (cfg.width as f32 * cfg.pixel_mm, cfg.height as f32 * cfg.pixel_mm);
        let mut pieces: Vec<Piece> = Vec::new();
        for item in items.iter().take(MAX_ITEMS) {
            for _ in 0..item.quantity.clamp(1, MAX_PIECES_PER_ITEM) {
                pieces.push(goods(&item.hs_code, rng));
            }
        }
        // Big things first, so that small ones fill the gaps.
        pieces.sort_by(|a, b| (b.hu * b.hv).total_cmp(&(a.hu * a.hv)));
        let goods_mm2: f32 = pieces.iter().map(|p| 4.0 * p.hu * p.hv).sum();
        let fill = range(rng, 0.35, 0.6);
        let aspect = range(rng, 1.1, 1.6);
        let longest = pieces.iter().map(|p| 2.0 * p.hu.max(p.hv)).fold(0.0, f32::max);
        let max_len = (field.0 - 2.0 * MARGIN_MM).max(10.0);
        let max_wid = (field.1 - 2.0 * MARGIN_MM).max(10.0);
        let box_area = (goods_mm2 / fill).max(200.0 * 150.0);
        let len = (box_area * aspect).sqrt().max(longest + 2.0 * WALL_MM).min(max_len);
        let wid = (box_area / len).max(0.6 * longest.min(len)).min(max_wid);
        let x0 = MARGIN_MM + range(rng, 0.0, (max_len - len).max(0.0));
        let y0 = MARGIN_MM + range(rng, 0.0, (max_wid - wid).max(0.0));
        let height = pieces.iter().map(Piece::depth).fold(80.0, f32::max) + range(rng, 10.0, 120.0);

        let cardboard = mu(CELLULOSE, rho::CARDBOARD_BULK);
        let (bx, by) = (x0 + len / 2.0, y0 + wid / 2.0);
        let mut solids = vec![solid(Form::Slab, (bx, by), (len / 2.0, wid / 2.0), 2.0 * WALL_MM, cardboard)];
        for (at, half) in [
            ((x0 + WALL_MM / 2.0, by), (WALL_MM / 2.0, wid / 2.0)),
            ((x0 + len - WALL_MM / 2.0, by), (WALL_MM / 2.0, wid / 2.0)),
            ((bx, y0 + WALL_MM / 2.0), (len / 2.0, WALL_MM / 2.0)),
            ((bx, y0 + wid - WALL_MM / 2.0), (len / 2.0, WALL_MM / 2.0)),
        ] {
            solids.push(solid(Form::Slab, at, half, height, cardboard));
        }

        let inside = (x0 + WALL_MM, y0 + WALL_MM, x0 + len - WALL_MM, y0 + wid - WALL_MM);
        let mut placed: Vec<(f32, f32, f32, f32)> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            // Large pieces lie square in the box; small ones any way round.
            let square = piece.hu.max(piece.hv) > 0.25 * len.min(wid);
            let angle = if square {
                (if rng.random_bool(0.5) { 0.0 } else { FRAC_PI_2 }) + range(rng, -0.12, 0.12)
            } else {
                range(rng, 0.0, PI)
            };
            let half = piece.turned_half(angle);
            let mut best = (f32::INFINITY, 0.0, 0.0);
            for _ in 0..PLACEMENT_TRIES {
                let (cx, cy) = (spot(rng, inside.0, inside.2, half.0), spot(rng, inside.1, inside.3, half.1));
                let rect = (cx - half.0, cy - half.1, cx + half.0, cy + half.1);
                let overlap: f32 = placed.iter().map(|p| overlap_mm2(*p, rect)).sum();
                if overlap < best.0 {
                    best = (overlap, cx, cy);
                }
                if overlap == 0.0 {
                    break;
                }
            }
            placed.push((best.1 - half.0, best.2 - half.1, best.1 + half.0, best.2 + half.1));
            piece.place(best.1, best.2, angle, &mut solids);
        }

        let truth = concealed_kind.map(|kind| {
            let piece = concealed(kind, rng);
            let angle = range(rng, 0.0, PI);
            let half = piece.turned_half(angle);
            let (cx, cy) = (spot(rng, inside.0, inside.2, half.0), spot(rng, inside.1, inside.3, half.1));
            piece.place(cx, cy, angle, &mut solids);
            (kind, self.pixel_box(cx - half.0, cy - half.1, cx + half.0, cy + half.1))
        });

        let image = self.expose(seq, &solids, rng.random());
        Synthesised { image, concealed: truth }
    }

    fn pixel_box(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> PixelBox {
        let p = self.config.pixel_mm;
        let clamp = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
        PixelBox {
            x0: clamp((x0 / p).floor(), self.config.width),
            y0: clamp((y0 / p).floor(), self.config.height),
            x1: clamp((x1 / p).ceil(), self.config.width),
            y1: clamp((y1 / p).ceil(), self.config.height),
        }
    }

    /// Line integrals of the solids, then the detector: blur, photon and electronic noise.
    fn expose(&self, seq: u32, solids: &[Solid], noise_seed: u64) -> SimImage {
        let cfg = &self.config;
        let (w, h) = (cfg.width as usize, cfg.height as usize);
        let mut low = vec![0f32; w * h];
        let mut high = vec![0f32; w * h];
        for s in solids {
            self.rasterise(s, &mut low, &mut high);
        }
        let channel = |atten: &mut [f32], photons: f32, salt: u64| {
            for a in atten.iter_mut() {
                *a = (-a.max(0.0)).exp();
            }
            blur(atten, w, h, blur_share(cfg.pixel_mm));
            let mut out = vec![0u16; atten.len()];
            let scale = 65535.0 / photons;
            for i in 0..atten.len() {
                let n = photons * atten[i];
                let sd = (n + ELECTRONIC_NOISE_PHOTONS * ELECTRONIC_NOISE_PHOTONS).sqrt();
                let counts = (n + sd * gaussish(noise_seed ^ salt, i as u64)) * scale;
                out[i] = counts.round().clamp(0.0, 65535.0) as u16;
            }
            out
        };
        if cfg.dual_energy {
            let low = channel(&mut low, cfg.photons_low, 0);
            let high = channel(&mut high, cfg.photons_high, 0x9E37_79B9_7F4A_7C15);
            SimImage { seq, width: cfg.width, height: cfg.height, low, high: Some(high) }
        } else {
            let single = channel(&mut high, cfg.photons_high, 0);
            SimImage { seq, width: cfg.width, height: cfg.height, low: single, high: None }
        }
    }

    fn rasterise(&self, s: &Solid, low: &mut [f32], high: &mut [f32]) {
        let cfg = &self.config;
        let p = cfg.pixel_mm;
        let (sin, cos) = s.angle.sin_cos();
        let (ex, ey) = (s.hu * cos.abs() + s.hv * sin.abs(), s.hu * sin.abs() + s.hv * cos.abs());
        let px = |v: f32, max: u32| ((v / p).floor().max(0.0) as usize).min(max as usize);
        let (x0, x1) = (px(s.cx - ex, cfg.width), px(s.cx + ex + p, cfg.width));
        let (y0, y1) = (px(s.cy - ey, cfg.height), px(s.cy + ey + p, cfg.height));
        let w = cfg.width as usize;
        // Along a row, u and v are linear in x: u = u0 + x·du, v = v0 + x·dv.
        let dx0 = 0.5 * p - s.cx;
        let (du, dv) = (p * cos / s.hu, -p * sin / s.hv);
        for y in y0..y1 {
            let dy = (y as f32 + 0.5) * p - s.cy;
            let (u0, v0) = ((dx0 * cos + dy * sin) / s.hu, (dy * cos - dx0 * sin) / s.hv);
            // Only the span where the footprint can be; the test below stays exact.
            let (lo, hi) = match s.form {
                Form::Slab | Form::Rod => {
                    let (a, b) = (unit_span(u0, du), unit_span(v0, dv));
                    (a.0.max(b.0), a.1.min(b.1))
                }
                Form::Dome | Form::Puck => disc_span(u0, du, v0, dv),
            };
            if lo > hi {
                continue;
            }
            let from = (lo.floor() - 1.0).max(x0 as f32) as usize;
            let to = ((hi.ceil() + 2.0).max(0.0) as usize).min(x1);
            for x in from..to {
                let (u, v) = (u0 + x as f32 * du, v0 + x as f32 * dv);
                let path = match s.form {
                    Form::Slab if u.abs() <= 1.0 && v.abs() <= 1.0 => s.depth,
                    Form::Rod if u.abs() <= 1.0 && v.abs() < 1.0 => s.depth * (1.0 - v * v).sqrt(),
                    Form::Dome if u * u + v * v < 1.0 => s.depth * (1.0 - u * u - v * v).sqrt(),
                    Form::Puck if u * u + v * v <= 1.0 => s.depth,
                    _ => continue,
                };
                low[y * w + x] += path * s.mu_low;
                high[y * w + x] += path * s.mu_high;
            }
        }
    }
}

/// Where `f0 + x·df` lies in [-1, 1], as an x interval (empty: lo > hi).
fn unit_span(f0: f32, df: f32) -> (f32, f32) {
    if df.abs() < 1e-9 {
        return if f0.abs() <= 1.0 { (f32::NEG_INFINITY, f32::INFINITY) } else { (1.0, 0.0) };
    }
    let (a, b) = ((-1.0 - f0) / df, (1.0 - f0) / df);
    (a.min(b), a.max(b))
}

/// Where `(u0 + x·du)² + (v0 + x·dv)² <= 1`, as an x interval (empty: lo > hi).
fn disc_span(u0: f32, du: f32, v0: f32, dv: f32) -> (f32, f32) {
    let a = du * du + dv * dv;
    let b = 2.0 * (u0 * du + v0 * dv);
    let c = u0 * u0 + v0 * v0 - 1.0;
    let disc = b * b - 4.0 * a * c;
    if a <= 0.0 || disc < 0.0 {
        return (1.0, 0.0);
    }
    let root = disc.sqrt();
    ((-b - root) / (2.0 * a), (-b + root) / (2.0 * a))
}

/// A centre for a half extent `half` inside `lo..hi`, or the middle if it does not fit.
fn spot<R: Rng>(rng: &mut R, lo: f32, hi: f32, half: f32) -> f32 {
    if hi - lo <= 2.0 * half {
        (lo + hi) / 2.0
    } else {
        range(rng, lo + half, hi - half)
    }
}

fn overlap_mm2(a: (f32, f32, f32, f32), b: (f32, f32, f32, f32)) -> f32 {
    (a.2.min(b.2) - a.0.max(b.0)).max(0.0) * (a.3.min(b.3) - a.1.max(b.1)).max(0.0)
}

/// The share of a pixel's light that spreads to each neighbour: a quarter (a [1 2 1]/4 kernel)
/// at a pitch of `DETECTOR_BLUR_MM` or finer, falling with the square of the pitch beyond, as
/// the scintillator's spread is a fixed distance, not a number of pixels.
fn blur_share(pixel_mm: f32) -> f32 {
    0.25 * (DETECTOR_BLUR_MM / pixel_mm).powi(2).min(1.0)
}

/// The detector's point spread: a [a, 1 - 2a, a] kernel each way, edges repeated.
fn blur(t: &mut [f32], w: usize, h: usize, a: f32) {
    let mut row = vec![0f32; w.max(h)];
    for y in 0..h {
        let line = &mut t[y * w..(y + 1) * w];
        row[..w].copy_from_slice(line);
        for x in 0..w {
            let (l, r) = (row[x.saturating_sub(1)], row[(x + 1).min(w - 1)]);
            line[x] = a * (l + r) + (1.0 - 2.0 * a) * row[x];
        }
    }
    for x in 0..w {
        for y in 0..h {
            row[y] = t[y * w + x];
        }
        for y in 0..h {
            let (u, d) = (row[y.saturating_sub(1)], row[(y + 1).min(h - 1)]);
            t[y * w + x] = a * (u + d) + (1.0 - 2.0 * a) * row[y];
        }
    }
}

/// A unit-variance, roughly normal draw for pixel `i`: the sum of four uniform 16-bit parts of
/// a SplitMix64 hash (Irwin–Hall). Hashing per pixel is cheap and needs no sequential stream.
fn gaussish(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // Written out: this runs twice per pixel and the tests run unoptimised.
    let sum = (z & 0xFFFF) + ((z >> 16) & 0xFFFF) + ((z >> 32) & 0xFFFF) + (z >> 48);
    // Four uniforms on [0, 1): mean 2, variance 1/3.
    (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn item(hs: &str, quantity: u32) -> DeclaredItem {
        DeclaredItem {
            name: "x".into(),
            hs_code: hs.into(),
            quantity,
            unit: "件".into(),
            value_minor: 100,
            currency: "CNY".into(),
        }
    }

    fn small(dual_energy: bool) -> Synth {
        let config = SynthConfig { width: 160, height: 120, pixel_mm: 4.0, dual_energy, ..SynthConfig::default() };
        Synth::new(config).unwrap()
    }

    #[test]
    fn one_seed_one_image() {
        let synth = small(true);
        let items = [item("620442", 1), item("850760", 2)];
        let a = synth.image(7, &items, Some(Concealed::MetalTool), &mut ChaCha8Rng::seed_from_u64(5));
        let b = synth.image(7, &items, Some(Concealed::MetalTool), &mut ChaCha8Rng::seed_from_u64(5));
        let c = synth.image(7, &items, Some(Concealed::MetalTool), &mut ChaCha8Rng::seed_from_u64(6));
        assert_eq!(a.image, b.image);
        assert_ne!(a.image, c.image);
        assert_eq!((a.image.seq, a.image.low.len()), (7, 160 * 120));
        assert_eq!(a.image.high.as_ref().map(Vec::len), Some(160 * 120));
        assert!(small(false).image(1, &items, None, &mut ChaCha8Rng::seed_from_u64(5)).image.high.is_none());
    }

    #[test]
    fn the_corners_are_open_beam_and_the_box_attenuates() {
        let synth = small(true);
        let s = synth.image(1, &[item("4901990000", 1)], None, &mut ChaCha8Rng::seed_from_u64(2));
        let low = &s.image.low;
        // Photon noise at 20,000 photons is under 1 %.
        assert!(low[0] > 64_000 && low[160 * 120 - 1] > 64_000, "{} {}", low[0], low[160 * 120 - 1]);
        assert!(low.iter().any(|&v| v < 50_000), "a book attenuates");
    }

    /// Beer–Lambert with the table's coefficients: the ratio of low to high log attenuation of
    /// a lead or steel block is far from an organic one's, and a lead block is black.
    #[test]
    fn concealed_items_show_their_material() {
        let synth = small(true);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for kind in Concealed::ALL {
            for _ in 0..20 {
                let s = synth.image(1, &[], Some(kind), &mut rng);
                let (_, b) = s.concealed.unwrap();
                assert!(b.x1 > b.x0 && b.y1 > b.y0 && b.x1 <= 160 && b.y1 <= 120, "{kind:?} {b:?}");
                let high = s.image.high.as_ref().unwrap();
                let darkest = (b.y0..b.y1)
                    .flat_map(|y| (b.x0..b.x1).map(move |x| (y * 160 + x) as usize))
                    .map(|i| high[i])
                    .min()
                    .unwrap();
                match kind {
                    Concealed::DenseObject => assert!(darkest < 655, "{kind:?}: {darkest}"),
                    _ => assert!(darkest > 655, "{kind:?}: {darkest}"),
                }
            }
        }
    }

    #[test]
    fn a_water_bottle_is_organic_and_steel_is_not() {
        // Straight from the table: the ratio of log attenuations is the ratio of μ/ρ.
        let ratio = |m: Material| m.mu_rho_low / m.mu_rho_high;
        assert!(ratio(WATER) < 1.5 && ratio(PLASTIC) < 1.5 && ratio(CELLULOSE) < 1.5);
        assert!((1.6..2.5).contains(&ratio(ALUMINIUM)) && (1.6..2.5).contains(&ratio(GLASS)));
        assert!(ratio(STEEL) > 5.0 && ratio(COPPER) > 5.0 && (3.5..5.0).contains(&ratio(LITHIUM_CELL)));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let bad = |f: fn(&mut SynthConfig)| {
            let mut c = SynthConfig::default();
            f(&mut c);
            Synth::new(c).err()
        };
        assert!(matches!(bad(|c| c.width = 0), Some(SynthError::Invalid { field: "width", .. })));
        assert!(matches!(bad(|c| c.height = 100_000), Some(SynthError::Invalid { field: "height", .. })));
        assert!(matches!(bad(|c| c.pixel_mm = f32::NAN), Some(SynthError::Invalid { field: "pixel_mm", .. })));
        assert!(matches!(bad(|c| c.photons_low = 0.0), Some(SynthError::Invalid { field: "photons_low", .. })));
        assert!(bad(|_| ()).is_none());
    }

    #[test]
    fn blur_keeps_light_and_spreads_less_at_a_coarse_pitch() {
        assert_eq!(blur_share(1.0), 0.25);
        assert!(blur_share(3.2) < 0.03);
        let mut t = vec![0.0f32; 25];
        t[12] = 1.0;
        blur(&mut t, 5, 5, blur_share(1.0));
        assert!((t.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!((t[12], t[11], t[6]), (0.25, 0.125, 0.0625));
    }

    /// The row spans only prune: every pixel a solid covers is still drawn.
    #[test]
    fn rasterising_by_spans_matches_testing_every_pixel() {
        let synth = small(true);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for form in [Form::Slab, Form::Rod, Form::Dome, Form::Puck] {
            for _ in 0..50 {
                let at = (range(&mut rng, -50.0, 700.0), range(&mut rng, -50.0, 530.0));
                let half = (range(&mut rng, 1.0, 200.0), range(&mut rng, 1.0, 120.0));
                let mut s = solid(form, at, half, 10.0, (1.0, 0.5));
                s.angle = range(&mut rng, 0.0, 2.0 * PI);
                let (mut low, mut high) = (vec![0f32; 160 * 120], vec![0f32; 160 * 120]);
                synth.rasterise(&s, &mut low, &mut high);
                let (sin, cos) = s.angle.sin_cos();
                for (i, &got) in low.iter().enumerate() {
                    let (x, y) = ((i % 160) as f32, (i / 160) as f32);
                    let (dx, dy) = ((x + 0.5) * 4.0 - s.cx, (y + 0.5) * 4.0 - s.cy);
                    let (u, v) = ((dx * cos + dy * sin) / s.hu, (dy * cos - dx * sin) / s.hv);
                    let inside = match form {
                        Form::Slab | Form::Rod => u.abs() < 0.999 && v.abs() < 0.999,
                        Form::Dome | Form::Puck => u * u + v * v < 0.998,
                    };
                    assert!(!inside || got > 0.0, "{form:?} {s:?} pixel {i}");
                }
            }
        }
    }

    #[test]
    fn noise_is_about_unit_variance() {
        let n = 20_000u64;
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for i in 0..n {
            let g = f64::from(gaussish(42, i));
            s += g;
            s2 += g * g;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
