//! The automatic pre-screen (`docs/xray.md`, Pre-screen): a pure function of an image and the
//! parcel's declared goods, run on every image before any officer sees it.
//!
//! 1. Each pixel is classified ([`Classifier`]); a pixel is a candidate for one of three
//!    findings: impenetrable (dense object), metal (dual energy only; lithium cells among it),
//!    or thick organic matter that may be liquid (dual energy only).
//! 2. Candidates are joined into 8-connected regions (runs per row, union-find), and regions
//!    under the calibration's minimum area are dropped.
//! 3. Each declared piece may explain a few regions of a size its profile allows; regions
//!    nobody declared raise flags. Flags become reasons that send the parcel to inspection.
//!
//! A single-energy image shows no material, so it can only raise dense-object flags.

use super::material::{Classifier, Material};
use super::profile::{Calibration, Profiles};
use super::XrayImage;
use crate::core::manifest::Item;
use std::sync::Arc;

/// Largest image screened: 8k × 8k. The intake bounds images anyway; this bounds the work.
pub const MAX_PIXELS: usize = 64 << 20;
/// Declared lines and pieces per line that count; a declaration of 500 pens explains what 32
/// pens would, which is already a lot of metal.
pub const MAX_DECLARED_ITEMS: usize = 64;
pub const MAX_PIECES_PER_ITEM: u32 = 32;
/// Parts of each kind a declaration may offer; more would only explain more.
pub const MAX_PARTS_PER_KIND: usize = 1024;
/// Regions compared with the declaration, largest first; the rest are smaller than all of
/// them and the parcel has flags anyway.
pub const MAX_REGIONS: usize = 1024;
/// Share of a metal region's pixels that may look like steel (see `Run::steel_px`) for it to
/// still be cells: the parts of a tool lying clear of other goods give it away, and noise or
/// an edge of a cell does not reach this.
const MAX_STEEL_SHARE_OF_CELLS: f32 = 0.2;
/// How far outside a region its surroundings are sampled.
const STRIP_MARGIN_PX: u32 = 2;
/// Regions reported per flag, largest first.
pub const MAX_REGIONS_PER_FLAG: usize = 16;

/// What the pre-screen can find. The reason texts are stable: they are recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlagKind {
    DenseObject,
    UndeclaredMetal,
    PossibleLiquid,
    PossibleBattery,
}

impl FlagKind {
    pub const ALL: [FlagKind; 4] =
        [FlagKind::DenseObject, FlagKind::UndeclaredMetal, FlagKind::PossibleLiquid, FlagKind::PossibleBattery];

    /// The reason the core records (`Input::XrayScreened`).
    pub fn reason(self) -> &'static str {
        match self {
            FlagKind::DenseObject => "dense object",
            FlagKind::UndeclaredMetal => "undeclared metal",
            FlagKind::PossibleLiquid => "possible liquid",
            FlagKind::PossibleBattery => "possible battery",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A region of the image: its bounding box and its area in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub area_px: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Flag {
    pub kind: FlagKind,
    /// How strong the strongest region is: `area / (area + minimum area)` of its kind, so 0.5
    /// at the minimum and towards 1 as it grows.
    pub score: f32,
    /// The regions nobody declared, largest first.
    pub regions: Vec<Region>,
}

/// The findings for one image; no flags means clean.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Screening {
    /// At most one per kind, in [`FlagKind`] order.
    pub flags: Vec<Flag>,
}

impl Screening {
    pub fn is_clean(&self) -> bool {
        self.flags.is_empty()
    }

    /// The flags as the core's reasons (`Input::XrayScreened { flags, .. }`).
    pub fn reasons(&self) -> Vec<Arc<str>> {
        self.flags.iter().map(|f| Arc::from(f.kind.reason())).collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScreenError {
    #[error("image {seq}: {width}x{height} needs {expected} values per channel, the {channel} channel has {got}")]
    Geometry { seq: u32, width: u32, height: u32, channel: &'static str, expected: usize, got: usize },
    #[error("image {seq}: {width}x{height} is larger than {MAX_PIXELS} pixels")]
    TooLarge { seq: u32, width: u32, height: u32 },
}

/// What a pixel may be evidence of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Candidate {
    Dense,
    Metal,
    Liquid,
}

/// What the screen sums over a run or a region's pixels.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    /// Log attenuations over the pixels whose low channel is not saturated (there the ratio
    /// is only a lower bound), and their count.
    low: f32,
    high: f32,
    ratio_px: u32,
    /// Pixels that no cell gives: a saturated low channel, or a ratio above the cells' range.
    steel_px: u32,
    /// High-energy log attenuation over every pixel: the region's mass.
    high_total: f32,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.low += o.low;
        self.high += o.high;
        self.ratio_px += o.ratio_px;
        self.steel_px += o.steel_px;
        self.high_total += o.high_total;
    }
}

/// A horizontal run of candidate pixels, `x0..x1` on row `y`.
#[derive(Clone, Copy, Debug)]
struct Run {
    y: u32,
    x0: u32,
    x1: u32,
    candidate: Candidate,
    sums: Sums,
}

/// An 8-connected region of one candidate kind.
#[derive(Clone, Copy, Debug)]
struct Component {
    candidate: Candidate,
    area_px: u32,
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    sums: Sums,
}

impl Component {
    fn region(&self) -> Region {
        Region { x: self.x0, y: self.y0, width: self.x1 - self.x0, height: self.y1 - self.y0, area_px: self.area_px }
    }
}

/// The pre-screen: calibration, profiles and their lookup tables. Build once, use per image.
#[derive(Clone, Debug)]
pub struct Screen {
    calibration: Calibration,
    profiles: Profiles,
    classifier: Classifier,
}

impl Screen {
    pub fn new(calibration: Calibration, profiles: Profiles) -> Screen {
        let classifier = Classifier::new(&calibration);
        Screen { calibration, profiles, classifier }
    }

    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Screens `image` against the parcel's declared goods; pass `&[]` when no declaration is
    /// known, so that anything suspicious flags.
    pub fn screen(&self, image: &XrayImage, declared: &[Item]) -> Result<Screening, ScreenError> {
        check(image)?;
        let runs = self.runs(image);
        let components = components(&runs);
        Ok(self.compare(image, components, declared))
    }

    /// Candidate pixels as runs, row by row.
    fn runs(&self, image: &XrayImage) -> Vec<Run> {
        let cal = &self.calibration;
        let width = image.width as usize;
        let mut runs = Vec::new();
        if width == 0 {
            return runs;
        }
        let candidate = |low: u16, high: Option<u16>| {
            let p = self.classifier.classify(low, high);
            let c = match p.material {
                Material::Impenetrable => Candidate::Dense,
                Material::Metal => Candidate::Metal,
                Material::Organic if p.atten_low >= cal.liquid_atten => Candidate::Liquid,
                _ => return None,
            };
            let valid = low > cal.dark_max;
            let sums = Sums {
                low: if valid { p.atten_low } else { 0.0 },
                high: if valid { p.atten_high } else { 0.0 },
                ratio_px: u32::from(valid),
                steel_px: u32::from(!valid || p.atten_low > cal.battery_ratio[1] * p.atten_high),
                high_total: p.atten_high,
            };
            Some((c, sums))
        };
        // One loop per kind of image, so that the dual-energy one never tests for a channel.
        match &image.high {
            Some(high) => {
                for (y, (l, h)) in image.low.chunks_exact(width).zip(high.chunks_exact(width)).enumerate() {
                    scan_row(y as u32, l.iter().zip(h).map(|(&l, &h)| (l, Some(h))), &candidate, &mut runs);
                }
            }
            None => {
                for (y, l) in image.low.chunks_exact(width).enumerate() {
                    scan_row(y as u32, l.iter().map(|&l| (l, None)), &candidate, &mut runs);
                }
            }
        }
        runs
    }

    fn min_area_px(&self, kind: FlagKind) -> u32 {
        let m = &self.calibration.min_region;
        self.calibration.pixels_in(match kind {
            FlagKind::DenseObject => m.dense_object_cm2,
            FlagKind::UndeclaredMetal => m.metal_cm2,
            FlagKind::PossibleLiquid => m.liquid_cm2,
            FlagKind::PossibleBattery => m.battery_cm2,
        })
    }

    /// The finding a region stands for, and its mass in grams of steel equivalent (metal and
    /// cells only; 0 otherwise).
    fn assess(&self, c: &Component, image: &XrayImage) -> (FlagKind, f32) {
        match c.candidate {
            Candidate::Dense => (FlagKind::DenseObject, 0.0),
            Candidate::Liquid => (FlagKind::PossibleLiquid, 0.0),
            Candidate::Metal => {
                let (bg_low, bg_high) = self.surroundings(c, image);
                let g = self.calibration.steel_g_of((c.sums.high_total - c.area_px as f32 * bg_high).max(0.0));
                let [lo, hi] = self.calibration.battery_ratio;
                let steel_share = c.sums.steel_px as f32 / c.area_px as f32;
                let cells =
                    steel_share < MAX_STEEL_SHARE_OF_CELLS && (lo..=hi).contains(&stripped_ratio(c, bg_low, bg_high));
                (if cells { FlagKind::PossibleBattery } else { FlagKind::UndeclaredMetal }, g)
            }
        }
    }

    /// What lies around a region (low and high log attenuation): the medians of the pixels on
    /// a frame `STRIP_MARGIN_PX` outside its box; nothing for a single-energy image.
    fn surroundings(&self, c: &Component, image: &XrayImage) -> (f32, f32) {
        let Some(high) = image.high.as_ref() else { return (0.0, 0.0) };
        let (w, h) = (image.width, image.height);
        let (x0, y0) = (c.x0.saturating_sub(STRIP_MARGIN_PX), c.y0.saturating_sub(STRIP_MARGIN_PX));
        let (x1, y1) = ((c.x1 + STRIP_MARGIN_PX).min(w) - 1, (c.y1 + STRIP_MARGIN_PX).min(h) - 1);
        let cap = 2 * (x1 - x0 + y1 - y0 + 2) as usize;
        let (mut lows, mut highs) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
        let mut at = |x: u32, y: u32| {
            let i = (y * w + x) as usize;
            lows.push(self.classifier.atten(image.low[i]));
            highs.push(self.classifier.atten(high[i]));
        };
        for x in x0..=x1 {
            at(x, y0);
            at(x, y1);
        }
        for y in y0 + 1..y1 {
            at(x0, y);
            at(x1, y);
        }
        (median(&mut lows), median(&mut highs))
    }

    /// Regions the declaration does not explain, as flags.
    fn compare(&self, image: &XrayImage, components: Vec<Component>, declared: &[Item]) -> Screening {
        // Metal and cells share the smaller of their minimum areas until the kind is known.
        let metal_min = self.min_area_px(FlagKind::UndeclaredMetal).min(self.min_area_px(FlagKind::PossibleBattery));
        let mut found: Vec<((FlagKind, f32), Component)> = components
            .into_iter()
            .filter(|c| c.candidate != Candidate::Metal || c.area_px >= metal_min)
            .map(|c| (self.assess(&c, image), c))
            .filter(|((kind, _), c)| c.area_px >= self.min_area_px(*kind))
            .collect();
        found.sort_by(|a, b| b.1.area_px.cmp(&a.1.area_px).then(a.1.y0.cmp(&b.1.y0)).then(a.1.x0.cmp(&b.1.x0)));
        found.truncate(MAX_REGIONS);

        let mut allowed = self.allowances(declared);
        let mut flagged: [Vec<Region>; 4] = Default::default();
        // Largest first, each taking the smallest part that fits: every part at least as large
        // as this region fits all later ones too, so no region takes a part a later one needed.
        for ((kind, g), c) in found {
            if !explain(&mut allowed[kind.index()], self.calibration.cm2_of(c.area_px), g) {
                flagged[kind.index()].push(c.region());
            }
        }
        let flags = FlagKind::ALL
            .into_iter()
            .zip(flagged)
            .filter(|(_, regions)| !regions.is_empty())
            .map(|(kind, mut regions)| {
                regions.truncate(MAX_REGIONS_PER_FLAG);
                let min = self.min_area_px(kind) as f32;
                let largest = regions[0].area_px as f32;
                Flag { kind, score: largest / (largest + min), regions }
            })
            .collect();
        Screening { flags }
    }

    /// The parts each kind of finding may be explained by, ascending.
    fn allowances(&self, declared: &[Item]) -> [Vec<Part>; 4] {
        let mut allowed: [Vec<Part>; 4] = Default::default();
        for (line, item) in declared.iter().take(MAX_DECLARED_ITEMS).enumerate() {
            let Some(p) = self.profiles.find(&item.hs_code) else { continue };
            for _ in 0..item.quantity.min(MAX_PIECES_PER_ITEM) {
                let none: &[f32] = &[];
                for (kind, areas, masses) in [
                    (FlagKind::DenseObject, &p.dense_object_cm2, none),
                    (FlagKind::UndeclaredMetal, &p.metal_cm2, &p.metal_g[..]),
                    (FlagKind::PossibleLiquid, &p.liquid_cm2, none),
                    (FlagKind::PossibleBattery, &p.battery_cm2, &p.battery_g[..]),
                ] {
                    let mass = |i: usize| masses.get(i).copied().unwrap_or(f32::INFINITY);
                    allowed[kind.index()].extend(areas.iter().enumerate().map(|(i, &cm2)| Part {
                        cm2,
                        g: mass(i),
                        line,
                    }));
                }
            }
        }
        for parts in &mut allowed {
            parts.truncate(MAX_PARTS_PER_KIND);
            parts.sort_by(|a, b| a.cm2.total_cmp(&b.cm2));
        }
        allowed
    }
}

/// Appends the runs of candidate pixels of row `y`.
fn scan_row(
    y: u32,
    pixels: impl Iterator<Item = (u16, Option<u16>)>,
    candidate: &impl Fn(u16, Option<u16>) -> Option<(Candidate, Sums)>,
    runs: &mut Vec<Run>,
) {
    let mut open: Option<Run> = None;
    let mut end = 0;
    for (x, (low, high)) in pixels.enumerate() {
        let pixel = candidate(low, high);
        match (open.as_mut(), pixel) {
            (Some(run), Some((c, sums))) if run.candidate == c => run.sums.add(&sums),
            _ => {
                runs.extend(open.take().map(|r| Run { x1: x as u32, ..r }));
                open = pixel.map(|(candidate, sums)| Run { y, x0: x as u32, x1: 0, candidate, sums });
            }
        }
        end = x + 1;
    }
    runs.extend(open.map(|r| Run { x1: end as u32, ..r }));
}

/// The image is whole and within bounds.
pub(crate) fn check(image: &XrayImage) -> Result<(), ScreenError> {
    let (seq, width, height) = (image.seq, image.width, image.height);
    let expected = image.pixels();
    if expected > MAX_PIXELS {
        return Err(ScreenError::TooLarge { seq, width, height });
    }
    let channels = [("low", Some(image.low.len())), ("high", image.high.as_ref().map(Vec::len))];
    for (channel, len) in channels {
        if let Some(got) = len.filter(|&got| got != expected) {
            return Err(ScreenError::Geometry { seq, width, height, channel, expected, got });
        }
    }
    Ok(())
}

/// A region's ratio with its surroundings taken away: steel over a book reads as steel, not as
/// something between steel and paper. Only pixels whose low channel got through count.
fn stripped_ratio(c: &Component, bg_low: f32, bg_high: f32) -> f32 {
    let s = &c.sums;
    if s.ratio_px == 0 {
        // The low energy got through nowhere: heavier than any cell.
        return f32::INFINITY;
    }
    let n = s.ratio_px as f32;
    let (low, high) = (s.low - n * bg_low, s.high - n * bg_high);
    if high > 0.0 {
        low / high
    } else {
        s.low / s.high.max(f32::MIN_POSITIVE)
    }
}

/// The median of `v` (the upper one of an even count), 0 for none.
fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// A part one declared piece may explain: its area, its mass (infinite: no limit), and the
/// declared line it comes from.
#[derive(Clone, Copy, Debug)]
struct Part {
    cm2: f32,
    g: f32,
    line: usize,
}

/// Explains a region of `cm2` and `g` by the smallest part that holds it, or else, as pieces of
/// one declared line lying on each other show as one region, by that line's largest parts
/// together (the line whose parts together hold it most tightly). Parts are ascending by area;
/// used ones go.
fn explain(parts: &mut Vec<Part>, cm2: f32, g: f32) -> bool {
    let from = parts.partition_point(|p| p.cm2 < cm2);
    if let Some(i) = (from..parts.len()).find(|&i| parts[i].g >= g) {
        parts.remove(i);
        return true;
    }
    let mut sums = [(0f32, 0f32); MAX_DECLARED_ITEMS];
    for p in parts.iter() {
        sums[p.line].0 += p.cm2;
        sums[p.line].1 += p.g;
    }
    let best = sums.iter().enumerate().filter(|(_, s)| s.0 >= cm2 && s.1 >= g).min_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
    let Some((line, _)) = best else { return false };
    let (mut held_cm2, mut held_g) = (0.0, 0.0);
    while held_cm2 < cm2 || held_g < g {
        let Some(j) = parts.iter().rposition(|p| p.line == line) else { break };
        let p = parts.remove(j);
        held_cm2 += p.cm2;
        held_g += p.g;
    }
    true
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let up = parent[parent[i as usize] as usize];
        parent[i as usize] = up;
        i = up;
    }
    i
}

/// Joins runs of the same candidate that touch (8-connected) into components.
fn components(runs: &[Run]) -> Vec<Component> {
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    let mut row_start = 0;
    let mut prev = 0..0;
    while row_start < runs.len() {
        let y = runs[row_start].y;
        let row_end = row_start + runs[row_start..].iter().take_while(|r| r.y == y).count();
        let above = if prev.start < prev.end && runs[prev.start].y + 1 == y { prev.clone() } else { 0..0 };
        let mut j = above.start;
        for i in row_start..row_end {
            let cur = runs[i];
            while j < above.end && runs[j].x1 < cur.x0 {
                j += 1;
            }
            // Runs above that end at or after cur.x0 and start at or before cur.x1 touch it,
            // diagonals included (ends are exclusive).
            for (k, up) in runs.iter().enumerate().take(above.end).skip(j) {
                if up.x0 > cur.x1 {
                    break;
                }
                if up.candidate == cur.candidate {
                    let (a, b) = (find(&mut parent, i as u32), find(&mut parent, k as u32));
                    parent[a.max(b) as usize] = a.min(b);
                }
            }
        }
        prev = row_start..row_end;
        row_start = row_end;
    }
    let mut index = vec![u32::MAX; runs.len()];
    let mut out: Vec<Component> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let root = find(&mut parent, i as u32) as usize;
        let len = r.x1 - r.x0;
        if index[root] == u32::MAX {
            index[root] = out.len() as u32;
            out.push(Component {
                candidate: r.candidate,
                area_px: 0,
                x0: r.x0,
                y0: r.y,
                x1: r.x1,
                y1: r.y + 1,
                sums: Sums::default(),
            });
        }
        let c = &mut out[index[root] as usize];
        c.area_px += len;
        c.x0 = c.x0.min(r.x0);
        c.x1 = c.x1.max(r.x1);
        c.y0 = c.y0.min(r.y);
        c.y1 = c.y1.max(r.y + 1);
        c.sums.add(&r.sums);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn screen_at(pixel_mm: f32) -> Screen {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/xray");
        let mut cal = Calibration::load(&dir.join("calibration.toml")).unwrap();
        cal.pixel_mm = pixel_mm;
        Screen::new(cal, Profiles::load(&dir.join("profiles.toml")).unwrap())
    }

    fn counts(atten: f32) -> u16 {
        (65535.0 * (-atten).exp()).round() as u16
    }

    /// A 100 × 80 open-beam image; `paint` lays rectangles of given log attenuations on it.
    struct Canvas {
        low: Vec<u16>,
        high: Vec<u16>,
    }

    const W: u32 = 100;
    const H: u32 = 80;

    impl Canvas {
        fn new() -> Canvas {
            Canvas { low: vec![u16::MAX; (W * H) as usize], high: vec![u16::MAX; (W * H) as usize] }
        }

        fn paint(mut self, (x0, y0, x1, y1): (u32, u32, u32, u32), atten_low: f32, atten_high: f32) -> Canvas {
            for y in y0..y1 {
                for x in x0..x1 {
                    self.low[(y * W + x) as usize] = counts(atten_low);
                    self.high[(y * W + x) as usize] = counts(atten_high);
                }
            }
            self
        }

        fn dual(&self) -> XrayImage {
            let (low, high) = (self.low.clone(), Some(self.high.clone()));
            XrayImage { seq: 1, width: W, height: H, bit_depth: 16, low, high }
        }

        fn single(&self) -> XrayImage {
            XrayImage { seq: 1, width: W, height: H, bit_depth: 16, low: self.high.clone(), high: None }
        }
    }

    fn item(hs: &str, quantity: u32) -> Item {
        Item { name: "x".into(), hs_code: hs.into(), quantity, value_minor: 100, currency: "CNY".into() }
    }

    fn kinds(s: &Screening) -> Vec<FlagKind> {
        s.flags.iter().map(|f| f.kind).collect()
    }

    // At 2 mm a pixel is 0.04 cm²: 25 pixels a cm².
    const STEEL: (f32, f32) = (4.74, 0.81);
    const CELLS: (f32, f32) = (3.6, 0.87);
    const WATER: (f32, f32) = (1.3, 0.97);
    const BOOK: (f32, f32) = (0.6, 0.43);

    #[test]
    fn an_open_beam_and_a_book_are_clean() {
        let s = screen_at(2.0);
        assert!(s.screen(&Canvas::new().dual(), &[]).unwrap().is_clean());
        let book = Canvas::new().paint((10, 10, 60, 45), BOOK.0, BOOK.1);
        assert!(s.screen(&book.dual(), &[]).unwrap().is_clean());
        assert!(s.screen(&book.single(), &[]).unwrap().is_clean());
    }

    #[test]
    fn a_dense_block_flags_with_its_region_in_either_mode() {
        let s = screen_at(2.0);
        let img = Canvas::new().paint((20, 30, 40, 45), 40.0, 20.0);
        for image in [img.dual(), img.single()] {
            let r = s.screen(&image, &[item("620442", 3)]).unwrap();
            assert_eq!(kinds(&r), [FlagKind::DenseObject]);
            assert_eq!(r.flags[0].regions, [Region { x: 20, y: 30, width: 20, height: 15, area_px: 300 }]);
            assert!(r.flags[0].score > 0.5 && r.flags[0].score < 1.0);
            assert_eq!(r.reasons(), [Arc::<str>::from("dense object")]);
        }
    }

    #[test]
    fn metal_is_flagged_unless_a_declared_piece_explains_it() {
        let s = screen_at(2.0);
        // 16 cm² of steel over a book.
        let img = Canvas::new().paint((5, 5, 70, 60), BOOK.0, BOOK.1).paint((10, 10, 30, 30), STEEL.0, STEEL.1).dual();
        assert_eq!(kinds(&s.screen(&img, &[]).unwrap()), [FlagKind::UndeclaredMetal]);
        assert_eq!(kinds(&s.screen(&img, &[item("4901990000", 1)]).unwrap()), [FlagKind::UndeclaredMetal]);
        assert!(s.screen(&img, &[item("910211", 1)]).unwrap().is_clean(), "a watch's case");
        // A watch explains one piece of metal (its case on its bracelet); three need three.
        let three = Canvas::new()
            .paint((5, 10, 25, 30), STEEL.0, STEEL.1)
            .paint((40, 10, 60, 30), STEEL.0, STEEL.1)
            .paint((75, 10, 95, 30), STEEL.0, STEEL.1);
        let r = s.screen(&three.dual(), &[item("910211", 2)]).unwrap();
        assert_eq!((kinds(&r), r.flags[0].regions.len()), (vec![FlagKind::UndeclaredMetal], 1));
        assert!(s.screen(&three.dual(), &[item("910211", 3)]).unwrap().is_clean());
        // 16 cm² of 12 mm steel is 150 g: more than any watch, though it has a watch's area.
        let heavy = Canvas::new().paint((10, 10, 30, 30), 11.4, 1.94).dual();
        assert_eq!(kinds(&s.screen(&heavy, &[item("910211", 1)]).unwrap()), [FlagKind::UndeclaredMetal]);
        // A single-energy image cannot tell steel from water.
        assert!(s.screen(&three.single(), &[]).unwrap().is_clean());
    }

    #[test]
    fn cells_and_liquids_need_their_goods_declared() {
        let s = screen_at(2.0);
        let cells = Canvas::new().paint((10, 10, 40, 30), CELLS.0, CELLS.1).dual();
        assert_eq!(kinds(&s.screen(&cells, &[item("620442", 1)]).unwrap()), [FlagKind::PossibleBattery]);
        assert!(s.screen(&cells, &[item("850760", 1)]).unwrap().is_clean());
        let bottle = Canvas::new().paint((10, 10, 60, 30), WATER.0, WATER.1).dual();
        assert_eq!(kinds(&s.screen(&bottle, &[]).unwrap()), [FlagKind::PossibleLiquid]);
        assert!(s.screen(&bottle, &[item("330300", 1)]).unwrap().is_clean());
        assert_eq!(kinds(&s.screen(&bottle, &[item("330300", 0)]).unwrap()), [FlagKind::PossibleLiquid]);
    }

    #[test]
    fn regions_under_the_minimum_area_are_ignored_and_diagonals_join() {
        let s = screen_at(2.0);
        // 2 cm² of steel: a rivet, not a tool.
        let small = Canvas::new().paint((10, 10, 17, 17), STEEL.0, STEEL.1).dual();
        assert!(s.screen(&small, &[]).unwrap().is_clean());
        // Two 1.96 cm² squares touching at a corner are one 3.9 cm² region.
        let touching =
            Canvas::new().paint((10, 10, 17, 17), STEEL.0, STEEL.1).paint((17, 17, 24, 24), STEEL.0, STEEL.1).dual();
        let r = s.screen(&touching, &[]).unwrap();
        assert_eq!(r.flags[0].regions, [Region { x: 10, y: 10, width: 14, height: 14, area_px: 98 }]);
    }

    #[test]
    fn a_malformed_image_is_an_error_not_a_crash() {
        let s = screen_at(2.0);
        let mut img = Canvas::new().dual();
        img.low.pop();
        assert!(matches!(s.screen(&img, &[]), Err(ScreenError::Geometry { channel: "low", .. })));
        let mut img = Canvas::new().dual();
        img.high = Some(vec![0; 3]);
        assert!(matches!(s.screen(&img, &[]), Err(ScreenError::Geometry { channel: "high", got: 3, .. })));
        let huge = XrayImage { seq: 9, width: 1 << 16, height: 1 << 16, bit_depth: 16, low: vec![], high: None };
        assert_eq!(s.screen(&huge, &[]), Err(ScreenError::TooLarge { seq: 9, width: 1 << 16, height: 1 << 16 }));
        let empty = XrayImage { seq: 1, width: 0, height: 0, bit_depth: 16, low: vec![], high: None };
        assert!(s.screen(&empty, &[]).unwrap().is_clean());
    }

    const CODES: [&str; 8] = ["620442", "850760", "851830", "330300", "910211", "961700", "4901990000", "854442"];

    fn rect() -> impl Strategy<Value = ((u32, u32, u32, u32), (f32, f32))> {
        let materials = prop::sample::select(vec![STEEL, CELLS, WATER, BOOK, (40.0, 20.0), (0.3, 0.15)]);
        (0..W, 0..H, 1..40u32, 1..40u32, materials)
            .prop_map(|(x, y, w, h, m)| ((x, y, (x + w).min(W), (y + h).min(H)), m))
    }

    proptest! {
        /// Declaring one more piece never raises a flag the parcel did not have; any image
        /// screens without a panic.
        #[test]
        fn declaring_more_never_adds_findings(
            rects in prop::collection::vec(rect(), 0..8),
            declared in prop::collection::vec((prop::sample::select(CODES.to_vec()), 1..3u32), 0..4),
            extra in prop::sample::select(CODES.to_vec()),
        ) {
            let s = screen_at(2.0);
            let canvas = rects.into_iter().fold(Canvas::new(), |c, (r, m)| c.paint(r, m.0, m.1));
            let before: Vec<Item> = declared.iter().map(|(hs, q)| item(hs, *q)).collect();
            let mut after = before.clone();
            after.push(item(extra, 1));
            for image in [canvas.dual(), canvas.single()] {
                let regions = |d: &[Item]| -> Vec<Region> {
                    s.screen(&image, d).unwrap().flags.into_iter().flat_map(|f| f.regions).collect()
                };
                let (none, b, a) = (regions(&[]), regions(&before), regions(&after));
                prop_assert!(b.iter().all(|r| none.contains(r)));
                prop_assert!(a.iter().all(|r| b.contains(r)), "{a:?} vs {b:?}");
            }
        }
    }
}
