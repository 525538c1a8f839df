//! Keyed-hash sampling: reproducible for an audit that knows the site
//! secret, unpredictable for a shipper who does not.

use super::waybill::Waybill;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// What a sample is drawn for; each purpose hashes under its own tag so the
/// random-inspection and X-ray selections are independent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    RandomInspection,
    XrayReview,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::RandomInspection => b"sortline/sample/inspection/v1\0",
            Purpose::XrayReview => b"sortline/sample/xray/v1\0",
        }
    }
}

/// A 128-bit site secret. Never printed.
#[derive(Clone)]
pub struct SiteSecret([u8; 16]);

impl std::fmt::Debug for SiteSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteSecret(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("site secret must be 32 hexadecimal characters (128 bits)")]
pub struct BadSecret;

impl SiteSecret {
    pub fn from_bytes(bytes: [u8; 16]) -> SiteSecret {
        SiteSecret(bytes)
    }

    /// A demo's secret, derived from its seed so that the run is reproducible (and replayable
    /// from the record, whose opening entry names the seed). A real line reads its secret from
    /// configuration.
    pub fn from_demo_seed(seed: u64) -> SiteSecret {
        use std::hash::Hasher;
        let half = |tag: u64| {
            let mut h = SipHasher13::new_with_keys(0x736f_7274_6c69_6e65, tag);
            h.write_u64(seed);
            h.finish().to_le_bytes()
        };
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&half(1));
        key[8..].copy_from_slice(&half(2));
        SiteSecret(key)
    }

    pub fn from_hex(text: &str) -> Result<SiteSecret, BadSecret> {
        let t = text.trim();
        if t.len() != 32 {
            return Err(BadSecret);
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(t.get(2 * i..2 * i + 2).ok_or(BadSecret)?, 16).map_err(|_| BadSecret)?;
        }
        Ok(SiteSecret(out))
    }

    /// The fraction in [0, 1) this waybill draws for `purpose`.
    pub fn fraction(&self, purpose: Purpose, waybill: &Waybill) -> f64 {
        let mut h = SipHasher13::new_with_key(&self.0);
        h.write(purpose.tag());
        h.write(waybill.as_str().as_bytes());
        // 53 bits fill an f64 mantissa exactly, so the result is uniform and < 1.
        (h.finish() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Drawn when the fraction falls below the rate: rate 0 never, rate 1 always.
    pub fn selects(&self, purpose: Purpose, waybill: &Waybill, rate: f64) -> bool {
        self.fraction(purpose, waybill) < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wb(n: u32) -> Waybill {
        let serial = format!("{n:08}");
        let cd = super::super::waybill::s10_check_digit(serial.as_bytes().try_into().unwrap());
        Waybill::parse(&format!("EA{serial}{cd}CN")).unwrap()
    }

    #[test]
    fn hex_secret() {
        assert!(SiteSecret::from_hex("00112233445566778899aabbccddeeff").is_ok());
        assert_eq!(SiteSecret::from_hex("0011").unwrap_err(), BadSecret);
        assert_eq!(SiteSecret::from_hex("zz112233445566778899aabbccddeeff").unwrap_err(), BadSecret);
        assert!(!format!("{:?}", SiteSecret::from_bytes([7; 16])).contains('7'));
    }

    #[test]
    fn same_input_same_draw_other_key_other_draw() {
        let a = SiteSecret::from_bytes([1; 16]);
        let b = SiteSecret::from_bytes([2; 16]);
        let w = wb(42);
        assert_eq!(a.fraction(Purpose::RandomInspection, &w), a.fraction(Purpose::RandomInspection, &w));
        assert_ne!(a.fraction(Purpose::RandomInspection, &w), b.fraction(Purpose::RandomInspection, &w));
        assert_ne!(a.fraction(Purpose::RandomInspection, &w), a.fraction(Purpose::XrayReview, &w));
    }

    #[test]
    fn extremes() {
        let s = SiteSecret::from_bytes([9; 16]);
        for n in 0..1000 {
            assert!(!s.selects(Purpose::RandomInspection, &wb(n), 0.0));
            assert!(s.selects(Purpose::RandomInspection, &wb(n), 1.0));
        }
    }
}
