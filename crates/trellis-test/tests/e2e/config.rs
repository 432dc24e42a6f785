//! Invalid config is rejected with its location, and the last good config keeps serving.

use std::time::Duration;

use trellis_test::{Sidecar, assert_eventually};

use crate::common::{EchoMesh, KeepAlive, admin_json, echo_mesh};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_yaml_is_rejected_with_file_line_and_old_config_serves() {
    let EchoMesh { mesh, .. } = &echo_mesh("web").await;
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let http = KeepAlive::new(client.upstream_addr("web").unwrap());
    assert_eq!(http.get("/").await.unwrap().0, 200);
    let admin = mesh.admin_addr();

    let route = |backend: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{kind: Service, name: web}}]\n  rules:\n  - backendRefs:\n    - {backend}\n"
        )
    };
    let cases = [
        (
            "bad field",
            route("{name: web, weigth: 1}"),
            "bad.yaml:8:",
            "weigth",
        ),
        (
            "bad weight",
            route("{name: web, weight: -3}"),
            "bad.yaml:8:",
            "weight",
        ),
        (
            "unknown kind",
            "apiVersion: trellis.dev/v1alpha1\nkind: Servise\nmetadata: {name: x}\nspec: {}\n"
                .to_owned(),
            "bad.yaml:2:",
            "Servise",
        ),
    ];
    for (what, yaml, location, mention) in cases {
        mesh.config.write("bad.yaml", &yaml).unwrap();
        assert_eventually!(
            Duration::from_secs(5),
            admin_json(admin, "/api/config").await["errors"]
                .as_array()
                .is_some_and(|errors| errors.iter().any(|e| {
                    let e = e.as_str().unwrap_or_default();
                    e.contains(location) && e.contains(mention)
                })),
            "{what}: no error at {location} mentioning {mention}"
        );
        assert_eq!(
            http.get("/").await.unwrap(),
            (200, "web".to_owned()),
            "{what}: the old config stopped serving"
        );
        mesh.config.remove("bad.yaml").unwrap();
        assert_eventually!(
            Duration::from_secs(5),
            admin_json(admin, "/api/config").await["errors"] == serde_json::json!([])
        );
    }
}
