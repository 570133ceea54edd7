//! Rust names for Lua ones: skeleton structs, map accessors, record fields.

/// Words that cannot be identifiers, even raw (`r#self` is not allowed).
const NOT_RAW: &[&str] = &["self", "Self", "super", "crate", "_"];

/// Rust keywords (2021 edition, reserved ones included): written as raw identifiers.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct", "trait",
    "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
    "priv", "try", "typeof", "unsized", "virtual", "yield", "gen",
];

/// `sni_filter`, `sni-filter.v2` -> `SniFilter`, `SniFilterV2`; `None` without any letter or
/// digit. A leading digit gets a `P` in front (`4tuple` -> `P4tuple`).
pub fn type_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for part in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
    {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.is_empty() {
        return None;
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'P');
    }
    Some(out)
}

/// A Lua name in snake case (`lastSeen` -> `last_seen`, `a-b` -> `a_b`), for building
/// identifiers from: no keyword handling.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
    }
    out
}

/// A snake-case identifier for a Lua name: keywords are raw (`r#type`), a leading digit gets
/// a `_`.
pub fn ident(name: &str) -> String {
    let mut out = snake_case(name);
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if NOT_RAW.contains(&out.as_str()) {
        out.push('_');
    } else if KEYWORDS.contains(&out.as_str()) {
        out.insert_str(0, "r#");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("sni_filter").as_deref(), Some("SniFilter"));
        assert_eq!(type_name("sni-filter.v2").as_deref(), Some("SniFilterV2"));
        assert_eq!(type_name("4tuple").as_deref(), Some("P4tuple"));
        assert_eq!(type_name("__"), None);
    }

    #[test]
    fn identifiers_avoid_keywords() {
        assert_eq!(ident("blocklist"), "blocklist");
        assert_eq!(ident("type"), "r#type");
        assert_eq!(ident("self"), "self_");
        assert_eq!(ident("a-b"), "a_b");
        assert_eq!(ident("1x"), "_1x");
        assert_eq!(ident("lastSeen"), "last_seen");
        assert_eq!(ident("HTTPPort"), "httpport");
    }
}
