//! The intake folder's file-name pattern, e.g. `{seq}[_{barcode}][_{energy}].{ext}`:
//! placeholders in braces, optional parts in brackets, everything else literal. Compiled to
//! an anchored regex; a name that does not match (`*.part`, `index.txt`) is not an image.
//!
//! - `{seq}` (required, never optional): 1 to 10 decimal digits, a u32.
//! - `{barcode}`: letters, digits and `-`, at least one digit (every S10, GS1 and SSCC code
//!   has one), at most 64; the digit keeps a bare energy (`_low`) from being read as a barcode.
//! - `{energy}`: `low` or `high`; absent means a single-energy or a two-channel file.
//! - `{ext}`: `png`, `tif` or `tiff`, any case.
//!
//! Two placeholders must have literal text between them, so that a name splits one way only.

use regex::Regex;

/// Which half of a two-file dual-energy image a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Energy {
    Low,
    High,
}

impl Energy {
    pub fn as_str(self) -> &'static str {
        match self {
            Energy::Low => "low",
            Energy::High => "high",
        }
    }
}

/// What a file name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameFields {
    pub seq: u32,
    pub barcode: Option<String>,
    pub energy: Option<Energy>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file-name pattern {pattern:?}: {problem}")]
    Pattern { pattern: String, problem: String },
    #[error("file name {name:?}: seq is over 4294967295")]
    Seq { name: String },
    #[error("file name {name:?}: barcode is over 64 characters")]
    Barcode { name: String },
}

const PLACEHOLDERS: [(&str, &str); 4] = [
    ("seq", "(?P<seq>[0-9]{1,10})"),
    ("barcode", "(?P<barcode>[0-9A-Za-z-]*[0-9][0-9A-Za-z-]*)"),
    ("energy", "(?P<energy>low|high)"),
    ("ext", "(?P<ext>(?i:png|tiff?))"),
];
const MAX_PATTERN_LEN: usize = 256;
const MAX_BARCODE_LEN: usize = 64;

/// A validated, compiled pattern.
#[derive(Clone, Debug)]
pub struct NamePattern {
    pattern: String,
    regex: Regex,
}

impl NamePattern {
    pub fn compile(pattern: &str) -> Result<NamePattern, NameError> {
        let problem = |p: &str| NameError::Pattern { pattern: pattern.to_owned(), problem: p.to_owned() };
        if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
            return Err(problem("must be 1 to 256 characters"));
        }
        if pattern.contains(['/', '\\', '\0']) {
            return Err(problem("is a file name: no '/', '\\' or NUL"));
        }
        let mut regex = String::from("^");
        let mut seen: Vec<&str> = Vec::new();
        let mut optional: Option<bool> = None; // Some(has a placeholder) inside brackets
                                               // A placeholder came last, with no literal after it yet.
        let mut after_placeholder = false;
        let mut rest = pattern;
        while let Some(c) = rest.chars().next() {
            match c {
                '[' => {
                    if optional.is_some() {
                        return Err(problem("optional parts cannot nest"));
                    }
                    optional = Some(false);
                    regex.push_str("(?:");
                    rest = &rest[1..];
                }
                ']' => {
                    match optional.take() {
                        None => return Err(problem("']' without '['")),
                        Some(false) => return Err(problem("an optional part needs a placeholder")),
                        Some(true) => {}
                    }
                    regex.push_str(")?");
                    rest = &rest[1..];
                }
                '{' => {
                    let end = rest.find('}').ok_or_else(|| problem("'{' without '}'"))?;
                    let name = &rest[1..end];
                    let (name, piece) = PLACEHOLDERS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                        problem(&format!("unknown placeholder {{{name}}} (seq, barcode, energy, ext)"))
                    })?;
                    if seen.contains(name) {
                        return Err(problem(&format!("{{{name}}} appears twice")));
                    }
                    if after_placeholder {
                        return Err(problem("two placeholders need literal text between them"));
                    }
                    if *name == "seq" && optional.is_some() {
                        return Err(problem("{seq} cannot be optional"));
                    }
                    if let Some(has) = &mut optional {
                        *has = true;
                    }
                    seen.push(name);
                    regex.push_str(piece);
                    after_placeholder = true;
                    rest = &rest[end + 1..];
                }
                '}' => return Err(problem("'}' without '{'")),
                c => {
                    regex.push_str(&regex::escape(&c.to_string()));
                    after_placeholder = false;
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if optional.is_some() {
            return Err(problem("'[' without ']'"));
        }
        if !seen.contains(&"seq") {
            return Err(problem("{seq} is required"));
        }
        regex.push('$');
        let regex = Regex::new(&regex).map_err(|e| problem(&e.to_string()))?;
        Ok(NamePattern { pattern: pattern.to_owned(), regex })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// `None`: not an image name (ignored). `Some(Err)`: an image name with a bad field.
    pub fn parse(&self, name: &str) -> Option<Result<NameFields, NameError>> {
        let caps = self.regex.captures(name)?;
        let seq = caps.name("seq").map(|m| m.as_str().parse::<u32>());
        let Some(Ok(seq)) = seq else { return Some(Err(NameError::Seq { name: name.to_owned() })) };
        let barcode = caps.name("barcode").map(|m| m.as_str().to_owned());
        if barcode.as_ref().is_some_and(|b| b.len() > MAX_BARCODE_LEN) {
            return Some(Err(NameError::Barcode { name: name.to_owned() }));
        }
        let energy = caps.name("energy").map(|m| if m.as_str() == "low" { Energy::Low } else { Energy::High });
        Some(Ok(NameFields { seq, barcode, energy }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sortline_sim::xray::wire::file_name;

    const DEFAULT: &str = "{seq}[_{barcode}][_{energy}].{ext}";

    fn fields(seq: u32, barcode: Option<&str>, energy: Option<Energy>) -> Option<Result<NameFields, NameError>> {
        Some(Ok(NameFields { seq, barcode: barcode.map(str::to_owned), energy }))
    }

    #[test]
    fn the_default_pattern_reads_every_combination() {
        let p = NamePattern::compile(DEFAULT).unwrap();
        assert_eq!(p.parse("17_EA123456785CN_low.png"), fields(17, Some("EA123456785CN"), Some(Energy::Low)));
        assert_eq!(p.parse("17_EA123456785CN.TIF"), fields(17, Some("EA123456785CN"), None));
        assert_eq!(p.parse("17_high.tiff"), fields(17, None, Some(Energy::High)));
        assert_eq!(p.parse("17.png"), fields(17, None, None));
        for ignored in ["17.png.part", "x17.png", "17_.png", "17.jpg", "17_low_EA1.png", "17__low.png", "", "17"] {
            assert_eq!(p.parse(ignored), None, "{ignored}");
        }
        assert_eq!(p.parse("4294967296.png"), Some(Err(NameError::Seq { name: "4294967296.png".into() })));
        let long = format!("1_{}.png", "9".repeat(65));
        assert!(matches!(p.parse(&long), Some(Err(NameError::Barcode { .. }))));
    }

    #[test]
    fn literal_patterns_and_fixed_extensions_work() {
        let p = NamePattern::compile("scan-{seq}.{energy}.png").unwrap();
        assert_eq!(p.parse("scan-0042.high.png"), fields(42, None, Some(Energy::High)));
        assert_eq!(p.parse("scan-42.png"), None);
        assert_eq!(p.parse("scan-42.low.tif"), None);
        let dotted = NamePattern::compile("a.b{seq}.png").unwrap();
        assert_eq!(dotted.parse("aXb1.png"), None, "literal dots are escaped");
    }

    #[test]
    fn bad_patterns_are_refused_naming_the_problem() {
        for (pattern, problem) in [
            ("", "1 to 256"),
            ("{barcode}.png", "{seq} is required"),
            ("{seq}_{colour}.png", "unknown placeholder {colour}"),
            ("{seq}{barcode}.png", "literal text between"),
            ("{seq}_{seq}.png", "appears twice"),
            ("[{seq}].png", "cannot be optional"),
            ("{seq}[_[{energy}]].png", "cannot nest"),
            ("{seq}[_{energy}.png", "'[' without ']'"),
            ("{seq}]_x.png", "']' without '['"),
            ("{seq}[_x].png", "needs a placeholder"),
            ("{seq.png", "'{' without '}'"),
            ("{seq}}.png", "'}' without '{'"),
            ("in/{seq}.png", "no '/'"),
        ] {
            let e = NamePattern::compile(pattern).unwrap_err();
            assert!(e.to_string().contains(problem), "{pattern}: {e}");
        }
    }

    proptest! {
        #[test]
        fn a_name_the_sim_writes_reads_back(
            seq in any::<u32>(),
            barcode in proptest::option::of("[A-Z]{0,3}[0-9]{1,9}[A-Z]{0,2}"),
            energy in proptest::option::of(prop_oneof![Just(Energy::Low), Just(Energy::High)]),
            ext in prop_oneof![Just("png"), Just("tif"), Just("TIFF")],
        ) {
            let p = NamePattern::compile(DEFAULT).unwrap();
            let name = file_name(DEFAULT, seq, barcode.as_deref(), energy.map(Energy::as_str), ext);
            prop_assert_eq!(p.parse(&name), fields(seq, barcode.as_deref(), energy));
        }
    }
}
