//! A stock Envoy as a workload's sidecar, bootstrapped by Trellis and configured over ADS by
//! the control plane, beside Trellis proxies.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_proxy::{ProxyHandle, SdsAgentOptions};
use trellis_test::{
    Deadline, EchoReply, Envoy, Server, Sidecar, TestMesh, assert_eventually, free_loopback_addr,
    http1_get, spawn_http_echo,
};
use trellis_xds::bootstrap::EnvoyOptions;
use trellis_xds::node::{NodeMeta, UpstreamPort};

use crate::common::{
    KeepAlive, admin_json, assert_share, config_dump, servers_on_an_early_connection, service,
    share_served_by, split, versioned,
};

/// Requests per measured share (checked within five standard deviations).
const SAMPLES: usize = 1000;

/// What the echo saw of `GET /through` sent to `addr` with `Host: host`, once that answers 200
/// (within 10 s; `log` explains a failure).
async fn echoed(addr: SocketAddr, host: &str, log: impl Fn() -> String) -> EchoReply {
    let deadline = Deadline::after(Duration::from_secs(10));
    loop {
        if let Ok(reply) = http1_get(addr, "/through", &[("host", host)]).await
            && reply.status == 200
        {
            return reply.json().unwrap();
        }
        assert!(
            !deadline.passed(),
            "no 200 for {host} through {addr}:\n{}",
            log()
        );
        deadline.pause().await;
    }
}

/// `(name, weight)` of each weighted cluster in a JSON array of them.
fn weights(clusters: &Value) -> Vec<(String, u64)> {
    clusters
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            (name, c["weight"].as_u64().unwrap_or_default())
        })
        .collect()
}

/// Envoy as a workload's sidecar, with the addresses it listens on.
pub(crate) struct EnvoySidecar {
    pub(crate) envoy: Envoy,
    pub(crate) inbound: SocketAddr,
    outbounds: Vec<(String, SocketAddr)>,
}

impl EnvoySidecar {
    /// The outbound listener for `service`.
    pub(crate) fn outbound(&self, service: &str) -> SocketAddr {
        let found = self.outbounds.iter().find(|(s, _)| s == service);
        found
            .map(|(_, addr)| *addr)
            .expect("an outbound listener for it")
    }
}

/// Starts Envoy as the sidecar (node id `id`) of a `service` workload whose app listens on
/// `app_port`, with an outbound listener for each of `upstreams`; with `sds`, the socket of
/// the agent serving its certificate (mTLS), else plaintext; over delta ADS with `delta`.
pub(crate) async fn envoy_sidecar(
    mesh: &TestMesh,
    id: &str,
    (service, app_port): (&str, u16),
    upstreams: &[&str],
    (sds, delta): (Option<&Path>, bool),
) -> EnvoySidecar {
    let [inbound, admin] = [(); 2].map(|()| free_loopback_addr().unwrap());
    let outbounds: Vec<(String, SocketAddr)> = upstreams
        .iter()
        .map(|u| ((*u).to_owned(), free_loopback_addr().unwrap()))
        .collect();
    let meta = NodeMeta {
        service: service.into(),
        namespace: "default".into(),
        app_port,
        inbound_port: inbound.port(),
        ip: "127.0.0.1".into(),
        upstreams: outbounds
            .iter()
            .map(|(service, addr)| UpstreamPort {
                service: service.clone(),
                port: addr.port(),
            })
            .collect(),
        admin: Some(admin.to_string()),
        mtls: sds.is_some(),
        ..NodeMeta::default()
    };
    let opts = EnvoyOptions {
        xds: mesh.xds_addr(),
        admin,
        sds,
        delta,
    };
    let bootstrap = trellis_xds::bootstrap::envoy(&meta, id, opts);
    EnvoySidecar {
        envoy: Envoy::start(&bootstrap, admin).await.unwrap(),
        inbound,
        outbounds,
    }
}

/// Starts one more `api` workload (labels `labels`) and requires Envoy to list its endpoint
/// in `cluster` within a second of its sidecar being ready (the sidecar's own start-up, which a
/// loaded machine stretches, is not the control plane's push; it registered a few milliseconds
/// before ready); returns the replica's sidecar and app.
async fn replica_reaches_envoy_within_a_second(
    mesh: &TestMesh,
    envoy: &Envoy,
    (name, labels): (&str, &[(&str, &str)]),
    cluster: &str,
) -> (ProxyHandle, Server) {
    let app = spawn_http_echo(name).await.unwrap();
    let spec = labels
        .iter()
        .fold(Sidecar::new("api", app.addr().port()), |s, (k, v)| {
            s.label(k, v)
        });
    let replica = mesh.sidecar(spec).await.unwrap();
    let started = Instant::now();
    let member = format!("{cluster}::{}::", replica.inbound_addr());
    while !http1_get(envoy.admin_addr(), "/clusters", &[])
        .await
        .is_ok_and(|r| r.text().contains(&member))
    {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{member} not in Envoy's clusters {:?} after the replica started",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (replica, app)
}

/// Envoy (web's sidecar) → Trellis proxy → api's app, then a Trellis client sidecar → Envoy →
/// web's app; returns that client's sidecar.
async fn both_ways(mesh: &TestMesh, envoy: &EnvoySidecar) -> ProxyHandle {
    let seen = echoed(envoy.outbound("api"), "api", || envoy.envoy.log()).await;
    assert_eq!(
        (seen.server.as_str(), seen.path.as_str()),
        ("api", "/through")
    );
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("web"))
        .await
        .unwrap();
    let to_web = client.upstream_addr("web").unwrap();
    let seen = echoed(to_web, "web", || envoy.envoy.log()).await;
    assert_eq!(seen.server, "web");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_acks_the_control_planes_config_and_talks_to_trellis_proxies_both_ways() {
    trellis_test::init_tracing();
    let config = [service("api", "HTTP"), service("web", "HTTP")].concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let api_app = spawn_http_echo("api").await.unwrap();
    let web_app = spawn_http_echo("web").await.unwrap();
    let _api = mesh
        .sidecar(Sidecar::new("api", api_app.addr().port()))
        .await
        .unwrap();

    // web's sidecar is Envoy, with an outbound listener for api.
    let web = ("web", web_app.addr().port());
    let sidecar = envoy_sidecar(&mesh, "web-envoy", web, &["api"], (None, false)).await;
    let envoy = &sidecar.envoy;
    let _client = both_ways(&mesh, &sidecar).await;

    // Envoy ACKed every type the control plane sent it, and rejected nothing.
    let proxies: Value = http1_get(mesh.admin_addr(), "/api/proxies", &[])
        .await
        .unwrap()
        .json()
        .unwrap();
    let envoy_row = proxies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == "web-envoy")
        .unwrap_or_else(|| panic!("Envoy not among the proxies: {proxies}"));
    assert_eq!(envoy_row["synced"], true, "{envoy_row}");
    assert_eq!(envoy_row["nacks"], 0, "{envoy_row}");
    for kind in ["cds", "lds", "eds", "rds"] {
        assert!(
            envoy_row["acked"][kind].is_string(),
            "{kind} not ACKed: {envoy_row}"
        );
    }
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(envoy.stat(stat).await.unwrap(), Some(0), "{stat}");
    }
    assert_eq!(
        envoy
            .stat("listener_manager.total_listeners_active")
            .await
            .unwrap(),
        Some(2),
        "inbound and the outbound listener for api"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_with_the_trellis_proxys_weights_and_sees_a_new_endpoint_within_a_second() {
    trellis_test::init_tracing();
    let config = [
        service("api", "HTTP"),
        versioned("api-v1", "api", "v1"),
        versioned("api-v2", "api", "v2"),
        service("web", "HTTP"),
        split("api", ("api-v1", 80), ("api-v2", 20)),
    ]
    .concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let v1 = spawn_http_echo("api-v1").await.unwrap();
    let v2 = spawn_http_echo("api-v2").await.unwrap();
    let _v1 = mesh
        .sidecar(Sidecar::new("api", v1.addr().port()).label("version", "v1"))
        .await
        .unwrap();
    let _v2 = mesh
        .sidecar(Sidecar::new("api", v2.addr().port()).label("version", "v2"))
        .await
        .unwrap();
    let web_app = spawn_http_echo("web").await.unwrap();
    let web = ("web", web_app.addr().port());
    let sidecar = envoy_sidecar(&mesh, "web-envoy", web, &["api"], (None, false)).await;
    let (envoy, through_envoy) = (&sidecar.envoy, sidecar.outbound("api"));
    let client = mesh
        .sidecar(Sidecar::new("client", 0).upstream("api"))
        .await
        .unwrap();
    let through_trellis = client.upstream_addr("api").unwrap();

    // Both split 80/20 as measured, also on a connection that stayed silent after connecting,
    // and Envoy applied the same weights as the Trellis proxy.
    for (proxy, addr) in [("Envoy", through_envoy), ("Trellis", through_trellis)] {
        let http = KeepAlive::new(addr);
        let mut seen = BTreeSet::new();
        assert_eventually!(Duration::from_secs(5), {
            if let Ok((200, served_by)) = http.get("/").await {
                seen.insert(served_by);
            }
            seen.len() == 2
        });
        let share = share_served_by(&http, "api-v2", SAMPLES).await;
        assert_share(&format!("{proxy}: 80/20 split to v2"), share, 0.2, SAMPLES);
        let servers = servers_on_an_early_connection(addr, 50).await;
        assert_eq!(
            servers.len(),
            2,
            "{proxy}: an idle connection pinned to {servers:?}"
        );
    }
    let routes = http1_get(
        envoy.admin_addr(),
        "/config_dump?resource=dynamic_route_configs",
        &[],
    )
    .await
    .unwrap()
    .json::<Value>()
    .unwrap();
    let route = "outbound|api.default";
    let envoy_route = routes["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["route_config"])
        .find(|rc| rc["name"] == route)
        .unwrap_or_else(|| panic!("Envoy has no {route}: {routes}"));
    let trellis_dump = config_dump(client.admin_addr()).await;
    let trellis_route = trellis_dump["route_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|rc| rc["name"] == route)
        .unwrap_or_else(|| panic!("the Trellis proxy has no {route}: {trellis_dump}"));
    let first_rule = |rc: &Value| rc["virtual_hosts"][0]["routes"][0].clone();
    let envoy_weights = weights(&first_rule(envoy_route)["route"]["weighted_clusters"]["clusters"]);
    let trellis_weights = weights(&first_rule(trellis_route)["clusters"]);
    let expected = [
        ("outbound|api-v1.default", 80),
        ("outbound|api-v2.default", 20),
    ]
    .map(|(name, weight)| (name.to_owned(), weight));
    assert_eq!(envoy_weights, expected, "Envoy's route");
    assert_eq!(trellis_weights, expected, "the Trellis proxy's route");

    // One more api-v2 replica: Envoy has its endpoint within a second of the replica's start.
    let replica = ("api-v2b", &[("version", "v2")][..]);
    let _replica =
        replica_reaches_envoy_within_a_second(&mesh, envoy, replica, "outbound|api-v2.default")
            .await;
    let http = KeepAlive::new(through_envoy);
    assert_eventually!(
        Duration::from_secs(5),
        http.get("/")
            .await
            .is_ok_and(|r| r == (200, "api-v2b".to_owned()))
    );
}

/// Policies for the mTLS test: STRICT everywhere; api admits only web (behind Envoy), web
/// admits only client: each side can only pass them by verifying its peer's certificate.
const STRICT_POLICIES: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  mtls: {mode: STRICT}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-from-web}
spec:
  targetRefs: [{kind: Service, name: api}]
  rules:
  - from: [{identities: [\"spiffe://cluster.local/ns/default/sa/web\"]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-from-client}
spec:
  targetRefs: [{kind: Service, name: web}]
  rules:
  - from: [{identities: [\"spiffe://cluster.local/ns/default/sa/client\"]}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_a_local_sds_agent_and_trellis_proxies_talk_mtls_both_ways() {
    trellis_test::init_tracing();
    let config = [service("api", "HTTP"), service("web", "HTTP")].concat() + STRICT_POLICIES;
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let api_app = spawn_http_echo("api").await.unwrap();
    let _api = mesh
        .sidecar(Sidecar::new("api", api_app.addr().port()))
        .await
        .unwrap();

    // web's sidecar is Envoy; its certificate comes from the SDS agent on a local socket.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds.sock");
    let agent = trellis_proxy::start_sds_agent(SdsAgentOptions {
        control_plane: format!("http://{}", mesh.xds_addr()),
        ca_token: mesh.join_token().to_owned(),
        trust_domain: "cluster.local".into(),
        namespace: "default".into(),
        service: "web".into(),
        svid_ttl: None,
        socket: socket.clone(),
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent.ready())
        .await
        .expect("the agent got web's certificate");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the SDS socket is owner-only");
    let web_app = spawn_http_echo("web").await.unwrap();
    let web = ("web", web_app.addr().port());
    let envoy = envoy_sidecar(&mesh, "web-envoy", web, &["api"], (Some(&socket), false)).await;

    // Envoy → Trellis proxy: api's sidecar admits only web's verified identity; Trellis
    // proxy → Envoy: Envoy admits client's verified identity, and refuses another.
    let _client = both_ways(&mesh, &envoy).await;
    let other = mesh
        .sidecar(Sidecar::new("other", 0).upstream("web"))
        .await
        .unwrap();
    let denied = http1_get(other.upstream_addr("web").unwrap(), "/", &[("host", "web")])
        .await
        .unwrap();
    assert_eq!(denied.status, 403, "Envoy's RBAC saw other's identity");

    // STRICT: Envoy's inbound takes no plaintext.
    let plaintext = http1_get(envoy.inbound, "/", &[("host", "web")]).await;
    assert!(
        plaintext.is_err(),
        "plaintext answered: {:?}",
        plaintext.map(|r| r.status)
    );
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(envoy.envoy.stat(stat).await.unwrap(), Some(0), "{stat}");
    }
    drop(agent);
}

/// The sum of Envoy's xDS `update_attempt` counters (listeners, clusters, routes, endpoints):
/// it moves with every response Envoy receives.
async fn updates_received(envoy: &Envoy) -> u64 {
    let stats = http1_get(envoy.admin_addr(), "/stats?filter=update_attempt", &[])
        .await
        .unwrap()
        .text();
    stats
        .lines()
        .filter_map(|l| l.rsplit_once(": ")?.1.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_delta_ads_gets_the_same_config_and_nothing_while_idle_on_one_stream() {
    trellis_test::init_tracing();
    let config = [service("api", "HTTP"), service("web", "HTTP")].concat();
    let mesh = TestMesh::start(&[("mesh.yaml", &config)]).await.unwrap();
    let api_app = spawn_http_echo("api").await.unwrap();
    let _api = mesh
        .sidecar(Sidecar::new("api", api_app.addr().port()))
        .await
        .unwrap();
    let web_app = spawn_http_echo("web").await.unwrap();
    let web = ("web", web_app.addr().port());
    let envoy = envoy_sidecar(&mesh, "web-envoy", web, &["api"], (None, true)).await;

    // Both ways, as over state of the world; an endpoint change within a second.
    let client = both_ways(&mesh, &envoy).await;
    let _replica = replica_reaches_envoy_within_a_second(
        &mesh,
        &envoy.envoy,
        ("api-b", &[]),
        "outbound|api.default",
    )
    .await;

    // Envoy ACKed everything; then for 10 s it receives nothing, while a route it does not
    // use changes (the client's sidecar gets that one).
    assert_eventually!(Duration::from_secs(5), {
        let proxies = admin_json(mesh.admin_addr(), "/api/proxies").await;
        proxies
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node_id"] == "web-envoy" && p["synced"] == true && p["nacks"] == 0)
    });
    let before = updates_received(&envoy.envoy).await;
    assert!(before > 0, "Envoy's update counters are read");
    mesh.config
        .write("route.yaml", &split("web", ("web", 1), ("web", 1)))
        .unwrap();
    assert_eventually!(
        Duration::from_secs(5),
        config_dump(client.admin_addr()).await["route_configs"]
            .to_string()
            .contains("web-split"),
        "the client's sidecar never got the new route"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        updates_received(&envoy.envoy).await,
        before,
        "an idle Envoy received updates"
    );
    // One ADS stream (one request on the xds cluster) for the whole run.
    assert_eq!(
        envoy
            .envoy
            .stat("cluster.xds.upstream_rq_total")
            .await
            .unwrap(),
        Some(1)
    );
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(envoy.envoy.stat(stat).await.unwrap(), Some(0), "{stat}");
    }
}
