//! Java `DateTimeFormatter` patterns (what ksqlDB's date functions and `TIMESTAMP_FORMAT`
//! take) translated to chrono, for parsing and formatting dates, times and timestamps.
//!
//! Covered: `y M d D H h k m s S a E X Z z` and quoted literals (`'T'`, `''`). A zone name
//! (`z`) is parsed from a table of common abbreviations mapped to their region, so that
//! `PST` in May means Pacific daylight time, as Java resolves it.

use chrono::format::{Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Lit(String),
    /// A chrono specifier for formatting and one for parsing.
    Spec(String, String),
    /// Fraction of a second with this many digits.
    Fraction(usize),
    /// A zone name (`z`).
    ZoneName,
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // '' is a quote; 'text' is literal text.
            if chars.get(i + 1) == Some(&'\'') {
                out.push(Token::Lit("'".into()));
                i += 2;
                continue;
            }
            let mut lit = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        lit.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                lit.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err(format!("unterminated quote in pattern '{pattern}'"));
            }
            i += 1;
            out.push(Token::Lit(lit));
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(Token::Lit(c.to_string()));
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        i += n;
        let spec = |f: &str, p: &str| Token::Spec(f.into(), p.into());
        out.push(match (c, n) {
            ('y' | 'u', 2) => spec("%y", "%y"),
            ('y' | 'u', _) => spec("%Y", "%Y"),
            ('M' | 'L', 1) => spec("%-m", "%m"),
            ('M' | 'L', 2) => spec("%m", "%m"),
            ('M' | 'L', 3) => spec("%b", "%b"),
            ('M' | 'L', _) => spec("%B", "%B"),
            ('d', 1) => spec("%-d", "%d"),
            ('d', _) => spec("%d", "%d"),
            ('D', _) => spec("%j", "%j"),
            ('H' | 'k', 1) => spec("%-H", "%H"),
            ('H' | 'k', _) => spec("%H", "%H"),
            ('h' | 'K', 1) => spec("%-I", "%I"),
            ('h' | 'K', _) => spec("%I", "%I"),
            ('m', 1) => spec("%-M", "%M"),
            ('m', _) => spec("%M", "%M"),
            ('s', 1) => spec("%-S", "%S"),
            ('s', _) => spec("%S", "%S"),
            ('S', n) => Token::Fraction(n),
            ('a', _) => spec("%p", "%p"),
            ('E', 1..=3) => spec("%a", "%a"),
            ('E', _) => spec("%A", "%A"),
            ('X' | 'x', 1) => spec("%z", "%#z"),
            ('X' | 'x' | 'Z', 3) => spec("%:z", "%#z"),
            ('X' | 'x' | 'Z', _) => spec("%z", "%#z"),
            ('z' | 'V' | 'O', _) => Token::ZoneName,
            (other, _) => {
                return Err(format!(
                    "unsupported pattern letter '{other}' in '{pattern}'"
                ));
            }
        });
    }
    Ok(out)
}

fn escape(lit: &str) -> String {
    lit.replace('%', "%%")
}

/// A zone by id (`America/Los_Angeles`), offset (`+0200`, `+02:00`, `Z`) or common
/// abbreviation (`PST`, `CET`).
pub fn zone(name: &str) -> Result<Zone, String> {
    let n = name.trim();
    if let Ok(tz) = n.parse::<Tz>() {
        return Ok(Zone::Named(tz));
    }
    let region = match n.to_ascii_uppercase().as_str() {
        "Z" | "UTC" | "GMT" | "UT" => Some("UTC"),
        "PST" | "PDT" | "PT" => Some("America/Los_Angeles"),
        "MST" | "MDT" | "MT" => Some("America/Denver"),
        "CST" | "CDT" | "CT" => Some("America/Chicago"),
        "EST" | "EDT" | "ET" => Some("America/New_York"),
        "BST" => Some("Europe/London"),
        "CET" | "CEST" => Some("Europe/Paris"),
        "EET" | "EEST" => Some("Europe/Athens"),
        "IST" => Some("Asia/Kolkata"),
        "JST" => Some("Asia/Tokyo"),
        _ => None,
    };
    if let Some(r) = region {
        return Ok(Zone::Named(r.parse::<Tz>().expect("known zone id")));
    }
    // Offsets: +hh, +hhmm, +hh:mm, with an optional GMT/UTC prefix.
    let off = n
        .strip_prefix("GMT")
        .or_else(|| n.strip_prefix("UTC"))
        .unwrap_or(n);
    let (sign, rest) = match off.as_bytes().first() {
        Some(b'+') => (1, &off[1..]),
        Some(b'-') => (-1, &off[1..]),
        _ => return Err(format!("unknown time zone '{name}'")),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || digits.is_empty() || digits.len() > 4 {
        return Err(format!("unknown time zone '{name}'"));
    }
    let (h, m) = if digits.len() <= 2 {
        (digits.parse::<i32>().unwrap_or(0), 0)
    } else {
        let split = digits.len() - 2;
        (
            digits[..split].parse::<i32>().unwrap_or(0),
            digits[split..].parse::<i32>().unwrap_or(0),
        )
    };
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
        .map(Zone::Fixed)
        .ok_or_else(|| format!("unknown time zone '{name}'"))
}

#[derive(Debug, Clone, Copy)]
pub enum Zone {
    Named(Tz),
    Fixed(chrono::FixedOffset),
}

impl Zone {
    pub const UTC: Zone = Zone::Named(Tz::UTC);

    /// The instant (millis) of a local date-time in this zone; the earlier of two in a
    /// fall-back overlap, the shifted one in a spring-forward gap (as Java does).
    fn instant(&self, local: &NaiveDateTime) -> Option<i64> {
        let resolve = |r: chrono::LocalResult<i64>| match r {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => Some(t),
            chrono::LocalResult::None => None,
        };
        match self {
            Zone::Named(tz) => resolve(tz.from_local_datetime(local).map(|d| d.timestamp_millis()))
                .or_else(|| {
                    let shifted = *local + chrono::Duration::hours(1);
                    resolve(
                        tz.from_local_datetime(&shifted)
                            .map(|d| d.timestamp_millis()),
                    )
                }),
            Zone::Fixed(off) => {
                resolve(off.from_local_datetime(local).map(|d| d.timestamp_millis()))
            }
        }
    }

    /// Offset from UTC in seconds at an instant.
    pub fn offset_at(&self, millis: i64) -> i64 {
        let utc = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or_default();
        match self {
            Zone::Named(tz) => tz
                .offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc() as i64,
            Zone::Fixed(off) => off.local_minus_utc() as i64,
        }
    }
}

/// Parses `text` by a Java pattern into millis since the epoch; fields the pattern lacks
/// default to 1970-01-01T00:00:00.000, and `zone` applies unless the text names its own.
pub fn parse_millis(text: &str, pattern: &str, zone_default: Zone) -> Result<i64, String> {
    let tokens = tokenize(pattern)?;
    let mut fmt = String::new();
    let mut text = text.to_string();
    let mut zone_in_text: Option<Zone> = None;
    let mut fraction_digits: Option<usize> = None;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Lit(l) => fmt.push_str(&escape(l)),
            Token::Spec(_, p) => fmt.push_str(p),
            Token::Fraction(n) => {
                // chrono reads `%.f` as a fraction (with its dot).
                if fmt.ends_with('.') {
                    fmt.pop();
                    fmt.push_str("%.f");
                } else {
                    fmt.push_str(&format!("%{}f", (*n).clamp(3, 9).min(9)));
                    fraction_digits = Some(*n);
                }
            }
            Token::ZoneName => {
                if i != tokens.len() - 1 {
                    return Err(format!(
                        "a zone name is only supported at the end of a pattern: '{pattern}'"
                    ));
                }
                let trimmed = text.trim_end();
                let start = trimmed
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || "/_+-:".contains(c)))
                    .map(|p| p + 1)
                    .unwrap_or(0);
                zone_in_text = Some(zone(&trimmed[start..])?);
                text = trimmed[..start].to_string();
            }
        }
    }
    let _ = fraction_digits;
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, &text, StrftimeItems::new(&fmt))
        .map_err(|e| format!("Failed to parse '{text}' with pattern '{pattern}': {e}"))?;
    let date = if parsed.year().is_some() || parsed.month().is_some() || parsed.day().is_some() {
        let mut p = parsed.clone();
        if p.year().is_none() && p.year_mod_100().is_none() {
            p.set_year(1970).map_err(|e| e.to_string())?;
        }
        if p.month().is_none() && p.ordinal().is_none() {
            p.set_month(1).map_err(|e| e.to_string())?;
        }
        if p.day().is_none() && p.ordinal().is_none() {
            p.set_day(1).map_err(|e| e.to_string())?;
        }
        p.to_naive_date()
            .map_err(|e| format!("Failed to parse '{text}' with pattern '{pattern}': {e}"))?
    } else if parsed.ordinal().is_some() {
        let mut p = parsed.clone();
        p.set_year(1970).map_err(|e| e.to_string())?;
        p.to_naive_date().map_err(|e| e.to_string())?
    } else {
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
    };
    let hour = match (parsed.hour_div_12(), parsed.hour_mod_12()) {
        (Some(d), Some(m)) => d * 12 + m,
        (None, Some(m)) => m,
        _ => 0,
    };
    let nanos = parsed.nanosecond().unwrap_or(0);
    let time = NaiveTime::from_hms_nano_opt(
        hour,
        parsed.minute().unwrap_or(0),
        parsed.second().unwrap_or(0),
        nanos,
    )
    .ok_or_else(|| format!("Failed to parse '{text}': time out of range"))?;
    let local = NaiveDateTime::new(date, time);
    if let Some(off) = parsed.offset() {
        return Ok(local.and_utc().timestamp_millis() - off as i64 * 1000);
    }
    zone_in_text
        .unwrap_or(zone_default)
        .instant(&local)
        .ok_or_else(|| format!("'{text}' does not exist in the zone"))
}

/// Formats an instant (millis) in a zone by a Java pattern.
pub fn format_millis(millis: i64, pattern: &str, zone: Zone) -> Result<String, String> {
    let tokens = tokenize(pattern)?;
    let utc = DateTime::<Utc>::from_timestamp_millis(millis)
        .ok_or_else(|| format!("timestamp {millis} out of range"))?;
    let mut out = String::new();
    let render = |f: &str| -> String {
        match zone {
            Zone::Named(tz) => utc.with_timezone(&tz).format(f).to_string(),
            Zone::Fixed(off) => utc.with_timezone(&off).format(f).to_string(),
        }
    };
    for t in &tokens {
        match t {
            Token::Lit(l) => out.push_str(l),
            Token::Spec(f, _) => {
                let s = render(f);
                // Java's X writes Z for a zero offset.
                if f.contains('z') && pattern.contains('X') && (s == "+0000" || s == "+00:00") {
                    out.push('Z');
                } else {
                    out.push_str(&s);
                }
            }
            Token::Fraction(n) => {
                let ms = render("%3f");
                let digits: String = ms.chars().chain(std::iter::repeat('0')).take(*n).collect();
                out.push_str(&digits);
            }
            Token::ZoneName => match zone {
                Zone::Named(_) => out.push_str(&render("%Z")),
                Zone::Fixed(_) => out.push_str(&render("%:z")),
            },
        }
    }
    Ok(out)
}

/// A timestamp literal as ksqlDB reads one compared with ROWTIME: a prefix of
/// `yyyy-MM-ddTHH:mm:ss.SSS`, optionally followed by a zone (`Z`, `+hhmm`, `+hh:mm`).
pub fn parse_partial_timestamp(text: &str) -> Result<i64, String> {
    let t = text.trim();
    // The zone, if any, follows the time part.
    let (local, zone_text) = match t.find('T') {
        Some(tpos) => match t[tpos..].find(['Z', 'z', '+', '-']) {
            Some(z) => (&t[..tpos + z], Some(&t[tpos + z..])),
            None => (t, None),
        },
        None => (t, None),
    };
    const TEMPLATE: &str = "1970-01-01T00:00:00.000";
    if local.len() > TEMPLATE.len() || local.is_empty() {
        return Err(format!("Failed to parse timestamp '{text}'"));
    }
    let full = format!("{local}{}", &TEMPLATE[local.len()..]);
    let z = match zone_text {
        Some(z) => zone(z)?,
        None => Zone::UTC,
    };
    parse_millis(&full, "yyyy-MM-dd'T'HH:mm:ss.SSS", z)
        .map_err(|_| format!("Failed to parse timestamp '{text}'"))
}

/// Days since the epoch of a date parsed by a Java pattern.
pub fn parse_days(text: &str, pattern: &str) -> Result<i32, String> {
    let millis = parse_millis(text, pattern, Zone::UTC)?;
    Ok(millis.div_euclid(86_400_000) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_java_patterns() {
        let p = |t, f| parse_millis(t, f, Zone::UTC).unwrap();
        assert_eq!(
            p("2018-05-11T21:58:33Z", "yyyy-MM-dd'T'HH:mm:ssX"),
            1526075913000
        );
        assert_eq!(
            p("2020-05-11T21:58:33z", "yyyy-MM-dd'T'HH:mm:ssX"),
            1589234313000
        );
        assert_eq!(
            p("2019-08-27T13:31:09.2+0000", "yyyy-MM-dd'T'HH:mm:ss.SX"),
            1566912669200
        );
        assert_eq!(
            p("2018-05-11T21:58:33 PST", "yyyy-MM-dd'T'HH:mm:ss zzz"),
            1526101113000
        );
        assert_eq!(parse_days("01-Jan-2022", "dd-MMM-yyyy").unwrap(), 18993);
        assert_eq!(
            parse_days("2018-05-11Lit", "yyyy-MM-dd'Lit'").unwrap(),
            17662
        );
        assert!(parse_millis("bogus", "yyyy", Zone::UTC).is_err());
        assert_eq!(
            parse_partial_timestamp("2018-01-01T00:00:00.001").unwrap(),
            1514764800001
        );
        assert_eq!(
            parse_partial_timestamp("2019-01-01T00:00:00+0445").unwrap(),
            1546283700000
        );
        assert_eq!(parse_partial_timestamp("2019-01").unwrap(), 1546300800000);
    }

    #[test]
    fn formats_java_patterns() {
        let la = zone("America/Los_Angeles").unwrap();
        assert_eq!(
            format_millis(1526075913000, "yyyy-MM-dd HH:mm:ss zzz", la).unwrap(),
            "2018-05-11 14:58:33 PDT"
        );
        assert_eq!(
            format_millis(1526075913123, "yyyy-MM-dd'T'HH:mm:ss.SSS", Zone::UTC).unwrap(),
            "2018-05-11T21:58:33.123"
        );
        assert_eq!(zone("+0200").unwrap().offset_at(0), 7200);
    }
}
