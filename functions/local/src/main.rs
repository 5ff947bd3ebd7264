//! `webhook-hub`: every function of the hub in one process, for one machine (the embedded mode).

mod catalog;
mod cli;
mod dead_letters;
mod keys;
mod listen;
mod server;

/// mimalloc instead of glibc's malloc: a profile of `serve` under load put 16 % of its CPU in
/// glibc's malloc and free (BENCHMARKS.md, "Where a delivery's time goes"); every request,
/// delivery and log line allocates, across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match cli.command {
        cli::Command::Serve(options) => finish(server::serve(options).await),
        cli::Command::Listen(options) => finish(listen::listen(options).await),
        cli::Command::DeadLetters(options) => finish(dead_letters::dead_letters(options).await),
        cli::Command::Keys(options) => finish(keys::keys(options).await),
        cli::Command::Catalog(options) => finish(catalog::catalog(options).await),
        cli::Command::Backup(options) => finish(
            hub::adapters::sqlite::backup(&options.data, &options.to).map(|pages| {
                println!(
                    "webhook-hub: backed up {} to {} ({pages} pages)",
                    options.data.display(),
                    options.to.display()
                );
            }),
        ),
    }
}

fn finish(outcome: Result<(), String>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("webhook-hub: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
