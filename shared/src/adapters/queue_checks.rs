//! Checks every [`Queue`] adapter must pass, run by each adapter's tests on its own queue (and
//! by the integration tests on SQS, on the emulator).

use std::time::Duration;

use crate::ports::{OutgoingMessage, Queue};

/// Settling by the batch: `ack_all` removes the receipts given (a stale one is skipped),
/// `postpone_all` hides the others until their time, and only those come back.
pub async fn batches_are_acknowledged_and_postponed_in_one_call(q: &dyn Queue) {
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
pub async fn dead_letters_end_with_the_retention(q: &dyn Queue, dead: &dyn Queue) {
    q.dead_letter("old".into()).await.unwrap();
    let cut = crate::clock::wall_ms() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.dead_letter("young".into()).await.unwrap();
    assert_eq!(q.prune_dead_letters(cut).await.unwrap(), 1);
    let left = dead.receive(10, Duration::from_millis(50)).await.unwrap();
    let bodies: Vec<&str> = left.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["young"]);
}

/// Ordered groups, as an SQS FIFO queue keeps them: a group's messages are handed out in the
/// order sent, never one while an earlier one of its group is in flight (hidden or not yet
/// acknowledged), and another group is not held back by it. `q` must take groups (on SQS, a
/// FIFO queue).
pub async fn ordered_groups_go_one_at_a_time_in_order(q: &dyn Queue) {
    let message = |body: &str, group: &str| OutgoingMessage {
        body: body.into(),
        delay: Duration::ZERO,
        group: Some(group.into()),
    };
    q.send(vec![
        message("a1", "a"),
        message("a2", "a"),
        message("b1", "b"),
        message("a3", "a"),
    ])
    .await
    .unwrap();
    // Whatever one receive hands out of a group is its next messages, in order.
    let mut got = Vec::new();
    while !got
        .iter()
        .any(|m: &crate::ports::ReceivedMessage| m.body == "b1")
    {
        got.extend(q.receive(10, Duration::from_secs(2)).await.unwrap());
    }
    let of_a: Vec<&str> = got
        .iter()
        .map(|m| m.body.as_str())
        .filter(|b| b.starts_with('a'))
        .collect();
    assert!(
        ["a1", "a2", "a3"].starts_with(&of_a) && !of_a.is_empty(),
        "group a in order from its first: {of_a:?}"
    );
    // a1 fails and is hidden for a while; what else was handed out of group a comes back at
    // once. Group a is held until a1 is through; group b is not.
    let receipt_of = |body: &str| {
        got.iter()
            .find(|m| m.body == body)
            .map(|m| m.receipt.clone())
            .unwrap()
    };
    q.postpone(&receipt_of("a1"), Duration::from_secs(6))
        .await
        .unwrap();
    for later in of_a.iter().skip(1) {
        q.postpone(&receipt_of(later), Duration::ZERO)
            .await
            .unwrap();
    }
    q.ack(&receipt_of("b1")).await.unwrap();
    let held = q.receive(10, Duration::from_millis(500)).await.unwrap();
    assert!(
        held.is_empty(),
        "nothing of group a overtakes its hidden first: {:?}",
        held.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    // a1 comes back first; once acknowledged, a2 then a3.
    let mut order = Vec::new();
    let started = std::time::Instant::now();
    while order.len() < 3 && started.elapsed() < Duration::from_secs(30) {
        for m in q.receive(1, Duration::from_secs(2)).await.unwrap() {
            order.push(m.body.clone());
            q.ack(&m.receipt).await.unwrap();
        }
    }
    assert_eq!(order, ["a1", "a2", "a3"]);
}
