//! Replaying the command log without its dead history: a start replays what the catalog
//! is, not every statement ever run.
//!
//! Each recorded command carries `counter`, the query counter after it ran, so a command
//! can be replayed with the query counter it had whatever was left out before it (query
//! ids, and with them checkpoints, stay as they were). Left out, as groups whose effects
//! are wholly undone later in the log:
//! - an `INSERT INTO ... SELECT` and the `TERMINATE` of its query;
//! - a source's lifetime: its `CREATE` (or `CREATE ... AS SELECT`, and the `TERMINATE` of
//!   that query if any: a DROP terminates it otherwise) and its `DROP`, when no other
//!   command left in between names it.
//!
//! Conservative by construction: only commands that carry a counter are left out; "names
//! it" is any identifier in the statement's text equal to the source's name; `OR
//! REPLACE`, `IF NOT EXISTS` and `TERMINATE ALL` keep what they touch. Groups nested in
//! others go first (a dropped stream read only by dropped queries goes with them).

use std::collections::BTreeSet;

use weir_sql::ast::{QueryTarget, Statement};

/// What the replay of the command log does with each command.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Per command: replayed or left out.
    pub keep: Vec<bool>,
    /// Per command: the query counter to replay it with (the one before it recorded by
    /// the command before it), when known.
    pub counter_before: Vec<Option<u64>>,
    /// The counter after the last command, when known.
    pub counter_after: Option<u64>,
}

struct Command {
    stmt: Option<Statement>,
    /// The identifiers of its text, upper-cased.
    names: BTreeSet<String>,
    counter: Option<u64>,
}

fn identifiers(sql: &str) -> BTreeSet<String> {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_uppercase)
        .collect()
}

/// The id of the query a command started, had it the counter `after` once run.
fn query_id(stmt: &Statement, after: u64) -> Option<String> {
    let n = after.checked_sub(1)?;
    match stmt {
        Statement::CreateAsSelect(c) if !c.or_replace && !c.if_not_exists => {
            let prefix = if c.query.group_by.is_some() {
                "CTAS"
            } else {
                "CSAS"
            };
            Some(format!("{prefix}_{}_{n}", c.name.value))
        }
        Statement::InsertInto { target, .. } => Some(format!("INSERTQUERY_{}_{n}", target.value)),
        _ => None,
    }
}

/// The plan for `commands` (the command log's values, in order).
pub(crate) fn plan(commands: &[(u64, Vec<u8>)]) -> Plan {
    let parsed: Vec<Command> = commands
        .iter()
        .map(|(_, value)| {
            let v: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
            let sql = v["sql"].as_str().unwrap_or_default();
            Command {
                stmt: weir_sql::parse_statement(sql).ok(),
                names: identifiers(sql),
                counter: v["counter"].as_u64(),
            }
        })
        .collect();
    let n = parsed.len();
    let mut out = Plan {
        keep: vec![true; n],
        counter_before: (0..n)
            .map(|i| match i {
                0 => parsed[0].counter.map(|_| 0),
                _ => parsed[i - 1].counter,
            })
            .collect(),
        counter_after: parsed.last().and_then(|c| c.counter),
    };
    // The query each command started (known only where the counter is).
    let started: Vec<Option<String>> = parsed
        .iter()
        .map(|c| Some(query_id(c.stmt.as_ref()?, c.counter?)?.to_uppercase()))
        .collect();
    let terminates = |c: &Command, id: &str| matches!(&c.stmt, Some(Statement::Terminate(QueryTarget::Query(q))) if q.value.eq_ignore_ascii_case(id));
    let keep = &mut out.keep;
    loop {
        let mut changed = false;
        // An INSERT INTO's query and its TERMINATE.
        for s in 0..n {
            let (Some(id), Some(Statement::InsertInto { .. })) = (&started[s], &parsed[s].stmt)
            else {
                continue;
            };
            if !keep[s] {
                continue;
            }
            if let Some(t) = (s + 1..n)
                .find(|&t| keep[t] && parsed[t].counter.is_some() && terminates(&parsed[t], id))
            {
                keep[s] = false;
                keep[t] = false;
                changed = true;
            }
        }
        // A source's lifetime, from its CREATE to its DROP.
        for d in 0..n {
            let Some(Statement::DropSource { name, .. }) = &parsed[d].stmt else {
                continue;
            };
            if !keep[d] || parsed[d].counter.is_none() {
                continue;
            }
            let name = name.value.to_uppercase();
            let creates = |c: &Command| match &c.stmt {
                Some(Statement::CreateSource(s)) => s.name.value.eq_ignore_ascii_case(&name),
                Some(Statement::CreateAsSelect(s)) => s.name.value.eq_ignore_ascii_case(&name),
                _ => false,
            };
            let Some(c) = (0..d).rev().find(|&c| keep[c] && creates(&parsed[c])) else {
                continue;
            };
            let plain = match &parsed[c].stmt {
                Some(Statement::CreateSource(s)) => !s.or_replace && !s.if_not_exists,
                Some(Statement::CreateAsSelect(s)) => !s.or_replace && !s.if_not_exists,
                _ => false,
            };
            if !plain || parsed[c].counter.is_none() {
                continue;
            }
            // Its own query's TERMINATE (a CREATE ... AS SELECT's), if any.
            let own_terminate = started[c]
                .as_ref()
                .and_then(|id| (c + 1..d).find(|&t| keep[t] && terminates(&parsed[t], id)));
            let named_between = (c + 1..d)
                .filter(|&k| keep[k] && Some(k) != own_terminate)
                .any(|k| parsed[k].names.contains(&name) || parsed[k].stmt.is_none());
            if named_between {
                continue;
            }
            keep[c] = false;
            keep[d] = false;
            if let Some(t) = own_terminate {
                keep[t] = false;
            }
            changed = true;
        }
        if !changed {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(commands: &[(&str, Option<u64>)]) -> Vec<(u64, Vec<u8>)> {
        commands
            .iter()
            .enumerate()
            .map(|(i, (sql, counter))| {
                let mut v = serde_json::json!({ "sql": sql, "properties": {} });
                if let Some(c) = counter {
                    v["counter"] = serde_json::json!(c);
                }
                (i as u64, v.to_string().into_bytes())
            })
            .collect()
    }

    #[test]
    fn dead_lifetimes_and_terminated_inserts_are_left_out_and_the_rest_kept() {
        let commands = log(&[
            (
                "CREATE STREAM S (V INT) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');",
                Some(0),
            ),
            (
                "CREATE STREAM TMP (V INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');",
                Some(0),
            ),
            ("DROP STREAM TMP;", Some(0)),
            ("CREATE STREAM OUT AS SELECT V FROM S;", Some(1)),
            ("INSERT INTO OUT SELECT V FROM S;", Some(2)),
            ("TERMINATE INSERTQUERY_OUT_1;", Some(2)),
            // Read by a query that stays: kept.
            (
                "CREATE STREAM X (V INT) WITH (KAFKA_TOPIC='x', VALUE_FORMAT='JSON');",
                Some(2),
            ),
            ("CREATE STREAM Y AS SELECT V FROM X;", Some(3)),
            ("TERMINATE CSAS_Y_2;", Some(3)),
            ("DROP STREAM X;", Some(3)),
            // A derived stream dropped with its query terminated, reading a dropped one.
            (
                "CREATE STREAM Z (V INT) WITH (KAFKA_TOPIC='z', VALUE_FORMAT='JSON');",
                Some(3),
            ),
            ("CREATE STREAM D AS SELECT V FROM Z;", Some(4)),
            ("TERMINATE CSAS_D_3;", Some(4)),
            ("DROP STREAM D;", Some(4)),
            ("DROP STREAM Z;", Some(4)),
        ]);
        let p = plan(&commands);
        let kept: Vec<usize> = (0..commands.len()).filter(|&i| p.keep[i]).collect();
        assert_eq!(kept, [0, 3, 6, 7, 8, 9]);
        assert_eq!(p.counter_before[3], Some(0));
        assert_eq!(p.counter_before[7], Some(2));
        assert_eq!(p.counter_after, Some(4));
    }

    #[test]
    fn commands_without_a_counter_are_all_kept() {
        let commands = log(&[
            (
                "CREATE STREAM TMP (V INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');",
                None,
            ),
            ("DROP STREAM TMP;", None),
        ]);
        let p = plan(&commands);
        assert_eq!(p.keep, [true, true]);
        assert_eq!(p.counter_before, [None, None]);
    }
}
