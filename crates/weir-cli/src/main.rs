//! The `weir` command: the interactive shell (`weir`, `weir cli`), the server
//! (`weir server`), headless runs (`weir run`), script checks (`weir check`), benchmarks
//! (`weir bench`) and the ksqlDB conformance harness (`weir conformance`).

use weir_cli::{bench, check, conformance, repl, run};
use weir_engine::settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory a batch frees is used again by the next one: mimalloc keeps it a second before
/// giving it back to the OS (its default, 10 ms, returns it between batches and takes
/// fresh zeroed pages for the next, a page fault per 4 KiB).
fn keep_freed_memory() {
    // SAFETY: sets a process-wide option of the allocator; takes no pointers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
}

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a streaming SQL engine that speaks ksqlDB's SQL"
)]
struct Cli {
    /// Without a subcommand: the interactive shell against http://localhost:8088.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ksqlDB-compatible REST API (HTTP/1.1 and HTTP/2 on one port; TLS with
    /// an https:// address) and the web console.
    Server {
        #[arg(long, value_name = "ADDRESS:PORT", help = settings::flag_help("listeners"), value_parser = |s: &str| weir_server::listen_address(s).map(|_| s.to_string()))]
        listen: Option<String>,
        #[arg(long, help = settings::flag_help("weir.data.dir"))]
        data_dir: Option<PathBuf>,
        #[arg(long, value_name = "HOST:PORT", help = settings::flag_help("bootstrap.servers"))]
        kafka_bootstrap: Option<String>,
        #[arg(long, help = settings::flag_help("weir.auth.users.file"))]
        users_file: Option<PathBuf>,
        #[arg(long, help = settings::flag_help("weir.plugin.dir"))]
        plugin_dir: Option<PathBuf>,
        #[arg(long, value_name = "ADDRESS:PORT", help = settings::flag_help("weir.mqtt.listen"), value_parser = weir_server::listen_address)]
        mqtt_listen: Option<std::net::SocketAddr>,
        #[arg(long, value_name = "MAP", help = settings::flag_help("weir.mqtt.topic.map"))]
        mqtt_topic_map: Option<String>,
        #[arg(long, value_name = "ADDRESS:PORT", help = settings::flag_help("weir.mqtt.tls.listen"), value_parser = weir_server::listen_address)]
        mqtt_tls_listen: Option<std::net::SocketAddr>,
        #[arg(long, value_name = "PEM", help = settings::flag_help("weir.tls.certificate.file"))]
        tls_cert: Option<PathBuf>,
        #[arg(long, value_name = "PEM", help = settings::flag_help("weir.tls.key.file"))]
        tls_key: Option<PathBuf>,
        #[arg(long, value_name = "PEM", help = settings::flag_help("weir.tls.client.ca.file"))]
        tls_client_ca: Option<PathBuf>,
        /// Subscribe to an existing MQTT broker (mqtt://HOST:PORT, or mqtts://HOST:PORT for
        /// TLS) and store what it sends through the topic map, acknowledged once stored
        /// (the bridge `cli`; more bridges and their settings: weir.mqtt.bridge.<name>.* in
        /// the config file, docs/mqtt.md)
        #[arg(long, value_name = "URL", requires = "mqtt_bridge_topics")]
        mqtt_bridge: Option<String>,
        /// The MQTT topic filters --mqtt-bridge subscribes to, comma-separated (`car/#`)
        #[arg(long, value_name = "FILTERS", requires = "mqtt_bridge")]
        mqtt_bridge_topics: Option<String>,
        /// A ksqlDB-style properties file (`key=value`); flags override it. Unknown keys
        /// are warned about, naming the nearest known one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The connected-car demo, live: a server with its MQTT listener and the anomaly
    /// plugin, generated car data over MQTT, flagged events as they arrive.
    Demo {
        /// Messages to publish.
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Share of messages with an injected fault.
        #[arg(long, default_value_t = 0.05)]
        anomalies: f64,
        /// Messages a second (0: as fast as acknowledged).
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where the MQTT listener listens.
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt_listen: std::net::SocketAddr,
        /// Keep the demo's topics here (default: a temporary folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The anomaly plugin's .so [default: libanomaly.so beside this binary].
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// ONNX Runtime's library (libonnxruntime.so.1.31.1, from the onnxruntime==1.31.1
        /// wheel on PyPI) [default: ORT_DYLIB_PATH, else beside the plugin].
        #[arg(long)]
        ort_library: Option<PathBuf>,
        /// Flag scores above this [default: the built-in model's threshold].
        #[arg(long)]
        threshold: Option<f64>,
        /// Where the REST API and the web console listen (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Keep the server (and its console) up after the run, until Ctrl-C.
        #[arg(long)]
        stay: bool,
        /// Run against an existing MQTT broker at HOST:PORT (Mosquitto, say): the cars
        /// publish there, Weir bridges from it, flagged events go back to car/alerts.
        #[arg(long, value_name = "HOST:PORT")]
        bridge: Option<String>,
        /// Write `eventid,kind` of every message here [default: labels.csv in --data-dir,
        /// else weir-demo-labels.csv in the current folder].
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Generate data.
    Gen {
        #[command(subcommand)]
        what: GenCommand,
    },
    /// User-function plugins.
    Udf {
        #[command(subcommand)]
        command: UdfCommand,
    },
    /// The interactive SQL shell.
    Cli {
        /// The server's URL (as ksqlDB's CLI takes it: `weir cli http://host:8088`).
        #[arg(value_name = "SERVER")]
        server_url: Option<String>,
        /// The server's URL.
        #[arg(long, default_value = "http://localhost:8088")]
        server: String,
        /// Run the statements of this file, then exit (non-zero if any failed).
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        /// Run these statements, then exit (non-zero if any failed).
        #[arg(long, short = 'e', value_name = "STATEMENTS")]
        execute: Option<String>,
        /// Define a variable before the first statement: NAME=VALUE (repeatable).
        #[arg(long, value_name = "NAME=VALUE", value_parser = parse_define)]
        define: Vec<(String, String)>,
        /// How entities and rows are printed: TABULAR (default) or JSON.
        #[arg(long, value_name = "FORMAT", default_value = "TABULAR", value_parser = parse_output, action = clap::ArgAction::Set)]
        output: bool,
        /// Start a server inside the shell instead of connecting to one.
        #[arg(long)]
        embedded: bool,
        /// With --embedded: where the embedded log keeps topics.
        #[arg(long, default_value = "weir-data")]
        data_dir: PathBuf,
        /// With --embedded: load user functions from the `.so` plugins in this folder.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// User name for HTTP basic authentication.
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Password for HTTP basic authentication (or WEIR_PASSWORD).
        #[arg(long, short = 'p', env = "WEIR_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Parse a script of `;`-separated statements and report each one: `OK <kind>` or
    /// `ERROR line:col message`. Exits 1 if any statement fails.
    Check {
        /// The script to check; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Also accept commands only the REPL runs (RUN SCRIPT).
        #[arg(long)]
        cli: bool,
        /// After each OK, print the statement in canonical form.
        #[arg(long)]
        canonical: bool,
    },
    /// Run persistent queries headless on a data directory (the embedded log), or on a
    /// Kafka cluster, resuming those a previous run started.
    Run {
        #[arg(long, default_value = "weir-data")]
        data_dir: PathBuf,
        /// Keep topics on the Kafka cluster at HOST:PORT instead of the embedded log.
        #[arg(long)]
        kafka_bootstrap: Option<String>,
        /// A Kafka client property for a secured cluster, KEY=VALUE (`security.protocol`,
        /// `ssl.*`, `sasl.*` or any other librdkafka key); repeat for more.
        #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
        kafka_properties: Vec<String>,
        /// Statements to run first (CREATE STREAM, CREATE STREAM AS SELECT, ...).
        #[arg(long)]
        queries_file: Option<PathBuf>,
        /// Stop once every query has caught up, instead of waiting for more input.
        #[arg(long)]
        exit_when_idle: bool,
        /// Load user functions from the `.so` plugins in this folder.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// When standard output is not a terminal: milliseconds between progress lines
        /// (0: a line per step that consumed records).
        #[arg(long, default_value_t = 1000)]
        progress_every: u64,
        /// `ksql.service.id`: whose command log and checkpoints to use (a server with the
        /// same id shares them; another id keeps its own).
        #[arg(long, default_value = weir_engine::DEFAULT_SERVICE_ID)]
        service_id: String,
        /// On Kafka: how long servers sharing the service id wait for a silent one's
        /// heartbeat before taking its work (`weir.cluster.session.timeout.ms`).
        #[arg(long, default_value_t = 10_000)]
        session_timeout_ms: u64,
        /// On Kafka: never delete checkpoints no recovery needs (`weir.checkpoint.trim`
        /// false), for brokers without DeleteRecords such as tansu 0.6 on SQLite.
        #[arg(long)]
        no_checkpoint_trim: bool,
        /// Threads that run a query's partitions at once (`weir.workers`; default: one
        /// per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Run a benchmark workload and print its figures (build with --release).
    Bench {
        #[command(subcommand)]
        workload: Workload,
    },
    /// Run ksqlDB query-validation cases (one JSON object per line) and print the pass
    /// rate per tag and overall.
    Conformance {
        /// The cases file, e.g. ../shared/conformance/ksql-qtt/cases.jsonl.
        #[arg(long)]
        cases: PathBuf,
        /// Run only cases with one of these tags (comma-separated; `window_*` matches by prefix).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Skip cases with any of these tags.
        #[arg(long, value_delimiter = ',')]
        exclude_tags: Vec<String>,
        /// Write the per-case report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Seconds one case may take.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Threads a query's step may use (a GROUP BY's state in half as many shards, at least one).
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        /// Decode every batch the fast JSON and Avro paths take with the general path too,
        /// and fail (exit 1) on any difference, printing it.
        #[arg(long)]
        check_fast_paths: bool,
    },
}

#[derive(Subcommand)]
enum UdfCommand {
    /// Scaffold a plugin crate that builds to a loadable .so.
    New {
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Use this weir-udf crate instead of writing the SDK built into this binary into
        /// the new crate's sdk/ folder.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GenCommand {
    /// Car sensor messages in the demo's format (`EVENTID,r1# ... r210`), some with injected
    /// faults (spikes, flat-lines, drift, noise bursts), to MQTT, Kafka or an embedded log.
    Cars {
        /// Publish over MQTT to HOST:PORT (e.g. a `weir server --mqtt-listen`).
        #[arg(long, conflicts_with_all = ["kafka", "data_dir"])]
        mqtt: Option<std::net::SocketAddr>,
        /// Produce to the Kafka cluster at HOST:PORT.
        #[arg(long, conflicts_with = "data_dir")]
        kafka: Option<String>,
        /// Append to the embedded log in DIR (no server running on it).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The MQTT topic, or the log topic (default: car/engine/temperature for MQTT,
        /// temperature otherwise).
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, default_value_t = 2)]
        qos: u8,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Share of messages with an injected fault.
        #[arg(long, default_value_t = 0.05)]
        anomalies: f64,
        /// Messages a second (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The first event id (ids count up from it).
        #[arg(long, default_value_t = 1)]
        first_id: u64,
        /// Write `eventid,kind` for every message here.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Workload {
    /// JSON car events through a filter-and-project CSAS, with log-read and decode ceilings.
    W1 {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Run on the Kafka cluster at HOST:PORT instead of the embedded log.
        #[arg(long)]
        kafka: Option<String>,
        /// The events' value format: json, or avro (Confluent's framing, the schema in
        /// Weir's registry).
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// W2: demo-format car messages through the demo's anomaly queries with the ONNX
    /// plugin, with parse, inference, serial and row-at-a-time figures from the same run.
    W2 {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Messages scored one inference each for the row-at-a-time figure.
        #[arg(long, default_value_t = 20_000)]
        row_sample: usize,
        /// The anomaly plugin's .so [default: libanomaly.so beside this binary].
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// ONNX Runtime's library [default: ORT_DYLIB_PATH, else beside the plugin].
        #[arg(long)]
        ort_library: Option<PathBuf>,
    },
    /// W3: a tumbling-window COUNT/AVG per car, and a stream-table join to a car table.
    W3 {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Run only one of the two queries (`window` or `join`), e.g. to profile it.
        #[arg(long)]
        only: Option<String>,
        /// Run each query only on this engine (`plain` or `durable`), e.g. to profile it.
        #[arg(long)]
        engine: Option<String>,
    },
    /// A plugin scalar (one FFI call per batch) against the same function built in.
    Udf {
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 8192)]
        batch: usize,
        /// The multiply plugin's .so (default: beside this binary).
        #[arg(long)]
        plugin: Option<PathBuf>,
    },
    /// A durable GROUP BY over 10,000 keys, then a restart: disk use per topic beside
    /// the state's size, checkpoints kept, and the time to open and catch up.
    Restart {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
    },
    /// Rows over one HTTP/2 `/inserts-stream` request, each acknowledged: rows/s.
    Inserts {
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
    },
    /// Several W1 queries on the server's runtime with 1, 2, ... workers: records/s and
    /// speedup, with statement and push-row latency while they work.
    Workers {
        #[arg(long, default_value_t = 500_000)]
        events: u64,
        #[arg(long, default_value_t = 2)]
        queries: usize,
        /// Partitions of the events' topic (and of each query's sink).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Worker counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        /// The query: `w1` (the stateless filter and projection), `w3` (W3's tumbling
        /// COUNT/AVG per car) or `w3-join` (W3's stream-table join to 10,000 cars).
        #[arg(long, default_value = "w1")]
        query: String,
        /// Rounds of the worker counts, one after another (each round's speedups against
        /// its own first count; the spread printed at the end): this machine's figures
        /// move between runs of one binary.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Servers sharing a service id on one Kafka cluster (e.g. tansu): W1's projection
    /// over a 4-partition topic run by 1, 2, ... `weir run` processes, records/s each, with
    /// the broker's own read ceiling.
    Cluster {
        /// The cluster (HOST:PORT); each run uses topics of its own.
        #[arg(long)]
        kafka_bootstrap: String,
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Server counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        servers: Vec<usize>,
        /// Each server's `--workers` (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// The query: `w1` (W1's projection) or `count-by-car` (COUNT and AVG GROUP BY
        /// the key: state divided by partition between the servers).
        #[arg(long, default_value = "w1")]
        query: String,
    },
    /// Latency from an append to a push query's client on an idle engine.
    Push {
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// MQTT publishers at QoS 1 into the embedded log: messages/s and p99 publish-to-ack.
    Mqtt {
        #[arg(long, default_value_t = 100)]
        publishers: usize,
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Unacknowledged messages each publisher may have out.
        #[arg(long, default_value_t = 10)]
        inflight: usize,
        /// Also through an MQTT broker at HOST:PORT (Mosquitto, say) that Weir bridges
        /// from, after the listener's run.
        #[arg(long, value_name = "HOST:PORT")]
        bridge: Option<String>,
    },
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        return repl_exit(repl::run(repl::ReplOptions {
            server: None,
            embedded: false,
            data_dir: PathBuf::from("weir-data"),
            plugin_dir: None,
            user: None,
            password: None,
            file: None,
            execute: None,
            defines: Vec::new(),
            json: false,
        }));
    };
    match command {
        Command::Server {
            listen,
            data_dir,
            kafka_bootstrap,
            users_file,
            plugin_dir,
            mqtt_listen,
            mqtt_topic_map,
            mqtt_tls_listen,
            tls_cert,
            tls_key,
            tls_client_ca,
            mqtt_bridge,
            mqtt_bridge_topics,
            config,
        } => {
            init_logging();
            let mut cfg = weir_server::ServerConfig::default();
            if let Some(path) = config
                && let Err(e) = cfg.apply_properties_file(&path)
            {
                eprintln!("weir server: {e}");
                return ExitCode::from(2);
            }
            if let Some(l) = listen {
                cfg.listen = weir_server::listen_address(&l).expect("checked by clap");
                cfg.rest_tls = weir_server::listen_is_https(&l);
            }
            if mqtt_tls_listen.is_some() {
                cfg.mqtt_tls_listen = mqtt_tls_listen;
            }
            if let Some(p) = tls_cert {
                cfg.tls_files().certificate = p;
            }
            if let Some(p) = tls_key {
                cfg.tls_files().key = p;
            }
            if tls_client_ca.is_some() {
                cfg.tls_files().client_ca = tls_client_ca;
            }
            if let (Some(url), Some(topics)) = (mqtt_bridge, mqtt_bridge_topics) {
                let bridge = cfg.mqtt_bridges.entry("cli".into()).or_default();
                bridge.insert("url".into(), url);
                bridge.insert("topics".into(), topics);
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if kafka_bootstrap.is_some() {
                cfg.kafka_bootstrap = kafka_bootstrap;
            }
            if users_file.is_some() {
                cfg.users_file = users_file;
            }
            if plugin_dir.is_some() {
                cfg.plugin_dir = plugin_dir;
            }
            if mqtt_listen.is_some() {
                cfg.mqtt_listen = mqtt_listen;
            }
            if let Some(map) = mqtt_topic_map {
                cfg.mqtt_topic_map = map;
            }
            match weir_server::Server::start_with_signals(cfg).and_then(|s| s.wait()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            count,
            anomalies,
            rate,
            seed,
            mqtt_listen,
            data_dir,
            plugin,
            ort_library,
            threshold,
            labels,
            listen,
            stay,
            bridge,
        } => {
            let options = weir_cli::demo::DemoOptions {
                count,
                anomalies,
                rate,
                seed,
                mqtt_listen,
                data_dir,
                plugin,
                ort_library,
                threshold,
                labels,
                listen,
                stay,
                bridge,
            };
            match weir_cli::demo::demo(&options, &mut std::io::stdout()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gen {
            what:
                GenCommand::Cars {
                    mqtt,
                    kafka,
                    data_dir,
                    topic,
                    qos,
                    count,
                    anomalies,
                    rate,
                    seed,
                    first_id,
                    labels,
                },
        } => {
            use weir_cli::demo::GenTarget;
            let log_topic = || topic.clone().unwrap_or_else(|| "temperature".into());
            let target = match (mqtt, kafka, data_dir) {
                (Some(addr), _, _) => GenTarget::Mqtt {
                    addr,
                    topic: topic
                        .clone()
                        .unwrap_or_else(|| "car/engine/temperature".into()),
                    qos,
                },
                (_, Some(bootstrap), _) => GenTarget::Kafka {
                    bootstrap,
                    topic: log_topic(),
                },
                (_, _, Some(dir)) => GenTarget::Embedded {
                    dir,
                    topic: log_topic(),
                },
                _ => {
                    eprintln!(
                        "weir gen cars: say where: --mqtt HOST:PORT, --kafka HOST:PORT or --data-dir DIR"
                    );
                    return ExitCode::from(2);
                }
            };
            match weir_cli::demo::gen_cars(
                &target,
                count,
                anomalies,
                rate,
                seed,
                first_id,
                labels.as_deref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir gen cars: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Udf {
            command: UdfCommand::New { name, dir, sdk },
        } => match weir_cli::scaffold::new_plugin(&name, &dir, sdk.as_deref()) {
            Ok(root) => {
                println!("Created {}. Build it with:", root.display());
                println!("  cd {} && cargo build --release", root.display());
                println!("then copy target/release/lib{name}.so into the server's plugin folder.");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weir udf new: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Cli {
            server_url,
            server,
            file,
            execute,
            define,
            output,
            embedded,
            data_dir,
            plugin_dir,
            user,
            password,
        } => {
            // `-u` without `-p`: asked for, as ksqlDB's CLI does.
            let password = match (&user, password) {
                (Some(_), None) => match rpassword::prompt_password("Enter password: ") {
                    Ok(p) => Some(p),
                    Err(e) => {
                        eprintln!("weir cli: cannot read the password: {e}");
                        return ExitCode::from(2);
                    }
                },
                (_, p) => p,
            };
            repl_exit(repl::run(repl::ReplOptions {
                server: Some(server_url.unwrap_or(server)),
                embedded,
                data_dir,
                plugin_dir,
                user,
                password,
                file,
                execute,
                defines: define,
                json: output,
            }))
        }
        Command::Check {
            file,
            cli,
            canonical,
        } => check::run(file.as_deref(), cli, canonical),
        Command::Run {
            data_dir,
            queries_file,
            kafka_bootstrap,
            kafka_properties,
            exit_when_idle,
            plugin_dir,
            progress_every,
            service_id,
            session_timeout_ms,
            no_checkpoint_trim,
            workers,
        } => match kafka_client(&kafka_properties).and_then(|client| {
            run::run(
                (
                    &service_id,
                    std::time::Duration::from_millis(session_timeout_ms),
                    weir_engine::InternalTopics {
                        trim_checkpoints: !no_checkpoint_trim,
                        ..Default::default()
                    },
                ),
                &data_dir,
                queries_file.as_deref(),
                exit_when_idle,
                kafka_bootstrap.as_deref().map(|b| (b, &client)),
                plugin_dir.as_deref(),
                (
                    std::time::Duration::from_millis(progress_every),
                    workers.unwrap_or_else(weir_engine::runtime::default_workers),
                ),
            )
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir run: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload:
                Workload::W3 {
                    events,
                    only,
                    engine,
                },
        } => match bench::w3(events, only.as_deref(), engine.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload:
                Workload::W2 {
                    events,
                    row_sample,
                    plugin,
                    ort_library,
                },
        } => match bench::w2(
            events,
            row_sample,
            plugin.as_deref(),
            ort_library.as_deref(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload:
                Workload::W1 {
                    events,
                    kafka,
                    format,
                },
        } => match bench::w1(events, kafka.as_deref(), &format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload:
                Workload::Udf {
                    rows,
                    batch,
                    plugin,
                },
        } => match bench::udf(rows, batch, plugin.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload:
                Workload::Mqtt {
                    publishers,
                    messages,
                    inflight,
                    bridge,
                },
        } => match bench::mqtt(publishers, messages, inflight).and_then(|()| match &bridge {
            Some(b) => bench::mqtt_bridged(b, publishers, messages, inflight),
            None => Ok(()),
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload: Workload::Restart { events },
        } => match bench::restart(events) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload: Workload::Inserts { rows },
        } => match bench::inserts(rows) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload:
                Workload::Workers {
                    events,
                    queries,
                    partitions,
                    workers,
                    query,
                    repeat,
                },
        } => match bench::workers(events, queries, partitions, &workers, &query, repeat) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload:
                Workload::Cluster {
                    kafka_bootstrap,
                    events,
                    servers,
                    workers,
                    query,
                },
        } => match bench::cluster(
            &kafka_bootstrap,
            events,
            &servers,
            workers.unwrap_or_else(weir_engine::runtime::default_workers),
            &query,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            workload: Workload::Push { samples },
        } => match bench::push_latency(samples) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Conformance {
            cases,
            tags,
            exclude_tags,
            report,
            timeout,
            parallelism,
            check_fast_paths,
        } => {
            if check_fast_paths {
                weir_format::differential::enable();
            }
            let code = run_conformance(
                &cases,
                tags,
                exclude_tags,
                report.as_deref(),
                timeout,
                parallelism,
            );
            if !check_fast_paths {
                return code;
            }
            let mismatches = weir_format::differential::take_mismatches();
            println!(
                "fast paths: {} records checked against the general path, {} batches differ",
                weir_format::differential::compared(),
                mismatches.len()
            );
            for m in &mismatches {
                println!("  {m}");
            }
            if mismatches.is_empty() {
                code
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn repl_exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Structured log lines (`key=value` fields) on standard error; `RUST_LOG` filters them.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run_conformance(
    cases: &std::path::Path,
    tags: Vec<String>,
    exclude_tags: Vec<String>,
    report: Option<&std::path::Path>,
    timeout: u64,
    parallelism: usize,
) -> ExitCode {
    let all = match conformance::load_cases(cases) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let selection = conformance::Selection {
        tags,
        exclude_tags,
        timeout: std::time::Duration::from_secs(timeout),
        parallelism,
    };
    // Panics inside functions are contained and recorded per case; keep the table readable.
    std::panic::set_hook(Box::new(|_| {}));
    let selected = all
        .iter()
        .filter(|c| conformance::selected(c, &selection))
        .count();
    let mut progress = weir_cli::progress::Progress::new(
        "weir conformance",
        "cases",
        Some(selected as u64),
        weir_cli::progress::Stream::Stderr,
        std::time::Duration::from_secs(10),
    );
    let (mut passed, mut failed) = (0, 0);
    let results = conformance::run_cases_with(&all, &selection, &mut |r| {
        if r.passed {
            passed += 1;
        } else {
            failed += 1;
        }
        progress.note(format!("{passed} passed, {failed} failed"));
        progress.add(1);
    });
    progress.finish();
    conformance::print_table(&results);
    if let Some(path) = report {
        let text =
            serde_json::to_string_pretty(&conformance::report_json(&results)).expect("serializes");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("weir conformance: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// `--define NAME=VALUE`.
fn parse_define(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, got '{s}'")),
    }
}

/// `--output JSON | TABULAR`: true for JSON.
fn parse_output(s: &str) -> Result<bool, String> {
    match s.to_ascii_uppercase().as_str() {
        "JSON" => Ok(true),
        "TABULAR" => Ok(false),
        _ => Err(format!("expected JSON or TABULAR, got '{s}'")),
    }
}

/// `--kafka-property KEY=VALUE`s as Kafka client properties, each judged by librdkafka.
fn kafka_client(properties: &[String]) -> Result<weir_kafka::ClientProperties, String> {
    let mut client = weir_kafka::ClientProperties::new();
    for p in properties {
        let (key, value) = p
            .split_once('=')
            .ok_or_else(|| format!("--kafka-property {p}: expected KEY=VALUE"))?;
        client
            .set(key.trim(), value.trim())
            .map_err(|e| format!("--kafka-property {e}"))?;
    }
    Ok(client)
}
