//! Checks every [`Queue`] adapter must pass, run by each adapter's tests on its own queue.

use std::time::Duration;

use crate::ports::{OutgoingMessage, Queue};

/// Settling by the batch: `ack_all` removes the receipts given (a stale one is skipped),
/// `postpone_all` hides the others until their time, and only those come back.
pub(crate) async fn batches_are_acknowledged_and_postponed_in_one_call(q: &dyn Queue) {
    let bodies = ["a", "b", "c", "d"].map(|body| OutgoingMessage {
        body: body.into(),
        delay: Duration::ZERO,
        group: None,
    });
    q.send(bodies.to_vec()).await.unwrap();
    let got = q.receive(10, Duration::from_millis(50)).await.unwrap();
    assert_eq!(got.len(), 4);
    let receipts = |range: std::ops::Range<usize>| -> Vec<String> {
        got[range].iter().map(|m| m.receipt.clone()).collect()
    };
    let mut acked = receipts(0..2);
    acked.push("9999:1".into());
    q.ack_all(&acked).await.unwrap();
    q.postpone_all(&receipts(2..4), Duration::from_millis(300))
        .await
        .unwrap();
    let postponed = std::time::Instant::now();
    let mut again = Vec::new();
    while again.len() < 2 {
        again.extend(q.receive(10, Duration::from_secs(10)).await.unwrap());
    }
    assert!(postponed.elapsed() >= Duration::from_millis(250));
    let mut bodies: Vec<String> = again.into_iter().map(|m| m.body).collect();
    bodies.sort();
    assert_eq!(bodies, ["c", "d"]);
    // The acknowledged ones are gone for good.
    assert!(
        q.receive(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Dead letters older than the retention go; younger ones stay.
pub(crate) async fn dead_letters_end_with_the_retention(q: &dyn Queue, dead: &dyn Queue) {
    q.dead_letter("old".into()).await.unwrap();
    let cut = crate::clock::wall_ms() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.dead_letter("young".into()).await.unwrap();
    assert_eq!(q.prune_dead_letters(cut).await.unwrap(), 1);
    let left = dead.receive(10, Duration::from_millis(50)).await.unwrap();
    let bodies: Vec<&str> = left.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["young"]);
}
