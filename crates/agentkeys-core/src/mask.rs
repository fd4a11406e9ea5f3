//! Streaming masking of credential values in a child's output. Output arrives in arbitrary
//! chunks, so a value can be split across reads: the masker holds back only from the earliest
//! position that could still grow into a value (usually nothing), so ordinary output flows through
//! at once while no split value slips out. Overlapping values are masked as one run.
//!
//! The masker borrows the values instead of copying them (a search automaton would keep copies
//! in the heap): they stay in the caller's secret memory.

use zeroize::Zeroizing;

/// What a masked value is replaced with.
pub const MASK: &[u8] = b"********";

pub struct Masker<'a> {
    secrets: Vec<&'a [u8]>,
    pending: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Masker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker").field("secrets", &self.secrets.len()).finish_non_exhaustive()
    }
}

impl<'a> Masker<'a> {
    /// A masker for these values (empty ones are ignored).
    pub fn new(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let secrets: Vec<&'a [u8]> = values.into_iter().filter(|v| !v.is_empty()).collect();
        Self { secrets, pending: Zeroizing::new(Vec::new()) }
    }

    /// Every occurrence of every value in `buf`, overlapping ones included.
    fn occurrences(&self, buf: &[u8]) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        for secret in &self.secrets {
            let mut from = 0;
            while let Some(at) = memchr::memmem::find(&buf[from..], secret) {
                spans.push((from + at, from + at + secret.len()));
                from += at + 1;
            }
        }
        spans
    }

    /// Could `tail` still become (or extend into) a value as more bytes arrive?
    fn could_grow(&self, tail: &[u8]) -> bool {
        self.secrets.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
    }

    /// Masks what can be decided now and appends it to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        let emitted = self.scan(out, false);
        self.pending.drain(..emitted);
    }

    /// Flushes everything held back (end of stream).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let emitted = self.scan(out, true);
        self.pending.drain(..emitted);
    }

    /// Emits masked output for the decided prefix of `pending`; returns how many bytes it consumed.
    ///
    /// Undecided is everything from the earliest position whose tail could still grow into a
    /// value, and any occurrence that reaches past it. What is decided is emitted with the union
    /// of all occurrences masked, so values that overlap or contain one another leak nothing.
    fn scan(&self, out: &mut Vec<u8>, at_end: bool) -> usize {
        let buf = self.pending.as_slice();
        let mut end = buf.len();
        if !at_end {
            let longest = self.secrets.iter().map(|s| s.len() - 1).max().unwrap_or(0).min(buf.len());
            if let Some(start) = (buf.len() - longest..buf.len()).find(|&i| self.could_grow(&buf[i..])) {
                end = start;
            }
        }
        let mut spans = self.occurrences(buf);
        // Hold back whole any occurrence that the undecided part cuts through.
        while let Some(&(start, _)) = spans.iter().find(|&&(start, stop)| start < end && stop > end) {
            end = start;
        }
        spans.retain(|&(_, stop)| stop <= end);
        spans.sort_unstable();
        let mut pos = 0;
        let mut spans = spans.into_iter().peekable();
        while let Some((start, mut stop)) = spans.next() {
            while let Some(&(next_start, next_stop)) = spans.peek() {
                if next_start > stop {
                    break;
                }
                stop = stop.max(next_stop);
                spans.next();
            }
            if start >= pos {
                out.extend_from_slice(&buf[pos..start]);
                out.extend_from_slice(MASK);
            }
            pos = pos.max(stop);
        }
        out.extend_from_slice(&buf[pos..end]);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_in_chunks(secrets: &[&[u8]], input: &[u8], chunk: usize) -> Vec<u8> {
        let mut masker = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            masker.push(piece, &mut out);
        }
        masker.finish(&mut out);
        out
    }

    #[test]
    fn masks_values_split_at_every_position() {
        let input = b"token=sk-abc123XYZ; again sk-abc123XYZ end";
        for chunk in 1..input.len() {
            assert_eq!(
                mask_in_chunks(&[b"sk-abc123XYZ"], input, chunk),
                b"token=********; again ******** end",
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn ordinary_output_is_not_held_back() {
        let mut masker = Masker::new([b"secret".as_slice()]);
        let mut out = Vec::new();
        masker.push(b"prompt> ", &mut out);
        assert_eq!(out, b"prompt> ");
        masker.push(b"sec", &mut out);
        assert_eq!(out, b"prompt> ", "a possible prefix waits");
        masker.push(b"ond", &mut out);
        assert_eq!(out, b"prompt> second");
    }

    #[test]
    fn a_value_that_prefixes_another_never_leaks_the_longer_ones_tail() {
        for chunk in 1..12 {
            assert_eq!(
                mask_in_chunks(&[b"abc", b"abcdef"], b"x abcdef y abc z", chunk),
                b"x ******** y ******** z",
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn values_that_overlap_or_contain_each_other_leak_nothing() {
        for chunk in 1..10 {
            assert_eq!(mask_in_chunks(&[b"xyz123", b"z1"], b"<xyz123>", chunk), b"<********>", "chunk {chunk}");
            assert_eq!(mask_in_chunks(&[b"abcd", b"cdef"], b"<abcdef>", chunk), b"<********>", "chunk {chunk}");
            assert_eq!(mask_in_chunks(&[b"abcd", b"cdef"], b"abcd cdef", chunk), b"******** ********", "chunk {chunk}");
        }
    }

    #[test]
    fn binary_values_and_partial_tails_at_eof() {
        let secret: &[u8] = &[0xff, 0x00, 0xfe, 0x80];
        assert_eq!(mask_in_chunks(&[secret], &[1, 0xff, 0x00, 0xfe, 0x80, 2], 1), [&[1u8][..], MASK, &[2]].concat());
        assert_eq!(
            mask_in_chunks(&[secret], &[1, 0xff, 0x00], 1),
            vec![1, 0xff, 0x00],
            "a partial value at EOF is not a value"
        );
    }
}
