//! The error table of docs/protocol.md is the specification of
//! `sync_core::wire::ErrorCode`: every code in the table is a variant, every
//! variant is in the table, and each variant's status is one the table gives.

use std::collections::BTreeMap;

use sync_core::wire::ErrorCode;

/// The rows of the error table: code → the statuses its rows give (none for `—`).
fn table() -> BTreeMap<String, Vec<u16>> {
    let protocol = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md");
    let errors = protocol.split("\n## Errors").nth(1).expect("an Errors section");
    let errors = errors.split("\n## ").next().unwrap_or(errors);
    let mut rows: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for line in errors.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let code = cells[1].trim_matches('`').to_owned();
        let statuses = cells[2]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| n.len() == 3)
            .map(|n| n.parse::<u16>().unwrap());
        rows.entry(code).or_default().extend(statuses);
    }
    rows
}

#[test]
fn the_protocols_error_table_and_the_enum_agree() {
    let table = table();
    assert!(table.len() >= 30, "the table was read: {table:?}");
    for (name, statuses) in &table {
        let code = ErrorCode::from_name(name);
        assert!(!matches!(code, ErrorCode::Other(_)), "`{name}` is in docs/protocol.md but not an ErrorCode");
        assert_eq!(code.as_str(), name);
        if !statuses.is_empty() {
            assert!(
                statuses.contains(&code.status()),
                "`{name}`: ErrorCode::status() is {}, the table says {statuses:?}",
                code.status()
            );
        }
    }
    for code in ErrorCode::ALL {
        assert!(
            table.contains_key(code.as_str()),
            "ErrorCode `{code}` is missing from docs/protocol.md's error table"
        );
    }
}
