//! The reference of the realtime benchmark (`bench/realtime.sh` builds it in release mode).
//!
//! The floor for Fluxbase's postgres_changes fan-out: one connection LISTENs on the NOTIFY
//! channel Fluxbase's change trigger uses (`fluxbase_realtime`) and hands each raw payload,
//! as one shared text frame, to every connected websocket: no Phoenix protocol, no join, no
//! binding match, no RLS, no payload rewriting. Same architecture as Fluxbase's hub: each
//! socket has a bounded outbox (1024 frames, Fluxbase's `OUTBOX_CAPACITY`) drained by the
//! socket's own task, which also reads the socket; a socket whose outbox is full is dropped
//! (counted on stderr). Consecutive queued frames are written with one flush. Read buffers
//! are 4 KiB (tungstenite's default of 128 KiB is not what a lean server would use).
//!
//! A client is registered before the server sends it the text frame `ready`.
//!
//!   realtime_ref --port 18410 --pg "host=/tmp/x/data/pg user=postgres dbname=postgres"

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 18410)]
    port: u16,
    /// tokio-postgres connection string (key=value).
    #[arg(long)]
    pg: String,
    #[arg(long, default_value = "fluxbase_realtime")]
    channel: String,
    /// Outbox frames per socket.
    #[arg(long, default_value_t = 1024)]
    capacity: usize,
    /// Runtime worker threads (Fluxbase runs one actix worker per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Default)]
struct Hub {
    clients: RwLock<HashMap<u64, mpsc::Sender<Utf8Bytes>>>,
    next: AtomicU64,
    slow: AtomicU64,
}

impl Hub {
    fn fan_out(&self, text: Utf8Bytes) {
        let mut full = Vec::new();
        {
            let clients = self.clients.read().unwrap_or_else(|p| p.into_inner());
            for (id, tx) in clients.iter() {
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(text.clone()) {
                    full.push(*id);
                }
            }
        }
        if !full.is_empty() {
            let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
            for id in &full {
                clients.remove(id);
            }
            let n = self.slow.fetch_add(full.len() as u64, Ordering::Relaxed) + full.len() as u64;
            eprintln!("realtime_ref: {} slow sockets dropped so far", n);
        }
    }
}

async fn listen(hub: Arc<Hub>, pg: String, channel: String) {
    let (client, mut conn) = match tokio_postgres::connect(&pg, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("realtime_ref: postgres: {e}");
            std::process::exit(1);
        }
    };
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    let pump = async move {
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    hub.fan_out(Utf8Bytes::from(n.payload().to_string()));
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("realtime_ref: listener: {e}");
                    std::process::exit(1);
                }
            }
        }
    };
    let listen = async {
        let q = format!("LISTEN \"{}\"", channel.replace('"', ""));
        if let Err(e) = client.batch_execute(&q).await {
            eprintln!("realtime_ref: LISTEN: {e}");
            std::process::exit(1);
        }
        eprintln!("realtime_ref: listening on {channel}");
        std::future::pending::<()>().await
    };
    tokio::join!(pump, listen);
}

async fn socket(hub: Arc<Hub>, stream: tokio::net::TcpStream, capacity: usize) {
    let _ = stream.set_nodelay(true);
    // 4 KiB read buffers: tungstenite's default (128 KiB per socket) would make the idle
    // memory figure meaningless as a floor.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(capacity);
    let id = hub.next.fetch_add(1, Ordering::Relaxed);
    hub.clients
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, tx);
    if ws.send(Message::Text("ready".into())).await.is_ok() {
        loop {
            tokio::select! {
                m = ws.next() => match m {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                f = rx.recv() => {
                    let Some(f) = f else { break }; // dropped as too slow
                    if ws.feed(Message::Text(f)).await.is_err() {
                        break;
                    }
                    let mut ok = true;
                    while let Ok(f) = rx.try_recv() {
                        if ws.feed(Message::Text(f)).await.is_err() {
                            ok = false;
                            break;
                        }
                    }
                    if !ok || ws.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    hub.clients
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    let _ = ws.close(None).await;
}

fn main() {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = rt.enable_all().build().expect("runtime");
    rt.block_on(async move {
        let hub = Arc::new(Hub::default());
        tokio::spawn(listen(hub.clone(), args.pg.clone(), args.channel.clone()));
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("realtime_ref: bind {}: {e}", args.port);
                std::process::exit(1);
            }
        };
        eprintln!("realtime_ref: ws://127.0.0.1:{}/", args.port);
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(socket(hub.clone(), s, args.capacity));
                }
                Err(e) => {
                    eprintln!("realtime_ref: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
}
