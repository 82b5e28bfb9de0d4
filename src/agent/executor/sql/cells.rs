//! Cell text the backends share for values a driver does not hand over as the server's text:
//! a placeholder for the unreadable, hex for bytes, and floats printed as Postgres prints them.

/// Shown for a value that cannot be read as text.
pub(super) fn placeholder(type_name: &str) -> String {
    format!("<{type_name}>")
}

pub(super) fn hex_bytes(bytes: &[u8]) -> String {
    format!("\\x{}", hex::encode(bytes))
}

/// A float as Postgres prints a float8: shortest round-trip digits, exponent form below 1e-4 and
/// from 1e15, `Infinity` and `NaN` spelled out.
pub(super) fn float_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if v != 0.0 && !(-4..15).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_postgres_prints_them() {
        // Each pair as psql shows the float8.
        let cases = [
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.5e300, "1.5e+300"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (2.5, "2.5"),
            (-3.0, "-3"),
            (0.0, "0"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_text(value), expected);
        }
    }
}
