//! `/etc/os-release` (os-release(5)): the `PRETTY_NAME` sent in `Hello`.

use super::ParseError;

/// `PRETTY_NAME`, unquoted; os-release(5) says to assume "Linux" when it is absent.
pub fn parse(s: &str) -> Result<String, ParseError> {
    for (i, line) in s.lines().enumerate() {
        let Some(v) = line.trim().strip_prefix("PRETTY_NAME=") else {
            continue;
        };
        return unquote(v)
            .ok_or_else(|| ParseError::new(i + 1, "unbalanced quotes in PRETTY_NAME"));
    }
    Ok("Linux".to_string())
}

/// Shell-style value: `"..."` (with `\"`, `\\`, `\$`, `` \` `` escapes), `'...'`, or bare.
fn unquote(v: &str) -> Option<String> {
    let q = v.chars().next()?;
    if q != '"' && q != '\'' {
        return Some(v.to_string());
    }
    let inner = v.strip_prefix(q)?.strip_suffix(q)?;
    if q == '\'' {
        return Some(inner.to_string());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            parse("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").expect("ok"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(parse("PRETTY_NAME='A B'\n").expect("ok"), "A B");
        assert_eq!(parse("PRETTY_NAME=Bare\n").expect("ok"), "Bare");
        assert_eq!(
            parse("PRETTY_NAME=\"a \\\"q\\\"\"\n").expect("ok"),
            "a \"q\""
        );
        assert_eq!(parse("NAME=x\n").expect("ok"), "Linux");
        assert_eq!(parse("x\nPRETTY_NAME=\"open\n").expect_err("bad").line, 2);
    }
}
