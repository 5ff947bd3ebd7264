//! `openapi.yaml` describes every route the router serves, and no route it does not serve.
//! (The test command also runs schemathesis against `webhook-hub serve` with it.)

use std::collections::BTreeSet;

/// `(METHOD, path)` of every operation under `paths:` in the OpenAPI document.
fn documented() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let mut ops = BTreeSet::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && ["get", "put", "post", "patch", "delete", "head", "options"].contains(&m)
        {
            ops.insert((m.to_ascii_uppercase(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let served: BTreeSet<(String, String)> = hub::api::ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "openapi.yaml describes routes the router does not serve: {unserved:?}"
    );
    assert_eq!(served.len(), 11);
}

#[test]
fn every_lambda_function_serves_only_its_routes() {
    let mut covered = Vec::new();
    for function in hub::api::ApiFunction::ALL {
        covered.extend_from_slice(function.operations());
    }
    covered.sort_by_key(|op| format!("{op:?}"));
    let mut all = hub::api::Operation::ALL.to_vec();
    all.sort_by_key(|op| format!("{op:?}"));
    assert_eq!(
        covered, all,
        "each operation is served by exactly one API function"
    );
}
