//! `weir check`: parse a script and report every statement, so a user can lint a script
//! before running it (and so parser coverage can be measured on real scripts).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use weir_sql::{ParseOptions, parse_script};

pub fn run(file: Option<&Path>, allow_cli_commands: bool, canonical: bool) -> ExitCode {
    let script = match read_script(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir check: {e}");
            return ExitCode::from(2);
        }
    };
    let results = parse_script(&script, ParseOptions { allow_cli_commands });
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    // Variables a script DEFINEs are substituted into the statements after them.
    let mut vars = weir_sql::Variables::new();
    for stmt in &results {
        let result = stmt.resolve(&vars);
        if let Ok(s) = &result {
            vars.apply(s);
        }
        let line = match &result {
            Ok(s) if canonical => format!("OK {}: {s};", s.kind()),
            Ok(s) => format!("OK {}", s.kind()),
            Err(e) => {
                failed += 1;
                format!("ERROR {} {}", e.position, e.message)
            }
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::from(2);
        }
    }
    eprintln!("{} statement(s), {failed} error(s)", results.len());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn read_script(file: Option<&Path>) -> Result<String, String> {
    match file {
        None => read_stdin(),
        Some(p) if p == Path::new("-") => read_stdin(),
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
    }
}

fn read_stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(s)
}
