//! The REPL as a person uses it: `weir cli` runs in a tmux pane, keys go in with
//! `send-keys`, and the test reads the screen with `capture-pane`. It also copies a plugin
//! into the running server's folder and calls it from the shell.

mod common;

use std::time::{Duration, Instant};

use common::Tmux;

#[test]
fn a_person_creates_a_stream_inserts_rows_watches_them_and_cancels_with_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let server = weir_server::Server::start(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        plugin_dir: Some(plugins.clone()),
        ..Default::default()
    })
    .unwrap();
    let command = format!(
        "env WEIR_HISTORY_FILE={} {} cli --server http://{}",
        dir.path().join("history").display(),
        env!("CARGO_BIN_EXE_weir"),
        server.addr()
    );
    let tmux = Tmux::start("weir-test", &command, 150, 50);
    tmux.wait_for("Type 'help'", 1);

    // Multi-line input runs at the ';'.
    tmux.line("CREATE STREAM vehicles (id INT KEY, speed DOUBLE)");
    tmux.line("  WITH (kafka_topic='cars', value_format='JSON', partitions=1);");
    tmux.wait_for("Stream created", 1);

    // Tab completes keywords and the new stream's name.
    tmux.type_text("DESCRI");
    tmux.key("Tab");
    tmux.type_text("veh");
    tmux.key("Tab");
    tmux.type_text(";");
    tmux.key("Enter");
    let screen = tmux.wait_for("INTEGER (key)", 1);
    assert!(screen.contains("DESCRIBE vehicles ;"), "{screen}");
    assert!(screen.contains("Kafka topic   : cars"), "{screen}");

    tmux.statement("INSERT INTO vehicles (id, speed) VALUES (1, 88.5);");
    tmux.statement("INSERT INTO vehicles (id, speed) VALUES (2, 61.25);");
    tmux.statement("SET 'auto.offset.reset'='earliest';");
    tmux.wait_for("Successfully changed local property 'auto.offset.reset'", 1);

    // A bad statement: one clear line, and the shell goes on.
    tmux.statement("SELEC oops;");
    tmux.wait_for("Syntax error", 1);

    tmux.line("SELECT * FROM vehicles EMIT CHANGES;");
    let screen = tmux.wait_for("|61.25", 1);
    assert!(screen.contains("|ID"), "{screen}");
    assert!(screen.contains("88.5"), "{screen}");
    // A row that arrives while the query runs (its first rows are on screen) shows up too.
    let inserted = ureq::post(format!("http://{}/ksql", server.addr()))
        .send(r#"{"ksql": "INSERT INTO vehicles (id, speed) VALUES (3, 123.75);"}"#)
        .unwrap();
    assert_eq!(inserted.status().as_u16(), 200);
    tmux.wait_for("|123.75", 1);

    // Ctrl-C ends the query on the server and returns to the prompt.
    tmux.key("C-c");
    tmux.wait_for("Query terminated", 1);
    let screen = tmux.statement("SHOW QUERIES;");
    assert!(screen.contains("Query ID"), "{screen}");
    assert!(
        !screen.contains("transient_"),
        "the push query still runs:\n{screen}"
    );

    // A plugin copied into the running server's folder is callable from the shell.
    let built = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("debug/libmultiply.so");
    assert!(
        built.exists(),
        "{} not built: cargo build --workspace",
        built.display()
    );
    std::fs::copy(&built, plugins.join("multiply.so")).unwrap();
    let copied = Instant::now();
    let listed = || {
        let body = ureq::post(format!("http://{}/ksql", server.addr()))
            .send(r#"{"ksql": "SHOW FUNCTIONS;"}"#)
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        body.contains("PLUGIN (multiply)")
    };
    while !listed() {
        assert!(
            copied.elapsed() < Duration::from_secs(15),
            "MULTIPLY never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("MULTIPLY callable {:?} after the copy", copied.elapsed());
    tmux.line("SELECT id, MULTIPLY(id, 1000) AS m FROM vehicles EMIT CHANGES LIMIT 3;");
    let screen = tmux.wait_for("|3000", 1);
    assert!(
        screen.contains("|1000") && screen.contains("|2000"),
        "{screen}"
    );

    // A table from an aggregation, and a pull query answered from its state.
    tmux.statement(
        "CREATE TABLE fastest AS SELECT id, MAX(speed) AS top FROM vehicles GROUP BY id;",
    );
    tmux.wait_for("CTAS_FASTEST", 1);
    // The table fills in the background: ask again, as a person would, until the row is
    // there (each answer is read after its own statement).
    let pull = "SELECT * FROM fastest WHERE id = 3;";
    let asked = Instant::now();
    loop {
        let screen = tmux.statement(pull);
        let answer = &screen[screen.rfind(pull).unwrap() + pull.len()..];
        if answer.contains("|TOP") && answer.contains("123.75") {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the pull query never showed the row:\n{screen}"
        );
    }

    // Ctrl-D exits.
    tmux.key("C-d");
    tmux.wait_for("Exiting Weir.", 1);
    server.shutdown().unwrap();
}

/// The shell's own commands and habits a ksqlDB user has: the password asked for when
/// `-u` comes without `-p`, OUTPUT, SPOOL, HISTORY, VERSION, SERVER, and help.
#[test]
fn a_person_logs_in_and_uses_the_shells_commands() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:secret\n").unwrap();
    let server = weir_server::Server::start(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        users_file: Some(users),
        ..Default::default()
    })
    .unwrap();
    let spool = dir.path().join("spool.txt");
    let command = format!(
        "env -u WEIR_PASSWORD WEIR_HISTORY_FILE={} {} cli http://{} -u alice",
        dir.path().join("history").display(),
        env!("CARGO_BIN_EXE_weir"),
        server.addr()
    );
    let tmux = Tmux::start("weir-test-cmds", &command, 150, 50);
    tmux.wait_for("Enter password:", 1);
    tmux.line("secret");
    tmux.wait_for("Type 'help'", 1);

    tmux.line("VERSION");
    tmux.wait_for("CLI v", 1);
    tmux.line("SERVER");
    tmux.wait_for(&format!("http://{}", server.addr()), 2);
    tmux.line(&format!("SPOOL {}", spool.display()));
    tmux.wait_for("Spooling to", 1);
    tmux.statement(
        "CREATE STREAM cmds (v INT) WITH (kafka_topic='cmds', value_format='JSON', partitions=1);",
    );
    tmux.wait_for("Stream created", 1);
    tmux.line("OUTPUT JSON");
    tmux.statement("SHOW STREAMS;");
    tmux.wait_for("\"@type\": \"streams\"", 1);
    tmux.line("OUTPUT TABULAR");
    tmux.line("SPOOL OFF");
    tmux.wait_for("Stopped spooling", 1);
    tmux.line("HISTORY");
    // Numbered lines: `    n  SPOOL OFF` (the typed line reads `> SPOOL OFF`).
    tmux.wait_for("  SPOOL OFF", 1);
    tmux.line("help");
    tmux.wait_for("PAUSE <query id>", 1);
    tmux.line("exit");
    let spooled = std::fs::read_to_string(&spool).unwrap();
    assert!(spooled.contains("Stream created"), "{spooled}");
    assert!(spooled.contains("\"@type\": \"streams\""), "{spooled}");
    assert!(!spooled.contains("Stopped spooling"), "{spooled}");
    server.shutdown().unwrap();
}
