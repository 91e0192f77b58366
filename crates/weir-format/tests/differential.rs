//! The fast JSON path against the general one on fuzzed records (issue 23): a seeded
//! generator writes JSON values of every shape the fast path must take or decline —
//! declared and undeclared fields in any case, escaped names, duplicates, numbers in every
//! notation and at every range's edge, escapes and surrogates, nested values, values of
//! the wrong type, other top-level values, and records broken byte by byte — and every
//! record, alone and in mixed batches, must decode through the engine's entry point
//! (`Layout::decode`, fast path first) exactly as through the general path alone: the
//! same Arrow batch and the same bad records. `WEIR_FUZZ_SEED` and `WEIR_FUZZ_RECORDS`
//! pick another seed and count (the defaults run in CI).

use weir_format::differential;

/// xorshift64*: a fixed sequence per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMES: &[&str] = &[
    "B", "b", "I", "i", "L", "l", "D", "d", "S", "s", "X", "EXTRA", "S2", "", "\\u0044", "\\u0053",
    "I ", "\\u0000", "A", "a", "N", "T", "t", "R", "r", "M", "m",
];

/// Names inside a STRUCT or MAP value: its fields' in every case, others, escaped ones.
const INNER: &[&str] = &["X", "x", "Yy", "YY", "yy", "Z", "W", "", "\\u0058", "X "];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-7",
    "42",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "1.5",
    "-0.0",
    "0.1",
    "2.9",
    "-3.7",
    "1e10",
    "1E-7",
    "1e+2",
    "5e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "1e309",
    "123456789012345678901234567890",
    "0.30000000000000004",
    "3.0",
    "100.000",
    "6.02214076e23",
    "-1e-400",
];

const STRINGS: &[&str] = &[
    r#""x""#,
    r#""""#,
    r#""é\"\n""#,
    r#""\\""#,
    r#""\u00e9""#,
    r#""\ud83d\ude00""#,
    r#""\ud800""#,
    r#""12""#,
    r#""true""#,
    r#""null""#,
    r#""1.5""#,
    "\"\u{1F600}\"",
    r#""tab\there""#,
];

const OTHERS: &[&str] = &[
    "null",
    "true",
    "false",
    "[]",
    "[1, 2]",
    "{}",
    r#"{"nested": [1, {"x": null}]}"#,
    r#"[{"a": "b"}, "c"]"#,
];

fn value(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=3 => rng.pick(NUMBERS).to_string(),
        4..=6 => rng.pick(STRINGS).to_string(),
        _ => rng.pick(OTHERS).to_string(),
    }
}

fn space(rng: &mut Rng) -> &'static str {
    ["", "", "", " ", "\n", "\t ", "\r\n"][rng.below(7)]
}

/// A value of the declared column `name`'s type (or null), the kind the fast path takes.
fn fitting(rng: &mut Rng, name: &str) -> String {
    let pick = |rng: &mut Rng, items: &[&str]| rng.pick(items).to_string();
    match name.to_ascii_uppercase().as_str() {
        "B" => pick(rng, &["true", "false", "null"]),
        "I" => pick(
            rng,
            &[
                "0",
                "-7",
                "42",
                "2147483647",
                "-2147483648",
                "null",
                "1.5",
                "-3.7",
            ],
        ),
        "L" => pick(
            rng,
            &[
                "0",
                "9007199254740993",
                "-9223372036854775808",
                "9223372036854775807",
                "2.9",
                "null",
            ],
        ),
        "D" => pick(rng, NUMBERS),
        "S" => pick(rng, STRINGS),
        "A" | "N" | "T" => {
            // An array of 0 to 4 items of the column's kind (now and then another).
            if rng.below(8) == 0 {
                return pick(rng, &["null", "[]", "[[1]]", "[{}]", "1", r#""[1]""#]);
            }
            let mut text = String::from("[");
            for i in 0..rng.below(5) {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(space(rng));
                let item = match (name.to_ascii_uppercase().as_str(), rng.below(6)) {
                    (_, 0) => "null".to_string(),
                    (_, 1) => value(rng),
                    ("T", _) => pick(rng, STRINGS),
                    _ => pick(rng, NUMBERS),
                };
                text.push_str(&item);
            }
            text.push_str(space(rng));
            text.push(']');
            text
        }
        "R" | "M" => {
            // An object of 0 to 4 fields (now and then another value).
            if rng.below(8) == 0 {
                return pick(
                    rng,
                    &["null", "{}", r#"{"X": {}}"#, r#"{"Z": [1]}"#, "[]", "1"],
                );
            }
            let mut text = String::from("{");
            for i in 0..rng.below(5) {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(space(rng));
                let field = rng.pick(INNER);
                let item = match (field.to_ascii_uppercase().as_str(), rng.below(6)) {
                    (_, 0) => "null".to_string(),
                    (_, 1) => value(rng),
                    ("YY", _) => pick(rng, STRINGS),
                    _ => pick(rng, NUMBERS),
                };
                text.push_str(&format!("\"{field}\":{}{item}", space(rng)));
            }
            text.push_str(space(rng));
            text.push('}');
            text
        }
        _ => value(rng),
    }
}

fn record(rng: &mut Rng) -> Vec<u8> {
    let mut text = String::new();
    // Half the records hold values of their columns' types (and anything in undeclared
    // fields): most of them the fast path takes.
    let fit = rng.below(2) == 0;
    if rng.below(20) == 0 {
        // Not an object at the top.
        text.push_str(&value(rng));
    } else {
        text.push_str(space(rng));
        text.push('{');
        for f in 0..rng.below(8) {
            if f > 0 {
                text.push(',');
            }
            text.push_str(space(rng));
            let name = rng.pick(NAMES);
            text.push('"');
            text.push_str(name);
            text.push('"');
            text.push_str(space(rng));
            text.push(':');
            text.push_str(space(rng));
            let v = if fit { fitting(rng, name) } else { value(rng) };
            text.push_str(&v);
        }
        text.push_str(space(rng));
        text.push('}');
        text.push_str(space(rng));
    }
    let mut bytes = text.into_bytes();
    // Broken now and then: a byte changed, cut off, or something after the value.
    match rng.below(if fit { 40 } else { 12 }) {
        0 if !bytes.is_empty() => {
            let at = rng.below(bytes.len());
            let swaps = b"{}[]\",:0e-.\\ x\xff";
            bytes[at] = swaps[rng.below(swaps.len())];
        }
        1 if !bytes.is_empty() => bytes.truncate(rng.below(bytes.len())),
        2 => bytes.extend_from_slice([&b" x"[..], b"{}", b"1", b"\0"][rng.below(4)]),
        _ => {}
    }
    bytes
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzzed_records_decode_through_the_fast_path_exactly_as_through_the_general_one() {
    let seed = env("WEIR_FUZZ_SEED", 0x5EED_2026);
    let count = env("WEIR_FUZZ_RECORDS", 20_000) as usize;
    let mut rng = Rng(seed.max(1));
    let records: Vec<Vec<u8>> = (0..count).map(|_| record(&mut rng)).collect();
    // Every batch a fast path takes is decoded by the general path too (checked below).
    differential::enable();
    let mut checked = 0;
    for layout in differential::json_layouts() {
        let mut compare = |batch: &[Vec<u8>], first: usize, what: &dyn Fn() -> String| {
            let values: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            if let Err(why) = differential::compare(&layout, &values, first as u64) {
                panic!("seed {seed}: {}: {why}", what());
            }
            checked += batch.len();
        };
        // Alone: the fast path takes each record it can.
        for (i, r) in records.iter().enumerate() {
            compare(std::slice::from_ref(r), i, &|| {
                format!("record {i}: {}", String::from_utf8_lossy(r))
            });
        }
        // In batches of 1 to 64, good and bad together.
        let mut at = 0;
        while at < records.len() {
            let n = (1 + rng.below(64)).min(records.len() - at);
            compare(&records[at..at + n], at, &|| {
                format!("records {at}..{}", at + n)
            });
            at += n;
        }
    }
    let mismatches = differential::take_mismatches();
    assert!(
        mismatches.is_empty(),
        "seed {seed}: {}",
        mismatches.join("\n")
    );
    // The fast path took a good share: the comparison above is not of the general path
    // with itself.
    let fast = differential::compared();
    println!("seed {seed}: {checked} decodes compared, {fast} records through the fast path");
    assert!(
        fast as usize > checked / 10,
        "only {fast} of {checked} through the fast path"
    );
}

/// The fuzz target's body (`crates/weir-format/fuzz`) over the seeded records, 64 to an
/// input: what `cargo fuzz run json_differential` runs, on stable.
#[test]
fn the_fuzz_target_takes_the_seeded_records() {
    let seed = env("WEIR_FUZZ_SEED", 0x5EED_2026);
    let count = env("WEIR_FUZZ_RECORDS", 20_000) as usize / 4;
    let mut rng = Rng(seed.max(1));
    let records: Vec<Vec<u8>> = (0..count).map(|_| record(&mut rng)).collect();
    for chunk in records.chunks(64) {
        let input = chunk.join(&0xFEu8);
        differential::fuzz_json(&input);
    }
}
