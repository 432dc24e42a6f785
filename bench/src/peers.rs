//! The peers Trellis is measured against, from the templates in `bench/peers/`: nginx (also
//! the backend), HAProxy and Envoy, each hop one process with one worker.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::load::Proto;
use crate::pair::{Backend, Env, HopPorts, HopSpec, Kind, Ready};

/// Debian's nginx.
pub(crate) const NGINX: &str = "/usr/sbin/nginx";

const NGINX_BACKEND: &str = include_str!("../peers/nginx-backend.conf");
const NGINX_HOP: &str = include_str!("../peers/nginx-hop.conf");
const HAPROXY_HOP: &str = include_str!("../peers/haproxy-hop.cfg");
const HAPROXY_MTLS_OUT: &str = include_str!("../peers/haproxy-hop-mtls-out.cfg");
const HAPROXY_MTLS_IN: &str = include_str!("../peers/haproxy-hop-mtls-in.cfg");
const ENVOY_HOP: &str = include_str!("../peers/envoy-hop.yaml");
const ENVOY_MTLS_OUT: &str = include_str!("../peers/envoy-hop-mtls-out.yaml");
const ENVOY_MTLS_IN: &str = include_str!("../peers/envoy-hop-mtls-in.yaml");

/// `template` with each `{{NAME}}` replaced; fails if a placeholder is left.
fn render(template: &str, vars: &[(&str, String)]) -> anyhow::Result<String> {
    let mut text = template.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    match text.find("{{") {
        Some(at) => anyhow::bail!(
            "template placeholder left unset: {}",
            text[at..].lines().next().unwrap_or_default()
        ),
        None => Ok(text),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes the backend's nginx config into `dir`.
pub(crate) fn nginx_backend(dir: &Path, backend: Backend) -> anyhow::Result<PathBuf> {
    let text = render(
        NGINX_BACKEND,
        &[
            ("DIR", dir.display().to_string()),
            ("H1_PORT", backend.h1.to_string()),
            ("H2_PORT", backend.h2.to_string()),
        ],
    )?;
    write(dir, "nginx.conf", &text)
}

/// nginx's arguments for `conf`, with `dir` as its prefix and errors on stderr.
pub(crate) fn nginx_args(conf: &Path, dir: &Path) -> Vec<OsString> {
    vec![
        "-p".into(),
        dir.into(),
        "-c".into(),
        conf.into(),
        "-e".into(),
        "stderr".into(),
    ]
}

/// The inbound and outbound hops of `kind` (not Trellis, not direct).
pub(crate) fn hops(
    env: &Env,
    dir: &Path,
    kind: Kind,
    proto: Proto,
    ports: HopPorts,
) -> anyhow::Result<(HopSpec, HopSpec)> {
    let cert_dir = env.certs.dir.display().to_string();
    let h2 = proto == Proto::H2;
    // (listen, upstream) of the inbound hop, then of the outbound hop.
    let legs = [
        ("inbound", ports.inbound, ports.backend, ports.admin_in),
        ("outbound", ports.outbound, ports.inbound, ports.admin_out),
    ];
    let mut specs = Vec::with_capacity(2);
    for (side, listen, upstream, admin) in legs {
        let hop_dir = dir.join(side);
        let spec = match kind {
            Kind::Nginx => {
                // nginx proxies to HTTP/1.1 only: with h2 only the client's leg is HTTP/2,
                // and the inbound hop forwards to the backend's HTTP/1.1 port.
                let (h2_listen, upstream) = match side {
                    "inbound" => (false, env.backend.h1),
                    _ => (h2, upstream),
                };
                let conf = render(
                    NGINX_HOP,
                    &[
                        ("DIR", hop_dir.display().to_string()),
                        ("LISTEN_PORT", listen.to_string()),
                        (
                            "LISTEN_OPTS",
                            if h2_listen { "http2" } else { "" }.to_owned(),
                        ),
                        ("UPSTREAM_PORT", upstream.to_string()),
                    ],
                )?;
                let conf = write(&hop_dir, "nginx.conf", &conf)?;
                HopSpec {
                    name: side_name("nginx", side),
                    program: NGINX.into(),
                    args: nginx_args(&conf, &hop_dir),
                    ready: Ready::Listening(listen),
                }
            }
            Kind::Haproxy | Kind::HaproxyMtls => {
                let template = match (kind, side) {
                    (Kind::Haproxy, _) => HAPROXY_HOP,
                    (_, "inbound") => HAPROXY_MTLS_IN,
                    _ => HAPROXY_MTLS_OUT,
                };
                let conf = render(
                    template,
                    &[
                        ("LISTEN_PORT", listen.to_string()),
                        ("UPSTREAM_PORT", upstream.to_string()),
                        ("CERT_DIR", cert_dir.clone()),
                        ("PROTO_OPT", if h2 { "proto h2" } else { "" }.to_owned()),
                        ("ALPN", if h2 { "h2" } else { "http/1.1" }.to_owned()),
                    ],
                )?;
                let conf = write(&hop_dir, "haproxy.cfg", &conf)?;
                HopSpec {
                    name: side_name("haproxy", side),
                    program: env.haproxy.clone(),
                    args: vec!["-db".into(), "-f".into(), conf.into()],
                    ready: Ready::Listening(listen),
                }
            }
            Kind::Envoy | Kind::EnvoyMtls => {
                let template = match (kind, side) {
                    (Kind::Envoy, _) => ENVOY_HOP,
                    (_, "inbound") => ENVOY_MTLS_IN,
                    _ => ENVOY_MTLS_OUT,
                };
                let protocol = if h2 {
                    "http2_protocol_options"
                } else {
                    "http_protocol_options"
                };
                let conf = render(
                    template,
                    &[
                        ("ADMIN_PORT", admin.to_string()),
                        ("LISTEN_PORT", listen.to_string()),
                        ("UPSTREAM_PORT", upstream.to_string()),
                        ("UPSTREAM_PROTOCOL", protocol.to_owned()),
                        ("CERT_DIR", cert_dir.clone()),
                    ],
                )?;
                let conf = write(&hop_dir, "envoy.yaml", &conf)?;
                HopSpec {
                    name: side_name("envoy", side),
                    program: env.envoy.clone(),
                    args: [
                        "-c",
                        &conf.display().to_string(),
                        "--concurrency",
                        "1",
                        "--disable-hot-restart",
                        "-l",
                        "warning",
                    ]
                    .map(OsString::from)
                    .to_vec(),
                    ready: Ready::Admin(admin, "/ready"),
                }
            }
            Kind::Direct | Kind::Trellis | Kind::TrellisMtls => {
                anyhow::bail!("{} is not a peer proxy", kind.label())
            }
        };
        specs.push(spec);
    }
    let outbound = specs.pop().context("two hops")?;
    let inbound = specs.pop().context("two hops")?;
    Ok((inbound, outbound))
}

fn side_name(proxy: &str, side: &str) -> &'static str {
    match (proxy, side) {
        ("nginx", "inbound") => "nginx-inbound",
        ("nginx", _) => "nginx-outbound",
        ("haproxy", "inbound") => "haproxy-inbound",
        ("haproxy", _) => "haproxy-outbound",
        (_, "inbound") => "envoy-inbound",
        _ => "envoy-outbound",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder_or_fails() {
        let text = render("a {{X}} b {{Y}}", &[("X", "1".into()), ("Y", "2".into())]).unwrap();
        assert_eq!(text, "a 1 b 2");
        let err = render("a {{X}} b {{Z}}", &[("X", "1".into())]).unwrap_err();
        assert!(err.to_string().contains("{{Z}}"), "{err}");
    }

    #[test]
    fn every_template_renders() {
        let vars: Vec<(&str, String)> = [
            "DIR",
            "H1_PORT",
            "H2_PORT",
            "LISTEN_PORT",
            "LISTEN_OPTS",
            "UPSTREAM_PORT",
            "CERT_DIR",
            "PROTO_OPT",
            "ALPN",
            "ADMIN_PORT",
            "UPSTREAM_PROTOCOL",
        ]
        .map(|name| (name, "x".to_owned()))
        .to_vec();
        for template in [
            NGINX_BACKEND,
            NGINX_HOP,
            HAPROXY_HOP,
            HAPROXY_MTLS_OUT,
            HAPROXY_MTLS_IN,
            ENVOY_HOP,
            ENVOY_MTLS_OUT,
            ENVOY_MTLS_IN,
        ] {
            render(template, &vars).unwrap();
        }
    }
}
