//! Review images for the officer's screen (`docs/xray.md`, Review images): the usual
//! pseudo-colour of dual-energy scanners (orange organic, green mixed, blue metal, black
//! impenetrable), grey for a single-energy image, thicker matter darker, and the pre-screen's
//! flagged regions outlined in red.

use super::material::Material;
use super::screen::{check, Screen, ScreenError, Screening};
use super::XrayImage;
use image::{ImageEncoder, Rgb, RgbImage};

pub const ORGANIC: [f32; 3] = [255.0, 145.0, 30.0];
pub const MIXED: [f32; 3] = [40.0, 175.0, 60.0];
pub const METAL: [f32; 3] = [30.0, 80.0, 230.0];
pub const OUTLINE: Rgb<u8> = Rgb([230, 0, 0]);
/// High-energy log attenuation at which a colour reaches full strength; fainter matter fades
/// into the white background as on a scanner's screen.
const FULL_COLOUR_ATTEN: f32 = 0.3;

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error(transparent)]
    Image(#[from] ScreenError),
    #[error("PNG encoding: {0}")]
    Encode(#[from] image::ImageError),
}

/// The review image of `image` with the regions of `screening` outlined.
pub fn review_image(screen: &Screen, image: &XrayImage, screening: &Screening) -> Result<RgbImage, ScreenError> {
    check(image)?;
    let classifier = screen.classifier();
    let mut out = RgbImage::new(image.width, image.height);
    for (i, px) in out.pixels_mut().enumerate() {
        let low = image.low[i];
        let high = image.high.as_ref().map(|h| h[i]);
        let p = classifier.classify(low, high);
        *px = match (p.material, high) {
            (Material::Impenetrable, _) => Rgb([0, 0, 0]),
            (_, None) => Rgb([grey(low); 3]),
            (material, Some(high)) => {
                let hue = match material {
                    Material::Mixed => MIXED,
                    Material::Metal => METAL,
                    _ => ORGANIC,
                };
                let strength = (classifier.atten(high) / FULL_COLOUR_ATTEN).min(1.0);
                let shade = 0.2 + 0.8 * (f32::from(high) / 65535.0).sqrt();
                Rgb(hue.map(|c| (255.0 * (1.0 - strength) + c * shade * strength) as u8))
            }
        };
    }
    let thickness = if image.width.max(image.height) > 400 { 2 } else { 1 };
    for region in screening.flags.iter().flat_map(|f| &f.regions) {
        outline(&mut out, region.x, region.y, region.width, region.height, thickness);
    }
    Ok(out)
}

/// Square root: the eye sees more of the dark end.
fn grey(low: u16) -> u8 {
    (255.0 * (f32::from(low) / 65535.0).sqrt()) as u8
}

/// The review image as PNG bytes.
pub fn review_png(screen: &Screen, image: &XrayImage, screening: &Screening) -> Result<Vec<u8>, DisplayError> {
    let rgb = review_image(screen, image, screening)?;
    png(rgb.as_raw(), rgb.width(), rgb.height(), image::ExtendedColorType::Rgb8)
}

/// The low-energy (or only) channel in grey, as PNG bytes: the console's grey mode, where the
/// officer sets contrast and window level on what the detector saw, whatever the material.
pub fn grey_png(image: &XrayImage) -> Result<Vec<u8>, DisplayError> {
    check(image)?;
    let luma: Vec<u8> = image.low.iter().map(|&v| grey(v)).collect();
    png(&luma, image.width, image.height, image::ExtendedColorType::L8)
}

fn png(raw: &[u8], width: u32, height: u32, colour: image::ExtendedColorType) -> Result<Vec<u8>, DisplayError> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(raw, width, height, colour)?;
    Ok(png)
}

/// A rectangle's border, `thickness` pixels wide, clipped to the image.
fn outline(img: &mut RgbImage, x: u32, y: u32, width: u32, height: u32, thickness: u32) {
    let (w, h) = img.dimensions();
    let (x1, y1) = (x.saturating_add(width).min(w), y.saturating_add(height).min(h));
    for py in y.min(h)..y1 {
        for px in x.min(w)..x1 {
            let edge = px < x + thickness || py < y + thickness || px + thickness >= x1 || py + thickness >= y1;
            if edge {
                img.put_pixel(px, py, OUTLINE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xray::profile::{Calibration, Profiles};
    use crate::xray::screen::{Flag, FlagKind, Region};
    use std::path::Path;

    fn screen() -> Screen {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/xray");
        Screen::new(
            Calibration::load(&dir.join("calibration.toml")).unwrap(),
            Profiles::load(&dir.join("profiles.toml")).unwrap(),
        )
    }

    fn counts(atten: f32) -> u16 {
        (65535.0 * (-atten).exp()).round() as u16
    }

    /// Four columns: open beam, 5 cm of water, 3 mm of aluminium, 5 mm of steel; and a lead
    /// block in the last row.
    fn strips(dual: bool) -> XrayImage {
        let (w, h) = (40u32, 20u32);
        let columns = [(0.0, 0.0), (1.03, 0.77), (0.225, 0.115), (4.74, 0.81)];
        let mut low = Vec::new();
        let mut high = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let (l, hi) = if y == h - 1 { (60.0, 30.0) } else { columns[(x / 10) as usize] };
                low.push(counts(if dual { l } else { hi }));
                high.push(counts(hi));
            }
        }
        XrayImage { seq: 3, width: w, height: h, bit_depth: 16, low, high: dual.then_some(high) }
    }

    fn dominant(p: &Rgb<u8>) -> usize {
        (0..3).max_by_key(|&c| p.0[c]).unwrap_or(0)
    }

    #[test]
    fn materials_take_their_colours() {
        let img = review_image(&screen(), &strips(true), &Screening::default()).unwrap();
        assert_eq!(img.get_pixel(5, 5), &Rgb([255, 255, 255]), "open beam is white");
        assert_eq!(dominant(img.get_pixel(15, 5)), 0, "organic is orange: {:?}", img.get_pixel(15, 5));
        assert_eq!(dominant(img.get_pixel(25, 5)), 1, "mixed is green: {:?}", img.get_pixel(25, 5));
        assert_eq!(dominant(img.get_pixel(35, 5)), 2, "metal is blue: {:?}", img.get_pixel(35, 5));
        assert_eq!(img.get_pixel(5, 19), &Rgb([0, 0, 0]), "impenetrable is black");
    }

    #[test]
    fn single_energy_is_grey_and_flags_are_outlined() {
        let region = Region { x: 12, y: 4, width: 10, height: 6, area_px: 60 };
        let flags = Screening { flags: vec![Flag { kind: FlagKind::DenseObject, score: 0.9, regions: vec![region] }] };
        let img = review_image(&screen(), &strips(false), &flags).unwrap();
        let p = img.get_pixel(15, 15);
        assert!(p.0[0] == p.0[1] && p.0[1] == p.0[2] && p.0[0] < 255, "{p:?}");
        for (x, y) in [(12, 4), (21, 4), (12, 9), (21, 9), (16, 4)] {
            assert_eq!(img.get_pixel(x, y), &OUTLINE, "({x}, {y})");
        }
        assert_ne!(img.get_pixel(16, 6), &OUTLINE, "inside stays");
        // A region reaching beyond the image is clipped, not a panic.
        let wide = Region { x: 30, y: 15, width: 1000, height: 1000, area_px: 1 };
        let flags =
            Screening { flags: vec![Flag { kind: FlagKind::UndeclaredMetal, score: 0.6, regions: vec![wide] }] };
        assert_eq!(review_image(&screen(), &strips(false), &flags).unwrap().get_pixel(39, 19), &OUTLINE);
    }

    #[test]
    fn the_png_decodes_to_the_same_pixels() {
        let s = screen();
        let image = strips(true);
        let screening = s.screen(&image, &[]).unwrap();
        let png = review_png(&s, &image, &screening).unwrap();
        let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap().to_rgb8();
        assert_eq!(decoded, review_image(&s, &image, &screening).unwrap());
        let mut bad = image.clone();
        bad.high = Some(vec![]);
        assert!(matches!(review_png(&s, &bad, &screening), Err(DisplayError::Image(ScreenError::Geometry { .. }))));
    }
}
