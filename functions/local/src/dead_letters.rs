//! `webhook-hub dead-letters list|redrive`: the operator's view of the dead-letter queues, on
//! AWS (SQS) or in the SQLite file (what no subscription keeps: unreadable messages, events that
//! could not be fanned out, and a copy of each exhausted delivery; the sweeper drops them after
//! the retention). `list` shows what waits there without taking it; `redrive`
//! sends each message back to its queue (a delivery with a fresh retry schedule) and then removes
//! it from the dead-letter queue, so a crash in between sends it twice, never loses it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hub::adapters::sqlite::{Durability, SqliteDb, SqliteQueue};
use hub::adapters::sqs::SqsQueue;
use hub::model::DeliveryTask;
use hub::ports::{OutgoingMessage, Queue, ReceivedMessage};
use hub::runtime::config::AwsResources;
use serde_json::Value;

use crate::cli::Backend;

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
        target: Target,
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
        target: Target,
    },
}

/// Whose dead letters.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// aws (SQS, from the standard AWS environment) or sqlite (the --data file; stop `serve`
    /// first, it holds the file)
    #[arg(long, value_enum, default_value = "aws")]
    backend: Backend,
    /// With --backend sqlite: the database file
    #[arg(long, env = "HUB_DATA", default_value = "webhook-hub.db")]
    data: PathBuf,
    #[command(flatten)]
    aws: AwsResources,
}

/// How long a message taken for `list` or `redrive` stays hidden from other readers meanwhile.
const HOLD: Duration = Duration::from_secs(60);

/// Runs the command against the queues its options name.
pub async fn dead_letters(options: DeadLettersOptions) -> Result<(), String> {
    let (which, max, target) = match &options.action {
        Action::List { queue, max, target } | Action::Redrive { queue, max, target } => {
            (*queue, *max as usize, target)
        }
    };
    let mut database = None;
    let (name, source, dead): (String, Arc<dyn Queue>, Arc<dyn Queue>) = match target.backend {
        Backend::Aws => {
            let config = hub::adapters::aws_http::sdk_config().await;
            let sqs = aws_sdk_sqs::Client::new(&config);
            let name = match which {
                Which::Deliveries => &target.aws.deliveries_queue,
                Which::Events => &target.aws.events_queue,
            };
            let source = SqsQueue::open(sqs, name).await.map_err(|e| e.to_string())?;
            let dead = source
                .dead_letter_queue()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            (name.clone(), Arc::new(source), Arc::new(dead))
        }
        Backend::Sqlite => {
            if !target.data.exists() {
                return Err(format!("{} does not exist", target.data.display()));
            }
            let db = SqliteDb::open(&target.data, Durability::Normal)?;
            let name = match which {
                Which::Deliveries => "deliveries",
                Which::Events => "events",
            };
            let visibility = target.aws.queue_visibility;
            let dead_name = format!("{name}-dlq");
            let source = SqliteQueue::new(db.clone(), name, visibility, u32::MAX, Some(&dead_name));
            let dead = SqliteQueue::new(db.clone(), &dead_name, visibility, u32::MAX, None);
            database = Some(db);
            (name.to_string(), Arc::new(source), Arc::new(dead))
        }
        Backend::Memory => return Err("--backend memory keeps no dead letters".into()),
    };
    let outcome = run(&options.action, which, max, &name, &*source, &*dead).await;
    if let Some(db) = database {
        db.flush().await.map_err(|e| e.to_string())?;
    }
    outcome
}

async fn run(
    action: &Action,
    which: Which,
    max: usize,
    name: &str,
    source: &dyn Queue,
    dead: &dyn Queue,
) -> Result<(), String> {
    match action {
        Action::List { .. } => {
            let taken = take(dead, max).await?;
            for msg in &taken {
                println!("{}", describe(msg));
            }
            // Back in view at once: listing moves nothing.
            let receipts: Vec<String> = taken.iter().map(|m| m.receipt.clone()).collect();
            let _ = dead.postpone_all(&receipts, Duration::ZERO).await;
            println!(
                "{} dead letter(s) on {}'s dead-letter queue",
                taken.len(),
                name
            );
            Ok(())
        }
        Action::Redrive { .. } => {
            let redriven = redrive(dead, source, which, max).await?;
            println!("redrove {redriven} dead letter(s) to {name}");
            Ok(())
        }
    }
}

/// Up to `max` distinct messages, each hidden for [`HOLD`] while taken (ten per receive, as
/// SQS allows; each batch hidden in one call).
async fn take(dead: &dyn Queue, max: usize) -> Result<Vec<ReceivedMessage>, String> {
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
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
        let _ = dead.postpone_all(&receipts, HOLD).await;
        for msg in batch {
            if seen.insert(msg.id.clone()) {
                taken.push(msg);
            }
        }
    }
    Ok(taken)
}

/// Sends up to `max` dead letters back to `source`, then removes each from `dead`.
async fn redrive(
    dead: &dyn Queue,
    source: &dyn Queue,
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
                group: None,
            })
            .collect();
        source.send(messages).await.map_err(|e| e.to_string())?;
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
        dead.ack_all(&receipts).await.map_err(|e| e.to_string())?;
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
