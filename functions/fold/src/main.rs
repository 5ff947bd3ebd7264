//! The `fold` Lambda function, on the table's DynamoDB stream (filtered to the delivery log's
//! inserts, in batches with a batching window): adds each subscription's successes to its
//! odometer in one write per batch, so the sender writes only the log.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hub::runtime::lambda::serve_fold().await
}
