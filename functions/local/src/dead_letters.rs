//! `webhook-hub dead-letters list|redrive`: the operator's view of the AWS dead-letter queues
//! (what no subscription keeps: unreadable messages, events that could not be fanned out, and a
//! copy of each exhausted delivery). `list` shows what waits there without taking it; `redrive`
//! sends each message back to its queue (a delivery with a fresh retry schedule) and then removes
//! it from the dead-letter queue, so a crash in between sends it twice, never loses it.

use std::collections::HashSet;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hub::adapters::sqs::SqsQueue;
use hub::model::DeliveryTask;
use hub::ports::{OutgoingMessage, Queue, ReceivedMessage};
use hub::runtime::config::AwsResources;
use serde_json::Value;

/// Which queue's dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The deliveries queue's (exhausted or unreadable delivery tasks)
    Deliveries,
    /// The events queue's (events that could not be fanned out)
    Events,
}

/// `dead-letters` and what it does.
#[derive(Debug, Clone, Args)]
pub struct DeadLettersOptions {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with the dead letters.
#[derive(Debug, Clone, Subcommand)]
pub enum Action {
    /// Show the messages waiting (they stay where they are)
    List {
        /// Which queue's dead letters
        #[arg(long, value_enum, default_value = "deliveries")]
        queue: Which,
        /// At most this many
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max: u32,
        #[command(flatten)]
        aws: AwsResources,
    },
    /// Send the messages back to their queue (deliveries start their retry schedule afresh)
    Redrive {
        /// Which queue's dead letters
        #[arg(long, value_enum, default_value = "deliveries")]
        queue: Which,
        /// At most this many
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max: u32,
        #[command(flatten)]
        aws: AwsResources,
    },
}

/// How long a message taken for `list` or `redrive` stays hidden from other readers meanwhile.
const HOLD: Duration = Duration::from_secs(60);

/// Runs the command against the queues its options name (the standard AWS environment).
pub async fn dead_letters(options: DeadLettersOptions) -> Result<(), String> {
    let config = aws_config::load_from_env().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (which, max, aws) = match &options.action {
        Action::List { queue, max, aws } | Action::Redrive { queue, max, aws } => {
            (*queue, *max as usize, aws)
        }
    };
    let name = match which {
        Which::Deliveries => &aws.deliveries_queue,
        Which::Events => &aws.events_queue,
    };
    let source = SqsQueue::open(sqs, name).await.map_err(|e| e.to_string())?;
    let dead = source
        .dead_letter_queue()
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    match options.action {
        Action::List { .. } => {
            let taken = take(&dead, max).await?;
            for msg in &taken {
                println!("{}", describe(msg));
            }
            // Back in view at once: listing moves nothing.
            for msg in &taken {
                let _ = dead.postpone(&msg.receipt, Duration::ZERO).await;
            }
            println!(
                "{} dead letter(s) on {}'s dead-letter queue",
                taken.len(),
                name
            );
            Ok(())
        }
        Action::Redrive { .. } => {
            let redriven = redrive(&dead, &source, which, max).await?;
            println!("redrove {redriven} dead letter(s) to {name}");
            Ok(())
        }
    }
}

/// Up to `max` distinct messages, each hidden for [`HOLD`] while taken.
async fn take(dead: &SqsQueue, max: usize) -> Result<Vec<ReceivedMessage>, String> {
    let mut taken = Vec::new();
    let mut seen = HashSet::new();
    while taken.len() < max {
        let batch = dead
            .receive((max - taken.len()).min(10), Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        for msg in batch {
            let _ = dead.postpone(&msg.receipt, HOLD).await;
            if seen.insert(msg.id.clone()) {
                taken.push(msg);
            }
        }
    }
    Ok(taken)
}

/// Sends up to `max` dead letters back to `source`, then removes each from `dead`.
async fn redrive(
    dead: &SqsQueue,
    source: &SqsQueue,
    which: Which,
    max: usize,
) -> Result<usize, String> {
    let mut redriven = 0;
    while redriven < max {
        let batch = take(dead, (max - redriven).min(10)).await?;
        if batch.is_empty() {
            break;
        }
        let messages = batch
            .iter()
            .map(|msg| OutgoingMessage {
                body: afresh(which, &msg.body),
                delay: Duration::ZERO,
            })
            .collect();
        source.send(messages).await.map_err(|e| e.to_string())?;
        for msg in &batch {
            dead.ack(&msg.receipt).await.map_err(|e| e.to_string())?;
        }
        redriven += batch.len();
    }
    Ok(redriven)
}

/// The body to send back: a delivery task starts its schedule again (its count and earliest
/// time cleared, or it would be exhausted at its first attempt); anything else as it was.
fn afresh(which: Which, body: &str) -> String {
    match (which, serde_json::from_str::<DeliveryTask>(body)) {
        (Which::Deliveries, Ok(task)) => hub::model::queue_json(&DeliveryTask {
            attempts_made: 0,
            not_before_ms: None,
            ..task
        }),
        _ => body.to_string(),
    }
}

/// One line per dead letter: its id, receive count and what it carries.
fn describe(msg: &ReceivedMessage) -> String {
    let body: Value = serde_json::from_str(&msg.body).unwrap_or(Value::Null);
    let event = match &body["payload"]["event"] {
        Value::Null => &body,
        event => event,
    };
    format!(
        "{}  received {}x  subscription {}  event {}  topic {}  attempts {}",
        msg.id,
        msg.receive_count,
        body["subscription_id"].as_str().unwrap_or("-"),
        event["id"].as_str().unwrap_or("-"),
        event["topic"].as_str().unwrap_or("-"),
        body["attempts_made"].as_u64().unwrap_or(0),
    )
}
