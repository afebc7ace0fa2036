//! Control messages over a real socket: replies, every error code, and the connection staying
//! usable after an error.

mod common;

use bookcast::config::Config;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_list_properties_unsubscribe() {
    let config = Config {
        max_messages_per_second: 100,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut ws = server.connect("/ws").await;
    let reply = request(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@depth"],"id":1}"#,
    )
    .await;
    assert_eq!(reply, json!({"result": null, "id": 1}));
    let event = next_matching(&mut ws, |v| v.get("e").is_some()).await;
    assert!(
        event["e"] == "depthUpdate" || event["e"] == "trade",
        "raw payloads after SUBSCRIBE: {event}"
    );

    let uuid = "5494febb-d167-4a2f-9d0a-d8ff1e3a8c9b";
    let reply = request(
        &mut ws,
        &format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":"{uuid}"}}"#),
    )
    .await;
    assert_eq!(
        reply,
        json!({"result": ["btcusdt@trade", "btcusdt@depth"], "id": uuid})
    );

    assert_eq!(
        request(
            &mut ws,
            r#"{"method":"GET_PROPERTY","params":["combined"],"id":2}"#
        )
        .await,
        json!({"result": false, "id": 2})
    );
    assert_eq!(
        request(
            &mut ws,
            r#"{"method":"SET_PROPERTY","params":["combined",true],"id":3}"#
        )
        .await,
        json!({"result": null, "id": 3})
    );
    let wrapped = next_matching(&mut ws, |v| v.get("stream").is_some()).await;
    assert!(wrapped["stream"] == "btcusdt@depth" || wrapped["stream"] == "btcusdt@trade");
    assert!(wrapped["data"]["e"].is_string());
    assert_eq!(
        request(
            &mut ws,
            r#"{"method":"GET_PROPERTY","params":["combined"],"id":4}"#
        )
        .await,
        json!({"result": true, "id": 4})
    );

    assert_eq!(
        request(
            &mut ws,
            r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":5}"#
        )
        .await,
        json!({"result": null, "id": 5})
    );
    // Everything queued after the reply comes from the remaining stream only.
    let reply = request(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":6}"#).await;
    assert_eq!(reply, json!({"result": ["btcusdt@trade"], "id": 6}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_keeps_the_connection_usable() {
    let config = Config {
        max_messages_per_second: 100,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut ws = server.connect("/ws").await;
    let cases = [
        (
            r#"{"method":"GET_PROPERTY","params":["colour"],"id":1}"#,
            0,
            json!(1),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":2}"#,
            1,
            json!(2),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@nonsense"],"id":3}"#,
            2,
            json!(3),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["dogeusdt@trade"],"id":4}"#,
            2,
            json!(4),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":{"x":1}}"#,
            2,
            json!(null),
        ),
        (r#"{"method":"PUBLISH","id":5}"#, 2, json!(5)),
        (
            r#"{"method":"SUBSCRIBE","params":"btcusdt@trade","id":6}"#,
            2,
            json!(6),
        ),
    ];
    for (text, code, id) in cases {
        send_json(&mut ws, text).await;
        let reply = next_matching(&mut ws, |v| v.get("error").is_some()).await;
        assert_eq!(reply["error"]["code"], code, "{text}: {reply}");
        assert!(reply["error"]["msg"].is_string());
        assert_eq!(reply["id"], id, "{text}");
    }
    send_json(&mut ws, "{not json").await;
    let reply = next_matching(&mut ws, |v| v.get("error").is_some()).await;
    assert_eq!(reply["error"]["code"], 3);
    assert_eq!(reply["id"], json!(null));

    // Still usable: a valid subscription works and delivers.
    let reply = request(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth@0ms"],"id":7}"#,
    )
    .await;
    assert_eq!(reply, json!({"result": null, "id": 7}));
    let event = next_matching(&mut ws, |v| v.get("e").is_some()).await;
    assert_eq!(event["s"], "ETHUSDT");
    assert!(
        server
            .metric("bookcast_control_errors_total", "code=\"2\"")
            .await
            >= 5.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_per_connection() {
    let config = Config {
        max_streams: 2,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut ws = server.connect("/ws/btcusdt@trade").await;
    let ok = request(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@trade"],"id":1}"#,
    )
    .await;
    assert_eq!(ok, json!({"result": null, "id": 1}));
    let over = request(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["xrpusdt@trade"],"id":2}"#,
    )
    .await;
    assert_eq!(over["error"]["code"], 2, "{over}");
    assert!(over["error"]["msg"].as_str().unwrap().contains("at most 2"));
    let list = request(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#).await;
    assert_eq!(list["result"], json!(["btcusdt@trade", "ethusdt@trade"]));
    let (status, body) = server
        .get("/stream?streams=btcusdt@trade/ethusdt@trade/xrpusdt@trade")
        .await;
    // A plain GET is refused with 426 before the stream list is even looked at; the upgrade is refused with 400.
    assert_eq!(status, 426, "{body}");
    let refused = tokio_tungstenite::connect_async(
        server.ws_url("/stream?streams=btcusdt@trade/ethusdt@trade/xrpusdt@trade"),
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    server.stop().await;
}
