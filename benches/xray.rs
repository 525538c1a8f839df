//! X-ray pre-screen benchmark: milliseconds per megapixel through `Screen::screen`, single and
//! dual energy, on synthesised 640 × 480 parcels at 1 mm (the station's default), one core.
//! Prints figures; asserts nothing about time. Run: `cargo bench --bench xray` (docs/xray.md).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sortline::clock::Stopwatch;
use sortline::core::manifest::Item;
use sortline::xray::profile::{Calibration, Profiles};
use sortline::xray::screen::Screen;
use sortline::xray::XrayImage;
use sortline_sim::xray::synth::{catalogue_items, Concealed, Synth, SynthConfig};
use std::hint::black_box;
use std::path::Path;

/// Distinct parcels, and passes over them.
const IMAGES: u32 = 40;
const PASSES: u32 = 10;
/// The goal: under 5 ms a megapixel.
const GOAL_MS_PER_MPX: f64 = 5.0;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/xray");
    let calibration = Calibration::load(&dir.join("calibration.toml")).unwrap();
    let screen = Screen::new(calibration, Profiles::load(&dir.join("profiles.toml")).unwrap());
    println!("{:<8} {:>9} {:>12} {:>12} {:>8}", "energy", "pixels", "ms/image", "ms/Mpx", "x goal");
    for dual_energy in [false, true] {
        let synth = Synth::new(SynthConfig { dual_energy, ..SynthConfig::default() }).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let parcels: Vec<(XrayImage, Vec<Item>)> = (0..IMAGES)
            .map(|n| {
                let items = catalogue_items(&mut rng);
                let concealed = (n % 2 == 0).then_some(Concealed::ALL[(n / 2 % 4) as usize]);
                let s = synth.image(n, &items, concealed, &mut rng).image;
                let image =
                    XrayImage { seq: n, width: s.width, height: s.height, bit_depth: 16, low: s.low, high: s.high };
                let declared = items
                    .into_iter()
                    .map(|i| Item {
                        name: i.name,
                        hs_code: i.hs_code,
                        quantity: i.quantity,
                        value_minor: i.value_minor,
                        currency: i.currency,
                    })
                    .collect();
                (image, declared)
            })
            .collect();
        let mut flags = 0usize;
        let sw = Stopwatch::start();
        for _ in 0..PASSES {
            for (image, declared) in &parcels {
                flags += screen.screen(black_box(image), black_box(declared)).unwrap().flags.len();
            }
        }
        let secs = sw.elapsed_secs_f64();
        let screened = f64::from(IMAGES * PASSES);
        let pixels = parcels[0].0.pixels();
        let ms_per_image = secs * 1e3 / screened;
        let ms_per_mpx = ms_per_image / (pixels as f64 / 1e6);
        let energy = if dual_energy { "dual" } else { "single" };
        println!(
            "{energy:<8} {pixels:>9} {ms_per_image:>12.3} {ms_per_mpx:>12.3} {:>8.1}",
            GOAL_MS_PER_MPX / ms_per_mpx
        );
        // A row of docs/performance.md's table (benches/table collects them).
        println!(
            "| X-ray pre-screen, {energy} energy | {ms_per_mpx:.2} ms per megapixel | `cargo bench --bench xray` |"
        );
        black_box(flags);
    }
}
