//! The log writer of `webhook-hub serve`: a logging thread appends its formatted line to a shared
//! buffer (one short lock: no system call, no thread woken), and a thread of its own writes what
//! has gathered every few milliseconds in one large write. A channel with a writer thread woken
//! per line (what `serve` had before) costs a wake-up and a context switch per request and per
//! attempt; profiled under the throughput harness, that was half of the logging's share.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::Duration;

/// How long lines gather before the writer thread writes them out.
const GATHER: Duration = Duration::from_millis(5);
/// Bytes gathered at most: past this a logging thread waits for the writer (no line is dropped).
const MAX_GATHERED: usize = 8 * 1024 * 1024;

struct State {
    gathered: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer early: the buffer is past half full, or the guard was dropped.
    wake: Condvar,
    /// Wakes logging threads waiting for room.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where `tracing` writes `serve`'s lines: gathers them for the writer thread.
#[derive(Clone)]
pub struct GatheredLines {
    shared: Arc<Shared>,
}

/// One line's writer, handed out per log line.
pub struct LineSink<'a> {
    shared: &'a Shared,
}

impl Write for LineSink<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.gathered.len() >= MAX_GATHERED && !state.closed {
            self.shared.wake.notify_one();
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.gathered.extend_from_slice(line);
        if state.gathered.len() >= MAX_GATHERED / 2 {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for GatheredLines {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineSink {
            shared: &self.shared,
        }
    }
}

/// How long dropping the guard waits for the last lines to be written (stdout may be a pipe
/// nobody reads any more: exiting must not hang on it).
const LAST_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Keeps the writer thread; dropping it writes out what is left and waits for that (at most
/// [`LAST_WRITE_WAIT`]).
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    finished: mpsc::Receiver<()>,
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let _ = self.finished.recv_timeout(LAST_WRITE_WAIT);
    }
}

/// Starts the writer thread on `out`: lines given to the returned [`GatheredLines`] reach `out`
/// within [`GATHER`], in the order they were logged.
pub fn start(mut out: impl Write + Send + 'static) -> (GatheredLines, LogWriterGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            gathered: Vec::with_capacity(64 * 1024),
            closed: false,
        }),
        wake: Condvar::new(),
        drained: Condvar::new(),
    });
    let writer = shared.clone();
    let (finish, finished) = mpsc::channel();
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let mut spare = Vec::with_capacity(64 * 1024);
            loop {
                let closed = {
                    let state = writer.lock();
                    let (mut state, _) = writer
                        .wake
                        .wait_timeout_while(state, GATHER, |s| {
                            !s.closed && s.gathered.len() < MAX_GATHERED / 2
                        })
                        .unwrap_or_else(|p| p.into_inner());
                    std::mem::swap(&mut state.gathered, &mut spare);
                    state.closed
                };
                writer.drained.notify_all();
                if !spare.is_empty() {
                    let _ = out.write_all(&spare);
                    let _ = out.flush();
                    spare.clear();
                }
                if closed && writer.lock().gathered.is_empty() {
                    let _ = finish.send(());
                    return;
                }
            }
        })
        .expect("the log writer thread starts");
    (
        GatheredLines {
            shared: shared.clone(),
        },
        LogWriterGuard { shared, finished },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_comes_out_in_order_by_the_time_the_guard_is_gone() {
        let captured = Captured::default();
        let (lines, guard) = start(captured.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000 {
                        let line = format!("{t} {n} {}\n", "x".repeat(n % 300));
                        lines.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let mut fields = line.split(' ');
            let t: usize = fields.next().unwrap().parse().unwrap();
            let n: usize = fields.next().unwrap().parse().unwrap();
            assert_eq!(n, next[t], "thread {t}'s lines in order, none lost");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    /// An output that never takes a byte (a pipe nobody reads).
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn exiting_does_not_hang_on_an_output_that_takes_nothing() {
        let (lines, guard) = start(Stuck);
        lines.make_writer().write_all(b"never read\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let started = std::time::Instant::now();
        drop(guard);
        assert!(started.elapsed() < LAST_WRITE_WAIT + Duration::from_secs(1));
    }

    #[test]
    fn a_line_reaches_the_output_without_waiting_for_more() {
        let captured = Captured::default();
        let (lines, _guard) = start(captured.clone());
        lines.make_writer().write_all(b"alone\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while captured.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "written within its gathering time"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(captured.0.lock().unwrap().as_slice(), b"alone\n");
    }
}
