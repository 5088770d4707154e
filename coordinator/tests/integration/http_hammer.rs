//! The HTTP side cannot stall QUIC ingest: three real probes report once a second while, for
//! 10 s, 24 HTTP clients hammer a coordinator whose store holds 200,000 events: readers page
//! through events with every filter, probes and metrics with a valid token, and guessers send
//! wrong passwords (each a bcrypt verification). The probes' report latency (produced on the
//! probe → committed) is printed before and during, with what the HTTP clients got.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use cemwatch_tests::process::http_with;

use crate::support::*;

const HAMMER: Duration = Duration::from_secs(10);
const READERS: usize = 16;
const GUESSERS: usize = 8;
const EVENTS: i64 = 200_000;
const TOKEN: &str = "hammer-reader-token-0123456789";

#[test]
fn probes_report_in_time_while_the_http_side_is_hammered() {
    let _machine = crate::support::alone();
    let lab = lab();
    let hash = bcrypt::hash("the-right-password", 10).expect("hash");
    let http = format!(
        "[http]\nloopback_role = \"none\"\n\n[[http.user]]\nname = \"reader\"\nrole = \"read\"\ntoken_sha256 = \"{}\"\n\n[[http.user]]\nname = \"ops\"\nrole = \"operate\"\npassword_bcrypt = \"{hash}\"\n",
        hex::encode(cemwatch_coordinator::http::auth::token_digest(TOKEN))
    );
    let config = write_config(&lab, &http);
    let coord = start_coordinator("coordinator", &config);

    // 200,000 events beside the coordinator (WAL: its writer keeps going).
    {
        let mut db =
            rusqlite::Connection::open(lab.dir.path().join("data").join("cemwatch.sqlite"))
                .expect("open the store to write");
        db.busy_timeout(Duration::from_secs(10)).expect("busy");
        let tx = db.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare("INSERT INTO events (at, probe, check_name, from_verdict, to_verdict, codes) VALUES (?1, ?2, ?3, 'ok', 'fail', 'tcp_filtered')")
                .expect("prepare");
            for i in 0..EVENTS {
                insert
                    .execute(rusqlite::params![
                        i,
                        format!("old-{}", i % 5000),
                        format!("old-check-{}", i % 50)
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }

    let probes = reporting::start(&lab, &coord, &config, "site=eu-west");
    let calm = reporting::calm();

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<BTreeMap<(String, u16), u64>>> = Arc::default();
    let bearer = format!("authorization: Bearer {TOKEN}");
    let wrong = format!(
        "authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:a-wrong-guess")
    );
    let paths = [
        "/api/v1/events?limit=1000",
        "/api/v1/events?check=old-check-7&limit=1000",
        "/api/v1/events?probe=old-17&limit=1000",
        "/api/v1/events?since_ms=100000&until_ms=150000&limit=1000",
        "/api/v1/events?check=nothing-like-it&limit=1000",
        "/api/v1/probes",
        "/metrics",
        "/api/v1/fleet",
    ];
    let hammer_from = reporting::now_ms();
    let mut clients = Vec::new();
    for i in 0..READERS + GUESSERS {
        let (stop, statuses, http) = (stop.clone(), statuses.clone(), coord.http);
        let (header, kind) = if i < READERS {
            (bearer.clone(), "reader")
        } else {
            (wrong.clone(), "guesser")
        };
        clients.push(std::thread::spawn(move || {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let path = if kind == "reader" {
                    paths[n % paths.len()]
                } else {
                    "/api/v1/fleet"
                };
                n += 1;
                let status = http_with(http, "GET", path, &[header.as_str()], "")
                    .map(|(s, _)| s)
                    .unwrap_or(0);
                *statuses
                    .lock()
                    .expect("lock")
                    .entry((kind.to_string(), status))
                    .or_default() += 1;
            }
        }));
    }
    std::thread::sleep(HAMMER);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let hammer_to = reporting::now_ms();

    let latency = reporting::Latency::measure(&lab, calm, (hammer_from, hammer_to));
    let statuses = statuses.lock().expect("lock").clone();
    let answered: u64 = statuses
        .iter()
        .filter(|((k, s), _)| k == "reader" && *s == 200)
        .map(|(_, n)| n)
        .sum();
    let refused_guesses: u64 = statuses
        .iter()
        .filter(|((k, s), _)| k == "guesser" && *s == 401)
        .map(|(_, n)| n)
        .sum();
    println!(
        "\nHTTP hammered for {} s by {READERS} readers and {GUESSERS} password guessers, {EVENTS} events in the store:",
        HAMMER.as_secs()
    );
    println!("  HTTP answers by (client, status): {statuses:?}");
    println!("{}", latency.line());

    assert!(answered >= 100, "the readers were answered: {statuses:?}");
    assert!(
        refused_guesses >= 1,
        "the guesses were refused: {statuses:?}"
    );
    assert!(
        !statuses.keys().any(|(k, s)| k == "guesser" && *s == 200),
        "no wrong password got in"
    );
    latency.assert_kept_reporting(HAMMER.as_secs() as i64, "HTTP hammering");
    drop(probes);
}
