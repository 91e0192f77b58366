//! A hand-written scanner for the common record: one JSON object of scalar values
//! (strings without escapes, `true`, `false`, `null`, numbers) or arrays and objects of
//! them (their items and fields put in the record's item list), and nothing after it but
//! whitespace. It reads each value straight into the record's column slots, with no
//! per-value calls through serde. Anything else — an escape, a control character or bad
//! UTF-8 in a string, nesting two deep, a number the general path might read another way
//! (`-0`, an integer of more than 18 digits, one out of range), bad JSON — it declines,
//! and serde_json's deserializer reads the record instead (see the module above): so
//! what it accepts, it reads exactly as serde_json does.

use std::borrow::Cow;

use super::{Fields, Item, Scalar};

/// Reads `bytes` into `fields`' slots; false when it declines (the slots may then hold
/// part of the record: the caller clears them).
// Out of line, as a function of its own: inlined into the decoding loop it ran slower.
#[inline(never)]
pub(super) fn object<'de>(bytes: &'de [u8], fields: &mut Fields<'_, 'de>) -> bool {
    let mut s = Scanner { bytes, at: 0 };
    s.object(fields).is_some()
}

/// 10^0 ..= 10^22: every one exact in an f64.
const POWERS: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// 10^0 ..= 10^19 as integers.
const TENS: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

struct Scanner<'de> {
    bytes: &'de [u8],
    at: usize,
}

impl<'de> Scanner<'de> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn object(&mut self, fields: &mut Fields<'_, 'de>) -> Option<()> {
        self.space();
        self.eat(b'{')?;
        self.space();
        if self.eat(b'}').is_none() {
            // Fields mostly come in the columns' order: the column after the last one
            // matched is tried first (names are unique, so an exact match there is the
            // one `slot_bytes` would find).
            let mut next = 0;
            loop {
                // The expected column's name matched in one load where it can be;
                // else a name's bytes match the columns' names as its text would (one
                // not ASCII is checked for UTF-8 first).
                let at = match fields.patterns.get(next).copied().flatten() {
                    Some(p)
                        if self.peek() == Some(b'"') && p.matches(&self.bytes[self.at + 1..]) =>
                    {
                        self.at += 1 + p.len;
                        Some((next, true))
                    }
                    _ => {
                        let (key, ascii) = self.string_bytes()?;
                        if !ascii {
                            std::str::from_utf8(key).ok()?;
                        }
                        match fields.names.get(next) {
                            Some(n) if n.as_bytes() == key => Some((next, true)),
                            _ => fields.slot_bytes(key),
                        }
                    }
                };
                self.space();
                self.eat(b':')?;
                self.space();
                let value = self.value(Some(&mut fields.items))?;
                if let Some(at) = at {
                    next = at.0 + 1;
                    fields.put(at, value);
                }
                self.space();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.space();
                    }
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.space();
        (self.at == self.bytes.len()).then_some(())
    }

    /// A string without escapes or control characters, valid UTF-8.
    #[inline(always)]
    fn string(&mut self) -> Option<&'de str> {
        std::str::from_utf8(self.string_bytes()?.0).ok()
    }

    /// A string's bytes (no escapes or control characters; not checked for UTF-8), and
    /// whether they are all ASCII.
    #[inline(always)]
    fn string_bytes(&mut self) -> Option<(&'de [u8], bool)> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = &self.bytes[start..];
        let mut ascii = true;
        for (len, b) in rest.iter().enumerate() {
            match *b {
                b'"' => {
                    self.at = start + len + 1;
                    return Some((&rest[..len], ascii));
                }
                b'\\' | 0..0x20 => return None,
                0x80.. => ascii = false,
                _ => {}
            }
        }
        None
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// A field's value: a scalar, or (where `items` is given) an array or object of them,
    /// its items or fields put in `items`.
    #[inline(always)]
    fn value(&mut self, items: Option<&mut Vec<Item<'de>>>) -> Option<Scalar<'de>> {
        Some(match self.peek()? {
            b'"' => Scalar::Str(Cow::Borrowed(self.string()?)),
            b't' => {
                self.word(b"true")?;
                Scalar::Bool(true)
            }
            b'f' => {
                self.word(b"false")?;
                Scalar::Bool(false)
            }
            b'n' => {
                self.word(b"null")?;
                Scalar::Null
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b'[' => {
                // Out of line, the scanner passed by value: were its address taken,
                // the object loop would keep its place in memory, not in a register.
                let (list, at) = Scanner::list(self.bytes, self.at, items?)?;
                self.at = at;
                list
            }
            b'{' => {
                let (object, at) = Scanner::fields(self.bytes, self.at, items?)?;
                self.at = at;
                object
            }
            _ => return None,
        })
    }

    /// An array of scalars, its items put in `items` (an array or object in it is
    /// declined).
    // Kept out of line: the scalars' path, inlined into `object`, stays one loop.
    #[inline(never)]
    fn list(
        bytes: &'de [u8],
        at: usize,
        items: &mut Vec<Item<'de>>,
    ) -> Option<(Scalar<'de>, usize)> {
        let mut s = Scanner { bytes, at };
        s.eat(b'[')?;
        s.space();
        let start = items.len();
        if s.eat(b']').is_some() {
            return Some((super::items_at(start, start, false), s.at));
        }
        loop {
            // (An array or object in it is declined.)
            items.push((Cow::Borrowed(""), s.value(None)?));
            s.space();
            match s.peek()? {
                b',' => {
                    s.at += 1;
                    s.space();
                }
                b']' => {
                    s.at += 1;
                    return Some((super::items_at(start, items.len(), false), s.at));
                }
                _ => return None,
            }
        }
    }

    /// An object of scalars, its fields put in `items` (an array or object in it, or a
    /// name with an escape, is declined).
    #[inline(never)]
    fn fields(
        bytes: &'de [u8],
        at: usize,
        items: &mut Vec<Item<'de>>,
    ) -> Option<(Scalar<'de>, usize)> {
        let mut s = Scanner { bytes, at };
        s.eat(b'{')?;
        s.space();
        let start = items.len();
        if s.eat(b'}').is_some() {
            return Some((super::items_at(start, start, true), s.at));
        }
        loop {
            let name = s.string()?;
            s.space();
            s.eat(b':')?;
            s.space();
            items.push((Cow::Borrowed(name), s.value(None)?));
            s.space();
            match s.peek()? {
                b',' => {
                    s.at += 1;
                    s.space();
                }
                b'}' => {
                    s.at += 1;
                    return Some((super::items_at(start, items.len(), true), s.at));
                }
                _ => return None,
            }
        }
    }

    /// Digits from here: how many, and `value` followed by them while it fits in a u64
    /// (`None` past that, and for a run of more than 19 digits, which the caller reads
    /// the general way).
    #[inline(always)]
    fn digits(&mut self, value: Option<u64>) -> (usize, Option<u64>) {
        let start = self.at;
        // The run's own value, exact while it has at most 19 digits (< 10^19 < 2^64).
        let mut run = 0u64;
        while let Some(&b) = self.bytes.get(self.at) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            run = run.wrapping_mul(10).wrapping_add(u64::from(d));
            self.at += 1;
        }
        let n = self.at - start;
        let value = if n > 19 {
            None
        } else {
            value
                .and_then(|v| v.checked_mul(TENS[n]))
                .and_then(|v| v.checked_add(run))
        };
        (n, value)
    }

    /// A number in JSON's grammar, followed by what may follow a value.
    #[inline(always)]
    fn number(&mut self) -> Option<Scalar<'de>> {
        let start = self.at;
        let negative = self.eat(b'-').is_some();
        // The significant digits as an integer (`mantissa`), and how many of them came
        // after the point.
        let (int_digits, mut mantissa) = match self.peek()? {
            b'0' => {
                self.at += 1;
                (1, Some(0))
            }
            b'1'..=b'9' => self.digits(Some(0)),
            _ => return None,
        };
        let mut integer = true;
        let mut fraction = 0usize;
        if self.eat(b'.').is_some() {
            integer = false;
            let (n, value) = self.digits(mantissa);
            if n == 0 {
                return None;
            }
            (fraction, mantissa) = (n, value);
        }
        let mut exponent = 0i64;
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.at += 1;
            let minus = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    true
                }
                Some(b'+') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            let (n, value) = self.digits(Some(0));
            if n == 0 {
                return None;
            }
            exponent = value
                .and_then(|v| i64::try_from(v).ok())
                .map_or(i64::MAX / 2, |v| if minus { -v } else { v });
        }
        if !matches!(
            self.peek(),
            None | Some(b' ' | b'\n' | b'\r' | b'\t' | b',' | b'}' | b']')
        ) {
            return None;
        }
        if integer {
            // `-0` is a negative zero to serde_json; long integers may be u64 or f64.
            if int_digits > 18 || (negative && mantissa == Some(0)) {
                return None;
            }
            let m = i64::try_from(mantissa?).ok()?;
            return Some(Scalar::I64(if negative { -m } else { m }));
        }
        // Clinger's fast path: an integer below 2^53 times or divided by an exact power
        // of ten is one correctly rounded operation, as serde_json (with
        // `float_roundtrip`) rounds. Anything else goes to the standard parser, also
        // correctly rounded; out of range (which serde_json refuses) is declined.
        let scale = exponent.saturating_sub(fraction as i64);
        let exact = mantissa.filter(|m| *m <= 1 << 53).and_then(|m| {
            let m = m as f64;
            match scale {
                0..=22 => Some(m * POWERS[scale as usize]),
                -22..0 => Some(m / POWERS[(-scale) as usize]),
                _ => None,
            }
        });
        let v = match exact {
            Some(v) => {
                if negative {
                    -v
                } else {
                    v
                }
            }
            None => std::str::from_utf8(&self.bytes[start..self.at])
                .ok()?
                .parse()
                .ok()?,
        };
        v.is_finite().then_some(Scalar::F64(v))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fields, Scalar};

    /// What the scanner makes of `{"D": <text>}`: `None` when it declines.
    fn scanned(text: &str) -> Option<f64> {
        let names = vec!["D".to_string()];
        let mut fields = Fields {
            patterns: super::super::name_patterns(&names),
            names: &names,
            exact: vec![None],
            loose: vec![None],
            items: Vec::new(),
            duplicate: false,
        };
        let record = format!(r#"{{"D": {text}}}"#);
        if !super::object(record.as_bytes(), &mut fields) {
            return None;
        }
        match fields.exact[0].take() {
            Some(Scalar::F64(v)) => Some(v),
            Some(Scalar::I64(v)) => Some(v as f64),
            _ => panic!("{text}: not a number"),
        }
    }

    /// Each slot of `fields` as text (`-` where empty).
    fn slots(fields: &Fields) -> String {
        let show = |s: &Option<Scalar>| match s {
            None => "-".to_string(),
            Some(Scalar::I64(v)) => v.to_string(),
            Some(Scalar::U64(v)) => v.to_string(),
            Some(Scalar::F64(v)) => format!("{v:?}"),
            Some(Scalar::Str(v)) => format!("{v:?}"),
            Some(_) => "other".to_string(),
        };
        let exact: Vec<String> = fields.exact.iter().map(show).collect();
        let loose: Vec<String> = fields.loose.iter().map(show).collect();
        format!("{exact:?} {loose:?} duplicate={}", fields.duplicate)
    }

    /// Field names next to the columns' (longer, shorter, in another case, not ASCII,
    /// near the record's end, where a one-load match could be fooled) land in the slots
    /// serde_json's reading puts them in.
    #[test]
    fn names_land_where_serde_json_puts_them() {
        use serde::Deserializer;
        let names: Vec<String> = ["SPEED", "SPEED_X", "\u{c9}T\u{c9}", "A_NAME_OF_15_BY", "A"]
            .map(String::from)
            .to_vec();
        let records = [
            r#"{"SPEED":1,"SPEED_X":2,"ÉTÉ":3,"A_NAME_OF_15_BY":4,"A":5}"#,
            r#"{"SPEED_X":1,"SPEED":2}"#,
            r#"{"SPEEDY":1,"SPEED":2,"SPEED_XY":3}"#,
            r#"{"SPEE":1,"speed":2,"SPEED_":3}"#,
            r#"{"SPEED":1}"#,
            r#"{"A":1}"#,
            r#"{"AB":1,"A":2}"#,
            r#"{"A_NAME_OF_15_BYTES":1,"A_NAME_OF_15_BY":2}"#,
            r#"{"A_NAME_OF_15_B":1,"a_name_of_15_by":2}"#,
            r#"{"SPEED":1,"SPEED":2}"#,
            r#"{"ÉTÉS":1,"ÉtÉ":2,"ÉTÉ":3}"#,
            r#"{"SPEED" :1, "SPEED_X"  :  2}"#,
        ];
        let fresh = || Fields {
            patterns: super::super::name_patterns(&names),
            names: &names,
            exact: vec![None, None, None, None, None],
            loose: vec![None, None, None, None, None],
            items: Vec::new(),
            duplicate: false,
        };
        for record in records {
            let mut scanned = fresh();
            assert!(super::object(record.as_bytes(), &mut scanned), "{record}");
            let mut read = fresh();
            let mut de = serde_json::Deserializer::from_slice(record.as_bytes());
            assert!(de.deserialize_any(&mut read).unwrap(), "{record}");
            assert_eq!(slots(&scanned), slots(&read), "{record}");
        }
        // The one-load match is made where it can be: not for a name of 16 bytes or more.
        assert!(
            super::super::name_patterns(&names)
                .iter()
                .all(Option::is_some)
        );
        assert!(super::super::NamePattern::new("SIXTEEN_BYTES_AB").is_none());
    }

    /// Seeded decimal texts of every shape (digits before and after the point, exponents,
    /// signs, leading zeros, many digits): each the scanner reads is the very f64
    /// serde_json reads, sign of zero included; what serde_json refuses, it declines.
    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut read = 0;
        for _ in 0..200_000 {
            let mut text = String::new();
            if next(3) == 0 {
                text.push('-');
            }
            let long = if next(4) == 0 { 25 } else { 9 };
            for _ in 0..1 + next(long) {
                text.push(char::from(b'0' + next(10) as u8));
            }
            if next(3) > 0 {
                text.push('.');
                let long = if next(4) == 0 { 25 } else { 9 };
                for _ in 0..next(long) {
                    text.push(char::from(b'0' + next(10) as u8));
                }
            }
            if next(4) == 0 {
                text.push(['e', 'E'][next(2) as usize]);
                text.push_str(["", "+", "-"][next(3) as usize]);
                for _ in 0..next(4) {
                    text.push(char::from(b'0' + next(10) as u8));
                }
            }
            let serde: Option<f64> = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.as_f64());
            if let Some(v) = scanned(&text) {
                let want = serde.unwrap_or_else(|| panic!("{text}: serde_json refuses it"));
                assert_eq!(v.to_bits(), want.to_bits(), "{text}: {v} vs {want}");
                read += 1;
            }
        }
        assert!(read > 100_000, "only {read} read");
    }
}
