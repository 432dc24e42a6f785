use super::RetryBudget;

mod settings;
use crate::load::error_mismatch;
use crate::load_str;

/// A BackendPolicy `name` targeting `catalog` whose spec continues with `rest` (lines 6 on).
pub(super) fn policy(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRefs: [{{kind: Service, name: catalog}}]\n{rest}"
    )
}

#[test]
fn backend_policies_load_with_defaults() {
    let text = format!(
        "{}---\n{}",
        policy(
            "full",
            "  retryBudget: {budgetPercent: 12.5, minRetryConcurrency: 10}\n"
        ),
        policy("empty", "  retryBudget: {}\n").replace("name: catalog", "name: web"),
    );
    let set = load_str("b.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let budgets: Vec<Option<RetryBudget>> = set
        .backend_policies
        .iter()
        .map(|p| p.spec.retry_budget)
        .collect();
    assert_eq!(
        budgets,
        [
            Some(RetryBudget {
                budget_percent: 12.5,
                min_retry_concurrency: 10
            }),
            Some(RetryBudget {
                budget_percent: 20.0,
                min_retry_concurrency: 3
            }),
        ]
    );
    assert_eq!(budgets[1], Some(RetryBudget::default()));
    assert!(set.backend_policies[0].targets("default", "catalog"));
    assert!(!set.backend_policies[0].targets("other", "catalog"));
    assert_eq!(
        set.retry_budget("default", "web"),
        Some(&RetryBudget::default())
    );
    assert_eq!(set.retry_budget("default", "nobody"), None);
    let json = serde_json::to_value(&set).expect("serializes");
    assert_eq!(
        json["backendPolicies"][0]["spec"]["retryBudget"],
        serde_json::json!({"budgetPercent": 12.5, "minRetryConcurrency": 10})
    );

    // An integer percentage reads as a number too; a policy without a budget sets none.
    let whole = load_str(
        "b.yaml",
        &policy("p", "  retryBudget: {budgetPercent: 100}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        whole
            .retry_budget("default", "catalog")
            .map(|b| b.budget_percent),
        Some(100.0)
    );
    let bare = load_str("b.yaml", &policy("p", "")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bare.backend_policies[0].spec.retry_budget, None);
    assert_eq!(bare.retry_budget("default", "catalog"), None);
}

#[test]
fn bad_backend_policies_are_rejected_at_the_field() {
    // (text, line, column, field, message)
    let cases = [
        (
            policy("p", "  retryBudget: {budgetPercent: 0}\n"),
            6,
            32,
            "spec.retryBudget.budgetPercent",
            "expected a percentage above 0 and at most 100, found 0",
        ),
        (
            policy("p", "  retryBudget: {budgetPercent: 100.5}\n"),
            6,
            32,
            "spec.retryBudget.budgetPercent",
            "expected a percentage above 0 and at most 100, found 100.5",
        ),
        (
            policy("p", "  retryBudget: {budgetPercent: .nan}\n"),
            6,
            32,
            "spec.retryBudget.budgetPercent",
            "expected a percentage above 0 and at most 100, found NaN",
        ),
        (
            policy("p", "  retryBudget: {budgetPercent: lots}\n"),
            6,
            32,
            "spec.retryBudget.budgetPercent",
            "expected a percentage above 0 and at most 100, found string \"lots\"",
        ),
        (
            policy("p", "  retryBudget: {minRetryConcurrency: -1}\n"),
            6,
            38,
            "spec.retryBudget.minRetryConcurrency",
            "expected an integer between 0 and 4294967295, found -1",
        ),
        (
            policy("p", "  retryBudget: {budgetInterval: 1s}\n"),
            6,
            17,
            "spec.retryBudget.budgetInterval",
            "unknown field `budgetInterval`, expected one of `budgetPercent`, `minRetryConcurrency`",
        ),
        (
            policy("p", "  loadBalancing: {type: RoundRobin}\n"),
            6,
            3,
            "spec.loadBalancing",
            "unknown field `loadBalancing`, expected one of `targetRefs`, `retryBudget`, `loadBalancer`, `connectionPool`, `outlierDetection`, `healthCheck`, `localityFailover`",
        ),
        (
            policy("p", "").replace("kind: Service, name", "kind: Deployment, name"),
            5,
            23,
            "spec.targetRefs[0].kind",
            "expected `Service` (mesh routes reference Services), found `Deployment`",
        ),
        (
            policy("p", "  retryBudget: {}\n")
                .replace("  targetRefs: [{kind: Service, name: catalog}]\n", ""),
            5,
            3,
            "spec.targetRefs",
            "expected at least one targetRef naming a Service (kind: Service)",
        ),
    ];
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(text, line, column, field, message)| {
            error_mismatch("b.yaml", text, (*line, *column, field, message))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_second_retry_budget_for_a_service_names_both_policies() {
    let budget = "  retryBudget: {minRetryConcurrency: 5}\n";
    let text = format!(
        "{}---\n{}---\n{}",
        policy("first", budget),
        policy("no-budget", ""),
        policy("second", budget).replace(
            "[{kind: Service, name: catalog}]",
            "[{kind: Service, name: web}, {kind: Service, name: catalog}]"
        ),
    );
    let errors = load_str("b.yaml", &text).expect_err("two budgets for catalog");
    assert_eq!(
        errors.to_string(),
        "b.yaml:18:66: spec.targetRefs[1].name: Service `default/catalog` already has a retry budget from BackendPolicy `default/first` (b.yaml:5:38); BackendPolicy `default/second` cannot set another (one retryBudget per Service)"
    );

    // Across files, and not across namespaces.
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("a.yaml", &policy("first", budget));
    write("b.yaml", &policy("second", budget));
    let errors = crate::load_dir(dir.path()).expect_err("two budgets for catalog");
    let first = dir.path().join("a.yaml").display().to_string();
    assert_eq!(errors.len(), 1, "{errors}");
    assert!(
        errors.0[0]
            .message
            .contains(&format!("`default/first` ({first}:5:38)")),
        "{errors}"
    );
    assert_eq!(
        errors.0[0].file,
        dir.path().join("b.yaml").display().to_string()
    );
    write(
        "b.yaml",
        &policy("second", budget).replace("{name: second}", "{name: second, namespace: shop}"),
    );
    let set = crate::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        set.retry_budget("shop", "catalog")
            .map(|b| b.min_retry_concurrency),
        Some(5)
    );
}
