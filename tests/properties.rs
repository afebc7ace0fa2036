//! Property tests: the parsers that take peer or user input never panic on anything, and
//! round-trip what they should (stream names, control replies, feed files).

use bookcast::derive::stats::kline::KlineInterval;
use bookcast::market::feed::Feed;
use bookcast::protocol::control::Change;
use bookcast::protocol::control::{self, Subscriptions};
use bookcast::protocol::stream::{self, Speed, StreamKind, Topic};
use proptest::prelude::*;

fn feed() -> Feed {
    Feed::embedded_default()
}

fn speed() -> impl Strategy<Value = Speed> {
    prop_oneof![
        Just(Speed::Unspecified),
        Just(Speed::Ms100),
        Just(Speed::Ms1000)
    ]
}

fn kind() -> impl Strategy<Value = StreamKind> {
    prop_oneof![
        prop_oneof![speed(), Just(Speed::Ms0)].prop_map(StreamKind::Diff),
        (prop_oneof![Just(5u8), Just(10), Just(20)], speed())
            .prop_map(|(levels, speed)| StreamKind::Partial { levels, speed }),
        Just(StreamKind::Trade),
        Just(StreamKind::AggTrade),
        Just(StreamKind::BookTicker),
        proptest::sample::select(KlineInterval::ALL.to_vec()).prop_map(StreamKind::Kline),
        Just(StreamKind::MiniTicker),
        Just(StreamKind::Ticker),
    ]
}

fn topic() -> impl Strategy<Value = Topic> {
    let symbols = feed().symbols.len() as u16;
    prop_oneof![
        9 => (0..symbols, kind()).prop_map(|(symbol, kind)| Topic::Symbol { symbol, kind }),
        1 => Just(Topic::AllMiniTickers),
        1 => Just(Topic::ServerStats),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn stream_names_round_trip(topic in topic()) {
        let feed = feed();
        let name = topic.name(&feed);
        prop_assert_eq!(stream::parse(&name, &feed), Ok(topic));
    }

    #[test]
    fn stream_name_parser_takes_anything(name in any::<String>()) {
        let feed = feed();
        if let Ok(topic) = stream::parse(&name, &feed) {
            // Whatever parses names a real stream, and names it back the same way: symbols are
            // case-insensitive on the way in and lower case on the way out.
            let canonical = match name.split_once('@') {
                Some((symbol, rest)) if !name.starts_with('!') => format!("{}@{rest}", symbol.to_ascii_lowercase()),
                _ => name.clone(),
            };
            prop_assert_eq!(topic.name(&feed), canonical);
        }
    }

    #[test]
    fn control_parser_takes_any_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut state = Subscriptions::default();
        let outcome = control::handle(&mut bytes, &mut state, &feed(), 1024);
        // Every outcome is one JSON object with an id, and errors change nothing.
        prop_assert!(outcome.reply.starts_with(b"{") && outcome.reply.ends_with(b"}"), "a reply is one JSON object");
        if outcome.error.is_some() {
            prop_assert!(matches!(outcome.change, Change::None));
            prop_assert!(state.topics.is_empty());
        }
    }

    #[test]
    fn control_parser_takes_any_json_shaped_text(
        method in prop_oneof![
            proptest::sample::select(vec!["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY"])
                .prop_map(String::from),
            "[A-Za-z_]{0,12}",
        ],
        params in proptest::collection::vec(prop_oneof!["[a-z@!_0-9]{0,24}".prop_map(|s| format!("{s:?}")),
                                                        any::<i64>().prop_map(|n| n.to_string()),
                                                        Just("true".to_string()), Just("null".to_string()),
                                                        Just("[[[]]]".to_string()), Just("{}".to_string())], 0..8),
        id in prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[a-f0-9-]{0,40}".prop_map(|s| format!("{s:?}")),
                          Just("null".to_string()), Just("-1".to_string()), Just("1.5".to_string())],
    ) {
        let text = format!(r#"{{"method":"{method}","params":[{}],"id":{id}}}"#, params.join(","));
        let mut bytes = text.into_bytes();
        let mut state = Subscriptions::default();
        let outcome = control::handle(&mut bytes, &mut state, &feed(), 1024);
        let reply = String::from_utf8(outcome.reply).expect("replies are UTF-8");
        prop_assert!(reply.starts_with(r#"{"result":"#) || reply.starts_with(r#"{"error":{"code":"#), "{}", reply);
    }

    #[test]
    fn subscribe_then_list_round_trips(topics in proptest::collection::vec(topic(), 1..20)) {
        let feed = feed();
        let names: Vec<String> = topics.iter().map(|t| t.name(&feed)).collect();
        let mut state = Subscriptions::default();
        let request = format!(r#"{{"method":"SUBSCRIBE","params":{names:?},"id":1}}"#);
        let outcome = control::handle(&mut request.into_bytes(), &mut state, &feed, 1024);
        prop_assert_eq!(outcome.error, None);
        let mut unique: Vec<String> = Vec::new();
        for name in names {
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        let list = control::handle(&mut br#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#.to_vec(), &mut state, &feed, 1024);
        let expected = format!(r#"{{"result":{},"id":2}}"#, serde_json::to_string(&unique).unwrap());
        prop_assert_eq!(String::from_utf8(list.reply).unwrap(), expected);
    }

    #[test]
    fn feed_parser_takes_anything(text in any::<String>()) {
        let _ = Feed::parse(&text);
    }

    #[test]
    fn feed_files_round_trip(
        entries in proptest::collection::vec(("[A-Z]{2,5}", "[A-Z]{3,4}", 0u32..6, 1u32..6, 100u64..100_000, 10usize..500, 10u32..=100, any::<u64>()), 1..6),
    ) {
        let mut text = String::new();
        let mut expected = Vec::new();
        for (i, (base, quote, tick_exp, lot_exp, start_ticks, depth, rate, seed)) in entries.iter().enumerate() {
            let base = format!("{base}{i}");
            let tick = format!("{:.*}", *tick_exp as usize, 10f64.powi(-(*tick_exp as i32)));
            let lot = format!("{:.*}", *lot_exp as usize, 10f64.powi(-(*lot_exp as i32)));
            let tick_e8 = 10u64.pow(8 - tick_exp);
            let start = (*start_ticks).max(4 * *depth as u64);
            let start_price = bookcast::protocol::decimal::format_e8(start * tick_e8);
            text.push_str(&format!(
                "[[symbol]]\nsymbol = \"{base}{quote}\"\nbase_asset = \"{base}\"\nquote_asset = \"{quote}\"\ntick_size = \"{tick}\"\nlot_size = \"{lot}\"\nstart_price = \"{start_price}\"\ndepth = {depth}\nrate = {rate}\nseed = {}\n\n",
                *seed as i64 & i64::MAX
            ));
            expected.push((format!("{base}{quote}"), tick_e8, 10u64.pow(8 - lot_exp), start, *depth, *rate));
        }
        let feed = Feed::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let got: Vec<_> = feed.symbols.iter().map(|s| (s.symbol.clone(), s.tick_e8, s.lot_e8, s.start_price_ticks, s.depth, s.rate_hz)).collect();
        prop_assert_eq!(got, expected);
    }
}
