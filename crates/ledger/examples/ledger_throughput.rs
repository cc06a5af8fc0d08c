//! Sustained records per second into the ledger: `N` records sent as fast as one thread can
//! send them, timed from the first send to the flush that commits the last.
//!
//! usage: cargo run --release -p smallfirst-ledger --example ledger_throughput -- [ROWS] [COMMIT_MS] [POSTGRES_URL]
//!
//! Without a URL, into a SQLite file in a temporary directory; with one, into that database
//! (its `smallfirst_requests` table should be empty: the count is checked).

use std::time::{Duration, Instant};

use smallfirst_ledger::{Ledger, Query, Record, Status, Target, Tokens};

fn record(i: usize) -> Record {
    Record {
        at_ms: 1_796_601_600_000 + i as i64,
        request_id: format!("req_{i:024x}"),
        replica: "bench:1".into(),
        key: Some("team-a".into()),
        ingress: "chat".into(),
        task: Some("classify".into()),
        task_source: Some("header".into()),
        reason: "task=classify".into(),
        tier: Some(
            if i.is_multiple_of(4) {
                "frontier"
            } else {
                "local"
            }
            .into(),
        ),
        model: Some("qwen2.5-coder-1.5b-instruct".into()),
        on_machine: !i.is_multiple_of(4),
        tried: vec!["local".into()],
        escalated: i.is_multiple_of(4),
        confidence: Some(0.91),
        method: Some("label_probability".into()),
        tokens: Tokens {
            prompt: 220,
            cached: 180,
            cache_write: 0,
            completion: 4,
            reasoning: 0,
        },
        cost: 0.0,
        baseline_cost: Some(0.00059),
        latency_ms: 41.5,
        ttft_ms: None,
        http_status: 200,
        status: Status::Answered,
        prompt: None,
        answer: None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let window = Duration::from_millis(args.next().map_or(Ok(50), |a| a.parse())?);
    let dir = tempfile::tempdir()?;
    let target = match args.next() {
        Some(url) => Target::Postgres(url),
        None => Target::Sqlite(dir.path().join("ledger.sqlite")),
    };
    let ledger = Ledger::open(target.clone(), window)?;
    let start = Instant::now();
    for i in 0..rows {
        ledger.record(record(i));
    }
    ledger.flush()?;
    let secs = start.elapsed().as_secs_f64();
    let commits = ledger
        .stats()
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);
    let kept = ledger.report(&Query::default())?.total.requests;
    ledger.close()?;
    assert_eq!(kept, rows as u64, "every record committed");
    eprintln!(
        "{target}: {rows} records in {secs:.3} s: {:.0} records/s, {commits} commits ({:.0} records each), window {} ms",
        rows as f64 / secs,
        rows as f64 / commits.max(1) as f64,
        window.as_millis()
    );
    Ok(())
}
