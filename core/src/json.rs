//! A minimal, strict, allocation-free JSON scanner: just what a safetensors header needs
//! (objects, arrays, strings, non-negative integers). Strings are returned as their raw text
//! between the quotes, after their escapes were checked.

/// A JSON syntax error at a byte offset of the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the text.
    pub offset: usize,
    /// What was expected there.
    pub expected: &'static str,
}

/// A cursor over JSON text.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn err<T>(&self, expected: &'static str) -> Result<T, JsonError> {
        Err(JsonError {
            offset: self.pos,
            expected,
        })
    }

    /// Current byte offset.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// True at the end of the text (after whitespace).
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos == self.text.len()
    }

    /// Consumes `byte` (after whitespace) or fails with `expected`.
    pub(crate) fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), JsonError> {
        self.skip_ws();
        if self.bytes().get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(expected)
        }
    }

    /// Consumes `byte` if it is next (after whitespace).
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        self.skip_ws();
        if self.bytes().get(self.pos) == Some(&byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A string; returns its raw (still escaped) content.
    pub(crate) fn string(&mut self) -> Result<&'a str, JsonError> {
        self.expect(b'"', "a string")?;
        let start = self.pos;
        loop {
            match self.bytes().get(self.pos) {
                None => return self.err("the end of a string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    match self.bytes().get(self.pos) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        Some(b'u') => {
                            let hex = self.bytes().get(self.pos + 1..self.pos + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return self.err("four hex digits after \\u");
                            }
                            self.pos += 5;
                        }
                        _ => return self.err("a valid escape"),
                    }
                }
                Some(&c) if c < 0x20 => return self.err("no control character in a string"),
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.text[start..self.pos];
        self.pos += 1;
        Ok(raw)
    }

    /// A non-negative integer without sign, fraction or exponent.
    pub(crate) fn integer(&mut self) -> Result<u64, JsonError> {
        self.skip_ws();
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(&d @ b'0'..=b'9') = self.bytes().get(self.pos) {
            value = match value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
            {
                Some(v) => v,
                None => return self.err("an integer below 2^64"),
            };
            self.pos += 1;
        }
        let digits = self.pos - start;
        if digits == 0 || (digits > 1 && self.bytes()[start] == b'0') {
            self.pos = start;
            return self.err("a non-negative integer");
        }
        if let Some(b'.' | b'e' | b'E') = self.bytes().get(self.pos) {
            return self.err("an integer, not a fraction");
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_integers() {
        let mut s = Scanner::new(r#" "a\"b\u00e9" 0 123 01 1.5 "#);
        assert_eq!(s.string().unwrap(), r#"a\"b\u00e9"#);
        assert_eq!(s.integer().unwrap(), 0);
        assert_eq!(s.integer().unwrap(), 123);
        assert!(s.integer().is_err());
        let mut s = Scanner::new("1.5");
        assert!(s.integer().is_err());
        let mut s = Scanner::new("\"abc");
        assert!(s.string().is_err());
        let mut s = Scanner::new("99999999999999999999");
        assert!(s.integer().is_err());
    }
}
