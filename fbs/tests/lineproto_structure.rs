//! Hostile tag values cannot change a line's structure: a scanner that follows InfluxDB's
//! rules (a backslash pairs with the next character; unescaped comma, equals sign and space
//! delimit) finds exactly the tags, fields and timestamp that were written.
mod common;

use autofact_fbs::lineproto::{write_net, write_string_field, Tags};
use autofact_fbs::Net;
use common::XorShift;

/// Splits `s` at unescaped `sep`s, skipping `\x` pairs as InfluxDB's scanner does. Quoted
/// strings are honoured only when `quotes` (field sets).
fn split_unescaped(s: &str, sep: u8, quotes: bool) -> Vec<&str> {
    let b = s.as_bytes();
    let (mut parts, mut start, mut i, mut in_quotes) = (Vec::new(), 0, 0, false);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' if quotes => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

fn random_text(rng: &mut XorShift) -> String {
    const ALPHABET: [char; 12] = [
        ',', '=', ' ', '\\', '"', '\n', '\r', 'a', 'b', 'é', '✓', '0',
    ];
    let len = 1 + rng.below(8);
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect()
}

#[test]
fn hostile_tag_values_keep_the_line_structure() {
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    for case in 0..5000 {
        let host = random_text(&mut rng);
        let region = random_text(&mut rng);
        let zone = random_text(&mut rng);
        let tags = Tags {
            host: &host,
            region: &region,
            zone: &zone,
            ..Default::default()
        };
        let net = Net {
            interface: random_text(&mut rng),
            bytes_sent: case,
            ..Net::default()
        };
        let mut out = String::new();
        assert!(write_net(&mut out, &tags, &net, 77));
        let line = out
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("no newline: {out:?}"));
        assert!(!line.contains(['\n', '\r']), "{line:?}");

        // measurement+tags (quotes mean nothing there), then fields and timestamp
        let key = split_unescaped(line, b' ', false)[0];
        let sections = split_unescaped(&line[key.len() + 1..], b' ', true);
        assert_eq!(sections.len(), 2, "case {case}: {line:?}");
        assert_eq!(sections[1], "77");
        let tagset = split_unescaped(key, b',', false);
        assert_eq!(tagset[0], "net");
        let keys: Vec<&str> = tagset[1..]
            .iter()
            .map(|kv| {
                let kv = split_unescaped(kv, b'=', false);
                assert_eq!(kv.len(), 2, "case {case}: {line:?}");
                kv[0]
            })
            .collect();
        // A value of nothing but backslashes is empty once its trailing backslashes are
        // dropped (InfluxDB refuses them), and an empty tag is left out.
        let expected: Vec<&str> = [
            ("host", host.as_str()),
            ("interface", net.interface.as_str()),
            ("region", region.as_str()),
            ("zone", zone.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim_end_matches('\\').is_empty())
        .map(|(k, _)| k)
        .collect();
        assert_eq!(keys, expected, "{line:?}");
        let fields = split_unescaped(sections[0], b',', true);
        assert_eq!(fields.len(), 8, "{line:?}");
        assert_eq!(fields[0], format!("bytes_sent={case}i"));
    }
}

#[test]
fn hostile_string_fields_stay_one_quoted_value() {
    let mut rng = XorShift(0x5eed_1234_abcd_0002);
    for _ in 0..5000 {
        let text = random_text(&mut rng);
        let mut out = String::new();
        write_string_field(&mut out, &text);
        assert!(out.starts_with('"') && out.ends_with('"') && out.len() >= 2);
        // Unescaping per the spec gives back the text, newlines turned into spaces.
        let inner = &out[1..out.len() - 1];
        let mut back = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => back.push(chars.next().unwrap_or_else(|| panic!("dangling \\: {out}"))),
                '"' => panic!("unescaped quote inside {out}"),
                c => back.push(c),
            }
        }
        assert_eq!(back, text.replace(['\n', '\r'], " "), "{out}");
    }
}
