//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5`, `2e3`), shared by the API (claim
//! sizes) and providers (configured capacities), so both read sizes the same way.
//!
//! A quantity is parsed into an exact fixed-point value (nano units in an `i128`), never a float,
//! so comparisons such as "does this 10Gi volume fit a 10737418240-byte request" are exact.
//! Values keep the suffix family they were written in, and print in Kubernetes' canonical form
//! (`1.5Gi` prints as `1536Mi`), which is what the API stores.

use std::cmp::Ordering;
use std::fmt;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// Kubernetes caps quantities at 2^63-1 in magnitude; anything larger is refused here.
const MAX_UNITS: i128 = i64::MAX as i128;

/// The suffix family a quantity was written in; canonical printing keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, ... `Ei`.
    BinarySi,
    /// `n`, `u`, `m`, ``, `k`, `M`, ... `E`.
    DecimalSi,
    /// `1e3`, `5E-3`.
    DecimalExponent,
}

#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    #[error("quantity is too large")]
    TooLarge,
}

impl Quantity {
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let s = input.trim();
        if s.is_empty() || s != input {
            return Err(QuantityError::Format);
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'+' => (false, &s[1..]),
            b'-' => (true, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(QuantityError::Format);
        }
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let (format, suffix_exp10, exp2) = parse_suffix(suffix)?;

        // The value is (whole.frac) * 10^suffix_exp10 * 2^exp2, kept exactly in nano-units
        // (rounded up, as Kubernetes rounds). Fractional digits count only down to the one
        // worth at most a nano-unit; the ones after it are worth less than a nano-unit
        // together, so they only round up.
        let useful = (9 + suffix_exp10 + ceil_log10_pow2(exp2)).max(0) as usize;
        let (kept, dropped) = frac.split_at(frac.len().min(useful));
        let kept = kept.trim_end_matches('0');
        let mut round_up = dropped.bytes().any(|b| b != b'0');
        let mut whole = whole.trim_start_matches('0');
        let mut suffix_exp10 = suffix_exp10;
        if kept.is_empty() {
            // Zeros ending a whole number move into the exponent: `1000...0e-30` is small.
            let significant = whole.trim_end_matches('0');
            suffix_exp10 += (whole.len() - significant.len()) as i32;
            whole = significant;
        }
        if whole.is_empty() && kept.is_empty() {
            // Zero, however it is written (`0e30`), or a fraction too small to keep.
            return Ok(Quantity {
                nanos: i128::from(round_up) * if negative { -1 } else { 1 },
                format,
            });
        }
        // A valid quantity is below 2^63 units, so more than 30 significant whole digits is too
        // large by any measure, whatever the exponent (at least 10^-30).
        if whole.len() > 60 {
            return Err(QuantityError::TooLarge);
        }
        // Overflowing here means at least 10^38 digit-units, which no suffix brings back below
        // 2^63 units once the useless digits are gone.
        let mut digits: i128 = 0;
        for c in whole.bytes().chain(kept.bytes()) {
            digits = digits
                .checked_mul(10)
                .and_then(|d| d.checked_add(i128::from(c - b'0')))
                .ok_or(QuantityError::TooLarge)?;
        }
        let pow2 = 1i128 << exp2;
        // nanos = digits * 2^exp2 * 10^scale
        let scale = suffix_exp10 - kept.len() as i32 + 9;
        let mut nanos = if scale >= 0 {
            10i128
                .checked_pow(scale as u32)
                .and_then(|p| digits.checked_mul(p))
                .and_then(|n| n.checked_mul(pow2))
                .ok_or(QuantityError::TooLarge)?
        } else {
            // Divide before multiplying by 2^exp2 so that nothing overflows: the remainder is
            // below 10^d, and d is at most 21 (and at most 19 when exp2 > 0).
            let divisor = 10i128.pow((-scale) as u32);
            let (q, r) = (digits / divisor, digits % divisor);
            let rest = r * pow2;
            round_up |= rest % divisor != 0;
            q.checked_mul(pow2)
                .and_then(|n| n.checked_add(rest / divisor))
                .ok_or(QuantityError::TooLarge)?
        };
        nanos += i128::from(round_up);
        if nanos / NANOS_PER_UNIT > MAX_UNITS {
            return Err(QuantityError::TooLarge);
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// A whole number of units (bytes, for storage) in binary-SI format.
    pub fn from_units(units: i64) -> Self {
        Quantity {
            nanos: i128::from(units) * NANOS_PER_UNIT,
            format: Format::BinarySi,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value rounded up to a whole unit: for storage, the number of bytes.
    pub fn units_ceil(&self) -> i128 {
        let units = self.nanos.div_euclid(NANOS_PER_UNIT);
        if self.nanos.rem_euclid(NANOS_PER_UNIT) != 0 {
            units + 1
        } else {
            units
        }
    }

    /// Bytes as an `i64` (quantities are capped at 2^63-1, so this never truncates).
    pub fn bytes(&self) -> i64 {
        self.units_ceil()
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Kubernetes' canonical string: the largest suffix that needs no fractional digits.
    pub fn canonical(&self) -> String {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        if abs == 0 {
            return "0".to_string();
        }
        if self.format == Format::BinarySi && abs % NANOS_PER_UNIT == 0 {
            let mut units = abs / NANOS_PER_UNIT;
            // Binary suffixes only make sense from 1Ki upwards; smaller values print plainly.
            let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut i = 0;
            while i + 1 < suffixes.len() && units >= 1024 && units % 1024 == 0 {
                units /= 1024;
                i += 1;
            }
            return format!("{sign}{units}{}", suffixes[i]);
        }
        // Decimal: pick the largest power of 1000 that keeps the mantissa whole.
        let mut mantissa = abs;
        let mut exp3: i32 = -3; // nanos are 10^-9
        while mantissa % 1000 == 0 && exp3 < 6 {
            mantissa /= 1000;
            exp3 += 1;
        }
        if self.format == Format::DecimalExponent {
            let exp = exp3 * 3;
            return if exp == 0 {
                format!("{sign}{mantissa}")
            } else {
                format!("{sign}{mantissa}e{exp}")
            };
        }
        let suffix = match exp3 {
            -3 => "n",
            -2 => "u",
            -1 => "m",
            0 => "",
            1 => "k",
            2 => "M",
            3 => "G",
            4 => "T",
            5 => "P",
            _ => "E",
        };
        format!("{sign}{mantissa}{suffix}")
    }
}

/// The smallest n with 10^n >= 2^exp2, for the binary suffixes (exp2 = 0, 10, ... 60).
fn ceil_log10_pow2(exp2: u32) -> i32 {
    let mut n = 0;
    while 10i128.pow(n) < (1i128 << exp2) {
        n += 1;
    }
    n as i32
}

fn parse_suffix(suffix: &str) -> Result<(Format, i32, u32), QuantityError> {
    let binary = |exp2| Ok((Format::BinarySi, 0, exp2));
    let decimal = |exp10| Ok((Format::DecimalSi, exp10, 0));
    match suffix {
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or(QuantityError::Format)?;
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Format);
            }
            let exp: i32 = exponent.parse().map_err(|_| QuantityError::TooLarge)?;
            if !(-30..=30).contains(&exp) {
                return Err(QuantityError::TooLarge);
            }
            Ok((Format::DecimalExponent, exp, 0))
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Bytes of a quantity string (`10Gi`), or `None` if it does not parse or is negative.
pub fn parse_bytes(s: &str) -> Option<i64> {
    Quantity::parse(s)
        .ok()
        .map(|q| q.bytes())
        .filter(|b| *b >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn binary_and_decimal_suffixes_have_exact_values() {
        assert_eq!(q("1Ki").bytes(), 1024);
        assert_eq!(q("10Gi").bytes(), 10 * (1 << 30));
        assert_eq!(q("500M").bytes(), 500_000_000);
        assert_eq!(q("1k").bytes(), 1000);
        assert_eq!(q("1.5Gi").bytes(), 3 * (1 << 29));
        assert_eq!(q("2e3").bytes(), 2000);
        assert_eq!(q("1E6").bytes(), 1_000_000);
        assert_eq!(q("+7").bytes(), 7);
    }

    #[test]
    fn fractions_below_a_unit_round_up_to_whole_bytes() {
        assert_eq!(q("100m").bytes(), 1);
        assert_eq!(q("0.5").bytes(), 1);
        assert_eq!(q("1.0001").bytes(), 2);
    }

    #[test]
    fn canonical_form_matches_kubernetes() {
        assert_eq!(q("1.5Gi").canonical(), "1536Mi");
        assert_eq!(q("1024Mi").canonical(), "1Gi");
        assert_eq!(q("1000M").canonical(), "1G");
        assert_eq!(q("1.5").canonical(), "1500m");
        assert_eq!(q("0").canonical(), "0");
        assert_eq!(q("100").canonical(), "100");
        assert_eq!(q("1e3").canonical(), "1e3");
        assert_eq!(q("1500Ki").canonical(), "1500Ki");
        assert_eq!(q("10737418240").canonical(), "10737418240");
        assert_eq!(q("-2Gi").canonical(), "-2Gi");
    }

    #[test]
    fn comparisons_are_exact_across_formats() {
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1Gi"), q("1073741824"));
        assert!(q("999Mi") < q("1Gi"));
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "", " 1Gi", "1Gi ", "Gi", "1GB", "1.2.3", "abc", "1e", "1e+", ".", "1ii", "--1", "1e99",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn long_fractions_neither_overflow_nor_lose_the_value() {
        // 40 significant digits used to wrap the digit string: about 3 GB became about 4 MB.
        assert_eq!(
            q("3000000000.000000000000000000000000000000").bytes(),
            3_000_000_000
        );
        assert_eq!(
            Quantity::parse("3000000000.0000000000000000000000000000001")
                .unwrap()
                .bytes(),
            3_000_000_001,
            "a tail far below a byte still rounds a storage size up"
        );
        assert_eq!(
            Quantity::parse("0.00000000000000000000000000000000000000000000001Ei")
                .unwrap()
                .bytes(),
            1
        );
        assert_eq!(
            Quantity::parse("9.22337203685477580699999999999999E")
                .unwrap()
                .bytes(),
            i64::MAX,
            "the largest quantity, written with more digits than an i128 holds"
        );
        assert_eq!(
            Quantity::parse("9.99999999999999999999999999999999999999999999E"),
            Err(QuantityError::TooLarge)
        );
        assert_eq!(
            q("0.000000000001Gi").bytes(),
            1,
            "tiny binary fractions are not inflated"
        );
        assert_eq!(q("0.000000000000000000001Ei").bytes(), 1);
        assert_eq!(q("1.5Ki").bytes(), 1536);
        assert!(q("0e30").is_zero());
        assert_eq!(q(&format!("1{}e-30", "0".repeat(33))).bytes(), 1000);
        assert_eq!(
            Quantity::parse("99999999999999999999.9999999999999999999999999999999"),
            Err(QuantityError::TooLarge)
        );
    }

    #[test]
    fn huge_quantities_are_refused_not_wrapped() {
        assert_eq!(Quantity::parse("9Ei"), Err(QuantityError::TooLarge));
        assert_eq!(
            Quantity::parse("99999999999999999999999999999999999999999"),
            Err(QuantityError::TooLarge)
        );
        assert!(Quantity::parse("7Ei").is_ok());
    }
}
