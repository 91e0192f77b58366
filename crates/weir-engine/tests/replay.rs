//! A restart replays what the catalog is, not its whole history: streams created and
//! dropped, INSERT INTO queries started and terminated, are left out of the replay; the
//! queries that remain keep their ids and resume from their checkpoints, writing nothing
//! twice, and a new query takes an id none had before.

mod common;

use std::sync::Arc;

use common::{contents, insert_nums as insert, query_ids as ids, source_names as names};
use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig};

#[test]
fn a_restart_leaves_dead_history_out_and_keeps_ids_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let log = Arc::new(EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap());
        (log.clone(), Engine::open(log).unwrap())
    };
    let (before_names, before_ids) = {
        let (_, mut e) = open();
        e.execute_sql(
            "CREATE STREAM nums (v INT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);\n\
             SET 'auto.offset.reset'='earliest';\n\
             CREATE STREAM first AS SELECT v FROM nums;",
        )
        .unwrap();
        // History: 40 streams created and dropped, 10 INSERT INTO queries started and
        // terminated, a derived stream dropped after its query, another dropped with it.
        for i in 0..40 {
            e.execute_sql(&format!(
                "CREATE STREAM tmp{i} (v INT) WITH (kafka_topic='tmp{i}', value_format='JSON', partitions=1);\n\
                 DROP STREAM tmp{i};"
            ))
            .unwrap();
        }
        for _ in 0..10 {
            let outcome = e
                .execute_sql("INSERT INTO first SELECT v FROM nums;")
                .unwrap();
            let weir_engine::Outcome::QueryStarted { query_id, .. } = &outcome[0] else {
                panic!("{outcome:?}");
            };
            e.execute_sql(&format!("TERMINATE {query_id};")).unwrap();
        }
        e.execute_sql(
            "CREATE STREAM gone AS SELECT v FROM nums;\n\
             TERMINATE CSAS_GONE_11;\n\
             DROP STREAM gone;\n\
             CREATE STREAM last AS SELECT v * 2 AS w FROM nums;\n\
             CREATE STREAM gone2 AS SELECT v FROM nums;\n\
             DROP STREAM gone2;",
        )
        .unwrap();
        insert(&mut e, 0);
        (names(&e), ids(&e))
    };
    assert_eq!(before_ids, ["CSAS_FIRST_0", "CSAS_LAST_12"]);
    let (log, mut e) = open();
    let (applied, skipped) = e.replay_stats();
    println!("replay: {applied} commands applied, {skipped} left out as dead history");
    assert_eq!(skipped, 40 * 2 + 10 * 2 + 3 + 2);
    assert_eq!((names(&e), ids(&e)), (before_names, before_ids));
    // Both queries resume where they were: nothing written twice.
    insert(&mut e, 5);
    assert_eq!(contents(log.as_ref(), "FIRST").concat().len(), 10);
    assert_eq!(contents(log.as_ref(), "LAST").concat().len(), 10);
    // A new query's id is one none had.
    let outcome = e
        .execute_sql("CREATE STREAM newest AS SELECT v FROM nums;")
        .unwrap();
    let weir_engine::Outcome::QueryStarted { query_id, .. } = &outcome[0] else {
        panic!("{outcome:?}");
    };
    assert_eq!(query_id, "CSAS_NEWEST_14");
}
