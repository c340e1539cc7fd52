//! vCard files: the small subset of RFC 6350 a contacts list needs, written here rather
//! than pulled in as a crate (the maintained vCard crates bring a large dependency tree
//! or only parse; this subset is a page of code, tested below).
//!
//! Read: cards between `BEGIN:VCARD` and `END:VCARD`, folded lines, property groups
//! (`item1.EMAIL`), parameters (ignored, but for vCard 2.1's quoted-printable encoding),
//! escapes (`\n \, \; \\`). Written: vCard 4.0, CRLF lines folded at 75 octets.
//!
//! Mapping of declared columns: `name` is `FN` (or, missing that, `N` put in reading
//! order), `email` the first `EMAIL`, `phone` the first `TEL` (a `tel:` URI's number),
//! `city` the locality of the first `ADR`, `notes` / `note` `NOTE`; any other column is
//! `X-ROSTER-<NAME>` (`first_name` is `X-ROSTER-FIRST-NAME`).

use std::collections::BTreeSet;

use roster_protocol::{Fields, TableSchema};

use super::{Parsed, SourceRow, row_label, text_of};
use crate::ClientError;

/// Where a column's value lives in a card.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// The whole value of a property.
    Whole(String),
    /// The locality component of `ADR`.
    Locality,
}

/// The card property a column is stored in.
fn slot_of(column: &str) -> Slot {
    match column {
        "name" => Slot::Whole("FN".into()),
        "email" => Slot::Whole("EMAIL".into()),
        "phone" => Slot::Whole("TEL".into()),
        "city" => Slot::Locality,
        "notes" | "note" => Slot::Whole("NOTE".into()),
        other => Slot::Whole(format!(
            "X-ROSTER-{}",
            other.to_ascii_uppercase().replace('_', "-")
        )),
    }
}

/// Properties every card may carry that hold no person's field, never reported as
/// skipped.
const STRUCTURAL: &[&str] = &[
    "BEGIN", "END", "VERSION", "PRODID", "UID", "REV", "N", "KIND",
];

/// One content line: property name (upper case, group removed), whether its value is
/// quoted-printable, and the raw value.
struct ContentLine {
    name: String,
    quoted_printable: bool,
    value: String,
}

/// Physical lines joined into logical ones: a line starting with a space or tab
/// continues the previous one; a quoted-printable value ending in `=` continues on the
/// next line (vCard 2.1's soft line break).
fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut soft_break = false;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let (Some(last), true) = (lines.last_mut(), soft_break) {
            last.pop();
            last.push_str(line);
        } else if let (Some(last), Some(rest)) = (
            lines.last_mut(),
            line.strip_prefix(' ').or_else(|| line.strip_prefix('\t')),
        ) {
            last.push_str(rest);
        } else {
            lines.push(line.to_owned());
        }
        soft_break = lines.last().is_some_and(|l| {
            l.ends_with('=') && l.to_ascii_uppercase().contains("QUOTED-PRINTABLE")
        });
    }
    lines
}

/// Splits a logical line at the first `:` outside a quoted parameter value.
fn content_line(line: &str) -> Option<ContentLine> {
    let mut quoted = false;
    let colon = line.char_indices().find_map(|(i, c)| {
        if c == '"' {
            quoted = !quoted;
        }
        (c == ':' && !quoted).then_some(i)
    })?;
    let (head, value) = (&line[..colon], &line[colon + 1..]);
    let mut parts = head.split(';');
    let name = parts.next()?.trim();
    let name = name.rsplit('.').next().unwrap_or(name).to_ascii_uppercase();
    let quoted_printable = parts.any(|p| {
        let p = p.to_ascii_uppercase();
        p == "QUOTED-PRINTABLE" || p == "ENCODING=QUOTED-PRINTABLE"
    });
    Some(ContentLine {
        name,
        quoted_printable,
        value: value.to_owned(),
    })
}

/// Decodes quoted-printable (`=C3=BC`) text; bytes that do not decode are kept.
fn decode_quoted_printable(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `value` at unescaped `;` (structured values: `N`, `ADR`), escapes kept.
fn components(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ';' => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// Resolves `\n`, `\,`, `\;` and `\\`.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Escapes text for a property value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            other => out.push(other),
        }
    }
    out
}

/// Appends `line` folded at 75 octets (continuations start with a space) and a CRLF.
fn push_folded(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

/// The text a card holds for a column's slot, if any (first property of the name).
fn slot_value(card: &[ContentLine], slot: &Slot) -> Option<String> {
    let (property, locality) = match slot {
        Slot::Whole(name) => (name.as_str(), false),
        Slot::Locality => ("ADR", true),
    };
    let line = card.iter().find(|l| l.name == property)?;
    let raw = if line.quoted_printable {
        decode_quoted_printable(&line.value)
    } else {
        line.value.clone()
    };
    if locality {
        return Some(unescape(components(&raw).get(3).copied().unwrap_or("")));
    }
    let text = unescape(&raw);
    Some(match property {
        "TEL" => text.strip_prefix("tel:").unwrap_or(&text).to_owned(),
        _ => text,
    })
}

/// A name from `N` (family; given; additional; prefixes; suffixes), in reading order.
fn name_from_n(card: &[ContentLine]) -> Option<String> {
    let line = card.iter().find(|l| l.name == "N")?;
    let parts: Vec<String> = components(&line.value).into_iter().map(unescape).collect();
    let part = |i: usize| parts.get(i).map(String::as_str).unwrap_or("");
    let words: Vec<&str> = [part(3), part(1), part(2), part(0), part(4)]
        .into_iter()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Reads every card of a vCard file into rows of `table`.
pub(super) fn parse(table: &TableSchema, text: &str) -> Result<Parsed, ClientError> {
    let mut rows = Vec::new();
    let mut ignored = BTreeSet::new();
    let mut card: Option<Vec<ContentLine>> = None;
    let known: Vec<Slot> = table.columns.iter().map(|c| slot_of(&c.name)).collect();
    for (number, line) in unfold(text).iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some(content) = content_line(line) else {
            if card.is_some() {
                continue;
            }
            return Err(ClientError::BadInput(format!(
                "this is not a vCard file: line {} is not a vCard property",
                number + 1
            )));
        };
        match (
            content.name.as_str(),
            content.value.trim().to_ascii_uppercase().as_str(),
        ) {
            ("BEGIN", "VCARD") => {
                if card.is_some() {
                    return Err(ClientError::BadInput(format!(
                        "a card starts inside another one (line {})",
                        number + 1
                    )));
                }
                card = Some(Vec::new());
            }
            ("END", "VCARD") => {
                let Some(lines) = card.take() else {
                    return Err(ClientError::BadInput(format!(
                        "END:VCARD without BEGIN:VCARD (line {})",
                        number + 1
                    )));
                };
                rows.push(card_row(table, &lines));
            }
            (name, _) => match card.as_mut() {
                Some(lines) => {
                    let mapped = known.iter().any(|slot| match slot {
                        Slot::Whole(p) => p == name,
                        Slot::Locality => name == "ADR",
                    });
                    if !mapped && !STRUCTURAL.contains(&name) {
                        ignored.insert(name.to_owned());
                    }
                    lines.push(content);
                }
                None => {
                    return Err(ClientError::BadInput(format!(
                        "this is not a vCard file: line {} is outside BEGIN:VCARD … END:VCARD",
                        number + 1
                    )));
                }
            },
        }
    }
    if card.is_some() {
        return Err(ClientError::BadInput(
            "the vCard file ends inside a card (no END:VCARD): it may be cut short".into(),
        ));
    }
    Ok(Parsed {
        rows,
        ignored_columns: ignored.into_iter().collect(),
    })
}

/// The row of `table` that one card holds.
fn card_row(table: &TableSchema, card: &[ContentLine]) -> SourceRow {
    let mut row = SourceRow::default();
    let mut texts = Vec::new();
    for column in &table.columns {
        let mut text = slot_value(card, &slot_of(&column.name));
        if column.name == "name" && text.as_deref().is_none_or(|t| t.trim().is_empty()) {
            text = name_from_n(card).or(text);
        }
        let text = text.unwrap_or_default();
        row.set(column, &text);
        texts.push(text);
    }
    row.label = row_label(texts.iter().map(String::as_str));
    row
}

/// `rows` of `table` as vCard 4.0 cards.
pub(super) fn write(table: &TableSchema, rows: &[Fields]) -> Vec<u8> {
    let mut out = String::new();
    for row in rows {
        out.push_str("BEGIN:VCARD\r\nVERSION:4.0\r\n");
        let value = |name: &str| row.get(name).map(text_of).unwrap_or_default();
        if table.column("name").is_none() {
            out.push_str("FN:\r\n");
        }
        for column in &table.columns {
            let text = value(&column.name);
            match slot_of(&column.name) {
                Slot::Whole(property) if property == "FN" => {
                    push_folded(&mut out, &format!("FN:{}", escape(&text)));
                }
                _ if text.is_empty() => {}
                Slot::Whole(property) => {
                    push_folded(&mut out, &format!("{property}:{}", escape(&text)));
                }
                Slot::Locality => {
                    push_folded(&mut out, &format!("ADR:;;;{};;;", escape(&text)));
                }
            }
        }
        out.push_str("END:VCARD\r\n");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use roster_protocol::Schema;
    use serde_json::json;

    use super::*;

    fn person() -> TableSchema {
        Schema::default_person().tables.remove(0)
    }

    #[test]
    fn reads_folded_grouped_escaped_and_version_2_1_cards() {
        let file = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Lovelace;Ada;;Lady;\r\n\
                    item1.EMAIL;TYPE=INTERNET:ada@exa\r\n mple.org\r\nTEL;VALUE=uri:tel:+44-20\r\n\
                    ADR;TYPE=home:;;1 St\\, X;London;;;UK\r\nORG:Analytical\r\n\
                    NOTE:one\\ntwo\\; three\\, four\r\nEND:VCARD\r\n\
                    BEGIN:VCARD\nVERSION:2.1\nFN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Z=C3=BC=\nrich\n\
                    X-ROSTER-AGE:41\nEND:VCARD\n";
        let parsed = parse(&person(), file).unwrap();
        assert_eq!(parsed.ignored_columns, vec!["ORG"]);
        assert_eq!(parsed.rows.len(), 2);
        let ada = &parsed.rows[0];
        assert!(ada.problems.is_empty());
        assert_eq!(ada.fields["name"], json!("Lady Ada Lovelace"));
        assert_eq!(ada.fields["email"], json!("ada@example.org"));
        assert_eq!(ada.fields["phone"], json!("+44-20"));
        assert_eq!(ada.fields["city"], json!("London"));
        assert_eq!(ada.fields["notes"], json!("one\ntwo; three, four"));
        assert_eq!(parsed.rows[1].fields["name"], json!("Zürich"));
        assert_eq!(parsed.rows[1].fields["age"], json!(41));
    }

    #[test]
    fn writes_folded_lines_of_at_most_75_octets() {
        let mut row = Fields::new();
        row.insert("name".into(), json!("Ü".repeat(100)));
        let text = String::from_utf8(write(&person(), &[row.clone()])).unwrap();
        assert!(text.split("\r\n").all(|l| l.len() <= 75), "{text}");
        let back = parse(&person(), &text).unwrap();
        assert_eq!(back.rows[0].fields["name"], row["name"]);
    }

    #[test]
    fn text_outside_cards_is_not_a_vcard_file() {
        assert!(parse(&person(), "name,email\nA,b\n").is_err());
        assert!(parse(&person(), "END:VCARD\n").is_err());
    }
}
