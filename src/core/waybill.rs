//! Waybill numbers and the identification of a parcel from the codes its
//! scan produced. Pure functions over strings.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest code we accept as a waybill. S10 is 13, an SSCC with its AI 20.
pub const MAX_WAYBILL_LEN: usize = 30;

/// A validated waybill number: ASCII upper-case letters and digits, stored
/// inline so that it is `Copy` and hashes without touching the heap.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Waybill {
    len: u8,
    bytes: [u8; MAX_WAYBILL_LEN],
}

/// The kind of number a waybill is, as far as its format tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaybillKind {
    /// UPU S10 item identifier, e.g. `EA123456785CN`.
    S10,
    /// GS1 Serial Shipping Container Code (18 digits).
    Sscc,
    /// A carrier's own format from configuration ([`Carriers`]): shape only, no check digit.
    Carrier,
}

/// What a single scanned code is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeClass {
    Valid(Waybill, WaybillKind),
    /// Has a waybill's shape but its check digit is wrong: a misprint or a misread.
    BadCheckDigit,
    /// Not a waybill at all (a product EAN, a carrier's routing label…).
    Other,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WaybillError {
    #[error("waybill is empty")]
    Empty,
    #[error("waybill longer than {MAX_WAYBILL_LEN} characters")]
    TooLong,
    #[error("waybill may hold only A-Z and 0-9")]
    BadCharacter,
    #[error("not a valid S10 or SSCC number (shape or check digit)")]
    Invalid,
}

impl Waybill {
    /// A waybill from a manifest or a command: must be a valid S10 or SSCC.
    pub fn parse(s: &str) -> Result<Waybill, WaybillError> {
        match classify(s) {
            CodeClass::Valid(w, _) => Ok(w),
            _ => {
                Self::raw(s)?;
                Err(WaybillError::Invalid)
            }
        }
    }

    fn raw(s: &str) -> Result<Waybill, WaybillError> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(WaybillError::Empty);
        }
        if b.len() > MAX_WAYBILL_LEN {
            return Err(WaybillError::TooLong);
        }
        if !b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
            return Err(WaybillError::BadCharacter);
        }
        let mut bytes = [0u8; MAX_WAYBILL_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Waybill { len: b.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Display for Waybill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Waybill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Waybill({})", self.as_str())
    }
}

impl Serialize for Waybill {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Reads back what was written: the characters and length of a waybill, not its format. A
/// format is checked where a code enters (a scan by [`Carriers::classify`], a declaration by
/// its intake), and carrier formats are configuration, which a record may outlive.
impl<'de> Deserialize<'de> for Waybill {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Waybill::raw(&s).map_err(serde::de::Error::custom)
    }
}

/// UPU S10 check digit over the eight serial digits (weights 8 6 4 2 3 5 9 7).
pub fn s10_check_digit(serial: &[u8; 8]) -> u8 {
    const W: [u32; 8] = [8, 6, 4, 2, 3, 5, 9, 7];
    let sum: u32 = serial.iter().zip(W).map(|(d, w)| u32::from(d - b'0') * w).sum();
    match 11 - sum % 11 {
        10 => 0,
        11 => 5,
        c => c as u8,
    }
}

/// GS1 mod-10 check digit over the data digits (weights 3,1 from the right).
pub fn gs1_check_digit(data: &[u8]) -> u8 {
    let sum: u32 =
        data.iter().rev().enumerate().map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
    ((10 - sum % 10) % 10) as u8
}

fn s10_shape(b: &[u8]) -> bool {
    b.len() == 13
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..11].iter().all(u8::is_ascii_digit)
        && b[11..].iter().all(u8::is_ascii_uppercase)
}

/// A carrier's own waybill format, from configuration: the whole code must match `pattern`
/// (a regular expression; anchored at both ends here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierFormat {
    pub name: String,
    pub pattern: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    #[error("carrier format {index}: a name is needed")]
    NoName { index: usize },
    #[error("carrier format {name:?}: pattern {pattern:?}: {detail}")]
    Pattern { name: String, pattern: String, detail: String },
}

/// The configured carrier formats, compiled once. Serialised as the formats, so a recorded
/// line snapshot carries them and reloading checks them again.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<CarrierFormat>", into = "Vec<CarrierFormat>")]
pub struct Carriers {
    formats: Vec<CarrierFormat>,
    compiled: Vec<regex::Regex>,
}

impl PartialEq for Carriers {
    fn eq(&self, other: &Self) -> bool {
        self.formats == other.formats
    }
}

impl Eq for Carriers {}

impl TryFrom<Vec<CarrierFormat>> for Carriers {
    type Error = CarrierError;

    fn try_from(formats: Vec<CarrierFormat>) -> Result<Self, CarrierError> {
        let mut compiled = Vec::with_capacity(formats.len());
        for (index, f) in formats.iter().enumerate() {
            if f.name.trim().is_empty() {
                return Err(CarrierError::NoName { index });
            }
            let re = regex::Regex::new(&format!("^(?:{})$", f.pattern)).map_err(|e| CarrierError::Pattern {
                name: f.name.clone(),
                pattern: f.pattern.clone(),
                detail: e.to_string(),
            })?;
            compiled.push(re);
        }
        Ok(Carriers { formats, compiled })
    }
}

impl From<Carriers> for Vec<CarrierFormat> {
    fn from(c: Carriers) -> Self {
        c.formats
    }
}

impl Carriers {
    pub fn formats(&self) -> &[CarrierFormat] {
        &self.formats
    }

    /// [`classify`], then the carrier formats for a code that is neither S10 nor SSCC. A
    /// check-digit failure of those two stays a failure: a carrier format never excuses it.
    pub fn classify(&self, code: &str) -> CodeClass {
        match classify(code) {
            CodeClass::Other => {
                let s = code.trim();
                match self.compiled.iter().any(|re| re.is_match(s)) {
                    true => Waybill::raw(s).map_or(CodeClass::Other, |w| CodeClass::Valid(w, WaybillKind::Carrier)),
                    false => CodeClass::Other,
                }
            }
            known => known,
        }
    }

    /// [`Waybill::parse`], also accepting these carrier formats: for declarations' waybills.
    pub fn parse(&self, s: &str) -> Result<Waybill, WaybillError> {
        match self.classify(s) {
            CodeClass::Valid(w, _) => Ok(w),
            _ => Waybill::parse(s),
        }
    }

    /// [`identify`] with these carrier formats.
    pub fn identify<S: AsRef<str>>(&self, codes: &[S]) -> Identity {
        identify_by(codes, |c| self.classify(c))
    }
}

/// Classifies one scanned code. Surrounding whitespace is a scanner artefact
/// and is ignored; a GS1-128 `(00)` or `00` application identifier before an
/// SSCC is stripped.
pub fn classify(code: &str) -> CodeClass {
    let s = code.trim();
    let b = s.as_bytes();
    if s10_shape(b) {
        let serial: &[u8; 8] = b[2..10].try_into().expect("length checked by s10_shape");
        return if s10_check_digit(serial) == b[10] - b'0' {
            Waybill::raw(s).map_or(CodeClass::Other, |w| CodeClass::Valid(w, WaybillKind::S10))
        } else {
            CodeClass::BadCheckDigit
        };
    }
    let digits = s.strip_prefix("(00)").unwrap_or(s);
    let digits = match digits.len() {
        20 if digits.starts_with("00") => &digits[2..],
        _ => digits,
    };
    let d = digits.as_bytes();
    if d.len() == 18 && d.iter().all(u8::is_ascii_digit) {
        return if gs1_check_digit(&d[..17]) == d[17] - b'0' {
            Waybill::raw(digits).map_or(CodeClass::Other, |w| CodeClass::Valid(w, WaybillKind::Sscc))
        } else {
            CodeClass::BadCheckDigit
        };
    }
    CodeClass::Other
}

/// Who the parcel is, as far as its scan tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Identity {
    Waybill {
        waybill: Waybill,
    },
    /// Nothing that looks like a waybill was read.
    NoRead,
    /// Several different waybills (two labels, or two parcels under one window).
    Ambiguous {
        count: u32,
    },
    /// A waybill-shaped code with a wrong check digit: we cannot know which parcel it is.
    BadCheckDigit,
}

/// From the codes read for one parcel: exactly one valid waybill (read any
/// number of times) identifies it. A bad check digit beside a valid waybill is
/// doubt, not noise — it may be a second label — so it makes the read
/// ambiguous; doubt ends in hold.
pub fn identify<S: AsRef<str>>(codes: &[S]) -> Identity {
    identify_by(codes, classify)
}

fn identify_by<S: AsRef<str>>(codes: &[S], classify: impl Fn(&str) -> CodeClass) -> Identity {
    let mut found: Option<Waybill> = None;
    let mut distinct = 0u32;
    let mut bad = 0u32;
    for code in codes {
        match classify(code.as_ref()) {
            CodeClass::Valid(w, _) => {
                if found != Some(w) {
                    distinct += 1;
                    found.get_or_insert(w);
                }
            }
            CodeClass::BadCheckDigit => bad += 1,
            CodeClass::Other => {}
        }
    }
    match (found, distinct, bad) {
        (Some(waybill), 1, 0) => Identity::Waybill { waybill },
        (None, _, 0) => Identity::NoRead,
        (None, _, _) => Identity::BadCheckDigit,
        _ => Identity::Ambiguous { count: distinct + bad },
    }
}

/// The invariants of identification, over arbitrary scanner bytes: shared by
/// the fuzz target (`fuzz/fuzz_targets/codes.rs`) and the proptest below.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Splits `data` into codes at `0x1E` (record separator) and checks that
    /// identification cannot be talked into a waybill that was not read
    /// cleanly and alone.
    pub fn check_codes(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let codes: Vec<&str> = text.split('\u{1e}').collect();
        let classes: Vec<CodeClass> = codes.iter().map(|c| classify(c)).collect();
        for class in &classes {
            if let CodeClass::Valid(w, _) = class {
                assert_eq!(Waybill::parse(w.as_str()), Ok(*w), "a valid code parses back to itself");
                assert!(w.as_str().bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            }
        }
        if let Identity::Waybill { waybill } = identify(&codes) {
            for class in &classes {
                match class {
                    CodeClass::Valid(w, _) => assert_eq!(*w, waybill, "a second waybill must make the read ambiguous"),
                    CodeClass::BadCheckDigit => {
                        panic!("a bad check digit beside a waybill must make the read ambiguous")
                    }
                    CodeClass::Other => {}
                }
            }
            assert!(classes.iter().any(|c| matches!(c, CodeClass::Valid(w, _) if *w == waybill)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carriers() -> Carriers {
        let f = |name: &str, pattern: &str| CarrierFormat { name: name.into(), pattern: pattern.into() };
        Carriers::try_from(vec![f("SF Express", "SF[0-9]{12}"), f("YTO", "YT[0-9]{13}")]).unwrap()
    }

    #[test]
    fn carrier_formats_identify_their_own_codes_only() {
        let c = carriers();
        assert!(matches!(c.classify(" SF123456789012 "), CodeClass::Valid(_, WaybillKind::Carrier)));
        assert!(matches!(c.classify("SF1234567890123"), CodeClass::Other), "anchored: no partial match");
        assert!(matches!(c.classify("XSF123456789012"), CodeClass::Other));
        // A format never excuses a bad S10 check digit.
        assert!(matches!(c.classify("EA123456784CN"), CodeClass::BadCheckDigit));
        assert!(matches!(classify("SF123456789012"), CodeClass::Other), "unknown without configuration");
        assert_eq!(c.identify(&["SF123456789012"]), Identity::Waybill { waybill: c.parse("SF123456789012").unwrap() });
        assert_eq!(c.identify(&["SF123456789012", "EA123456785CN"]), Identity::Ambiguous { count: 2 });
        assert!(Waybill::parse("SF123456789012").is_err() && c.parse("SF123456789012").is_ok());
    }

    #[test]
    fn carrier_formats_are_checked_and_round_trip() {
        let bad = CarrierFormat { name: "X".into(), pattern: "SF[0-9".into() };
        assert!(matches!(Carriers::try_from(vec![bad]), Err(CarrierError::Pattern { .. })));
        let unnamed = CarrierFormat { name: " ".into(), pattern: "A".into() };
        assert!(matches!(Carriers::try_from(vec![unnamed]), Err(CarrierError::NoName { index: 0 })));
        let json = serde_json::to_string(&carriers()).unwrap();
        assert_eq!(serde_json::from_str::<Carriers>(&json).unwrap(), carriers());
        assert!(serde_json::from_str::<Carriers>(r#"[{"name":"X","pattern":"("}]"#).is_err());
        // Records outlive configuration: a carrier waybill reads back without its format.
        let w: Waybill = serde_json::from_str(r#""SF123456789012""#).unwrap();
        assert_eq!(w.as_str(), "SF123456789012");
    }

    #[test]
    fn s10_published_examples() {
        // UPU S10 annex examples and common test numbers.
        // The S10 standard's worked example is AA 47312482 9 GB.
        assert_eq!(s10_check_digit(b"47312482"), 9);
        assert!(matches!(classify("AA473124829GB"), CodeClass::Valid(_, WaybillKind::S10)));
        assert!(matches!(classify("EA123456785CN"), CodeClass::Valid(_, WaybillKind::S10)));
        assert!(matches!(classify("AA473124826GB"), CodeClass::BadCheckDigit));
        assert!(matches!(classify("EA123456784CN"), CodeClass::BadCheckDigit));
    }

    #[test]
    fn s10_check_digit_special_cases() {
        // sum % 11 == 1 -> 10 -> 0; sum % 11 == 0 -> 11 -> 5
        let mut zero = None;
        let mut five = None;
        for n in 0..100_000u32 {
            let s = format!("{n:08}");
            let serial: [u8; 8] = s.as_bytes().try_into().unwrap();
            let sum: u32 = serial.iter().zip([8, 6, 4, 2, 3, 5, 9, 7]).map(|(d, w)| u32::from(d - b'0') * w).sum();
            match sum % 11 {
                1 if zero.is_none() => zero = Some(serial),
                0 if five.is_none() => five = Some(serial),
                _ => {}
            }
        }
        assert_eq!(s10_check_digit(&zero.unwrap()), 0);
        assert_eq!(s10_check_digit(&five.unwrap()), 5);
    }

    #[test]
    fn sscc_published_example() {
        // GS1 General Specifications example SSCC.
        assert!(matches!(classify("106141411234567897"), CodeClass::Valid(_, WaybillKind::Sscc)));
        assert!(matches!(classify("00106141411234567897"), CodeClass::Valid(..)));
        assert!(matches!(classify("(00)106141411234567897"), CodeClass::Valid(..)));
        assert!(matches!(classify("106141411234567898"), CodeClass::BadCheckDigit));
        let w = match classify("(00)106141411234567897") {
            CodeClass::Valid(w, _) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(w.as_str(), "106141411234567897");
    }

    #[test]
    fn other_codes_are_ignored() {
        assert_eq!(classify("4006381333931"), CodeClass::Other); // an EAN-13
        assert_eq!(classify(""), CodeClass::Other);
        assert_eq!(classify("ea123456785cn"), CodeClass::Other);
        assert_eq!(
            identify(&["4006381333931", "EA123456785CN"]),
            Identity::Waybill { waybill: Waybill::parse("EA123456785CN").unwrap() }
        );
    }

    #[test]
    fn identification_outcomes() {
        let a = "EA123456785CN";
        assert!(matches!(identify(&[a]), Identity::Waybill { .. }));
        assert!(matches!(identify(&[a, a]), Identity::Waybill { .. }), "duplicate read is one waybill");
        assert_eq!(identify::<&str>(&[]), Identity::NoRead);
        assert_eq!(identify(&["NOREAD"]), Identity::NoRead);
        assert_eq!(identify(&["EA123456784CN"]), Identity::BadCheckDigit);
        assert_eq!(identify(&[a, "AA473124829GB"]), Identity::Ambiguous { count: 2 });
        assert_eq!(identify(&[a, "EA123456784CN"]), Identity::Ambiguous { count: 2 });
    }

    proptest::proptest! {
        #[test]
        fn identification_invariants_hold_for_any_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            fuzzing::check_codes(&data);
        }

        #[test]
        fn identification_invariants_hold_for_near_waybills(n in 0u32..100_000_000, extra in "[A-Z0-9]{0,14}", dup: bool) {
            let serial = format!("{n:08}");
            let cd = s10_check_digit(serial.as_bytes().try_into().unwrap());
            let good = format!("EA{serial}{cd}CN");
            let mut data = good.clone().into_bytes();
            for code in [extra.as_str(), if dup { good.as_str() } else { "" }] {
                data.push(0x1e);
                data.extend(code.as_bytes());
            }
            fuzzing::check_codes(&data);
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(Waybill::parse(""), Err(WaybillError::Empty));
        assert_eq!(Waybill::parse("EA12345678\u{0}CN"), Err(WaybillError::BadCharacter));
        assert_eq!(Waybill::parse(&"9".repeat(40)), Err(WaybillError::TooLong));
        assert_eq!(Waybill::parse("EA123456784CN"), Err(WaybillError::Invalid));
    }
}
