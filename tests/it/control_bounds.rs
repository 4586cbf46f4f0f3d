//! Hostile control requests cost imds little: two 1 MiB `DescribeInstances` bodies of thousands
//! of filters, sent at once, are refused quickly (`FilterLimitExceeded`, as EC2 does), and guests
//! are answered promptly meanwhile (the control API and the guest API share the runtime's
//! threads).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::process::{exchange, get, serve};

/// Below the control API's 1 MiB body limit, so the body is read whole and parsed.
const BODY_BYTES: usize = 1_000_000;

/// `DescribeInstances` with as many `Filter.N.Name` / `Filter.N.Value.M` (three values each) as
/// fit in [`BODY_BYTES`]: about 9,000 filters and 36,000 parameters.
fn hostile_describe_instances() -> String {
    let mut body = String::from("Action=DescribeInstances&Version=2016-11-15");
    let mut n = 1;
    loop {
        let filter = format!(
            "&Filter.{n}.Name=tag%3AName&Filter.{n}.Value.1=web-{n}\
             &Filter.{n}.Value.2=db-{n}&Filter.{n}.Value.3=cache-{n}"
        );
        if body.len() + filter.len() > BODY_BYTES {
            return body;
        }
        body.push_str(&filter);
        n += 1;
    }
}

#[test]
fn two_hostile_describe_instances_at_once_are_refused_quickly_and_guests_wait_little() {
    let served = serve(&[]);
    let control = served.control[0].clone();
    let body = Arc::new(hostile_describe_instances());
    assert!(body.len() > 990_000, "{}", body.len());
    // Warm the guest path (first connection, first snapshot read) before measuring it.
    assert_eq!(get(&served, "/latest/meta-data/instance-id").0, 200);

    let start = Arc::new(Barrier::new(3));
    let done = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (control, body, start) = (control.clone(), body.clone(), start.clone());
            std::thread::spawn(move || {
                let request = format!(
                    "POST / HTTP/1.1\r\nHost: {{addr}}\r\nConnection: close\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                start.wait();
                let started = Instant::now();
                let answer = exchange(&control, &request).unwrap();
                (started.elapsed(), answer)
            })
        })
        .collect();

    // Guest GETs, one at a time, from the moment the hostile requests are sent until both are
    // answered.
    let guest = {
        let (endpoint, start, done) = (served.endpoints[0].clone(), start.clone(), done.clone());
        std::thread::spawn(move || {
            let request = "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: {addr}\r\n\r\n";
            start.wait();
            let mut waits = Vec::new();
            while !done.load(Ordering::Acquire) || waits.len() < 5 {
                let started = Instant::now();
                let (status, _) = exchange(&endpoint, request).unwrap();
                waits.push(started.elapsed());
                assert_eq!(status, 200);
                // Well below the instance's 1024 requests a second, beyond which it gets 429.
                std::thread::sleep(Duration::from_millis(5));
            }
            waits
        })
    };
    let answers: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    let waits = guest.join().unwrap();
    let slowest_guest = waits.iter().max().copied().unwrap_or_default();
    let slowest_control = answers.iter().map(|(took, _)| *took).max().unwrap();
    println!(
        "control answers in {:?}; {} guest GETs meanwhile, the slowest in {slowest_guest:?}",
        answers.iter().map(|(took, _)| took).collect::<Vec<_>>(),
        waits.len()
    );

    for (_, (status, body)) in &answers {
        assert_eq!(*status, 400, "{body}");
        assert!(body.contains("<Code>FilterLimitExceeded</Code>"), "{body}");
    }
    // Measured in a debug build on 2 cores: about 0.1 s for the control answers and 5 ms for a
    // guest GET at worst (0.9 s and 90 ms with two busy loops taking the cores too). Before
    // requests were indexed once, and large ones parsed beside the runtime's threads, each
    // control answer took 4 s and a guest GET waited as long.
    assert!(
        slowest_control < Duration::from_secs(2),
        "control answers took {slowest_control:?}"
    );
    assert!(
        slowest_guest < Duration::from_millis(250),
        "a guest GET waited {slowest_guest:?}"
    );
}
