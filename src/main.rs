//! The `parley` command: run the server, mint tokens.

use clap::{Parser, Subcommand};
use parley::config::{default_limits, Config};
use parley::{auth, server::Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    Serve(ServeArgs),
    /// Mint a signed token for a user.
    Token(TokenArgs),
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
    /// How long after sending a message may be recalled (0 disables recall).
    #[arg(long, value_parser = duration, default_value = "120s")]
    recall_window: Duration,
    /// How long after sending an InMail may be deleted for everyone (0 disables it).
    #[arg(long, value_parser = duration, default_value = "10m")]
    inmail_delete_window: Duration,
    /// Recalls allowed per sender per conversation per recall period.
    #[arg(long, default_value_t = 1)]
    recall_per_conversation: u32,
    /// The period the recall allowance covers.
    #[arg(long, value_parser = duration, default_value = "24h")]
    recall_period: Duration,
    /// A sender who sent more than this many messages in the throttle window cannot recall.
    #[arg(long, default_value_t = 30)]
    recall_throttle_messages: u32,
    /// The recall throttle window (0 disables the throttle).
    #[arg(long, value_parser = duration, default_value = "60s")]
    recall_throttle_window: Duration,
    /// Longest message body, in characters.
    #[arg(long, default_value_t = 8000)]
    max_body_chars: u32,
    /// Largest accepted frame, in bytes.
    #[arg(long, default_value_t = 65536)]
    max_frame_bytes: u32,
    /// Bytes queued for one session before it is closed as a slow consumer.
    #[arg(long, default_value_t = 1 << 20)]
    max_queue_bytes: usize,
    /// Live sessions one user may hold (0: no cap).
    #[arg(long, default_value_t = 16)]
    max_sessions_per_user: u32,
    /// Sustained requests per second per user (0: no limit).
    #[arg(long, default_value_t = 20)]
    requests_per_second: u32,
    /// Requests per user in a burst above the sustained rate.
    #[arg(long, default_value_t = 60)]
    request_burst: u32,
    /// New connections per second from one address, bursts of ten times that (0: no limit).
    #[arg(long, default_value_t = 50)]
    connections_per_ip_per_second: u32,
    /// How often idle connections are pinged (0: never).
    #[arg(long, value_parser = duration, default_value = "30s")]
    ping_interval: Duration,
    /// Close connections silent this long, pongs included (0: never).
    #[arg(long, value_parser = duration, default_value = "90s")]
    idle_timeout: Duration,
    /// How long shutdown waits for sessions to close.
    #[arg(long, value_parser = duration, default_value = "5s")]
    shutdown_grace: Duration,
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
    /// How long the token is valid.
    #[arg(long, value_parser = duration, default_value = "24h")]
    ttl: Duration,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Token(args) => {
            let secret =
                auth::load_or_create_secret(args.secret.secret.as_deref(), &args.secret.data)?;
            println!("{}", auth::mint(&secret, &args.user, args.admin, args.ttl));
            Ok(())
        }
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let secret = auth::load_or_create_secret(args.secret.secret.as_deref(), &args.secret.data)?;
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
    let config = Config {
        listen: args.listen,
        secret,
        data: args.secret.data,
        limits,
        max_queue_bytes: args.max_queue_bytes,
        shutdown_grace: args.shutdown_grace,
        connections_per_ip_per_second: args.connections_per_ip_per_second,
    };
    let server = Server::bind(&config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = server.local_addr();
    // Tools that start parley on port 0 read this line to find it.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, "parley serving WebSocket at ws://{addr}/ws");
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can listen for SIGTERM");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
