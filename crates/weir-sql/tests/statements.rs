//! Every statement form a ksqlDB user types: what it parses to, how it prints, and that
//! the printed form parses back to the same tree (sqlparser's `verified_stmt` habit).

use weir_sql::ast::*;
use weir_sql::{ParseOptions, parse_script, parse_statement};

/// Parses `sql`, checks it prints as `canonical`, and that `canonical` parses to the same tree.
fn verified(sql: &str, canonical: &str) -> Statement {
    let stmt = parse_statement(sql).unwrap_or_else(|e| panic!("{sql}\n -> {e}"));
    assert_eq!(stmt.to_string(), canonical, "printed form of {sql}");
    let again = parse_statement(canonical).unwrap_or_else(|e| panic!("{canonical}\n -> {e}"));
    assert_eq!(again, stmt, "re-parsed tree of {canonical}");
    stmt
}

/// A statement already in canonical form.
fn canonical(sql: &str) -> Statement {
    verified(sql, sql)
}

fn error(sql: &str) -> weir_sql::ParseError {
    match parse_statement(sql) {
        Ok(s) => panic!("{sql} parsed as {s}"),
        Err(e) => e,
    }
}

#[test]
fn create_stream_with_key_columns_and_properties() {
    let s = verified(
        "create stream carsensor (eventid integer KEY, `sensorInput` varchar) with (kafka_topic='temperature', value_format='DELIMITED', partitions=1);",
        "CREATE STREAM CARSENSOR (EVENTID INTEGER KEY, `sensorInput` STRING) WITH (KAFKA_TOPIC='temperature', VALUE_FORMAT='DELIMITED', PARTITIONS=1)",
    );
    let Statement::CreateSource(c) = s else {
        panic!()
    };
    assert_eq!(c.kind, SourceKind::Stream);
    assert_eq!(c.columns[0].constraint, ColumnConstraint::Key);
    assert_eq!(c.columns[1].name.value, "sensorInput");
    assert_eq!(
        c.properties.get("kafka_topic"),
        Some(&Literal::String("temperature".into()))
    );
}

#[test]
fn create_table_variants() {
    canonical(
        "CREATE OR REPLACE TABLE IF NOT EXISTS T (ID BIGINT PRIMARY KEY, V DECIMAL(4, 2)) WITH (KAFKA_TOPIC='t', FORMAT='JSON')",
    );
    canonical(
        "CREATE SOURCE TABLE T (ID STRING PRIMARY KEY, V INTEGER) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON')",
    );
    canonical(
        "CREATE SOURCE STREAM S (V INTEGER) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON', WRAP_SINGLE_VALUE=false)",
    );
    canonical("CREATE STREAM S WITH (KAFKA_TOPIC='s', VALUE_FORMAT='AVRO')");
}

#[test]
fn nested_types_and_headers() {
    canonical(
        "CREATE STREAM S (A ARRAY<ARRAY<INTEGER>>, M MAP<STRING, STRUCT<`f 1` BIGINT, G BOOLEAN>>, E STRUCT<>, B BYTES, D DATE, T TIME, TS TIMESTAMP, H ARRAY<STRUCT<KEY STRING, VALUE BYTES>> HEADERS, H1 BYTES HEADER('k1'), C ADDRESS) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON')",
    );
    verified(
        "CREATE STREAM S (A VARCHAR(10), B INT) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON')",
        "CREATE STREAM S (A STRING, B INTEGER) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON')",
    );
}

#[test]
fn create_as_select_with_every_clause() {
    let s = canonical(
        "CREATE TABLE AVG_SPEED WITH (KAFKA_TOPIC='avg', VALUE_FORMAT='JSON') AS SELECT CAR_ID, COUNT(*) AS N, AVG(SPEED) AS A FROM READINGS R WINDOW TUMBLING (SIZE 10 SECONDS, RETENTION 2 DAYS, GRACE PERIOD 5 MINUTES) WHERE (R.SPEED > 0) GROUP BY CAR_ID HAVING (COUNT(*) > 1) EMIT FINAL",
    );
    let Statement::CreateAsSelect(c) = s else {
        panic!()
    };
    let w = c.query.window.unwrap();
    assert_eq!(
        w.kind,
        WindowKind::Tumbling {
            size: Duration {
                value: 10,
                unit: TimeUnit::Seconds
            }
        }
    );
    assert_eq!(w.grace.unwrap().as_millis(), 300_000);
    assert_eq!(c.query.emit, Some(Emit::Final));
}

#[test]
fn windows_hopping_and_session() {
    verified(
        "SELECT ID, COUNT(*) FROM S WINDOW HOPPING (SIZE 30 SECOND, ADVANCE BY 10 SECONDS) GROUP BY ID EMIT CHANGES;",
        "SELECT ID, COUNT(*) FROM S WINDOW HOPPING (SIZE 30 SECONDS, ADVANCE BY 10 SECONDS) GROUP BY ID EMIT CHANGES",
    );
    canonical(
        "SELECT ID, WINDOWSTART, WINDOWEND FROM S WINDOW SESSION (1 MINUTES, GRACE PERIOD 0 MILLISECONDS) GROUP BY ID EMIT CHANGES",
    );
    canonical("SELECT ID FROM S WINDOW W1 TUMBLING (SIZE 1 HOURS) GROUP BY ID EMIT CHANGES");
}

#[test]
fn joins_with_within_and_outer_kinds() {
    verified(
        "select * from a join b within 1 second on a.id = b.id left join c on a.x = c.x full outer join d within (1 second, 2 minutes) grace period 3 seconds on a.y = d.y right join e as ee on a.z = ee.z emit changes;",
        "SELECT * FROM A INNER JOIN B WITHIN 1 SECONDS ON (A.ID = B.ID) LEFT OUTER JOIN C ON (A.X = C.X) FULL OUTER JOIN D WITHIN (1 SECONDS, 2 MINUTES) GRACE PERIOD 3 SECONDS ON (A.Y = D.Y) RIGHT OUTER JOIN E EE ON (A.Z = EE.Z) EMIT CHANGES",
    );
}

#[test]
fn partition_by_limit_and_qualified_wildcard() {
    canonical(
        "CREATE STREAM REKEYED AS SELECT S.*, UCASE(NAME) AS K FROM S PARTITION BY UCASE(NAME)",
    );
    canonical("SELECT * FROM S EMIT CHANGES LIMIT 10");
    canonical("SELECT COUNT(*) FROM S GROUP BY () EMIT CHANGES");
    verified(
        "SELECT COUNT(*) FROM S GROUP BY (A, B);",
        "SELECT COUNT(*) FROM S GROUP BY A, B",
    );
    // A predicate is a value only in parentheses.
    canonical("SELECT COUNT(*) FROM S GROUP BY (A = B)");
}

#[test]
fn ksqldb_expressions() {
    canonical("SELECT S->F1->`g`, A[1], M['k'], SPLIT(X, ',')[2], V->* FROM T");
    canonical(
        "SELECT TRANSFORM(XS, X => (X + 1)), REDUCE(M, 0, (S, K, V) => (S + V)), FILTER(XS, (X) => (X > 5)) FROM T",
    );
    canonical(
        "SELECT STRUCT(F1 := 1, `f2` := 'a'), MAP('a' := 1, CAST(null AS STRING) := 2), ARRAY[1, 2, 3], STRUCT() FROM T",
    );
    canonical(
        "SELECT CAST(X AS DECIMAL(10, 2)), CAST(Y AS ARRAY<MAP<STRING, INTEGER>>), CAST(Z AS STRUCT<A INTEGER>) FROM T",
    );
    canonical(
        "SELECT CASE WHEN (A > 1) THEN 'x' WHEN (A IS NULL) THEN 'y' ELSE 'z' END, CASE A WHEN 1 THEN 2 END FROM T",
    );
    canonical(
        "SELECT (A BETWEEN 1 AND 2), (B NOT IN (1, 2)), (C LIKE '%x!%' ESCAPE '!'), (D IS NOT DISTINCT FROM 3), (NOT E) FROM T",
    );
    canonical(
        "SELECT DATE '2024-01-01', TIME '10:00:00', TIMESTAMP '2024-01-01T10:00:00', -(-1), -9223372036854775808, 1.5E3, (A || B) FROM T",
    );
    verified(
        "SELECT a + b * c - d FROM T;",
        "SELECT (A + (B * C) - D) FROM T",
    );
    verified(
        "SELECT SUBSTRING(col1, 2), TRIM(x), CEIL(y) FROM T;",
        "SELECT SUBSTRING(COL1, 2), TRIM(X), CEIL(Y) FROM T",
    );
    verified(
        "select 'it''s' as `Quoted` from t;",
        "SELECT 'it''s' AS `Quoted` FROM T",
    );
}

#[test]
fn insert_statements() {
    canonical("INSERT INTO OUT SELECT * FROM S2");
    canonical("INSERT INTO OUT WITH (QUERY_ID='q1') SELECT * FROM S2");
    canonical("INSERT INTO CARSENSOR (EVENTID, SENSORINPUT) VALUES (99999, '2.10# 2.13')");
    canonical("INSERT INTO T VALUES (1, ARRAY['a'], STRUCT(X := 1))");
}

#[test]
fn catalog_and_admin_statements() {
    for (sql, kind) in [
        ("SHOW STREAMS", "SHOW STREAMS"),
        ("SHOW TABLES EXTENDED", "SHOW TABLES"),
        ("SHOW ALL TOPICS", "SHOW TOPICS"),
        ("SHOW TOPICS EXTENDED", "SHOW TOPICS"),
        ("SHOW QUERIES EXTENDED", "SHOW QUERIES"),
        ("SHOW PROPERTIES", "SHOW PROPERTIES"),
        ("SHOW FUNCTIONS", "SHOW FUNCTIONS"),
        ("SHOW TYPES", "SHOW TYPES"),
        ("SHOW VARIABLES", "SHOW VARIABLES"),
        ("DESCRIBE CARSENSOR", "DESCRIBE"),
        ("DESCRIBE CARSENSOR EXTENDED", "DESCRIBE"),
        ("DESCRIBE STREAMS EXTENDED", "DESCRIBE"),
        ("DESCRIBE TABLES", "DESCRIBE"),
        ("DESCRIBE FUNCTION ANOMALY", "DESCRIBE FUNCTION"),
        ("EXPLAIN CSAS_OUT_0", "EXPLAIN"),
        ("EXPLAIN SELECT * FROM S EMIT CHANGES", "EXPLAIN"),
        ("TERMINATE CSAS_OUT_0", "TERMINATE"),
        ("TERMINATE ALL", "TERMINATE"),
        ("PAUSE ALL", "PAUSE"),
        ("RESUME CTAS_T_1", "RESUME"),
        ("DROP STREAM IF EXISTS S DELETE TOPIC", "DROP STREAM"),
        ("DROP TABLE T", "DROP TABLE"),
        (
            "PRINT ANOMALYDETECTIONWITHFILTER FROM BEGINNING INTERVAL 2 LIMIT 5",
            "PRINT",
        ),
        ("PRINT `lower_topic`", "PRINT"),
        ("SET 'auto.offset.reset' = 'earliest'", "SET"),
        ("UNSET 'auto.offset.reset'", "UNSET"),
        ("DEFINE FORMAT = 'JSON'", "DEFINE"),
        ("UNDEFINE FORMAT", "UNDEFINE"),
        (
            "CREATE TYPE IF NOT EXISTS ADDRESS AS STRUCT<NUMBER INTEGER, STREET STRING>",
            "CREATE TYPE",
        ),
        ("DROP TYPE IF EXISTS ADDRESS", "DROP TYPE"),
    ] {
        assert_eq!(canonical(sql).kind(), kind, "{sql}");
    }
    verified("list streams;", "SHOW STREAMS");
    verified(
        "PRINT 'car-topic' FROM BEGINNING;",
        "PRINT `car-topic` FROM BEGINNING",
    );
}

#[test]
fn run_script_is_a_repl_command_only() {
    let e = error("RUN SCRIPT 'demo.sql';");
    assert!(
        e.message
            .contains("RUN SCRIPT is a command of the weir REPL"),
        "{e}"
    );
    let parsed = parse_script(
        "RUN SCRIPT 'demo.sql';",
        ParseOptions {
            allow_cli_commands: true,
        },
    );
    assert_eq!(
        parsed[0].result.as_ref().unwrap().to_string(),
        "RUN SCRIPT 'demo.sql'"
    );
}

#[test]
fn identifiers_follow_ksqldb_case_rules() {
    let Statement::Query(q) = parse_statement("select myCol, `myCol` from `Src`").unwrap() else {
        panic!()
    };
    let SelectItem::Expr {
        expr: Expr::Identifier(a),
        ..
    } = &q.select[0]
    else {
        panic!()
    };
    let SelectItem::Expr {
        expr: Expr::Identifier(b),
        ..
    } = &q.select[1]
    else {
        panic!()
    };
    assert_eq!(
        (
            a.value.as_str(),
            b.value.as_str(),
            q.from.source.name.value.as_str()
        ),
        ("MYCOL", "myCol", "Src")
    );
}

#[test]
fn errors_name_line_column_and_what_was_expected() {
    let e = error("CREATE STREAM S (A INT) WITH (KAFKA_TOPIC='t'\n, VALUE_FORMAT=);");
    assert_eq!(
        e.to_string(),
        "line 2:16: Syntax error at or near ')': expected a string, number or boolean"
    );
    let e = error("SELECT * FROM S WINDOW TUMBLING (SIZE 10 FORTNIGHTS)");
    assert_eq!(
        e.to_string(),
        "line 1:42: Syntax error at or near 'FORTNIGHTS': expected a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)"
    );
    let e = error("SELCT * FROM S");
    assert!(
        e.to_string()
            .starts_with("line 1:1: Syntax error at or near 'SELCT': expected ASSERT, CREATE,"),
        "{e}"
    );
    let e = error("SELECT * FROM S WHERE");
    assert_eq!(
        e.to_string(),
        "line 1:22: Syntax error at end of input: expected an expression"
    );
    let e = error("SELECT * FROM S WHERE ID IN ()");
    assert_eq!(e.position.column, 30, "{e}");
}

#[test]
fn what_ksqldb_rejects_at_parse_time_is_rejected() {
    for (sql, needle) in [
        (
            "CREATE STREAM S (ID INT PRIMARY KEY) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON')",
            "please use 'KEY' for streams",
        ),
        (
            "CREATE TABLE T (ID INT KEY) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON')",
            "please use 'PRIMARY KEY' for tables",
        ),
        (
            "SELECT 9223372036854775808 FROM S",
            "Invalid numeric literal",
        ),
        ("SELECT 1.8E308 FROM S", "Number overflows DOUBLE"),
        ("SELECT CAST(A AS NULL) FROM S", "expected a type"),
        (
            "SELECT * FROM S PARTITION BY A AND B",
            "PARTITION BY takes value expressions",
        ),
        ("SELECT * FROM EXPLODE(A)", "expected end of statement"),
        ("SELECT (SELECT 1) FROM S", "not supported"),
        ("SELECT A::INT FROM S", "not supported"),
        (
            "CREATE TABLE T (K STRING PRIMARY KEY) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', WINDOW_TYPE='Hopping', WINDOW_SIZE='30 bobs')",
            "Unknown time unit: 'BOBS'",
        ),
        (
            "CREATE TABLE T (K STRING PRIMARY KEY) WITH (KAFKA_TOPIC='t', WINDOW_TYPE='SESSION', WINDOW_SIZE='30 SECONDS')",
            "should not be set for SESSION",
        ),
        (
            "CREATE STREAM S (A INT) WITH (KAFKA_TOPIC='a', kafka_topic='b')",
            "Duplicate property name",
        ),
    ] {
        let e = error(sql);
        assert!(e.message.contains(needle), "{sql}\n -> {e}");
    }
}

#[test]
fn script_reports_each_statement_with_its_text() {
    let results = parse_script(
        "SHOW STREAMS;\n  SELECT FROM X;\n-- comment\nDESCRIBE S",
        ParseOptions::default(),
    );
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].text, "SHOW STREAMS");
    assert_eq!(results[1].start, weir_sql::Position::new(2, 3));
    assert!(results[1].result.is_err());
    assert_eq!(results[2].text, "DESCRIBE S");
    assert!(results[2].result.is_ok());
}

/// A script that defines variables and uses them runs as ksqlDB's would: each statement
/// substituted with the variables defined before it, an undefined one named in the error.
#[test]
fn variables_are_substituted_statement_by_statement() {
    let script = "DEFINE topic = 'cars'; DEFINE Name = 'CARSTREAM';\n\
                  CREATE STREAM ${name} (id INT) WITH (kafka_topic='${TOPIC}', value_format='json', partitions=${n});\n\
                  UNDEFINE name;\n\
                  SELECT * FROM ${name} EMIT CHANGES;";
    let parsed = weir_sql::parse_script(script, weir_sql::ParseOptions::default());
    assert_eq!(parsed.len(), 5);
    let mut vars = weir_sql::Variables::new();
    vars.define("n", "3");
    for p in &parsed[..2] {
        let stmt = p.resolve(&vars).unwrap();
        assert!(vars.apply(&stmt).is_some());
    }
    assert_eq!(vars.get("NAME"), Some("CARSTREAM"));
    let create = parsed[2].resolve(&vars).unwrap().to_string();
    assert!(
        create.starts_with("CREATE STREAM CARSTREAM (ID INTEGER) WITH (KAFKA_TOPIC='cars'"),
        "{create}"
    );
    assert!(create.contains("PARTITIONS=3"), "{create}");
    assert_eq!(
        vars.apply(&parsed[3].resolve(&vars).unwrap()),
        Some(weir_sql::Applied::Undefined)
    );
    let err = parsed[4].resolve(&vars).unwrap_err();
    assert_eq!(err.message, "Variable 'NAME' is not defined");
    assert_eq!(err.position, weir_sql::Position::new(4, 15));
    // Without resolving, a reference is an undefined variable, never a name.
    assert!(parsed[2].result.is_err());
}

#[test]
fn assert_statements_parse_and_print_back() {
    verified(
        "assert not exists topic 'my.topic' with (partitions=3) timeout 5 seconds",
        "ASSERT NOT EXISTS TOPIC `my.topic` WITH (PARTITIONS=3) TIMEOUT 5 SECONDS",
    );
    canonical("ASSERT TOPIC READINGS");
    canonical("ASSERT SCHEMA SUBJECT `readings-value` ID 3 TIMEOUT 100 MILLISECONDS");
    canonical("ASSERT NOT EXISTS STREAM S");
    canonical("ASSERT TABLE T TIMEOUT 1 MINUTES");
    let e = error("ASSERT SCHEMA TIMEOUT 1 SECONDS");
    assert!(e.message.contains("SUBJECT or ID"), "{e}");
    let e = error("ASSERT QUERY Q");
    assert!(e.message.contains("TOPIC, SCHEMA, STREAM or TABLE"), "{e}");
}
