//! Generated text with stop strings: the text a client may see so far, holding back any tail that could still
//! become a stop string, and cutting the text where one appears (the stop string itself is not returned).

use bitnet_models::tokenizer::{TextStream, Tokenizer};

/// The text of one generation, released piece by piece.
#[derive(Debug, Default)]
pub struct StopText {
    stream: TextStream,
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already released.
    released: usize,
}

/// What one token added.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text to release (possibly empty while a stop string may be forming).
    Text(String),
    /// A stop string appeared: the text before it, and the generation is over.
    Stopped(String),
}

impl StopText {
    /// A tracker of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), ..Self::default() }
    }

    /// Adds a generated token.
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> Piece {
        let new = self.stream.push(tokenizer, token).unwrap_or_default();
        self.push_text(&new)
    }

    /// Adds decoded text.
    pub fn push_text(&mut self, new: &str) -> Piece {
        self.text.push_str(new);
        let pending = &self.text[self.released..];
        // Every stop string that appears can only start in the unreleased text (a tail that could start one is
        // never released): cut at the earliest.
        if let Some(at) = self.stops.iter().filter_map(|s| pending.find(s.as_str())).min() {
            let piece = pending[..at].to_string();
            self.released = self.text.len();
            return Piece::Stopped(piece);
        }
        let hold = self.held_tail(pending);
        let end = self.text.len() - hold;
        let piece = self.text[self.released..end].to_string();
        self.released = end;
        Piece::Text(piece)
    }

    /// The text held back, released at the end of a generation that did not stop on a string.
    pub fn finish(&mut self) -> String {
        let rest = self.text[self.released..].to_string();
        self.released = self.text.len();
        rest
    }

    /// Bytes at the end of `pending` that are the start of some stop string (the longest such tail).
    fn held_tail(&self, pending: &str) -> usize {
        let mut hold = 0;
        for stop in &self.stops {
            for (i, _) in pending.char_indices() {
                let tail = &pending[i..];
                if tail.len() <= hold {
                    break;
                }
                if stop.starts_with(tail) {
                    hold = tail.len();
                    break;
                }
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<Piece>, String) {
        let mut t = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let out: Vec<Piece> = pieces.iter().map(|p| t.push_text(p)).collect();
        let rest = t.finish();
        (out, rest)
    }

    #[test]
    fn releases_everything_without_stops() {
        let (out, rest) = run(&[], &["Hel", "lo"]);
        assert_eq!(out, [Piece::Text("Hel".into()), Piece::Text("lo".into())]);
        assert_eq!(rest, "");
    }

    #[test]
    fn holds_a_possible_stop_and_cuts_at_it() {
        let (out, _) = run(&["\n\n"], &["a\n", "\nb"]);
        assert_eq!(out, [Piece::Text("a".into()), Piece::Stopped("".into())]);
        let (out, rest) = run(&["END"], &["xE", "Nd"]);
        assert_eq!(out, [Piece::Text("x".into()), Piece::Text("ENd".into())]);
        assert_eq!(rest, "");
        let (out, rest) = run(&["END"], &["xEN"]);
        assert_eq!(out, [Piece::Text("x".into())]);
        assert_eq!(rest, "EN", "a tail that never became a stop string is released at the end");
    }

    #[test]
    fn earliest_of_several_stops_wins_inside_one_piece() {
        let (out, _) = run(&["b", "a"], &["xyabz"]);
        assert_eq!(out, [Piece::Stopped("xy".into())]);
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let (out, rest) = run(&["日本語"], &["é日", "本"]);
        assert_eq!(out, [Piece::Text("é".into()), Piece::Text("".into())]);
        assert_eq!(rest, "日本");
    }
}
