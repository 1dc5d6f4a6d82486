//! The broker between nodes: Redis pub/sub on one channel. At most once, in no promised
//! order — the ledger's numbering is what makes delivery exact.

use super::Bulletin;
use crate::store::StoreError;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bulletins waiting to be published; beyond this they are dropped (the ledger still has
/// the entries, and other nodes find them by polling).
const OUTBOUND: usize = 65_536;

/// Publishes up to this many bulletins in one round trip.
const BATCH: usize = 256;

/// What the subscription yields.
#[derive(Debug)]
pub enum Incoming {
    /// A bulletin from another node (or this one; the caller filters).
    Bulletin(Bulletin),
    /// The subscription was (re)established: anything published meanwhile was missed.
    Subscribed,
}

/// A Redis pub/sub channel shared by every node of one cluster.
#[derive(Clone)]
pub struct Broker {
    outbound: mpsc::Sender<Vec<u8>>,
    /// A handle on the publishing connection, for asking whether the broker answers.
    probe: redis::aio::MultiplexedConnection,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    /// Connect to `url` and start publishing on `channel`; bulletins from every node
    /// arrive on the returned receiver. A `rediss://` URL is TLS, the server's certificate
    /// checked against `ca` (a PEM file) or else the system's roots. Connecting, and each
    /// publish and subscription later, gives up after `timeout`: a broker that accepts
    /// connections and never answers would otherwise hold a node's start for ever.
    pub async fn connect(
        url: &str,
        ca: Option<&Path>,
        channel: &str,
        timeout: Duration,
    ) -> Result<(Broker, mpsc::Receiver<Incoming>), StoreError> {
        let link = Link {
            client: client(url, ca)?,
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            timeout,
        };
        let publisher = link
            .publisher()
            .await
            .map_err(|e| StoreError::unavailable("cannot reach the broker", link.why(e)))?;
        let (outbound, queue) = mpsc::channel(OUTBOUND);
        let probe = publisher.clone();
        crate::metrics::broker_connected(true);
        tokio::spawn(publish(link.clone(), publisher, channel.to_owned(), queue));
        let (tx, incoming) = mpsc::channel(OUTBOUND);
        tokio::spawn(subscribe(link, channel.to_owned(), tx));
        Ok((Broker { outbound, probe }, incoming))
    }

    /// Whether the broker answers a `PING` within `deadline` (for readiness). A paused
    /// broker keeps its connections open, so only asking tells.
    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        let mut conn = self.probe.clone();
        let ping = redis::cmd("PING");
        let answer = match tokio::time::timeout(deadline, ping.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::unavailable("cannot reach the broker", e)),
            Err(_) => Err(StoreError::unavailable(
                "cannot reach the broker",
                format!("no answer within {}", humantime::format_duration(deadline)),
            )),
        };
        crate::metrics::broker_connected(answer.is_ok());
        answer
    }

    /// Publish a bulletin without waiting.
    pub fn publish(&self, bulletin: &Bulletin) {
        let bytes = serde_json::to_vec(bulletin).expect("bulletins serialise");
        if self.outbound.try_send(bytes).is_err() {
            crate::metrics::cluster("bulletin_dropped");
        }
    }
}

/// How a node reaches the broker: the client and the deadlines of its connections.
#[derive(Clone)]
struct Link {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    timeout: Duration,
}

impl Link {
    /// A connection for publishing and pinging, its requests bounded by the timeout.
    async fn publisher(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    /// A subscription to `channel`, or why there is none within the timeout.
    async fn subscription(&self, channel: &str) -> Result<redis::aio::PubSub, String> {
        let subscribed = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.timeout, subscribed).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(e)) => Err(self.why(e)),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// What a failed connection or request says; a timeout names the deadline.
    fn why(&self, e: redis::RedisError) -> String {
        if e.is_timeout() {
            self.no_answer()
        } else {
            e.to_string()
        }
    }

    fn no_answer(&self) -> String {
        format!(
            "no answer within {}",
            humantime::format_duration(self.timeout)
        )
    }
}

/// The Redis client for `url`. A `ca` with a plain `redis://` URL is refused rather than
/// ignored: whoever gave it meant the connection to be checked.
fn client(url: &str, ca: Option<&Path>) -> Result<redis::Client, StoreError> {
    let refused = |e: &dyn std::fmt::Display| StoreError::refused("broker URL", e.to_string());
    let Some(ca) = ca else {
        return redis::Client::open(url).map_err(|e| refused(&e));
    };
    if !url.starts_with("rediss://") {
        return Err(refused(&"a broker CA needs a rediss:// URL"));
    }
    let pem = std::fs::read(ca).map_err(|e| {
        StoreError::refused("broker CA", format!("cannot read {}: {e}", ca.display()))
    })?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(url, certificates).map_err(|e| refused(&e))
}

async fn publish(
    link: Link,
    mut conn: redis::aio::MultiplexedConnection,
    channel: String,
    mut queue: mpsc::Receiver<Vec<u8>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for bytes in batch.drain(..) {
            pipe.publish(&channel, bytes).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            crate::metrics::cluster("publish_failed");
            crate::metrics::broker_connected(false);
            tracing::warn!(error = %link.why(e), "broker publish failed; reconnecting");
            if let Ok(c) = link.publisher().await {
                crate::metrics::broker_connected(true);
                conn = c;
            }
        }
    }
}

async fn subscribe(link: Link, channel: String, tx: mpsc::Sender<Incoming>) {
    use futures::StreamExt;
    loop {
        match link.subscription(&channel).await {
            Ok(pubsub) => {
                crate::metrics::broker_connected(true);
                if tx.send(Incoming::Subscribed).await.is_err() {
                    return;
                }
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let payload: Vec<u8> = match msg.get_payload() {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    match serde_json::from_slice::<Bulletin>(&payload) {
                        Ok(b) => {
                            if tx.send(Incoming::Bulletin(b)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable bulletin"),
                    }
                }
                crate::metrics::broker_connected(false);
                tracing::warn!("broker subscription ended; resubscribing");
            }
            Err(e) => {
                crate::metrics::broker_connected(false);
                tracing::warn!(error = %e, "cannot subscribe to the broker; retrying")
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
