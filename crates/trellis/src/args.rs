//! Parsers for flag values, shared by every command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use trellis_proxy::AccessLogFormat;

/// `KEY=VALUE`.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

/// `PORT` (on 127.0.0.1) or `IP:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("expected PORT or IP:PORT, found {s:?}"))
}

/// `SERVICE=PORT` or `SERVICE=IP:PORT`.
pub fn parse_upstream(s: &str) -> Result<(String, SocketAddr), String> {
    let (service, addr) =
        parse_pair(s).map_err(|_| format!("expected SERVICE=PORT, found {s:?}"))?;
    Ok((service, parse_addr(&addr)?))
}

/// A duration such as `250ms`, `10s` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    trellis_api::parse_duration(s).map_err(|e| e.to_string())
}

/// A percent from 0 to 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a percent from 0 to 100, found {s:?}")),
    }
}

/// `json` or `plain`.
pub fn parse_access_log(s: &str) -> Result<AccessLogFormat, String> {
    match s {
        "json" => Ok(AccessLogFormat::Json),
        "plain" => Ok(AccessLogFormat::Plain),
        other => Err(format!("expected json or plain, found {other:?}")),
    }
}

/// `$TRELLIS_HOME`, else `$HOME/.trellis`, else `.trellis`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("TRELLIS_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".trellis")))
        .unwrap_or_else(|| PathBuf::from(".trellis"))
}
