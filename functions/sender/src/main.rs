//! The `sender` Lambda function: deliveries queue → one signed attempt per message, retries by
//! message visibility, partial batch failures.

use hub::runtime::consume::QueueRole;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_queue(QueueRole::Deliveries).await
}
