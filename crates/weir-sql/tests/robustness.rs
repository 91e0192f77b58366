//! Whatever the input, the parser answers with a statement or an error: never a panic,
//! never a stack overflow. Inputs are ksqlDB's own test statements, truncated and mutated
//! by a seeded generator, plus pathological nesting. Any mutated statement that is
//! accepted must also print to SQL that parses back to the same tree.

use std::path::PathBuf;

use weir_sql::{ParseOptions, parse_script, parse_statement};

/// xorshift64*: small, seeded, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    ",",
    ";",
    "'",
    "`",
    "\"",
    "->",
    "=>",
    ":=",
    "[",
    "]",
    "<",
    ">",
    ">>",
    "<>",
    "*",
    "-",
    "--",
    "/*",
    "*/",
    " SELECT ",
    " FROM ",
    " WHERE ",
    " GROUP BY ",
    " PARTITION BY ",
    " WINDOW ",
    " TUMBLING ",
    " EMIT CHANGES ",
    " JOIN ",
    " WITHIN ",
    " ON ",
    " AS ",
    " CAST(",
    " STRUCT<",
    " ARRAY[",
    " MAP(",
    " CASE WHEN ",
    " END ",
    " NULL ",
    " KEY ",
    " PRIMARY KEY ",
    " WITH (",
    "9223372036854775808",
    "1e999",
    " x => ",
    "é",
    "\u{0}",
    "\n",
];

fn corpus() -> Vec<String> {
    let path = PathBuf::from(
        // At run time: the build cache is shared between clones, and the compile-time value
        // names the clone that built the test.
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../../shared/conformance/ksql-qtt/cases.jsonl");
    let text = std::fs::read_to_string(&path).expect("conformance cases in ../shared");
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|c| c["statements"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut Rng, s: &str) -> String {
    let mut s = s.to_string();
    for _ in 0..1 + rng.below(3) {
        let at = char_boundary(&s, rng.below(s.len() + 1));
        match rng.below(4) {
            0 => {
                let end = char_boundary(&s, at + rng.below(12));
                s.replace_range(at..end, "");
            }
            1 => s.insert_str(at, FRAGMENTS[rng.below(FRAGMENTS.len())]),
            2 => s.truncate(at),
            _ => {
                let end = char_boundary(&s, at + rng.below(20));
                let piece = s[at..end].to_string();
                s.insert_str(end, &piece);
            }
        }
    }
    s
}

/// Any statement the parser accepts prints to SQL that parses back to the same tree.
fn check_round_trip(sql: &str) -> bool {
    let Ok(stmt) = parse_statement(sql) else {
        return false;
    };
    let printed = stmt.to_string();
    let again = parse_statement(&printed)
        .unwrap_or_else(|e| panic!("accepted {sql:?}\nprinted {printed:?}\nwhich fails: {e}"));
    assert_eq!(
        again, stmt,
        "accepted {sql:?}\nprinted {printed:?}\nparses differently"
    );
    true
}

#[test]
fn truncated_statements_never_panic() {
    let mut tried = 0;
    for sql in corpus().iter().step_by(7) {
        for cut in (0..=sql.len()).filter(|i| sql.is_char_boundary(*i)) {
            let _ = parse_script(&sql[..cut], ParseOptions::default());
            tried += 1;
        }
    }
    println!("{tried} truncations parsed without a panic");
}

#[test]
fn mutated_statements_never_panic_and_accepted_ones_round_trip() {
    let corpus = corpus();
    let mut rng = Rng(0x005E_ED0F_3E1F);
    let (mut tried, mut accepted) = (0, 0);
    for _ in 0..20_000 {
        let base = &corpus[rng.below(corpus.len())];
        let sql = mutate(&mut rng, base);
        tried += 1;
        if check_round_trip(&sql) {
            accepted += 1;
        }
    }
    println!(
        "{tried} mutated statements: {accepted} accepted and round-tripped, the rest rejected with an error"
    );
}

/// Deep or long inputs get an error (or, within the limits, a statement that round-trips);
/// none may overflow the stack or take exponential time. Runs on the test harness's
/// 2 MiB thread stack, as small as a server worker's.
#[test]
fn pathological_nesting_is_an_error_not_a_crash() {
    let shapes: &[(&str, &str, &str)] = &[
        ("SELECT ", "(", "1"),
        ("SELECT ", "NOT ", "1"),
        ("SELECT ", "F(", "1"),
        ("SELECT ", "ARRAY[", "1"),
        ("SELECT ", "CASE WHEN 1 THEN ", "1"),
        ("SELECT ", "CASE ", "1"),
        ("SELECT ", "x => ", "1"),
        ("SELECT ", "INTERVAL ", "1"),
        ("SELECT ", "INTERVAL(", "1"),
        ("SELECT ", "STRUCT(A := ", "1"),
        ("SELECT CAST(A AS ", "ARRAY<", "INT"),
        ("CREATE STREAM S (A ", "STRUCT<B ", "INT"),
        ("SELECT A", "->B", ""),
        ("SELECT A", "[1]", ""),
        ("SELECT A", " + A", ""),
        ("SELECT A", " - A * A", ""),
        ("SELECT A", " IS NULL", ""),
        ("SELECT 1 FROM S WHERE A", " OR A = 1", ""),
    ];
    for (head, repeated, tail) in shapes {
        for n in [40, 999, 100_000] {
            let unit = repeated.repeat(n);
            let sql = format!("{head}{unit}{tail} FROM S");
            let results = parse_script(&sql, ParseOptions::default());
            assert_eq!(results.len(), 1, "{head}{repeated}... x{n}");
            match &results[0].result {
                Ok(stmt) => {
                    // Compare printed forms: comparing 1000-deep trees would itself recurse.
                    let printed = stmt.to_string();
                    let again = parse_statement(&printed).unwrap_or_else(|e| {
                        panic!("{head}{repeated}... x{n} prints SQL that fails: {e}")
                    });
                    assert_eq!(again.to_string(), printed, "{head}{repeated}... x{n}");
                }
                Err(e) => assert!(!e.message.is_empty()),
            }
        }
    }
}
