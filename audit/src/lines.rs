//! Reading an audit log line by line with a bound on each line, so that a damaged or hostile
//! file costs a bounded amount of memory to open, verify or export.

use std::io::BufRead;

use crate::record::MAX_LINE_LEN;

/// One line of a log.
#[derive(Debug, PartialEq, Eq)]
pub enum LogLine {
    /// A complete line (without its newline), numbered from 1.
    Line { number: u64, bytes: Vec<u8> },
    /// A line longer than [`MAX_LINE_LEN`]: skipped, never held in memory.
    TooLong { number: u64 },
    /// Bytes after the last newline: a write cut short (a crash, a full disk), starting at
    /// byte `offset` of the file.
    TornTail { number: u64, offset: u64 },
}

/// Iterates the lines of `reader`.
pub struct Lines<R> {
    reader: R,
    number: u64,
    offset: u64,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Lines {
            reader,
            number: 0,
            offset: 0,
            done: false,
        }
    }

    /// Bytes of complete lines read so far (where a torn tail starts).
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = std::io::Result<LogLine>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut bytes = Vec::new();
        let mut len = 0usize;
        let mut too_long = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e)),
            };
            if buf.is_empty() {
                self.done = true;
                if len == 0 {
                    return None;
                }
                self.number += 1;
                return Some(Ok(LogLine::TornTail {
                    number: self.number,
                    offset: self.offset,
                }));
            }
            let (chunk, ends) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], true),
                None => (buf, false),
            };
            len += chunk.len();
            if len > MAX_LINE_LEN {
                too_long = true;
                bytes = Vec::new();
            } else {
                bytes.extend_from_slice(chunk);
            }
            let used = chunk.len() + usize::from(ends);
            self.reader.consume(used);
            if ends {
                self.number += 1;
                self.offset += len as u64 + 1;
                let number = self.number;
                return Some(Ok(if too_long {
                    LogLine::TooLong { number }
                } else {
                    LogLine::Line { number, bytes }
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<LogLine> {
        Lines::new(std::io::BufReader::with_capacity(7, input))
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn lines_are_numbered_and_a_torn_tail_is_named_with_its_offset() {
        let got = lines(b"ab\n\ncdefghijk\nxy");
        assert_eq!(
            got,
            vec![
                LogLine::Line {
                    number: 1,
                    bytes: b"ab".to_vec()
                },
                LogLine::Line {
                    number: 2,
                    bytes: vec![]
                },
                LogLine::Line {
                    number: 3,
                    bytes: b"cdefghijk".to_vec()
                },
                LogLine::TornTail {
                    number: 4,
                    offset: 14
                },
            ]
        );
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_held() {
        let mut input = vec![b'x'; MAX_LINE_LEN + 10];
        input.extend_from_slice(b"\nok\n");
        let got = lines(&input);
        assert_eq!(got[0], LogLine::TooLong { number: 1 });
        assert_eq!(
            got[1],
            LogLine::Line {
                number: 2,
                bytes: b"ok".to_vec()
            }
        );
    }
}
