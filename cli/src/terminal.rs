//! Text for a person's terminal: model output and script console lines are
//! untrusted, so what reaches stderr is printable text, newlines and tabs,
//! nothing a terminal would act on.

/// Drops every control and escape sequence from text, the way a terminal
/// would parse it: CSI (colours, cursor moves, screen clears), OSC (window
/// titles, hyperlinks, clipboard writes), DCS, SOS/PM/APC strings, C1
/// controls (7-bit and 8-bit), lone ESC, BEL, backspace, carriage returns
/// (a CR-LF becomes LF; a lone CR, which would let text overwrite the
/// line, goes) and DEL. Newlines and tabs stay.
///
/// Stateful: a sequence split across two pieces of a stream is still
/// recognised, so each stream of text needs its own sanitizer.
pub struct Sanitizer {
    parser: vte::Parser,
    kept: Kept,
    bytes: Vec<u8>,
}

/// What the parser lets through.
#[derive(Default)]
struct Kept(String);

impl vte::Perform for Kept {
    fn print(&mut self, c: char) {
        if !c.is_control() {
            self.0.push(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        if matches!(byte, b'\n' | b'\t') {
            self.0.push(byte as char);
        }
    }
}

impl Default for Sanitizer {
    fn default() -> Self {
        Sanitizer {
            parser: vte::Parser::new(),
            kept: Kept::default(),
            bytes: Vec::new(),
        }
    }
}

impl Sanitizer {
    /// The printable part of the next piece of the stream.
    pub fn clean(&mut self, text: &str) -> String {
        // An 8-bit C1 control (U+0080..U+009F) is fed as its 7-bit form,
        // ESC and a letter, so that a CSI or OSC it opens is swallowed
        // whole as a terminal that honours C1 would read it.
        self.bytes.clear();
        for c in text.chars() {
            match u32::from(c) {
                code @ 0x80..=0x9f => self.bytes.extend([0x1b, (code - 0x40) as u8]),
                _ => self
                    .bytes
                    .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        self.parser.advance(&mut self.kept, &self.bytes);
        std::mem::take(&mut self.kept.0)
    }
}

/// [`Sanitizer::clean`] of one complete text (a console line).
pub fn clean(text: &str) -> String {
    Sanitizer::default().clean(text)
}

/// JSON text with every C1 control character (U+0080..U+009F) written as
/// a `\u` escape: the same JSON value, but no byte a terminal that honours
/// 8-bit controls would act on (serde_json already escapes C0 controls, ESC
/// among them). Such characters only occur inside JSON strings, where the
/// escape is valid.
pub fn json_line(json: &str) -> String {
    if !json.chars().any(is_c1) {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_c1(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_go_text_newlines_and_tabs_stay() {
        let cases = [
            ("plain\ttext\nnext", "plain\ttext\nnext"),
            ("\x1b]0;pwned title\x07after", "after"),
            ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("\x1b[31mred\x1b[0m \x1b[2J\x1b[H", "red "),
            ("\x1bP1$r0m\x1b\\dcs", "dcs"),
            ("\x1b_apc\x1b\\ok", "ok"),
            ("bell\x07 back\x08\x08 del\x7f", "bell back del"),
            ("secret\rpublic", "secretpublic"),
            ("crlf\r\nline", "crlf\nline"),
            ("lone esc\x1b", "lone esc"),
            (
                "c1 \u{9b}31mcsi \u{9d}0;title\u{9c}end \u{85}nel",
                "c1 csi end nel",
            ),
            ("zwj 👩‍💻 é", "zwj 👩‍💻 é"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean(input), expected, "{input:?}");
        }
    }

    #[test]
    fn a_sequence_split_across_pieces_is_still_caught() {
        let mut s = Sanitizer::default();
        let pieces = ["Hel", "lo \x1b]", "0;ti", "tle\x07 wor", "ld\x1b[", "1m!"];
        let out: String = pieces.iter().map(|p| s.clean(p)).collect();
        assert_eq!(out, "Hello  world!");
    }

    #[test]
    fn json_lines_escape_c1_and_stay_the_same_value() {
        let value = serde_json::json!({"text": "a\u{9b}31m\u{1b}]0;x\u{7}b"});
        let line = json_line(&value.to_string());
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            value
        );
    }
}
