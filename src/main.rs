//! The `parley` command: run the server, mint tokens.

// No function a reader must scroll through (the limit is in clippy.toml).
#![deny(clippy::too_many_lines)]

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use parley::cluster::{Broker, Ledger, LedgerOptions};
use parley::config::{self, default_limits, Config};
use parley::hub::Hub;
use parley::store::{Durability, MemoryStore, SqliteOptions, SqliteStore, Store};
use parley::{auth, server::Server};
use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "parley",
    version,
    about = "A real-time WebSocket messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Mint a signed token for a user.
    Token(TokenArgs),
    /// Copy the database (and the token secret) consistently to a file, even while the
    /// server runs.
    Backup(BackupArgs),
    /// Put a backup in place as a data directory's database; the server must be stopped.
    Restore(RestoreArgs),
    /// Ask a running server whether it is ready (`GET /readyz`): exit 0 if it answers 200,
    /// else 1 with the reason, for container and service-manager health checks.
    Probe(ProbeArgs),
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// The server's listening address (a wildcard address is asked on loopback).
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The path to ask (`/healthz` asks only whether the process answers).
    #[arg(long, default_value = "/readyz")]
    path: String,
    /// How long to wait for the answer.
    #[arg(long, value_parser = duration, default_value = "3s")]
    timeout: Duration,
    /// The server's `--tls-cert`: ask over TLS, accepting only that certificate.
    #[arg(long, env = "PARLEY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BackupArgs {
    /// Data directory of the server.
    #[arg(long, env = "PARLEY_DATA", default_value = "parley-data")]
    data: PathBuf,
    /// File to write the copy to: a new path or a regular file (never a link or a device),
    /// outside any live data directory.
    #[arg(long)]
    to: PathBuf,
    /// Leave the data directory's token secret out of the copy; a directory restored from it
    /// then refuses every token issued before, unless its server is given the same
    /// `--secret`.
    #[arg(long)]
    without_secret: bool,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup to restore (a file `parley backup` wrote).
    #[arg(long)]
    from: PathBuf,
    /// Data directory to restore into; no server may be running on it.
    #[arg(long, env = "PARLEY_DATA", default_value = "parley-data")]
    data: PathBuf,
    /// Restore even if the directory holds a database: it is moved aside, not deleted.
    #[arg(long)]
    replace: bool,
}

/// Where state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// SQLite in the data directory: everything acknowledged survives restarts and crashes.
    Sqlite,
    /// Memory only: everything is lost when the process ends (tests, benchmarks).
    Memory,
    /// PostgreSQL at `--database-url`, shared with other nodes (with `--broker-url`).
    Postgres,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(clap::Args)]
struct SecretArgs {
    /// Secret that signs tokens; without it one is generated once and kept in the data directory.
    #[arg(long, env = "PARLEY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Data directory.
    #[arg(long, env = "PARLEY_DATA", default_value = "parley-data")]
    data: PathBuf,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    secret: SecretArgs,
    /// TOML file of settings (keys are these flags' names with `_`); flags and `PARLEY_…`
    /// environment variables override it.
    #[arg(long, env = "PARLEY_CONFIG")]
    config: Option<PathBuf>,
    /// Where state is kept.
    #[arg(long, env = "PARLEY_STORE", value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// When a commit counts as durable: `fsync` waits for the disk (survives power loss),
    /// `os` leaves flushing to the OS (survives a server crash, not an OS crash; faster).
    #[arg(long, env = "PARLEY_DURABILITY", value_enum, default_value = "fsync")]
    durability: Durability,
    /// PostgreSQL connection URL, for `--store postgres`
    /// (e.g. `postgres://parley@127.0.0.1:5432/parley`).
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Connections to PostgreSQL each node keeps.
    #[arg(long, env = "PARLEY_DATABASE_POOL", default_value_t = 16)]
    database_pool: usize,
    /// How long opening a connection to PostgreSQL may take.
    #[arg(long, env = "PARLEY_DATABASE_CONNECT_TIMEOUT", value_parser = duration, default_value = "10s")]
    database_connect_timeout: Duration,
    /// How long each piece of a request's work in PostgreSQL (a claim, a commit, a read)
    /// may take; past it the request is answered `unavailable` and `/readyz` turns 503.
    #[arg(long, env = "PARLEY_DATABASE_TIMEOUT", value_parser = duration, default_value = "5s")]
    database_timeout: Duration,
    /// How long a request waits for a free PostgreSQL connection when all are busy.
    #[arg(long, env = "PARLEY_DATABASE_POOL_WAIT", value_parser = duration, default_value = "5s")]
    database_pool_wait: Duration,
    /// Redis URL of the broker that carries frames between nodes (e.g.
    /// `redis://127.0.0.1:6379`); without it a PostgreSQL node runs alone.
    #[arg(long, env = "PARLEY_BROKER_URL", hide_env_values = true)]
    broker_url: Option<String>,
    /// PEM file of the roots that sign the broker's certificate, for a `rediss://` URL
    /// (default: the system's roots).
    #[arg(long, env = "PARLEY_BROKER_CA")]
    broker_ca: Option<PathBuf>,
    /// How long connecting to the broker, and each publish, may take: past it a node's
    /// start fails saying so, and a publish counts as failed (other nodes find the entries
    /// by polling the database).
    #[arg(long, env = "PARLEY_BROKER_TIMEOUT", value_parser = duration, default_value = "5s")]
    broker_timeout: Duration,
    /// Broker channel; every node of one cluster uses the same.
    #[arg(long, env = "PARLEY_BROKER_CHANNEL", default_value = "parley")]
    broker_channel: String,
    /// Keep recalled and deleted content this long for moderation (default: purge at once).
    #[arg(long, env = "PARLEY_RETENTION", value_parser = duration)]
    retention: Option<Duration>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Let anyone sign in to the web page by picking a handle (loopback addresses only).
    #[arg(long, env = "PARLEY_DEMO")]
    demo: bool,
    /// Log format.
    #[arg(long, env = "PARLEY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Which logs to write, in `RUST_LOG`'s syntax (`info`, `parley=debug,info`); default:
    /// `RUST_LOG`, else `info`. Set in the settings file, SIGHUP reads it again.
    #[arg(long, env = "PARLEY_LOG")]
    log: Option<String>,
    /// Whether `--log` or `PARLEY_LOG` named the filter (then the settings file does not).
    #[arg(skip)]
    log_pinned: bool,
    /// How long after sending a message may be recalled (0 disables recall).
    #[arg(long, env = "PARLEY_RECALL_WINDOW", value_parser = duration, default_value = "120s")]
    recall_window: Duration,
    /// How long after sending an InMail may be deleted for everyone (0 disables it).
    #[arg(long, env = "PARLEY_INMAIL_DELETE_WINDOW", value_parser = duration, default_value = "10m")]
    inmail_delete_window: Duration,
    /// Recalls allowed per sender per conversation per recall period.
    #[arg(long, env = "PARLEY_RECALL_PER_CONVERSATION", default_value_t = 1)]
    recall_per_conversation: u32,
    /// The period the recall allowance covers.
    #[arg(long, env = "PARLEY_RECALL_PERIOD", value_parser = duration, default_value = "24h")]
    recall_period: Duration,
    /// A sender who sent more than this many messages in the throttle window cannot recall.
    #[arg(long, env = "PARLEY_RECALL_THROTTLE_MESSAGES", default_value_t = 30)]
    recall_throttle_messages: u32,
    /// The recall throttle window (0 disables the throttle).
    #[arg(long, env = "PARLEY_RECALL_THROTTLE_WINDOW", value_parser = duration, default_value = "60s")]
    recall_throttle_window: Duration,
    /// Longest message body, in characters.
    #[arg(long, env = "PARLEY_MAX_BODY_CHARS", default_value_t = 8000)]
    max_body_chars: u32,
    /// Largest accepted frame, in bytes.
    #[arg(long, env = "PARLEY_MAX_FRAME_BYTES", default_value_t = 65536)]
    max_frame_bytes: u32,
    /// Bytes queued for one session before it is closed as a slow consumer.
    #[arg(long, env = "PARLEY_MAX_QUEUE_BYTES", default_value_t = 1 << 20)]
    max_queue_bytes: usize,
    /// Messages, state changes (reads, recalls, deletes) and outstanding notifications of
    /// recently used conversations kept in memory (sixteen remembered request ids count as
    /// one); beyond it the conversations in use shrink to their newest messages and the least
    /// recently used are forgotten, read back from the database when next needed (SQLite
    /// store only).
    #[arg(long, env = "PARLEY_CACHE_ENTRIES", default_value_t = parley::config::DEFAULT_CACHE_ENTRIES)]
    cache_entries: usize,
    /// Live sessions one user may hold (0: no cap).
    #[arg(long, env = "PARLEY_MAX_SESSIONS_PER_USER", default_value_t = 16)]
    max_sessions_per_user: u32,
    /// Sustained requests per second per user (0: no limit).
    #[arg(long, env = "PARLEY_REQUESTS_PER_SECOND", default_value_t = 20)]
    requests_per_second: u32,
    /// Requests per user in a burst above the sustained rate.
    #[arg(long, env = "PARLEY_REQUEST_BURST", default_value_t = 60)]
    request_burst: u32,
    /// New connections per second from one address, bursts of ten times that (0: no limit).
    #[arg(
        long,
        env = "PARLEY_CONNECTIONS_PER_IP_PER_SECOND",
        default_value_t = 50
    )]
    connections_per_ip_per_second: u32,
    /// How often idle connections are pinged (0: never).
    #[arg(long, env = "PARLEY_PING_INTERVAL", value_parser = duration, default_value = "30s")]
    ping_interval: Duration,
    /// Close connections silent this long, pongs included (0: never).
    #[arg(long, env = "PARLEY_IDLE_TIMEOUT", value_parser = duration, default_value = "90s")]
    idle_timeout: Duration,
    /// How long shutdown waits for sessions to close.
    #[arg(long, env = "PARLEY_SHUTDOWN_GRACE", value_parser = duration, default_value = "5s")]
    shutdown_grace: Duration,
    /// Time a connection has to send its whole request head (an idle keep-alive one, to
    /// start its next request) before it is closed.
    #[arg(long, env = "PARLEY_HEADER_TIMEOUT", value_parser = duration, default_value = "10s")]
    header_timeout: Duration,
    /// Connections still sending their request head, overall; past it the one that has
    /// waited longest is closed to make room.
    #[arg(long, env = "PARLEY_MAX_HANDSHAKES", default_value_t = 1024)]
    max_handshakes: usize,
    /// Connections still sending their request head from one address; past it 429.
    #[arg(long, env = "PARLEY_MAX_HANDSHAKES_PER_IP", default_value_t = 64)]
    max_handshakes_per_ip: usize,
    /// Open connections, sessions included (0: the open-file limit less 272); past it only
    /// `/healthz` is answered.
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS", default_value_t = 0)]
    max_connections: usize,
    /// Web pages (origins, comma-separated, or `*`) allowed to open sessions; empty: pages
    /// from the host the client connects to. Clients that send no Origin are not checked.
    #[arg(long, env = "PARLEY_ALLOWED_ORIGINS", default_value = "", value_parser = parley::origin::AllowedOrigins::parse)]
    allowed_origins: parley::origin::AllowedOrigins,
    /// Reverse proxies (addresses and CIDR ranges, comma-separated) whose `Forwarded` or
    /// `X-Forwarded-For` header names the client, for the per-address limits and the logs.
    #[arg(long, env = "PARLEY_TRUSTED_PROXIES", default_value = "", value_parser = parley::forwarded::TrustedProxies::parse)]
    trusted_proxies: parley::forwarded::TrustedProxies,
    /// PEM certificate chain (leaf first): serve `wss://` and `https://` on the main port.
    /// Read again on SIGHUP.
    #[arg(long, env = "PARLEY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PARLEY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve `/metrics` on this address (say a private interface) instead of the main port.
    #[arg(long, env = "PARLEY_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The user (handle) the token is for.
    user: String,
    #[command(flatten)]
    secret: SecretArgs,
    /// Grant operator rights (listing reports).
    #[arg(long)]
    admin: bool,
    /// How long the token is valid (at most 30 days).
    #[arg(long, value_parser = duration, default_value = "24h")]
    ttl: Duration,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Parse the command line; for `serve --config FILE`, the file's settings fill in every
/// flag not given on the command line or in the environment.
fn parse_cli() -> anyhow::Result<(Cli, ArgMatches)> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&args);
    let log_pinned = matches.subcommand_matches("serve").is_some_and(|serve| {
        matches!(
            serve.value_source("log"),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    });
    let matches = match matches.subcommand() {
        Some(("serve", serve)) => match serve.get_one::<PathBuf>("config") {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                let extra = config::file_arguments(&text, |id| {
                    serve.try_get_raw(id).ok()?;
                    let source = serve.value_source(id);
                    Some(!matches!(source, None | Some(ValueSource::DefaultValue)))
                })
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Cli::command()
                    .try_get_matches_from(args.into_iter().chain(extra))
                    .map_err(|e| file_setting_error(e, path, &text))?
            }
            None => matches,
        },
        _ => matches,
    };
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Serve(serve) = &mut cli.command {
        serve.log_pinned = log_pinned;
    }
    Ok((cli, matches))
}

/// A refused value read from the settings file, said as the file's key (`max_body_chars`),
/// not as the flag it became; other errors as clap words them.
fn file_setting_error(e: clap::Error, path: &std::path::Path, text: &str) -> anyhow::Error {
    use clap::error::{ContextKind, ContextValue};
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => flag.clone(),
        _ => e.exit(),
    };
    let name = flag.trim_start_matches("--");
    let name = name.split([' ', '=']).next().unwrap_or(name);
    let key = name.replace('-', "_");
    let in_file = text
        .parse::<toml::Table>()
        .is_ok_and(|table| table.contains_key(&key));
    if !in_file {
        e.exit();
    }
    let rendered = e.to_string();
    let reason = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .replace(&format!(" for '{flag}'"), "");
    let expected = Cli::command()
        .find_subcommand("serve")
        .and_then(|serve| serve.get_arguments().find(|a| a.get_id() == key.as_str()))
        .and_then(|arg| arg.get_help().map(|help| help.to_string()))
        .map(|help| format!(" (the setting: {help})"))
        .unwrap_or_default();
    anyhow::anyhow!("{}: setting `{key}`: {reason}{expected}", path.display())
}

/// The effective `serve` settings as TOML, the secret left out.
fn effective_settings(serve: &ArgMatches) -> String {
    let skip = ["config", "print_config", "secret", "help"];
    let mut out = String::new();
    for arg in Cli::command()
        .find_subcommand("serve")
        .expect("serve exists")
        .get_arguments()
    {
        let id = arg.get_id().as_str();
        let Ok(Some(values)) = serve.try_get_raw(id) else {
            continue;
        };
        if skip.contains(&id) {
            continue;
        }
        let value: Vec<_> = values.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = value.join(",");
        let value = match id {
            "database_url" | "broker_url" => parley::config::redacted(&value),
            _ => value,
        };
        // Switches print as booleans, so the output reads back as a settings file.
        let value = match (value.parse::<i64>(), value.parse::<bool>()) {
            (Ok(n), _) => toml::Value::Integer(n),
            (_, Ok(b)) => toml::Value::Boolean(b),
            _ => toml::Value::String(value),
        };
        out.push_str(&format!("{id} = {value}\n"));
    }
    out
}

/// jemalloc instead of the system's malloc: the fan-out path allocates and frees a frame's
/// bytes on one thread and its parts on others, which glibc's arenas handle poorly. On the
/// two-core machine of BENCHMARKS.md it cut server CPU per delivered frame from 8.0–8.3 to
/// 6.2–6.4 µs (`parley-load fanout`, default store), with the same RSS per idle connection.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    parley::tls::install_default_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let (cli, matches) = parse_cli()?;
    if let Command::Serve(args) = &cli.command {
        if args.print_config {
            let serve = matches.subcommand_matches("serve").expect("serve parsed");
            print!("{}", effective_settings(serve));
            return Ok(());
        }
    }
    let (json, filter) = match &cli.command {
        Command::Serve(a) => (a.log_format == "json", a.log.clone()),
        _ => (false, None),
    };
    let logs = parley::logs::init(json, &filter.unwrap_or_else(parley::logs::default_filter))?;
    match cli.command {
        Command::Token(args) => token(args),
        Command::Serve(args) => serve(*args, logs).await,
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args),
        Command::Probe(args) => probe(args).await,
    }
}

/// Print what the server answered; fail (exit 1) unless it is ready.
async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let target = parley::probe::local_target(args.listen);
    let tls = match &args.tls_cert {
        Some(cert) => Some(parley::tls::pinned_connector(cert)?),
        None => None,
    };
    let body = parley::probe::probe(target, &args.path, args.timeout, tls.as_ref()).await?;
    println!("{body}");
    Ok(())
}

/// Longest `--ttl` a minted token may have: tokens cannot be revoked one by one yet, so a
/// leaked one is valid until it expires.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Mint a token, only with the secret the server signs with: never one made up here, which
/// the server would refuse.
fn token(args: TokenArgs) -> anyhow::Result<()> {
    auth::check_user(&args.user)
        .map_err(|e| anyhow::anyhow!("cannot mint for {:?}: {e}", args.user))?;
    if args.ttl.is_zero() || args.ttl > MAX_TOKEN_TTL {
        anyhow::bail!(
            "--ttl must be more than 0 and at most {}",
            humantime::format_duration(MAX_TOKEN_TTL)
        );
    }
    let secret = match args.secret.secret.as_deref().filter(|s| !s.is_empty()) {
        Some(given) => given.as_bytes().to_vec(),
        None => auth::stored_secret(&args.secret.data)?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no secret to sign with: {} has none (a server keeps one there once it has \
                     started on that directory) and no --secret or PARLEY_SECRET was given",
                    args.secret.data.join("secret").display()
                )
            })?
            .into_bytes(),
    };
    println!("{}", auth::mint(&secret, &args.user, args.admin, args.ttl));
    Ok(())
}

fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let copied = parley::store::backup::backup(&args.data, &args.to, !args.without_secret)?;
    let secret = match (copied.secret, args.without_secret) {
        (true, _) => "with the token secret",
        (false, true) => "without the token secret (--without-secret)",
        (false, false) => {
            "without a token secret: the directory keeps none (tokens are signed with --secret)"
        }
    };
    println!(
        "backed up {} to {}, {secret}",
        args.data.display(),
        args.to.display()
    );
    Ok(())
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let restored = parley::store::backup::restore(&args.from, &args.data, args.replace)?;
    println!(
        "restored {} into {}",
        args.from.display(),
        args.data.display()
    );
    if let Some(aside) = &restored.moved_aside {
        println!("the database it replaced is at {}", aside.display());
    }
    if !restored.secret {
        println!(
            "the backup holds no token secret: tokens issued before are refused unless the \
             server is given the secret that signed them (--secret)"
        );
    }
    Ok(())
}

async fn serve(args: ServeArgs, logs: parley::logs::Logs) -> anyhow::Result<()> {
    // The soft open-file limit is often 1,024, a few hundred clients; the hard one is what
    // the operator allows. Connections are capped below it (`--max-connections`).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => tracing::debug!(files, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let config = server_config(&args)?;
    let hub = start_hub(&args, &config).await?;
    let mut server = Server::bind_with_hub(&config, hub)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start on {}: {e}", config.listen))?;
    if args.demo {
        server.enable_demo().map_err(anyhow::Error::msg)?;
    }
    let addr = server.local_addr();
    // Tools that start parley on port 0 read this line to find it.
    println!("listening on {addr}");
    if let Some(metrics) = server.metrics_addr() {
        println!("metrics on {metrics}");
    }
    std::io::stdout().flush()?;
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    tracing::info!(%addr, "parley serving WebSocket at {scheme}://{addr}/ws");
    let started_with = match &args.config {
        Some(path) => std::fs::read_to_string(path)?.parse()?,
        None => toml::Table::new(),
    };
    let reloadable = parley::hangup::Reloadable {
        tls: config.tls.clone(),
        logs,
        settings: args.config.clone(),
        started_with,
        log_pinned: args.log_pinned,
    };
    server.run(shutdown_signal(reloadable)).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The limits `hello` announces, from the flags.
fn limits_of(args: &ServeArgs) -> parley_protocol::Limits {
    let mut limits = default_limits();
    limits.recall_window_ms = ms(args.recall_window);
    limits.inmail_delete_window_ms = ms(args.inmail_delete_window);
    limits.recall_per_conversation = args.recall_per_conversation;
    limits.recall_period_ms = ms(args.recall_period);
    limits.recall_throttle_messages = args.recall_throttle_messages;
    limits.recall_throttle_window_ms = ms(args.recall_throttle_window);
    limits.max_body_chars = args.max_body_chars;
    limits.max_frame_bytes = args.max_frame_bytes;
    limits.max_sessions_per_user = args.max_sessions_per_user;
    limits.requests_per_second = args.requests_per_second;
    limits.request_burst = args.request_burst;
    limits.ping_interval_ms = ms(args.ping_interval);
    limits.idle_timeout_ms = ms(args.idle_timeout);
    limits
}

/// The server's configuration from the flags (the secret read or made on the way).
fn server_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let secret = auth::load_or_create_secret(args.secret.secret.as_deref(), &args.secret.data)?;
    Ok(Config {
        listen: args.listen,
        secret,
        data: args.secret.data.clone(),
        limits: limits_of(args),
        max_queue_bytes: args.max_queue_bytes,
        cache_entries: args.cache_entries,
        shutdown_grace: args.shutdown_grace,
        connections_per_ip_per_second: args.connections_per_ip_per_second,
        edge: parley::admission::EdgeLimits {
            header_timeout: args.header_timeout,
            max_handshakes: args.max_handshakes.max(1),
            max_handshakes_per_ip: args.max_handshakes_per_ip.max(1),
            max_connections: args.max_connections,
        },
        allowed_origins: args.allowed_origins.clone(),
        trusted_proxies: args.trusted_proxies.clone(),
        metrics_listen: args.metrics_listen,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(parley::tls::Tls::from_files(cert, key)?),
            _ => None,
        },
    })
}

/// The hub over the store the flags name: a cluster node on PostgreSQL (and Redis), or a
/// single process on its own store.
async fn start_hub(args: &ServeArgs, config: &Config) -> anyhow::Result<Arc<Hub>> {
    if args.store != StoreKind::Postgres {
        let store = local_store(args.store, config, args.durability, args.retention)?;
        return Ok(Hub::start(
            config.limits,
            store,
            config.max_queue_bytes,
            config.cache_entries,
        )?);
    }
    let url = args
        .database_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--store postgres needs --database-url"))?;
    let options = LedgerOptions {
        pool_size: args.database_pool,
        connect_timeout: args.database_connect_timeout,
        request_timeout: args.database_timeout,
        pool_wait: args.database_pool_wait,
    };
    let ledger = Ledger::connect(url, options).await?;
    let broker = match &args.broker_url {
        Some(url) => Some(
            Broker::connect(
                url,
                args.broker_ca.as_deref(),
                &args.broker_channel,
                args.broker_timeout,
            )
            .await?,
        ),
        None => None,
    };
    Ok(Hub::start_node(
        config.limits,
        ledger,
        broker,
        config.max_queue_bytes,
        config.cache_entries,
    )
    .await?)
}

/// The single-process store `kind` names.
fn local_store(
    kind: StoreKind,
    config: &Config,
    durability: Durability,
    retention: Option<Duration>,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match kind {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(
            &config.data,
            SqliteOptions {
                durability,
                retention,
                ..SqliteOptions::default()
            },
        )?),
        StoreKind::Memory => Arc::new(MemoryStore::default()),
        StoreKind::Postgres => unreachable!("a cluster node has no local store"),
    })
}

/// Resolves on Ctrl-C or SIGTERM. SIGHUP, which would end the process by default, reads
/// again what can change while serving (see [`parley::hangup`]): a terminal closing or a
/// service manager's reload must not stop the server.
async fn shutdown_signal(reloadable: parley::hangup::Reloadable) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
        let mut hup = signal(SignalKind::hangup()).expect("can listen for SIGHUP");
        let hangups = async {
            loop {
                hup.recv().await;
                reloadable.hangup();
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
            _ = hangups => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloadable;
        let _ = ctrl_c.await;
    }
}
