//! How the REPL shows results: aligned tables for listings and descriptions, a fixed-width
//! table that grows a row at a time for push queries.

use serde_json::Value;

/// A table with columns as wide as their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            s.push_str(&format!(" {cell:<w$} |"));
        }
        s.trim_end_matches('|').trim_end().to_string()
    };
    let rule: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("-");
    let mut out = String::new();
    out.push_str(&line(headers.to_vec()));
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    out
}

/// A cell as the user reads it: strings bare, NULL for null, JSON for the rest.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        other => cell(other),
    }
}

/// Column widths for a push query's rows, which are not known in advance.
pub fn push_widths(columns: &[(String, String)]) -> Vec<usize> {
    columns
        .iter()
        .map(|(name, ty)| {
            let by_type = match ty.as_str() {
                "BOOLEAN" => 7,
                "INTEGER" | "INT" => 11,
                "BIGINT" | "DOUBLE" | "TIMESTAMP" => 20,
                _ => 24,
            };
            name.chars().count().max(by_type)
        })
        .collect()
}

/// One line of a push query's table: cells padded to their widths (a longer value is
/// shown whole, pushing the rest of its line along).
pub fn push_line(cells: &[String], widths: &[usize]) -> String {
    let mut s = String::from("|");
    for (c, w) in cells.iter().zip(widths) {
        s.push_str(&format!("{c:<w$}|"));
    }
    s
}

pub fn push_rule(widths: &[usize]) -> String {
    let mut s = String::from("+");
    for w in widths {
        s.push_str(&"-".repeat(*w));
        s.push('+');
    }
    s
}

fn type_name(schema: &Value) -> String {
    let t = schema["type"].as_str().unwrap_or("");
    match t {
        "ARRAY" => format!("ARRAY<{}>", type_name(&schema["memberSchema"])),
        "MAP" => format!("MAP<STRING, {}>", type_name(&schema["memberSchema"])),
        "STRUCT" => format!(
            "STRUCT<{}>",
            schema["fields"]
                .as_array()
                .map(|fs| fs
                    .iter()
                    .map(|f| format!("{} {}", s(&f["name"]), type_name(&f["schema"])))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "DECIMAL" => format!(
            "DECIMAL({}, {})",
            schema["parameters"]["precision"], schema["parameters"]["scale"]
        ),
        other => other.to_string(),
    }
}

fn fields_table(fields: &Value) -> String {
    let rows: Vec<Vec<String>> = fields
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    let key = match (f["type"].as_str(), f["headerKey"].as_str()) {
                        (Some("KEY"), _) => " (key)".to_string(),
                        (Some("HEADER"), Some(k)) => format!(" (header('{k}'))"),
                        (Some("HEADER"), None) => " (headers)".to_string(),
                        _ => String::new(),
                    };
                    vec![s(&f["name"]), format!("{}{key}", type_name(&f["schema"]))]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["Field", "Type"], &rows)
}

fn queries_rows(queries: &Value) -> Vec<Vec<String>> {
    queries
        .as_array()
        .map(|qs| {
            qs.iter()
                .map(|q| {
                    vec![
                        s(&q["id"]),
                        s(&q["queryType"]),
                        s(&q["state"]),
                        q["sinks"]
                            .as_array()
                            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        q["sinkKafkaTopics"]
                            .as_array()
                            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        s(&q["queryString"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

const QUERY_HEADERS: [&str; 6] = [
    "Query ID",
    "Query Type",
    "Status",
    "Sink Name",
    "Sink Kafka Topic",
    "Query String",
];

fn source_description(d: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!("{:<14}: {}\n", "Name", s(&d["name"])));
    out.push_str(&format!("{:<14}: {}\n", "Type", s(&d["type"])));
    out.push_str(&format!("{:<14}: {}\n", "Kafka topic", s(&d["topic"])));
    out.push_str(&format!(
        "{:<14}: {} (key) / {} (value)\n",
        "Formats",
        s(&d["keyFormat"]),
        s(&d["valueFormat"])
    ));
    out.push_str(&format!(
        "{:<14}: {} partition(s), replication {}\n",
        "Partitions",
        s(&d["partitions"]),
        s(&d["replication"])
    ));
    if !s(&d["timestamp"]).is_empty() {
        out.push_str(&format!("{:<14}: {}\n", "Timestamp", s(&d["timestamp"])));
    }
    out.push('\n');
    out.push_str(&fields_table(&d["fields"]));
    if d["extended"] == true {
        for (title, key) in [
            ("Queries that write from this STREAM", "writeQueries"),
            ("Queries that read from this STREAM", "readQueries"),
        ] {
            let rows = queries_rows(&d[key]);
            if !rows.is_empty() {
                out.push_str(&format!("\n{title}\n"));
                out.push_str(&table(&QUERY_HEADERS, &rows));
            }
        }
        if !s(&d["statistics"]).is_empty() {
            out.push_str(&format!(
                "\n{:<14}: {}\n",
                "Statistics",
                s(&d["statistics"])
            ));
        }
        if !s(&d["errorStats"]).is_empty() {
            out.push_str(&format!("{:<14}: {}\n", "Errors", s(&d["errorStats"])));
        }
    }
    out
}

/// How the REPL shows one `/ksql` entity.
pub fn entity(e: &Value) -> String {
    let list = |key: &str| e[key].as_array().cloned().unwrap_or_default();
    match e["@type"].as_str().unwrap_or("") {
        "currentStatus" => table(&["Message"], &[vec![s(&e["commandStatus"]["message"])]]),
        "streams" | "tables" => {
            let key = if e["@type"] == "streams" {
                "streams"
            } else {
                "tables"
            };
            let title = if key == "streams" {
                "Stream Name"
            } else {
                "Table Name"
            };
            let rows: Vec<Vec<String>> = list(key)
                .iter()
                .map(|x| {
                    vec![
                        s(&x["name"]),
                        s(&x["topic"]),
                        s(&x["keyFormat"]),
                        s(&x["valueFormat"]),
                        s(&x["isWindowed"]),
                    ]
                })
                .collect();
            table(
                &[
                    title,
                    "Kafka Topic",
                    "Key Format",
                    "Value Format",
                    "Windowed",
                ],
                &rows,
            )
        }
        "variables" => {
            let rows: Vec<Vec<String>> = list("variables")
                .iter()
                .map(|v| vec![s(&v["name"]), s(&v["value"])])
                .collect();
            table(&["Variable Name", "Value"], &rows)
        }
        "warning_entity" => format!("{}\n", s(&e["message"])),
        "assert_topic" | "assert_schema" | "assert_source" => {
            let name = [&e["topicName"], &e["subject"], &e["sourceName"]]
                .into_iter()
                .find(|v| v.is_string())
                .map(s)
                .unwrap_or_default();
            let what = match e["@type"].as_str() {
                Some("assert_topic") => "Topic".to_string(),
                Some("assert_schema") => "Schema".to_string(),
                _ => {
                    let t = s(&e["sourceType"]).to_ascii_lowercase();
                    let mut c = t.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                }
            };
            let verb = if e["exists"] == true {
                "exists"
            } else {
                "does not exist"
            };
            table(&["Message"], &[vec![format!("{what} {name} {verb}")]])
        }
        "kafka_topics" => {
            let rows: Vec<Vec<String>> = list("topics")
                .iter()
                .map(|t| {
                    let replicas = t["replicaInfo"].as_array().cloned().unwrap_or_default();
                    vec![
                        s(&t["name"]),
                        replicas.len().to_string(),
                        replicas.iter().map(s).collect::<Vec<_>>().join(" "),
                    ]
                })
                .collect();
            table(&["Kafka Topic", "Partitions", "Partition Replicas"], &rows)
        }
        "queries" => table(&QUERY_HEADERS, &queries_rows(&e["queries"])),
        "properties" => {
            let rows: Vec<Vec<String>> = list("properties")
                .iter()
                .map(|p| vec![s(&p["name"]), s(&p["scope"]), s(&p["value"])])
                .collect();
            table(&["Property", "Scope", "Value"], &rows)
        }
        "function_names" => {
            let rows: Vec<Vec<String>> = list("functions")
                .iter()
                .map(|f| vec![s(&f["name"]), s(&f["type"]), s(&f["category"])])
                .collect();
            table(&["Function Name", "Type", "Category"], &rows)
        }
        "type_list" => {
            let rows: Vec<Vec<String>> = e["types"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(n, t)| vec![n.clone(), type_name(t)])
                        .collect()
                })
                .unwrap_or_default();
            table(&["Type Name", "Schema"], &rows)
        }
        "sourceDescription" => source_description(&e["sourceDescription"]),
        "source_descriptions" => list("sourceDescriptions")
            .iter()
            .map(source_description)
            .collect::<Vec<_>>()
            .join("\n"),
        "describe_function" => {
            let mut out = String::new();
            for (label, key) in [
                ("Name", "name"),
                ("Author", "author"),
                ("Version", "version"),
                ("Overview", "description"),
                ("Type", "type"),
                ("Path", "path"),
            ] {
                out.push_str(&format!("{label:<12}: {}\n", s(&e[key])));
            }
            for f in list("functions") {
                let args = f["arguments"].as_array().cloned().unwrap_or_default();
                if args.is_empty() && s(&f["returnType"]).is_empty() {
                    // A built-in: its syntax.
                    if !s(&f["description"]).is_empty() {
                        out.push_str(&format!("{:<12}: {}\n", "Syntax", s(&f["description"])));
                    }
                    continue;
                }
                let args: Vec<String> = args
                    .iter()
                    .map(|a| format!("{} {}", s(&a["name"]), s(&a["type"])))
                    .collect();
                out.push_str(&format!(
                    "{:<12}: {}({}) -> {}\n{:<12}  {}\n",
                    "Variation",
                    s(&e["name"]),
                    args.join(", "),
                    s(&f["returnType"]),
                    "",
                    s(&f["description"])
                ));
            }
            out
        }
        "queryDescription" => {
            let q = &e["queryDescription"];
            let mut out = String::new();
            out.push_str(&format!("{:<12}: {}\n", "ID", s(&q["id"])));
            out.push_str(&format!("{:<12}: {}\n", "SQL", s(&q["statementText"])));
            if !s(&q["state"]).is_empty() {
                out.push_str(&format!("{:<12}: {}\n", "Status", s(&q["state"])));
            }
            for e in q["queryErrors"].as_array().into_iter().flatten() {
                out.push_str(&format!("{:<12}: {}\n", "Error", s(&e["errorMessage"])));
            }
            out.push('\n');
            out.push_str(&fields_table(&q["fields"]));
            out.push_str(&format!(
                "\nSources     : {}\nSinks       : {}\n\nExecution plan\n--------------\n{}\n",
                q["sources"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                q["sinks"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                s(&q["executionPlan"]),
            ));
            out
        }
        "query_descriptions" => list("queryDescriptions")
            .iter()
            .map(|q| {
                entity(&serde_json::json!({"@type": "queryDescription", "queryDescription": q}))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => serde_json::to_string_pretty(e).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listings_are_aligned_tables() {
        let out = entity(&json!({"@type": "streams", "streams": [
            {"name": "PAGEVIEWS", "topic": "pv", "keyFormat": "KAFKA", "valueFormat": "JSON", "isWindowed": false},
            {"name": "S", "topic": "a-much-longer-topic", "keyFormat": "KAFKA", "valueFormat": "DELIMITED", "isWindowed": false},
        ]}));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with(" Stream Name | Kafka Topic "), "{out}");
        // Every cell of a column starts at the same place.
        let col = lines[0].find("Kafka Topic").unwrap();
        assert_eq!(lines[2].find("pv").unwrap(), col, "{out}");
        assert_eq!(lines[3].find("a-much-longer-topic").unwrap(), col, "{out}");
    }

    #[test]
    fn a_description_shows_key_columns_and_nested_types() {
        let out = entity(&json!({"@type": "sourceDescription", "sourceDescription": {
        "name": "S", "type": "STREAM", "topic": "s", "keyFormat": "KAFKA", "valueFormat": "JSON",
        "partitions": 1, "replication": 1, "extended": false, "timestamp": "",
        "fields": [
            {"name": "ID", "schema": {"type": "BIGINT", "fields": null, "memberSchema": null}, "type": "KEY"},
            {"name": "TAGS", "schema": {"type": "ARRAY", "fields": null, "memberSchema": {"type": "STRING", "fields": null, "memberSchema": null}}},
        ]}}));
        assert!(out.contains("BIGINT (key)"), "{out}");
        assert!(out.contains("ARRAY<STRING>"), "{out}");
    }
}
