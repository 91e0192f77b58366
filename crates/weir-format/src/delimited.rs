//! DELIMITED: one field per column, in column order, separated by the delimiter, with
//! CSV quoting (`"a,b"`, `""` for a quote inside). An empty field is null.

use serde_json::Value;
use weir_sql::ast::SqlType;

use crate::layout::Column;

pub(crate) fn decode(bytes: &[u8], cols: &[Column], delimiter: char) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("Invalid UTF-8: {e}"))?;
    let fields = split(text, delimiter)?;
    if fields.len() != cols.len() {
        return Err(format!(
            "Unexpected field count, csvFields:{} schemaFields:{}",
            fields.len(),
            cols.len()
        ));
    }
    fields
        .into_iter()
        .zip(cols)
        .map(|(f, c)| match (f, &c.ty) {
            (None, _) => Ok(Value::Null),
            // DATE is days, TIME and TIMESTAMP milliseconds, written as numbers.
            (Some(s), SqlType::Date | SqlType::Time | SqlType::Timestamp) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("Can't convert '{s}' to {}", c.ty)),
            (Some(s), _) => Ok(Value::String(s)),
        })
        .collect()
}

/// Splits one CSV line; `None` for empty (null) fields. Unquoted fields are sliced out
/// whole (a long field, such as the demo's 210 readings, is one copy, not a push per
/// character).
fn split(text: &str, delimiter: char) -> Result<Vec<Option<String>>, String> {
    let mut fields = Vec::new();
    let mut rest = text;
    loop {
        let Some(mut quoted) = rest.strip_prefix('"') else {
            let (field, next) = match rest.find(delimiter) {
                Some(i) => (&rest[..i], Some(&rest[i + delimiter.len_utf8()..])),
                None => (rest, None),
            };
            fields.push((!field.is_empty()).then(|| field.to_string()));
            match next {
                Some(next) => rest = next,
                None => return Ok(fields),
            }
            continue;
        };
        // A quoted field: up to the closing quote, `""` standing for one quote.
        let mut field = String::new();
        loop {
            let Some(i) = quoted.find('"') else {
                return Err("Unterminated quoted field".to_string());
            };
            field.push_str(&quoted[..i]);
            quoted = &quoted[i + 1..];
            match quoted.strip_prefix('"') {
                Some(after) => {
                    field.push('"');
                    quoted = after;
                }
                None => break,
            }
        }
        fields.push(Some(field));
        if quoted.is_empty() {
            return Ok(fields);
        }
        rest = quoted
            .strip_prefix(delimiter)
            .ok_or("Unexpected characters after a quoted field")?;
    }
}

pub(crate) fn encode(cols: &[Column], values: &[Value], delimiter: char) -> Vec<u8> {
    let mut fields: Vec<String> = values
        .iter()
        .zip(cols)
        .map(|(v, c)| field(v, &c.ty, delimiter))
        .collect();
    // Commons CSV (minimal quoting) also quotes a record's first field, whatever its type,
    // when it starts with anything but a letter or digit.
    if let Some(first) = fields.first_mut()
        && !first.starts_with('"')
        && first
            .chars()
            .next()
            .is_some_and(|c| !c.is_ascii_alphanumeric())
    {
        *first = format!("\"{}\"", first.replace('"', "\"\""));
    }
    fields.join(&delimiter.to_string()).into_bytes()
}

fn field(v: &Value, ty: &SqlType, delimiter: char) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (ty, n.as_f64()) {
            (SqlType::Decimal { scale, .. }, Some(f)) => format!("{f:.*}", *scale as usize),
            (SqlType::Double, Some(f)) => java_double(f),
            _ => n.to_string(),
        },
        Value::String(s) => {
            // Commons CSV's minimal quoting, which ksqlDB writes with: also a field that
            // starts with a character up to '#' or ends in whitespace is quoted.
            let first_low = s.chars().next().is_some_and(|c| c <= '#');
            let last_space = s.chars().last().is_some_and(|c| c <= ' ');
            if first_low
                || last_space
                || s.contains(delimiter)
                || s.contains('"')
                || s.contains('\n')
                || s.contains('\r')
            {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    }
}

/// A double as Java's `Double.toString` writes it (ksqlDB's DELIMITED output): at least
/// one digit after the point, scientific notation outside [1e-3, 1e7).
pub fn java_double(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let a = f.abs();
    if (1e-3..1e7).contains(&a) {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        // Rust's `{:e}` gives the shortest digits: 1.2345e10 → 1.2345E10, 1e10 → 1.0E10.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').expect("exponent form");
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        format!("{mantissa}E{exp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_csv() {
        assert_eq!(
            split("a,,\"b,c\",\"d\"\"e\"", ',').unwrap(),
            [
                Some("a".into()),
                None,
                Some("b,c".into()),
                Some("d\"e".into())
            ]
        );
        assert_eq!(split("", ',').unwrap(), [None]);
        assert_eq!(
            split("x|y", '|').unwrap(),
            [Some("x".into()), Some("y".into())]
        );
        assert!(split("\"open", ',').is_err());
        assert_eq!(split("a,", ',').unwrap(), [Some("a".into()), None]);
        assert_eq!(
            split("\"\",é", ',').unwrap(),
            [Some(String::new()), Some("é".into())]
        );
        assert!(split("\"a\"b,c", ',').is_err());
        assert_eq!(
            split("1\t\"2\t3\"\t", '\t').unwrap(),
            [Some("1".into()), Some("2\t3".into()), None]
        );
    }

    #[test]
    fn strings_are_quoted_as_commons_csv_does() {
        let s = |v: &str| field(&Value::String(v.into()), &SqlType::String, ',');
        assert_eq!(s("plain"), "plain");
        assert_eq!(s("!"), "\"!\"");
        assert_eq!(s("#tag"), "\"#tag\"");
        assert_eq!(s("trailing "), "\"trailing \"");
        assert_eq!(s("a,b"), "\"a,b\"");
        assert_eq!(s("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn doubles_print_as_java_does() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1.2104138026620321, "1.2104138026620321"),
            (1e7, "1.0E7"),
            (1.5e-4, "1.5E-4"),
            (-2.5e10, "-2.5E10"),
            (123.0, "123.0"),
        ] {
            assert_eq!(java_double(f), s);
        }
    }
}
