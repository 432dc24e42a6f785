use super::*;

fn at(line: usize, column: usize) -> Pos {
    Pos { line, column }
}

fn path(keys: &[&str]) -> FieldPath {
    keys.iter().fold(FieldPath::root(), |p, k| match k.parse() {
        Ok(i) => p.index(i),
        Err(_) => p.key(k),
    })
}

#[test]
fn nodes_keep_file_positions() {
    let text = "a: 1\nb:\n  - x: 1\n    y: [1, {z: 2}]\n  - 'q'\n";
    let parsed = parse_file(text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let root = &parsed.documents[0];
    let cases = [
        (path(&["a"]), at(1, 4)),
        (path(&["b"]), at(3, 3)),
        (path(&["b", "0"]), at(3, 5)),
        (path(&["b", "0", "y"]), at(4, 8)),
        (path(&["b", "0", "y", "1", "z"]), at(4, 16)),
        (path(&["b", "1"]), at(5, 5)),
        // Missing fields resolve to their deepest present ancestor.
        (path(&["b", "0", "nope", "deeper"]), at(3, 5)),
        (path(&["b", "7"]), at(3, 3)),
    ];
    for (p, want) in cases {
        assert_eq!(root.locate(&p), want, "{p}");
    }
    assert_eq!(
        root.get("b").and_then(|b| match &b.value {
            Value::Seq(items) => items[1].as_str(),
            _ => None,
        }),
        Some("q")
    );
}

#[test]
fn documents_have_absolute_lines_and_empty_ones_are_skipped() {
    let text = "a: 1\n---\n---\n# only a comment\n---\nb: 2\n---\n";
    let parsed = parse_file(text);
    assert!(parsed.errors.is_empty());
    assert_eq!(parsed.documents.len(), 2);
    assert_eq!(parsed.documents[1].locate(&path(&["b"])), at(6, 4));
}

#[test]
fn scalars_record_plainness() {
    let parsed = parse_file("a: 1\nb: '1'\nc: !!str 1\nd: |\n  text\n");
    let root = &parsed.documents[0];
    let plain = |k: &str| match root.get(k).map(|n| &n.value) {
        Some(Value::Scalar { plain, .. }) => *plain,
        _ => panic!("{k} is not a scalar"),
    };
    assert!(plain("a"));
    assert!(!plain("b"));
    assert!(!plain("c"));
    assert!(!plain("d"));
    assert_eq!(root.get("d").and_then(Node::as_str), Some("text\n"));
}

#[test]
fn syntax_errors_are_reported_and_later_documents_still_parse() {
    let text = "a: 1\n---\nbad: [1\n---\nc: 3\n---\nd: {\n";
    let parsed = parse_file(text);
    assert_eq!(parsed.documents.len(), 2);
    let positions: Vec<Pos> = parsed.errors.iter().map(ParseError::pos).collect();
    assert_eq!(positions, vec![at(3, 6), at(7, 4)]);
    assert!(parsed.errors[0].to_string().starts_with("invalid YAML: "));
}

#[test]
fn duplicate_and_complex_keys_are_errors() {
    let parsed = parse_file("m:\n  f: 1\n  f: 2\n? [x]\n: 3\n");
    let found: Vec<(Pos, String, String)> = parsed
        .errors
        .iter()
        .map(|e| (e.pos(), e.path().to_string(), e.to_string()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                at(3, 3),
                "m.f".to_owned(),
                "duplicate key `f` (first given on line 2); remove one of them".to_owned()
            ),
            (
                at(4, 3),
                String::new(),
                "mapping keys must be strings, found a sequence or mapping".to_owned()
            ),
        ]
    );
    // The first value of a duplicate key is kept.
    let m = parsed.documents[0].get("m").and_then(|m| m.get("f"));
    assert_eq!(m.and_then(Node::as_str), Some("1"));
}

#[test]
fn aliases_expand_within_budget() {
    let parsed = parse_file("a: &x {k: v}\nb: *x\n");
    let root = &parsed.documents[0];
    assert_eq!(root.get("a"), root.get("b"));

    // Each level doubles; 2^20 nodes exceed the budget.
    let mut text = String::from("l0: &l0 [x, x]\n");
    for i in 1..=20 {
        text.push_str(&format!("l{i}: &l{i} [*l{p}, *l{p}]\n", p = i - 1));
    }
    let parsed = parse_file(&text);
    assert!(
        parsed
            .errors
            .iter()
            .any(|e| matches!(e, ParseError::AliasBudget { .. })),
        "{:?}",
        parsed.errors.first()
    );
}
