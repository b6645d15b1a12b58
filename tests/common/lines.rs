//! Reading a child process's output line by line without ever blocking it.

use std::io::{BufRead as _, BufReader, Read};
use std::sync::mpsc;

/// Reads `pipe` (a child's stdout or stderr) on a thread of its own and sends each line; the
/// thread stops at the end of the output or when the receiver is dropped. The child never
/// blocks on a full pipe while the receiver lives.
pub fn forward_lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}
