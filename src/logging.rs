//! Log output for `serve`: one event per line, on stderr. Colour codes only when stderr is a terminal (a file or
//! a pipe gets plain text), and no event can span two lines: a line break or carriage return inside an event, and
//! an escape character when colour is off, are written escaped. Request data is also logged only through typed or
//! `Debug`-formatted fields; this writer makes a slip there harmless (no forged line in a log file).

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (level from `RUST_LOG`, default `info`).
pub fn init() {
    let colour = io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(colour)
        .with_writer(OneLine { colour })
        .init();
}

/// Makes [`OneLineWriter`]s over stderr.
#[derive(Clone, Copy)]
struct OneLine {
    colour: bool,
}

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter<io::Stderr>;
    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter { inner: io::stderr(), colour: self.colour }
    }
}

/// Writes a formatted event, escaping every control character that could start a new line or (without colour)
/// an escape sequence, except the final newline that ends the event.
pub struct OneLineWriter<W: Write> {
    inner: W,
    colour: bool,
}

impl<W: Write> OneLineWriter<W> {
    pub fn new(inner: W, colour: bool) -> Self {
        Self { inner, colour }
    }
}

/// `buf` with its inner line breaks (and escapes, when `colour` is off) written as `\n`, `\r`, `\x1b`.
fn escape(buf: &[u8], colour: bool) -> Vec<u8> {
    let (body, end) = match buf.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (buf, &b""[..]),
    };
    let mut out = Vec::with_capacity(buf.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x1b if !colour => out.extend_from_slice(b"\\x1b"),
            0x0b | 0x0c | 0x85 => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape(buf, self.colour))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_on_one_line_and_carries_no_escape_codes_without_colour() {
        let forged = b"INFO launch refused asked=x\nINFO forged line\r\x1b[31mred\n";
        let out = escape(forged, false);
        assert_eq!(out, b"INFO launch refused asked=x\\nINFO forged line\\r\\x1b[31mred\n");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(escape(b"\x1b[2mcolour\x1b[0m ok\n", true), b"\x1b[2mcolour\x1b[0m ok\n");
        let mut w = OneLineWriter::new(Vec::new(), false);
        w.write_all(b"a\nb\n").unwrap();
        assert_eq!(w.inner, b"a\\nb\n");
    }
}
