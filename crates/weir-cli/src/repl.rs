//! The interactive SQL shell: `weir` / `weir cli [--server URL] [--embedded]`.
//!
//! Input runs until a `;` (multi-line), history persists in `~/.weir_history`, Tab
//! completes keywords, stream/table/topic and function names, and SQL is highlighted as
//! typed. Statements go to the server over REST: SELECT and PRINT to `/query-stream`, whose
//! rows print as they arrive until LIMIT, the end, or Ctrl-C (which closes the query on
//! the server with `/close-query` and returns to the prompt); everything else to `/ksql`.
//! SET/UNSET keep properties for this session and send them with every request, as
//! ksqlDB's CLI does. `RUN SCRIPT 'file.sql'` runs a file's statements. Ctrl-D exits.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nu_ansi_term::{Color, Style};
use reedline::{
    ColumnarMenu, Completer, CompletionResult, EditCommand, Emacs, FileBackedHistory, Highlighter,
    KeyCode, KeyModifiers, MenuBuilder, Prompt, PromptEditMode, PromptHistorySearch, Reedline,
    ReedlineEvent, ReedlineMenu, Signal, Span, StyledText, Suggestion, ValidationResult, Validator,
    default_emacs_keybindings,
};
use weir_sql::ast::Statement;
use weir_sql::{ParseOptions, parse_script};

use crate::client::{Client, ClientError, PushLine};
use crate::render;

pub struct ReplOptions {
    /// The server's URL; `None` with `embedded` false means http://localhost:8088.
    pub server: Option<String>,
    /// Start a server in this process (on a free local port) and talk to it.
    pub embedded: bool,
    pub data_dir: PathBuf,
    /// With `embedded`: the plugin folder of the server inside the shell.
    pub plugin_dir: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `-f FILE`: run the file's statements and exit.
    pub file: Option<PathBuf>,
    /// `-e STATEMENTS`: run these and exit.
    pub execute: Option<String>,
    /// `--define NAME=VALUE`: variables defined before the first statement.
    pub defines: Vec<(String, String)>,
    /// `--output JSON`: entities and rows as JSON rather than tables.
    pub json: bool,
}

/// Where the shell's output goes besides the terminal: the file SPOOL names.
static SPOOL: Mutex<Option<(PathBuf, std::fs::File)>> = Mutex::new(None);

/// Writes to standard output, and to the spool file when one is open.
fn out(text: &str) {
    print!("{text}");
    let mut spool = SPOOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, f)) = spool.as_mut() {
        let _ = std::io::Write::write_all(f, text.as_bytes());
    }
}

macro_rules! say {
    () => { out("\n") };
    ($($arg:tt)*) => { out(&format!("{}\n", format!($($arg)*))) };
}

/// The parser's own words (weir-sql), highlighted and completed.
const KEYWORDS: &[&str] = weir_sql::KEYWORDS;

const HELP: &str = "\
Statements end with ';' and may span lines.
Catalog:
  SHOW STREAMS | TABLES | TOPICS | QUERIES | FUNCTIONS | PROPERTIES | VARIABLES [EXTENDED];
  DESCRIBE <stream or table> [EXTENDED];  DESCRIBE FUNCTION <name>;  EXPLAIN <query id>;
Streams and tables:
  CREATE STREAM s (id INT KEY, v DOUBLE) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1);
  CREATE TABLE t (id INT PRIMARY KEY, name STRING) WITH (KAFKA_TOPIC='t2', VALUE_FORMAT='JSON');
  CREATE STREAM fast AS SELECT * FROM s WHERE v > 50;      (a persistent query)
  CREATE TABLE counts AS SELECT id, COUNT(*) FROM s
    WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY id;            (windows: TUMBLING, HOPPING, SESSION)
  INSERT INTO s (id, v) VALUES (1, 2.5);
  DROP STREAM s [DELETE TOPIC];   DROP TABLE t;
Queries:
  SELECT ... FROM s EMIT CHANGES [LIMIT n];   push query (Ctrl-C stops it)
  SELECT * FROM counts WHERE id = 1;          pull query: a table's current rows
  PRINT <topic> [FROM BEGINNING] [LIMIT n];
  TERMINATE <query id> | ALL;   PAUSE <query id>;   RESUME <query id>;
  ASSERT [NOT EXISTS] TOPIC t [TIMEOUT 5 SECONDS];
Session:
  SET 'auto.offset.reset'='earliest';  UNSET 'auto.offset.reset';
  DEFINE name = 'value';  (use as ${name})  UNDEFINE name;
  RUN SCRIPT '/path/to/file.sql';
Shell commands (no ';' needed):
  OUTPUT [JSON | TABULAR]   SPOOL <file> | OFF   HISTORY   SERVER [url]   VERSION   help   exit
Tab completes, Ctrl-C clears the line, Ctrl-D or 'exit' quits.";

/// The shell's own commands (not statements): complete without a `;`.
const SHELL_COMMANDS: &[&str] = &["version", "server", "output", "spool", "history"];

/// The shell's state between statements.
struct Session {
    client: Client,
    props: BTreeMap<String, String>,
    /// DEFINEd variables, substituted here before a statement is sent (as ksqlDB's CLI
    /// keeps them: on the client).
    vars: weir_sql::Variables,
    interrupted: Arc<AtomicBool>,
    names: Arc<Mutex<Vec<String>>>,
    /// OUTPUT JSON: entities and rows printed as JSON.
    json: bool,
    /// What was typed this session (HISTORY; the history file holds earlier sessions').
    typed: Vec<String>,
    /// The server's URL (SERVER shows and changes it).
    base: String,
    user: Option<(String, String)>,
}

pub fn run(options: ReplOptions) -> Result<(), String> {
    let mut embedded = None;
    let base = if options.embedded {
        let config = weir_server::ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: options.data_dir.clone(),
            plugin_dir: options.plugin_dir.clone(),
            ..Default::default()
        };
        let server = weir_server::Server::start(config)?;
        let url = format!("http://{}", server.addr());
        embedded = Some(server);
        url
    } else {
        options
            .server
            .clone()
            .unwrap_or_else(|| "http://localhost:8088".into())
    };
    let user = match (&options.user, &options.password) {
        (Some(u), Some(p)) => Some((u.as_str(), p.as_str())),
        _ => None,
    };
    let client = Client::new(&base, user);
    let info = client.info().map_err(|e| match e {
        ClientError::Transport(m) => format!(
            "{m}\nIs a server running? Start one with `weir server`, or use `weir cli --embedded`."
        ),
        other => other.to_string(),
    })?;

    let banner = format!(
        "Weir {} — ksqlDB {}-compatible server at {}{}",
        env!("CARGO_PKG_VERSION"),
        info["KsqlServerInfo"]["version"].as_str().unwrap_or("?"),
        base,
        if options.embedded {
            format!(" (embedded, data in {})", options.data_dir.display())
        } else {
            String::new()
        }
    );

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // Outside the line editor (while a query streams) Ctrl-C arrives as SIGINT.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }
    let names = Arc::new(Mutex::new(Vec::new()));
    let mut vars = weir_sql::Variables::new();
    for (name, value) in &options.defines {
        vars.define(name, value);
    }
    let mut session = Session {
        client,
        props: BTreeMap::new(),
        vars,
        interrupted,
        names: names.clone(),
        json: options.json,
        typed: Vec::new(),
        base: base.clone(),
        user: options.user.clone().zip(options.password.clone()),
    };
    session.refresh_names();

    // `-e STATEMENTS`, `-f FILE`, or statements piped in (`echo 'SHOW STREAMS;' | weir
    // cli`): run in turn, as typed, and the exit status says whether all succeeded.
    let batch = match (&options.execute, &options.file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
        ),
        (None, None) if !std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("reading standard input: {e}"))?;
            Some(text)
        }
        (None, None) => None,
    };
    if let Some(text) = batch {
        session.run_text(&text);
        if let Some(server) = embedded {
            server.shutdown()?;
        }
        return match ERRORS.load(Ordering::SeqCst) {
            0 => Ok(()),
            n => Err(format!("{n} statement(s) failed")),
        };
    }

    // The banner, on a terminal only (scripts and pipes get their statements' output).
    say!("{banner}");
    say!("Type 'help' for help, Ctrl-D to exit.\n");
    let mut editor = line_editor(names)?;
    let prompt = WeirPrompt;
    loop {
        match editor.read_line(&prompt) {
            Ok(Signal::Success(buffer)) => {
                if !buffer.trim().is_empty() {
                    session.typed.push(buffer.trim().to_string());
                }
                let command = buffer
                    .trim()
                    .trim_end_matches(';')
                    .trim()
                    .to_ascii_lowercase();
                match command.as_str() {
                    "" => {}
                    "exit" | "quit" => break,
                    "help" => say!("{HELP}"),
                    _ if session.command(&command, &buffer) => {}
                    _ => session.run_text(&buffer),
                }
            }
            Ok(Signal::CtrlC) => {}
            Ok(Signal::CtrlD) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("weir: terminal error: {e}");
                break;
            }
        }
    }
    println!("Exiting Weir.");
    if let Some(server) = embedded {
        server.shutdown()?;
    }
    Ok(())
}

fn history_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_HISTORY_FILE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".weir_history")
}

fn line_editor(names: Arc<Mutex<Vec<String>>>) -> Result<Reedline, String> {
    let history = FileBackedHistory::with_file(10_000, history_path())
        .map_err(|e| format!("cannot open the history file: {e}"))?;
    let mut keys = default_emacs_keybindings();
    keys.add_binding(
        KeyModifiers::NONE,
        KeyCode::Tab,
        ReedlineEvent::UntilFound(vec![
            ReedlineEvent::Menu("completion_menu".to_string()),
            ReedlineEvent::MenuNext,
        ]),
    );
    keys.add_binding(
        KeyModifiers::ALT,
        KeyCode::Enter,
        ReedlineEvent::Edit(vec![EditCommand::InsertNewline]),
    );
    let menu = ColumnarMenu::default().with_name("completion_menu");
    Ok(Reedline::create()
        .with_history(Box::new(history))
        .with_validator(Box::new(StatementValidator))
        .with_highlighter(Box::new(SqlHighlighter))
        .with_completer(Box::new(SqlCompleter { names }))
        .with_menu(ReedlineMenu::EngineCompleter(Box::new(menu)))
        // One candidate completes at once; several complete their common prefix first.
        .with_quick_completions(true)
        .with_partial_completions(true)
        .with_edit_mode(Box::new(Emacs::new(keys))))
}

/// Errors reported so far (piped input exits non-zero after one).
static ERRORS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn error_line(message: &str) {
    ERRORS.fetch_add(1, Ordering::SeqCst);
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("{}", Color::Red.paint(one_line));
}

impl Session {
    /// Prints an entity: a table, or JSON under OUTPUT JSON.
    fn show(&self, entity: &serde_json::Value) {
        if self.json {
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(entity).unwrap_or_default()
            ));
        } else {
            out(&render::entity(entity));
        }
    }

    /// The shell's own commands (`command` lower-cased, without its `;`): SPOOL, HISTORY,
    /// SERVER, VERSION, OUTPUT. False for anything else (a statement).
    fn command(&mut self, command: &str, typed: &str) -> bool {
        let words: Vec<&str> = command.split_whitespace().collect();
        let original: Vec<&str> = typed
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .collect();
        match words.as_slice() {
            ["version"] => {
                let server = self
                    .client
                    .info()
                    .ok()
                    .and_then(|i| i["KsqlServerInfo"]["version"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                say!(
                    "CLI v{}, Server v{server} located at {}",
                    env!("CARGO_PKG_VERSION"),
                    self.base
                );
            }
            ["server"] => say!("{}", self.base),
            ["server", _] => {
                let url = original[1].to_string();
                let client = Client::new(
                    &url,
                    self.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                );
                match client.info() {
                    Ok(_) => {
                        self.client = client;
                        self.base = url;
                        say!("Server now: {}", self.base);
                        self.refresh_names();
                    }
                    Err(e) => error_line(&format!("Cannot connect to {url}: {e}")),
                }
            }
            ["output"] => say!("{}", if self.json { "JSON" } else { "TABULAR" }),
            ["output", mode] => match *mode {
                "json" => self.json = true,
                "tabular" => self.json = false,
                other => error_line(&format!("Unknown output format '{other}': JSON or TABULAR")),
            },
            ["spool"] => {
                let spool = SPOOL.lock().unwrap_or_else(|e| e.into_inner());
                match spool.as_ref() {
                    Some((path, _)) => say!("Spooling to {}", path.display()),
                    None => say!("Not spooling"),
                }
            }
            ["spool", "off"] => {
                let closed = SPOOL.lock().unwrap_or_else(|e| e.into_inner()).take();
                match closed {
                    Some((path, _)) => say!("Stopped spooling to {}", path.display()),
                    None => say!("Not spooling"),
                }
            }
            ["spool", _] => {
                let path = PathBuf::from(original[1].trim_matches('\''));
                match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                {
                    Ok(f) => {
                        say!("Spooling to {}", path.display());
                        *SPOOL.lock().unwrap_or_else(|e| e.into_inner()) = Some((path, f));
                    }
                    Err(e) => error_line(&format!("Cannot spool to {}: {e}", path.display())),
                }
            }
            ["history"] => {
                // Earlier sessions' (the history file), then this one's.
                let earlier = std::fs::read_to_string(history_path()).unwrap_or_default();
                let lines: Vec<String> = earlier
                    .lines()
                    .map(str::to_string)
                    .chain(self.typed.iter().cloned())
                    .collect();
                for (i, line) in lines.iter().enumerate() {
                    say!("{:>5}  {line}", i + 1);
                }
            }
            _ => return false,
        }
        true
    }

    /// Runs every statement of `text` in turn; a failing one is reported and the rest run.
    fn run_text(&mut self, text: &str) {
        for parsed in parse_script(
            text,
            ParseOptions {
                allow_cli_commands: true,
            },
        ) {
            match parsed.resolve(&self.vars) {
                Ok(stmt) => self.run_statement(
                    &stmt,
                    &format!("{};", parsed.resolved_text(&self.vars).trim()),
                ),
                Err(e) => error_line(&format!("Syntax error: {e}")),
            }
        }
    }

    fn run_statement(&mut self, stmt: &Statement, text: &str) {
        match stmt {
            Statement::Query(_) | Statement::Print(_) => self.push(text),
            Statement::SetProperty { name, value } => {
                if let Some(warning) = weir_engine::settings::unknown_key_warning(name) {
                    eprintln!("{}", Color::Yellow.paint(format!("Warning: {warning}")));
                }
                let old = self.props.insert(name.clone(), value.clone());
                say!(
                    "Successfully changed local property '{name}'{} to '{value}'.",
                    old.map(|o| format!(" from '{o}'")).unwrap_or_default()
                );
            }
            Statement::UnsetProperty { name } => match self.props.remove(name) {
                Some(old) => {
                    say!("Successfully unset local property '{name}' (value was '{old}').")
                }
                None => error_line(&format!("Property '{name}' was not set")),
            },
            Statement::RunScript { path } => self.run_script(Path::new(path)),
            Statement::DefineVariable { .. } | Statement::UndefineVariable { .. } => {
                if let Some(weir_sql::Applied::NotDefined(warning)) = self.vars.apply(stmt) {
                    eprintln!("{}", Color::Yellow.paint(warning));
                }
            }
            Statement::List {
                what: weir_sql::ast::ListKind::Variables,
                ..
            } => {
                let list: Vec<serde_json::Value> = self
                    .vars
                    .iter()
                    .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
                    .collect();
                self.show(&serde_json::json!({"@type": "variables", "variables": list}));
            }
            _ => match self.client.ksql(text, &self.props) {
                Ok(entities) => {
                    // INSERT VALUES answers no entity, as ksqlDB's does.
                    for e in &entities {
                        self.show(e);
                        // Its warnings (a refused plugin file, say), less the ones about
                        // this shell's properties, said once when they were SET.
                        let said: Vec<String> = self
                            .props
                            .keys()
                            .filter_map(|k| weir_engine::settings::unknown_key_warning(k))
                            .collect();
                        for w in e["warnings"].as_array().into_iter().flatten() {
                            if let Some(m) = w["message"].as_str()
                                && !said.iter().any(|s| s == m)
                            {
                                eprintln!("{}", Color::Yellow.paint(format!("Warning: {m}")));
                            }
                        }
                    }
                    self.refresh_names();
                }
                Err(e) => error_line(&e.to_string()),
            },
        }
    }

    fn run_script(&mut self, path: &Path) {
        match std::fs::read_to_string(path) {
            Ok(text) => self.run_text(&text),
            Err(e) => error_line(&format!("Cannot read script {}: {e}", path.display())),
        }
    }

    /// Streams a push query's rows until it ends or Ctrl-C.
    fn push(&mut self, text: &str) {
        self.interrupted.store(false, Ordering::SeqCst);
        let stream = match self.client.query_stream(text, &self.props) {
            Ok(s) => s,
            Err(e) => return error_line(&e.to_string()),
        };
        let is_print = text.trim_start().to_ascii_uppercase().starts_with("PRINT");
        let json = self.json;
        let query_id = stream.query_id.clone();
        let widths = render::push_widths(&stream.columns);
        if json && !is_print {
            let names: Vec<&String> = stream.columns.iter().map(|(n, _)| n).collect();
            say!(
                "{}",
                serde_json::json!({"queryId": query_id, "columnNames": names})
            );
        } else if !is_print {
            let names: Vec<String> = stream.columns.iter().map(|(n, _)| n.clone()).collect();
            say!("{}", render::push_rule(&widths));
            say!("{}", render::push_line(&names, &widths));
            say!("{}", render::push_rule(&widths));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for item in stream {
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        let mut closing: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(PushLine::Row(row))) => {
                    if json {
                        say!("{}", serde_json::Value::Array(row));
                    } else {
                        let cells: Vec<String> = row.iter().map(render::cell).collect();
                        say!("{}", render::push_line(&cells, &widths));
                    }
                }
                Ok(Ok(PushLine::Text(t))) => say!("{t}"),
                Ok(Ok(PushLine::Error(m))) => error_line(&m),
                Ok(Err(e)) => {
                    if closing.is_none() {
                        error_line(&e.to_string());
                    }
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if closing.is_none() && self.interrupted.swap(false, Ordering::SeqCst) {
                        if let Err(e) = self.client.close_query(&query_id) {
                            error_line(&format!("Could not close query {query_id}: {e}"));
                        }
                        closing = Some(Instant::now());
                        say!();
                    }
                    // The server ends the stream once the query is closed; don't wait long.
                    if closing.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
                        break;
                    }
                }
            }
        }
        if !is_print && !json {
            say!("{}", render::push_rule(&widths));
        }
        if closing.is_some() {
            say!("Query terminated");
        }
    }

    /// Names for completion: streams, tables, topics and functions, from the server.
    fn refresh_names(&self) {
        let mut names = Vec::new();
        for (statement, list, key) in [
            ("SHOW STREAMS;", "streams", "name"),
            ("SHOW TABLES;", "tables", "name"),
            ("SHOW TOPICS;", "topics", "name"),
            ("SHOW FUNCTIONS;", "functions", "name"),
        ] {
            if let Ok(entities) = self.client.ksql(statement, &BTreeMap::new()) {
                for e in entities {
                    for item in e[list].as_array().into_iter().flatten() {
                        if let Some(n) = item[key].as_str() {
                            names.push(n.to_string());
                        }
                    }
                }
            }
        }
        *self.names.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }
}

struct WeirPrompt;

impl Prompt for WeirPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        Cow::Borrowed("weir")
    }
    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn render_prompt_indicator(&self, _mode: PromptEditMode) -> Cow<'_, str> {
        Cow::Borrowed("> ")
    }
    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("   > ")
    }
    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        Cow::Owned(format!("(search: {}) ", search.term))
    }
}

/// Where a statement's text stands: inside a string, a quoted name or a comment, and
/// whether the last thing outside them was a `;`.
pub fn ends_statement(text: &str) -> bool {
    #[derive(PartialEq)]
    enum In {
        Code,
        Str,
        Quoted(char),
        LineComment,
        BlockComment,
    }
    let mut state = In::Code;
    let mut last = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match state {
            In::Code => match c {
                '\'' => state = In::Str,
                '`' | '"' => state = In::Quoted(c),
                '-' if next == Some('-') => state = In::LineComment,
                '/' if next == Some('*') => {
                    state = In::BlockComment;
                    i += 1;
                }
                c if c.is_whitespace() => {}
                c => last = Some(c),
            },
            In::Str => {
                if c == '\'' {
                    if next == Some('\'') {
                        i += 1;
                    } else {
                        state = In::Code;
                        last = Some('\'');
                    }
                }
            }
            In::Quoted(q) => {
                if c == q {
                    state = In::Code;
                    last = Some(q);
                }
            }
            In::LineComment => {
                if c == '\n' {
                    state = In::Code;
                }
            }
            In::BlockComment => {
                if c == '*' && next == Some('/') {
                    state = In::Code;
                    i += 1;
                }
            }
        }
        i += 1;
    }
    matches!(state, In::Code | In::LineComment) && last == Some(';')
}

struct StatementValidator;

impl Validator for StatementValidator {
    fn validate(&self, line: &str) -> ValidationResult {
        let word = line.trim().to_ascii_lowercase();
        // The shell's own commands need no ';'.
        let first = word.split_whitespace().next().unwrap_or_default();
        if word.is_empty()
            || ["exit", "quit", "help"].contains(&word.as_str())
            || SHELL_COMMANDS.contains(&first)
            || ends_statement(line)
        {
            ValidationResult::Complete
        } else {
            ValidationResult::Incomplete
        }
    }
}

struct SqlHighlighter;

impl Highlighter for SqlHighlighter {
    fn highlight(&self, line: &str, _cursor: usize) -> StyledText {
        let mut out = StyledText::new();
        let keyword = Style::new().fg(Color::Cyan).bold();
        let string = Style::new().fg(Color::Green);
        let number = Style::new().fg(Color::Purple);
        let comment = Style::new().fg(Color::DarkGray);
        let plain = Style::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let start = i;
            let style = if c == '\'' {
                i += 1;
                while i < chars.len() {
                    if chars[i] == '\'' {
                        if chars.get(i + 1) == Some(&'\'') {
                            i += 1;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    i += 1;
                }
                string
            } else if c == '-' && chars.get(i + 1) == Some(&'-') {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                comment
            } else if c.is_ascii_digit() {
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                number
            } else if c.is_alphanumeric() || c == '_' {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i]
                    .iter()
                    .collect::<String>()
                    .to_ascii_uppercase();
                if KEYWORDS.contains(&word.as_str()) {
                    keyword
                } else {
                    plain
                }
            } else {
                i += 1;
                plain
            };
            out.push((style, chars[start..i].iter().collect()));
        }
        out
    }
}

struct SqlCompleter {
    names: Arc<Mutex<Vec<String>>>,
}

/// Completions for the word that ends at `pos`: keywords and known names, matched
/// case-insensitively, in lower case when the user typed lower case (unquoted names are
/// case-insensitive; a name with lower-case letters of its own is offered as it is).
pub fn completions(line: &str, pos: usize, names: &[String]) -> Vec<(String, usize)> {
    let before = &line[..pos.min(line.len())];
    let start = before
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map(|i| i + 1)
        .unwrap_or(0);
    let word = &before[start..];
    if word.is_empty() {
        return vec![];
    }
    let upper = word.to_ascii_uppercase();
    let lower_typed = word.chars().all(|c| !c.is_ascii_uppercase());
    let mut out: Vec<String> = KEYWORDS
        .iter()
        .filter(|k| k.starts_with(&upper))
        .map(|k| k.to_string())
        .chain(
            names
                .iter()
                .filter(|n| n.to_ascii_uppercase().starts_with(&upper))
                .cloned(),
        )
        .map(|n| {
            let plain = n.chars().all(|c| !c.is_ascii_lowercase());
            if lower_typed && plain {
                n.to_ascii_lowercase()
            } else {
                n
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out.into_iter().map(|s| (s, start)).collect()
}

impl Completer for SqlCompleter {
    fn complete(&mut self, line: &str, pos: usize) -> CompletionResult {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let suggestions: Vec<Suggestion> = completions(line, pos, &names)
            .into_iter()
            .map(|(value, start)| Suggestion {
                value,
                span: Span::new(start, pos),
                append_whitespace: true,
                ..Default::default()
            })
            .collect();
        CompletionResult::fresh(suggestions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_complete_at_a_semicolon_outside_strings_and_comments() {
        assert!(ends_statement("SHOW STREAMS;"));
        assert!(ends_statement("SELECT *\nFROM s\nEMIT CHANGES;  "));
        assert!(!ends_statement("SELECT *\nFROM s"));
        assert!(!ends_statement("INSERT INTO s VALUES ('a;"));
        assert!(ends_statement("INSERT INTO s VALUES ('it''s;');"));
        assert!(!ends_statement("SHOW STREAMS -- ;"));
        assert!(ends_statement("SHOW STREAMS; -- done"));
        assert!(!ends_statement("SHOW /* ; */ STREAMS"));
    }

    #[test]
    fn completion_offers_keywords_and_names_for_the_word_at_the_cursor() {
        let names = vec![
            "PAGEVIEWS".to_string(),
            "PAGES_BY_USER".to_string(),
            "UCASE".to_string(),
        ];
        let got = completions("select * from PAGE", 18, &names);
        assert_eq!(
            got,
            vec![
                ("PAGES_BY_USER".to_string(), 14),
                ("PAGEVIEWS".to_string(), 14)
            ]
        );
        assert_eq!(
            completions("describe pagev", 14, &names),
            vec![("pageviews".to_string(), 9)]
        );
        let got = completions("sel", 3, &names);
        assert_eq!(got, vec![("select".to_string(), 0)]);
        assert!(completions("select ", 7, &names).is_empty());
    }
}
