//! `template.yaml` routes each API function exactly the routes its binary serves, and only the
//! confirmation link and the portal skip the JWT authorizer (the portal's API checks its own
//! session tokens).

use std::collections::BTreeSet;

use hub::api::{ApiFunction, Operation, ROUTES};
use hub_tests::workspace_root;

/// `(binary, METHOD, path, open)` for every `HttpApi` event of the template.
fn template_routes() -> BTreeSet<(String, String, String, bool)> {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    let mut routes = BTreeSet::new();
    let (mut binary, mut method, mut path) = (String::new(), String::new(), String::new());
    let mut flush = |binary: &str, method: &mut String, path: &mut String, open: bool| {
        if !method.is_empty() && !path.is_empty() {
            routes.insert((binary.to_string(), method.clone(), path.clone(), open));
        }
        method.clear();
        path.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("Binary: ") {
            binary = name.to_string();
        } else if let Some(m) = trimmed.strip_prefix("Method: ") {
            flush(&binary, &mut method, &mut path, false);
            method = m.to_string();
        } else if let Some(p) = trimmed.strip_prefix("Path: ") {
            path = p.to_string();
        } else if trimmed == "Authorizer: NONE" {
            flush(&binary, &mut method, &mut path, true);
        } else if line.starts_with("  ") && !line.starts_with("   ") && trimmed.ends_with(':') {
            // The next resource.
            flush(&binary, &mut method, &mut path, false);
        }
    }
    flush(&binary, &mut method, &mut path, false);
    routes
}

#[test]
fn every_function_is_routed_exactly_its_operations() {
    let open_ops = [Operation::Confirm, Operation::Portal];
    let mut expected = BTreeSet::new();
    for function in ApiFunction::ALL {
        for (method, path, op) in ROUTES {
            if function.operations().contains(op) {
                let open = open_ops.contains(op);
                expected.insert((
                    function.name().to_string(),
                    method.to_string(),
                    path.to_string(),
                    open,
                ));
            }
        }
    }
    // The portal's assets and API, behind its page.
    expected.insert((
        "manage".into(),
        "ANY".into(),
        "/portal/{proxy+}".into(),
        true,
    ));
    let routed = template_routes();
    assert_eq!(
        expected.len(),
        ROUTES.len() + 1,
        "every route has one function"
    );
    let missing: Vec<_> = expected.difference(&routed).collect();
    let extra: Vec<_> = routed.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "template.yaml routes differ from the binaries' operations:\nmissing {missing:#?}\nextra {extra:#?}"
    );
}
