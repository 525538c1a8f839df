//! UPU S10 item identifiers: two letters, eight serial digits, a check digit, a country.

/// Weights of the S10 check digit over the eight serial digits.
const WEIGHTS: [u32; 8] = [8, 6, 4, 2, 3, 5, 9, 7];

/// Largest serial that fits in eight digits.
pub(crate) const MAX_SERIAL: u32 = 99_999_999;

/// Check digit of an eight-digit serial: c = 11 - (sum mod 11); 10 becomes 0, 11 becomes 5.
pub(crate) fn check_digit(serial: u32) -> u32 {
    debug_assert!(serial <= MAX_SERIAL);
    let mut rest = serial;
    let mut sum = 0;
    // Walk the digits from the last (weight 7) to the first (weight 8).
    for weight in WEIGHTS.iter().rev() {
        sum += (rest % 10) * weight;
        rest /= 10;
    }
    match 11 - sum % 11 {
        10 => 0,
        11 => 5,
        c => c,
    }
}

/// A valid S10 identifier such as `EA123456785CN`.
pub(crate) fn s10(prefix: &str, serial: u32) -> String {
    format!("{prefix}{serial:08}{}CN", check_digit(serial))
}

/// The same identifier with a wrong check digit, as a damaged label reads.
pub(crate) fn s10_with_check(prefix: &str, serial: u32, check: u32) -> String {
    format!("{prefix}{serial:08}{check}CN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_examples() {
        // The UPU S10 standard's own example and its common variants.
        assert_eq!(s10("RA", 12_345_678), "RA123456785CN");
        assert_eq!(s10("EE", 12_345_678), "EE123456785CN");
        assert_eq!(s10("EA", 12_345_678), "EA123456785CN");
    }

    #[test]
    fn special_cases_of_the_check_digit() {
        // sum 0: 11 - 0 = 11 -> 5
        assert_eq!(check_digit(0), 5);
        // 00004000: 4 * 3 = 12, 12 mod 11 = 1, 11 - 1 = 10 -> 0
        assert_eq!(check_digit(4_000), 0);
        assert_eq!(s10("EA", 4_000), "EA000040000CN");
        // 00000003: 3 * 7 = 21, 21 mod 11 = 10, 11 - 10 = 1
        assert_eq!(check_digit(3), 1);
        // 9 * 8 + 9 * 6 + ... = 9 * 44 = 396 = 36 * 11 -> 11 -> 5
        assert_eq!(check_digit(99_999_999), 5);
    }

    #[test]
    fn wrong_check_digit_is_detectably_wrong() {
        let good = s10("LX", 47_110_815);
        let bad = s10_with_check("LX", 47_110_815, (check_digit(47_110_815) + 1) % 10);
        assert_ne!(good, bad);
        assert_eq!(good[..10], bad[..10]);
    }
}
