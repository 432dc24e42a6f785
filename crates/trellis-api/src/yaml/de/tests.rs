use serde::Deserialize;

use super::*;
use crate::yaml::parse_file;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Doc {
    name: String,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    items: Vec<Item>,
    #[serde(default)]
    flag: bool,
    #[serde(default)]
    ratio: f64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Item {
    #[serde(rename = "type", default)]
    kind: Kind,
    #[serde(
        default = "crate::bounded::one",
        deserialize_with = "crate::bounded::backend_weight"
    )]
    weight: u32,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
enum Kind {
    #[default]
    Exact,
    PathPrefix,
}

/// Line, column, field path and message of an error.
type Failure = (usize, usize, String, String);

fn read(text: &str) -> Result<Doc, Failure> {
    let parsed = parse_file(text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    from_node::<Doc>(&parsed.documents[0]).map_err(|e| {
        let (pos, path, message) = e.into_parts();
        (pos.line, pos.column, path.to_string(), message)
    })
}

#[test]
fn reads_typed_values_with_yaml_core_schema() {
    let doc = read(
        "name: 10\ncount: 0x10\nitems:\n  - type: PathPrefix\n  - weight: 7\nflag: true\nratio: 1.5\n",
    );
    let want = Doc {
        name: "10".into(),
        count: Some(16),
        items: vec![
            Item {
                kind: Kind::PathPrefix,
                weight: 1,
            },
            Item {
                kind: Kind::Exact,
                weight: 7,
            },
        ],
        flag: true,
        ratio: 1.5,
    };
    assert_eq!(doc, Ok(want));
    // Null collections read as empty; null options as None.
    let doc = read("name: x\ncount: ~\nitems:\n").expect("valid");
    assert_eq!((doc.count, doc.items.len()), (None, 0));
}

#[test]
fn errors_carry_innermost_position_path_and_expectation() {
    type Want = (usize, usize, &'static str, &'static str);
    let cases: &[(&str, Want)] = &[
        (
            "name: x\nitems:\n  - weigth: 2\n",
            (
                3,
                5,
                "items[0].weigth",
                "unknown field `weigth`, expected one of `type`, `weight` (did you mean `weight`?)",
            ),
        ),
        (
            "name: x\nitems:\n  - {}\n  - weight: -5\n",
            (
                4,
                13,
                "items[1].weight",
                "expected an integer between 0 and 1000000, found -5",
            ),
        ),
        (
            "name: x\nitems:\n  - weight: 2000000\n",
            (
                3,
                13,
                "items[0].weight",
                "expected an integer between 0 and 1000000, found 2000000",
            ),
        ),
        (
            "name: x\nitems:\n  - weight: '5'\n",
            (
                3,
                13,
                "items[0].weight",
                "expected an integer between 0 and 1000000, found string \"5\"",
            ),
        ),
        (
            "name: x\nitems:\n  - type: Prefix\n",
            (
                3,
                11,
                "items[0].type",
                "expected one of Exact, PathPrefix, found `Prefix`",
            ),
        ),
        (
            "count: 1\nitems: []\n",
            (1, 1, "name", "missing required field `name`"),
        ),
        (
            "name: x\ncount: many\n",
            (2, 8, "count", "expected u32, found string \"many\""),
        ),
        (
            "name: x\nitems: {a: 1}\n",
            (2, 8, "items", "expected a sequence, found a mapping"),
        ),
        (
            "name: [a]\n",
            (1, 7, "name", "expected a string, found a sequence"),
        ),
        ("name: ~\n", (1, 7, "name", "expected a string, found null")),
    ];
    for (text, (line, column, path, message)) in cases {
        let got = read(text).expect_err(text);
        assert_eq!(
            got,
            (*line, *column, path.to_string(), message.to_string()),
            "{text}"
        );
    }
}

#[test]
fn suggestions_only_for_near_misses() {
    assert_eq!(closest("weigth", &["type", "weight"]), Some("weight"));
    assert_eq!(
        closest("backendref", &["backendRefs", "matches"]),
        Some("backendRefs")
    );
    assert_eq!(closest("zzz", &["type", "weight"]), None);
}
