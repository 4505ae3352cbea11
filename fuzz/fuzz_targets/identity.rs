//! The text form of node and client ids (`identity::parse_id` and
//! `format_id`): 16 bytes and a check byte in base32, as four dashed groups
//! of seven, typed by people into `--peer ID@HOST:PORT`, `trust ID` and
//! `approve ID`.
//!
//! Why: it is parsed from command lines, configuration files and invite
//! flows, and a node's whole trust list is made of ids. Checked, beyond
//! "never panics":
//! - whatever `parse_id` accepts is, once dashes and white space are
//!   dropped and letters upper-cased, exactly `format_id` of the id it
//!   returns (no second spelling of an id slips through);
//! - `format_id` of any 16 bytes is 31 characters, `A-Z2-7` in four groups
//!   split by dashes, parses back to the same id, and still does in lower
//!   case, without dashes, or with white space and dashes put anywhere
//!   (the doc: case and dashes do not matter, spaces are optional);
//!   `NodeId`'s `Display` and `FromStr` are the same text form;
//! - changing one character never gives back the same id (it is refused
//!   or, once in 256 typos, reads as another id: the check is one byte).
//!
//! Input: any text to parse; when 16 bytes or more, the first 16 are also
//! an id to format, and the rest say how to mangle its text form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_common::NodeId;
use tandem_common::identity::{format_id, parse_id};
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = parse_id(&text) {
        let clean: String = text
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        assert_eq!(clean, format_id(&id).replace('-', ""), "{text:?}");
    }

    let Some((head, rest)) = data.split_first_chunk::<16>() else {
        return;
    };
    let id = Uuid::from_bytes(*head);
    let s = format_id(&id);
    assert_eq!(s.len(), 31, "{s}");
    for (i, c) in s.chars().enumerate() {
        if i % 8 == 7 {
            assert_eq!(c, '-', "{s}");
        } else {
            assert!(matches!(c, 'A'..='Z' | '2'..='7'), "{s}");
        }
    }
    assert_eq!(parse_id(&s), Ok(id));
    assert_eq!(parse_id(&s.to_lowercase()), Ok(id));
    assert_eq!(parse_id(&s.replace('-', "")), Ok(id));
    assert_eq!(NodeId(id).to_string(), s);
    assert_eq!(s.parse::<NodeId>(), Ok(NodeId(id)));

    // Mangled as a person might: each byte of `rest` says what to do
    // before the next character.
    let mut mangled = String::new();
    let mut how = rest.iter().copied();
    for c in s.chars() {
        match how.next().unwrap_or(0) % 8 {
            1 => mangled.push(' '),
            2 => mangled.push('-'),
            3 => mangled.push('\t'),
            4 => mangled.push('\n'),
            _ => {}
        }
        let lower = how.next().unwrap_or(0) & 1 == 1;
        mangled.push(if lower { c.to_ascii_lowercase() } else { c });
    }
    assert_eq!(parse_id(&mangled), Ok(id), "{mangled:?}");

    // One typo, where and what the input says.
    if let [at, with, ..] = rest {
        let chars: Vec<char> = s.chars().collect();
        let i = *at as usize % chars.len();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567-";
        let new = alphabet[*with as usize % alphabet.len()] as char;
        if new != chars[i] {
            let mut typo = chars;
            typo[i] = new;
            let typo: String = typo.into_iter().collect();
            assert_ne!(parse_id(&typo), Ok(id), "{typo} reads as {s}");
        }
    }
});
