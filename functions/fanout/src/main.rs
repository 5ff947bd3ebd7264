//! The `fanout` Lambda function: events queue → one delivery task per matching subscription.

use hub::runtime::consume::QueueRole;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_queue(QueueRole::Events).await
}
