use std::net::SocketAddr;

use super::*;

fn event() -> Event {
    Event {
        time: "2025-01-02T03:04:05.678Z".into(),
        direction: "inbound".into(),
        method: "GET".into(),
        authority: "api".into(),
        path: "/items?page=2".into(),
        status: 200,
        flags: "-".into(),
        duration_ms: 12.4,
        bytes_sent: 312,
        route: "default".into(),
        cluster: "inbound|8080".into(),
        upstream: Some("127.0.0.1:8080".into()),
        downstream: "127.0.0.1:40112".into(),
        source_identity: "spiffe://cluster.local/ns/default/sa/web".into(),
        destination_identity: "spiffe://cluster.local/ns/default/sa/api".into(),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ..Event::default()
    }
}

#[test]
fn a_request_is_one_line_like_linkerd_tap() {
    assert_eq!(
        format(&event(), "api-1", false),
        "req inbound :method=GET :authority=api :path=/items?page=2  rsp :status=200 \
         latency=12ms bytes=312 src=127.0.0.1:40112 \
         src_id=spiffe://cluster.local/ns/default/sa/web dst=127.0.0.1:8080 \
         dst_id=spiffe://cluster.local/ns/default/sa/api proxy=api-1"
    );
    let local = Event {
        direction: "outbound".into(),
        status: 503,
        grpc_status: Some(14),
        flags: "UH".into(),
        duration_ms: 0.3,
        upstream: None,
        source_identity: String::new(),
        destination_identity: String::new(),
        trace_id: None,
        request_id: Some("r-1".into()),
        route: String::new(),
        ..event()
    };
    assert_eq!(
        format(&local, "web-1", true),
        "req outbound :method=GET :authority=api :path=/items?page=2  rsp :status=503 \
         grpc-status=14 latency=0.3ms bytes=312 src=127.0.0.1:40112 dst=- proxy=web-1 \
         route=- cluster=inbound|8080 flags=UH time=2025-01-02T03:04:05.678Z request_id=r-1"
    );
    assert!(format(&event(), "p", true).ends_with(" trace_id=4bf92f3577b34da6a3ce929d0e0e4736"));
}

#[test]
fn lines_of_the_control_plane_parse_with_unknown_fields_ignored() {
    let line: TapLine = serde_json::from_str(
        r#"{"proxy":"api-1","event":{"method":"POST","path":"/a","status":201,"protocol":"HTTP/1.1","duration_ms":1.5,"grpc_status":null,"later_field":[1]}}"#,
    )
    .unwrap();
    let event = line.event.unwrap();
    assert_eq!((event.method.as_str(), event.status), ("POST", 201));
    assert!(event.success());
    let missed: TapLine = serde_json::from_str(r#"{"proxy":"api-2","missed":7}"#).unwrap();
    assert_eq!(
        note(&missed),
        "proxy api-2: 7 requests not shown: the tap fell behind"
    );
    let error: TapLine = serde_json::from_str(r#"{"proxy":"api-3","error":"refused"}"#).unwrap();
    assert_eq!(note(&error), "proxy api-3: refused");
}

#[test]
fn failures_are_5xx_and_grpc_errors() {
    let with = |status, grpc_status| Event {
        status,
        grpc_status,
        ..Event::default()
    };
    assert!(with(404, None).success());
    assert!(with(200, Some(0)).success());
    assert!(!with(500, None).success());
    assert!(!with(200, Some(14)).success());
}

#[test]
fn filters_become_the_api_query() {
    let mut filter = TapFilterArgs {
        service: "api".into(),
        namespace: "default".into(),
        path: None,
        method: None,
        authority: None,
        direction: Direction::Both,
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 15014)),
    };
    assert_eq!(
        api_path(&filter, None),
        "/api/tap?service=api&namespace=default&direction=both"
    );
    filter.path = Some("/a b".into());
    filter.method = Some("POST".into());
    filter.authority = Some("api:80".into());
    filter.direction = Direction::Inbound;
    assert_eq!(
        api_path(&filter, Some(5)),
        "/api/tap?service=api&namespace=default&direction=inbound&path=%2Fa%20b&method=POST\
         &authority=api%3A80&limit=5"
    );
}
