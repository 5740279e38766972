//! Fuzz-style properties of the cache codec: decoding arbitrary bytes (payloads, stored
//! entries, and entries damaged in Redis) errors and never panics; arbitrary values round trip
//! through both codecs.
//!
//! 4,096 cases a property by default; `PROPTEST_CASES=10000000` for a long run (see
//! `docs/RELIABILITY.md`). The one property that goes through Redis runs a fixed 128 cases.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use unite_cache::{Cache, Codec};
use unite_testkit::TestRedis;

/// Cases a property: `PROPTEST_CASES` when set, else a count that keeps CI fast.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 4096;
    }
    config.failure_persistence = None;
    config
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Tuple(u32, i8),
    Struct { x: i16, label: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    delta: i64,
    score: f64,
    small: f32,
    name: String,
    letter: char,
    flag: bool,
    tags: Vec<String>,
    blob: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    attrs: BTreeMap<String, i32>,
    kind: Kind,
    nested: Option<Box<Record>>,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Unit),
        (any::<u32>(), any::<i8>()).prop_map(|(a, b)| Kind::Tuple(a, b)),
        (any::<i16>(), any::<String>()).prop_map(|(x, label)| Kind::Struct { x, label }),
    ]
}

/// Finite floats only: JSON has no NaN or infinity (serde_json writes them as `null`).
fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.1),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
        Just(5e-324),
    ]
}

fn leaf() -> impl Strategy<Value = Record> {
    (
        (any::<u64>(), any::<i64>(), finite_f64()),
        any::<f32>().prop_filter("finite", |f| f.is_finite()),
        (any::<String>(), any::<char>(), any::<bool>()),
        proptest::collection::vec(any::<String>(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::option::of(any::<String>()),
        proptest::collection::btree_map(any::<String>(), any::<i32>(), 0..4),
        kind(),
    )
        .prop_map(
            |((id, delta, score), small, (name, letter, flag), tags, blob, note, attrs, kind)| {
                Record {
                    id,
                    delta,
                    score,
                    small,
                    name,
                    letter,
                    flag,
                    tags,
                    blob,
                    note,
                    attrs,
                    kind,
                    nested: None,
                }
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    (leaf(), proptest::option::of(leaf())).prop_map(|(mut outer, inner)| {
        outer.nested = inner.map(Box::new);
        outer
    })
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::MessagePack), Just(Codec::Json)]
}

/// Bytes that look like payloads often enough to get past the first byte.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        // MessagePack container and length markers followed by anything.
        (
            prop_oneof![
                Just(0x80u8),
                Just(0x8f),
                Just(0x9f),
                Just(0xdc),
                Just(0xdd),
                Just(0xde),
                Just(0xdf),
                Just(0xc4),
                Just(0xc6),
                Just(0xdb),
                Just(0xc1),
            ],
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(marker, rest)| [vec![marker], rest].concat()),
        // JSON-ish.
        "[\\[\\]{}\":,0-9a-z\\\\ eE.+-]{0,80}".prop_map(String::into_bytes),
    ]
}

/// A real stored entry per codec, read back from Redis once: the bytes the cache writes.
fn stored_entries() -> &'static [(Codec, Record, Vec<u8>)] {
    static ENTRIES: OnceLock<Vec<(Codec, Record, Vec<u8>)>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        runtime().block_on(async {
            let redis = TestRedis::new().await;
            let value = Record {
                id: 42,
                delta: -7,
                score: 0.25,
                small: 1.5,
                name: "Ada".into(),
                letter: 'λ',
                flag: true,
                tags: vec!["a".into(), "b".into()],
                blob: vec![0, 255, 7],
                note: Some("n".into()),
                attrs: BTreeMap::from([("k".to_owned(), 1)]),
                kind: Kind::Struct {
                    x: -3,
                    label: "l".into(),
                },
                nested: None,
            };
            let mut out = Vec::new();
            for codec in [Codec::MessagePack, Codec::Json] {
                let cache = Cache::builder()
                    .redis_url(redis.url())
                    .namespace(redis.prefix())
                    .codec(codec)
                    .build()
                    .await
                    .expect("cache builds");
                let key = format!("entry-{codec:?}");
                cache
                    .set(&key, &value, Duration::from_secs(60))
                    .await
                    .expect("set");
                let bytes: Vec<u8> = redis
                    .client()
                    .get(cache.redis_key(&key))
                    .await
                    .expect("raw GET");
                out.push((codec, value.clone(), bytes));
            }
            out
        })
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn values_round_trip_through_both_codecs(value in record(), codec in codec()) {
        let bytes = codec.encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Record = codec.decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, value);
    }

    #[test]
    fn decoding_arbitrary_bytes_errors_and_never_panics(bytes in hostile_bytes(), codec in codec()) {
        // Several target types: whatever the bytes, an answer and no panic.
        let _ = codec.decode::<Record>(&bytes);
        let _ = codec.decode::<String>(&bytes);
        let _ = codec.decode::<u64>(&bytes);
        let _ = codec.decode::<Vec<Option<Kind>>>(&bytes);
        let _ = codec.decode::<serde_json::Value>(&bytes);
        let _ = codec.decode_entry::<Record>(&bytes);
        let _ = codec.decode_entry::<serde_json::Value>(&bytes);
    }

    #[test]
    fn damaged_stored_entries_error_and_never_panic(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let (codec, value, stored) = &stored_entries()[which];
        // The intact entry reads back, and only with its own codec.
        let intact = codec.decode_entry::<Record>(stored).ok().flatten();
        prop_assert_eq!(intact.as_ref(), Some(value));
        let other = if *codec == Codec::Json { Codec::MessagePack } else { Codec::Json };
        prop_assert!(other.decode_entry::<Record>(stored).is_err());
        // Every strict prefix is an error (truncated in transit or by a bad write).
        let len = cut.index(stored.len());
        prop_assert!(codec.decode_entry::<Record>(&stored[..len]).is_err(), "prefix of {} bytes", len);
        // Overwritten bytes, with trailing junk: any answer, no panic.
        let mut damaged = stored.clone();
        for (at, byte) in &edits {
            let i = at.index(damaged.len());
            damaged[i] = *byte;
        }
        damaged.extend_from_slice(&tail);
        let _ = codec.decode_entry::<Record>(&damaged);
        let _ = codec.decode_entry::<serde_json::Value>(&damaged);
    }
}

/// Through the real Redis, a fixed, small count whatever `PROPTEST_CASES` says: the
/// `proptest!` macro lets that variable override a block's own count, so this property drives
/// a `TestRunner` itself.
#[test]
fn garbage_in_redis_is_a_miss_and_the_key_recovers() {
    let config = ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&(hostile_bytes(), codec()), |(bytes, codec)| {
        let (cache, redis) = wire_cache(codec);
        // Outside the runtime: the first call builds the entries with `block_on`.
        let fresh = stored_entries()[0].1.clone();
        runtime().block_on(async {
            // A key of its own per case: nothing of it in L1, so the read goes to Redis.
            static N: AtomicU64 = AtomicU64::new(0);
            let key = &format!("victim-{}", N.fetch_add(1, Ordering::Relaxed));
            let _: () = redis
                .set(
                    cache.redis_key(key),
                    bytes.clone(),
                    Some(Expiration::EX(60)),
                    None,
                    false,
                )
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // A miss (or a decode error), never a panic and never a wrong value.
            match cache.get::<Record>(key).await {
                Ok(None) | Err(_) => {}
                Ok(Some(v)) => {
                    prop_assert_eq!(codec.decode_entry::<Record>(&bytes).ok().flatten(), Some(v));
                }
            }
            // The key is usable again at once.
            cache
                .set(key, &fresh, Duration::from_secs(60))
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(cache.get::<Record>(key).await.ok().flatten(), Some(fresh));
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}

/// One cache per codec on the test's Redis prefix, shared by the wire cases.
fn wire_cache(codec: Codec) -> (Cache, fred::clients::Client) {
    static CACHES: OnceLock<(TestRedis, Cache, Cache)> = OnceLock::new();
    let (redis, msgpack, json) = CACHES.get_or_init(|| {
        runtime().block_on(async {
            let redis = TestRedis::new().await;
            let build = |codec| {
                Cache::builder()
                    .redis_url(redis.url())
                    .namespace(redis.prefix())
                    .codec(codec)
                    .build()
            };
            let msgpack = build(Codec::MessagePack).await.expect("cache builds");
            let json = build(Codec::Json).await.expect("cache builds");
            (redis, msgpack, json)
        })
    });
    let cache = if codec == Codec::Json { json } else { msgpack };
    (cache.clone(), redis.client())
}

/// One runtime for the whole test binary (the caches' background tasks live on it).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}
