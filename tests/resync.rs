//! SPEC.md "Resync instead of eviction": a `snapshot=true` connection whose queue overflows
//! is not closed but gets a fresh `depthSnapshot` per diff stream (and is closed with 4008 only
//! if it overflows again within a second); snapshot-type streams are conflated on every
//! connection.
//!
//! Every test stalls a reader on a real socket with tiny kernel buffers, so the server's queue
//! for it fills within a second or two, and waits on the server's own counters rather than on
//! sleeps. The counters are per process, so the tests here take turns ([`SERIAL`]) and look at
//! how much each counter moved.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// One test at a time: they measure process-wide counters.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The fast diff streams of all three symbols of the test feed: about 170 diffs a second.
const DIFFS: &str = "btcusdt@depth@0ms/ethusdt@depth@0ms/xrpusdt@depth@0ms";

type Slow = WebSocketStream<TcpStream>;

/// A client with the smallest receive buffer the kernel allows, which reads only when told.
async fn slow_client(server: &TestServer, path: &str) -> Slow {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(path).as_str(), stream)
        .await
        .expect("websocket handshake");
    ws
}

/// A server whose sockets take little before its queues start to fill.
async fn server(queue_bytes: usize) -> TestServer {
    TestServer::start(Config {
        queue_bytes,
        socket_send_buffer: 4096,
        ..Config::default()
    })
    .await
}

/// What a slow client read next.
enum Read {
    Event(Value),
    Closed(Option<u16>),
}

async fn read(ws: &mut Slow, deadline: Instant) -> Read {
    loop {
        let message = timeout_at(deadline, ws.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Read::Event(serde_json::from_str(&text).expect("valid JSON"))
            }
            Some(Ok(Message::Close(frame))) => {
                return Read::Closed(frame.map(|f| u16::from(f.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Read::Closed(None),
        }
    }
}

/// Reads until the server's close frame; returns its code.
async fn close_code(ws: &mut Slow) -> Option<u16> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Read::Closed(code) = read(ws, deadline).await {
            return code;
        }
    }
}

/// A book keyed by price strings, as a client keeps one.
#[derive(Debug, Default, PartialEq)]
struct Book {
    bids: BTreeMap<String, String>,
    asks: BTreeMap<String, String>,
}

impl Book {
    fn apply(&mut self, bids: &Value, asks: &Value) {
        for (side, levels) in [(&mut self.bids, bids), (&mut self.asks, asks)] {
            for level in levels.as_array().expect("levels") {
                let price = level[0].as_str().expect("price").to_string();
                let qty = level[1].as_str().expect("qty").to_string();
                if qty == "0.00000000" {
                    side.remove(&price);
                } else {
                    side.insert(price, qty);
                }
            }
        }
    }
}

/// One diff stream as a Binance client follows it: a snapshot, then diffs, the first of which
/// must bracket the snapshot's `lastUpdateId + 1`, then each continuing the one before.
#[derive(Default)]
struct Local {
    book: Book,
    /// The last update applied (the snapshot's id right after one).
    last: Option<u64>,
    /// A diff has been applied since the last snapshot.
    synced: bool,
    snapshots: usize,
    /// Diffs applied since the last snapshot.
    diffs: usize,
    /// Updates that later snapshots skipped (the `U` jumps of a resync).
    skipped: u64,
}

impl Local {
    fn on_event(&mut self, stream: &str, data: &Value) {
        match data["e"].as_str() {
            Some("depthSnapshot") => {
                let id = data["lastUpdateId"].as_u64().expect("lastUpdateId");
                if let Some(last) = self.last {
                    assert!(
                        id >= last,
                        "{stream}: snapshot {id} older than update {last}"
                    );
                    self.skipped += id - last;
                }
                self.book = Book::default();
                self.book.apply(&data["bids"], &data["asks"]);
                self.last = Some(id);
                self.synced = false;
                self.snapshots += 1;
                self.diffs = 0;
            }
            Some("depthUpdate") => {
                let last = self.last.unwrap_or_else(|| panic!("{stream}: diff first"));
                let (first, end) = (
                    data["U"].as_u64().expect("U"),
                    data["u"].as_u64().expect("u"),
                );
                if self.synced {
                    assert_eq!(first, last + 1, "{stream}: gap after {last}");
                } else {
                    if end <= last {
                        return; // older than the snapshot: Binance's algorithm drops it
                    }
                    assert!(
                        first <= last + 1 && last < end,
                        "{stream}: {first}..{end} does not continue snapshot {last}"
                    );
                    self.synced = true;
                }
                self.book.apply(&data["b"], &data["a"]);
                self.last = Some(end);
                self.diffs += 1;
            }
            other => panic!("{stream}: unexpected event {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_snapshot_reader_is_resynced_not_closed_and_its_books_stay_right() {
    let _serial = SERIAL.lock().await;
    let server = server(64 * 1024).await;
    let resyncs = server.metric("bookcast_resyncs_total", "").await;
    let evictions = server
        .metric("bookcast_slow_consumer_disconnects_total", "")
        .await;
    let mut ws = slow_client(&server, &format!("/stream?streams={DIFFS}&snapshot=true")).await;
    let mut streams: HashMap<String, Local> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    let next = async |ws: &mut Slow, streams: &mut HashMap<String, Local>| {
        let event = match read(ws, deadline).await {
            Read::Event(event) => event,
            Read::Closed(code) => panic!("closed with {code:?} instead of resynced"),
        };
        let stream = event["stream"].as_str().expect("combined").to_string();
        streams
            .entry(stream.clone())
            .or_default()
            .on_event(&stream, &event["data"]);
        stream
    };

    // A client that keeps up at first...
    while streams.len() < 3 || streams.values().any(|l| l.diffs < 5) {
        next(&mut ws, &mut streams).await;
    }
    // ...then stalls until its queue overflows and the server resyncs instead of closing.
    server
        .wait_metric("bookcast_resyncs_total", "", resyncs + 1.0)
        .await;

    // Reading again: every stream is contiguous from each snapshot, and each gets another.
    let mut checked_book = false;
    let mut rest_at: Option<(u64, Book)> = None;
    loop {
        let stream = next(&mut ws, &mut streams).await;
        let local = &streams[&stream];

        // After its resync, BTCUSDT's book (resync snapshot + diffs) is the server's book.
        if stream == "btcusdt@depth@0ms" && local.snapshots >= 2 && local.synced && !checked_book {
            let last = local.last.expect("synced");
            if rest_at.is_none() {
                let rest = server
                    .get_json("/api/v3/depth?symbol=BTCUSDT&limit=5000")
                    .await;
                let mut book = Book::default();
                book.apply(&rest["bids"], &rest["asks"]);
                rest_at = Some((rest["lastUpdateId"].as_u64().expect("id"), book));
            }
            match &rest_at {
                Some((at, book)) if *at == last => {
                    assert_eq!(&local.book, book, "resync snapshot + diffs = REST at {at}");
                    checked_book = true;
                }
                // Passed it (another resync): take another look.
                Some((at, _)) if *at < last => rest_at = None,
                _ => {}
            }
        }
        let done = streams.values().all(|l| l.snapshots >= 2 && l.diffs >= 20);
        if done && checked_book {
            break;
        }
    }
    assert!(
        streams.values().any(|l| l.skipped > 0),
        "a resync snapshot skipped the dropped diffs"
    );
    assert_eq!(
        server
            .metric("bookcast_slow_consumer_disconnects_total", "")
            .await,
        evictions,
        "nobody was evicted"
    );
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_snapshot_true_a_stalled_reader_is_still_closed_with_4008() {
    let _serial = SERIAL.lock().await;
    let server = server(64 * 1024).await;
    let resyncs = server.metric("bookcast_resyncs_total", "").await;
    let evictions = server
        .metric("bookcast_slow_consumer_disconnects_total", "")
        .await;
    let mut ws = slow_client(&server, &format!("/stream?streams={DIFFS}")).await;
    server
        .wait_metric(
            "bookcast_slow_consumer_disconnects_total",
            "",
            evictions + 1.0,
        )
        .await;
    assert_eq!(close_code(&mut ws).await, Some(4008));
    assert_eq!(server.metric("bookcast_resyncs_total", "").await, resyncs);
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_overflows_again_within_a_second_of_a_resync_is_closed_with_4008() {
    let _serial = SERIAL.lock().await;
    // Less than the three snapshots together: once a resync queues them, the next diff
    // overflows again at once (a reader slower than the snapshots themselves).
    let server = server(32 * 1024).await;
    let resyncs = server.metric("bookcast_resyncs_total", "").await;
    let evictions = server
        .metric("bookcast_slow_consumer_disconnects_total", "")
        .await;
    let mut ws = slow_client(&server, &format!("/stream?streams={DIFFS}&snapshot=true")).await;
    server
        .wait_metric("bookcast_resyncs_total", "", resyncs + 1.0)
        .await;
    server
        .wait_metric(
            "bookcast_slow_consumer_disconnects_total",
            "",
            evictions + 1.0,
        )
        .await;
    assert_eq!(close_code(&mut ws).await, Some(4008));
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_gets_only_the_newest_partial_depth() {
    let _serial = SERIAL.lock().await;
    const PARTIAL: &str = "btcusdt@depth5@100ms";
    let server = server(256 * 1024).await;
    let conflated = server.metric("bookcast_conflated_total", "").await;

    // A reader that keeps up sees every event, to compare with.
    let mut fast = server.connect(&format!("/ws/{PARTIAL}")).await;
    let (stop_fast, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (ids_tx, ids_rx) = tokio::sync::watch::channel(Vec::<u64>::new());
    let fast_reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                event = next_json(&mut fast) => {
                    let id = event["lastUpdateId"].as_u64().expect("lastUpdateId");
                    ids_tx.send_modify(|ids| ids.push(id));
                }
            }
        }
    });

    // The stalled reader: the diffs fill its kernel buffers, then its queue backs up and its
    // partial-depth events are conflated. Well under the bound, so it is not evicted.
    let mut slow = slow_client(
        &server,
        &format!("/stream?streams={PARTIAL}/btcusdt@depth@0ms/ethusdt@depth@0ms"),
    )
    .await;
    server
        .wait_metric("bookcast_conflated_total", "", conflated + 10.0)
        .await;
    let seen_fast = *ids_rx.borrow().last().expect("the fast reader got events");

    // Catch up: until an event the fast reader had not seen when this one resumed.
    let mut slow_ids = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while slow_ids.last().is_none_or(|&id| id <= seen_fast) {
        let event = match read(&mut slow, deadline).await {
            Read::Event(event) => event,
            Read::Closed(code) => panic!("closed with {code:?}"),
        };
        if event["stream"] == PARTIAL {
            let id = event["data"]["lastUpdateId"].as_u64().expect("id");
            assert!(
                slow_ids.last().is_none_or(|&last| last < id),
                "lastUpdateId went back: {slow_ids:?} then {id}"
            );
            slow_ids.push(id);
        }
    }
    // The fast reader may not have read that last event yet: wait until it has.
    let newest = *slow_ids.last().expect("the stalled reader got events");
    let mut ids_seen = ids_rx.clone();
    tokio::time::timeout(PATIENCE, ids_seen.wait_for(|ids| ids.contains(&newest)))
        .await
        .expect("the fast reader gets the stalled reader's newest event")
        .expect("fast reader running");
    stop_fast.send(()).expect("fast reader running");
    fast_reader.await.expect("fast reader");

    // Over the same span of updates, the stalled reader got fewer events, each a real one.
    let fast_ids = ids_rx.borrow().clone();
    let (first, last) = (slow_ids[0], seen_fast);
    let span = |ids: &[u64]| ids.iter().filter(|&&id| first <= id && id <= last).count();
    assert!(
        slow_ids.iter().all(|id| fast_ids.contains(id)),
        "every event the stalled reader got was published"
    );
    assert!(
        span(&slow_ids) + 5 <= span(&fast_ids),
        "stalled reader got {} events of {} published over {first}..={last}",
        span(&slow_ids),
        span(&fast_ids)
    );
    drop(slow);
    server.stop().await;
}
