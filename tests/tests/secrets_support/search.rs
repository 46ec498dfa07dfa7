//! The search for secrets: every form a secret could be printed in, and where they occur.

use std::collections::BTreeSet;

use base64::Engine as _;

/// One secret in every form it could leak in.
#[derive(Debug, Clone)]
pub(crate) struct Forbidden {
    /// What it is, for failure messages (never the value).
    pub(crate) label: String,
    /// The text that must not appear.
    pub(crate) form: String,
}

/// The encodings a secret's bytes could be printed in: raw, base64 (padded, unpadded,
/// URL-safe), hex (lower and upper case) and percent-encoded.
pub(crate) fn encodings(label: &str, bytes: &[u8]) -> Vec<Forbidden> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = BTreeSet::new();
    if let Ok(text) = std::str::from_utf8(bytes) {
        forms.insert(("raw", text.to_owned()));
        let percent: String = url::form_urlencoded::byte_serialize(bytes).collect();
        forms.insert(("percent-encoded", percent));
    }
    forms.insert(("base64", STANDARD.encode(bytes)));
    forms.insert(("base64, unpadded", STANDARD_NO_PAD.encode(bytes)));
    forms.insert(("base64url", URL_SAFE_NO_PAD.encode(bytes)));
    forms.insert(("hex", hex_lower(bytes)));
    forms.insert(("HEX", hex_lower(bytes).to_ascii_uppercase()));
    let mut seen = BTreeSet::new();
    forms
        .into_iter()
        .filter(|(_, form)| seen.insert(form.clone()))
        .map(|(kind, form)| Forbidden {
            label: format!("{label} ({kind})"),
            form,
        })
        .collect()
}

/// A `whsec_<base64>` secret: the whole string, its base64 part, and the key's encodings.
pub(crate) fn whsec_forms(label: &str, key: &[u8]) -> Vec<Forbidden> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    let mut forms = vec![Forbidden {
        label: format!("{label} (whsec_ string)"),
        form: format!("whsec_{encoded}"),
    }];
    forms.extend(encodings(&format!("{label} key"), key));
    forms
}

/// HTTP Basic credentials: the password alone and the header's `user:password` payload.
pub(crate) fn basic_forms(label: &str, user: &str, password: &str) -> Vec<Forbidden> {
    let mut forms = encodings(label, password.as_bytes());
    let pair = format!("{user}:{password}");
    forms.extend(encodings(
        &format!("{label} as Basic user:password"),
        pair.as_bytes(),
    ));
    forms
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` without ANSI escape sequences (`ESC [ … letter`): a log written to a file may be
/// coloured, and a colour code between two halves of a secret would hide it from the search.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every (forbidden form, place) where a form occurs in a text, with a little context.
pub(crate) fn leaks(forbidden: &[Forbidden], texts: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (place, text) in texts {
        for secret in forbidden {
            if let Some(at) = text.find(&secret.form) {
                let mut start = at.saturating_sub(60);
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (at + secret.form.len() + 60).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                found.push(format!(
                    "{} in {place}: …{}…",
                    secret.label,
                    &text[start..end]
                ));
            }
        }
    }
    found
}
