//! `trellis identity`: the CA as the control plane's admin API shows it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{IdentityAction, IdentityArgs};

pub(crate) async fn run(args: IdentityArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        IdentityAction::Rotate => {
            let body = request(args.admin_addr, "POST", "/api/identity/rotate").await?;
            print!("{body}");
        }
        IdentityAction::Show => {
            let api = identity(args.admin_addr).await?;
            println!("{:<34} {:<9} {:<12} SUBJECT", "ROOT", "STATE", "EXPIRES IN");
            for root in api["roots"].as_array().into_iter().flatten() {
                println!(
                    "{:<34} {:<9} {:<12} {}",
                    root["fingerprint"].as_str().unwrap_or("?"),
                    root["state"].as_str().unwrap_or("?"),
                    expires_in(&root["not_after_unix"]),
                    root["subject"].as_str().unwrap_or("?"),
                );
            }
        }
        IdentityAction::List => {
            let api = identity(args.admin_addr).await?;
            println!(
                "{:<52} {:<34} {:<12} ROOT",
                "IDENTITY", "SERIAL", "EXPIRES IN"
            );
            for svid in api["issued"].as_array().into_iter().flatten() {
                println!(
                    "{:<52} {:<34} {:<12} {}",
                    svid["identity"].as_str().unwrap_or("?"),
                    svid["serial"].as_str().unwrap_or("?"),
                    expires_in(&svid["not_after_unix"]),
                    svid["signed_by"].as_str().unwrap_or("?"),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn identity(admin: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let body = request(admin, "GET", "/api/identity").await?;
    serde_json::from_str(&body).context("the admin API answered with something else than JSON")
}

fn expires_in(unix: &serde_json::Value) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.as_u64().unwrap_or_default());
    match at.duration_since(SystemTime::now()) {
        Ok(left) if left.as_secs() >= 86_400 => format!("{}d", left.as_secs() / 86_400),
        Ok(left) if left.as_secs() >= 3600 => format!("{}h", left.as_secs() / 3600),
        Ok(left) => format!("{}s", left.as_secs()),
        Err(_) => "expired".to_owned(),
    }
}

/// One HTTP/1.1 request to the admin API; returns the body of a 2xx answer.
async fn request(admin: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the control plane's admin API at {admin}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if !status.starts_with('2') {
        bail!("{method} {path}: HTTP {status}: {}", body.trim());
    }
    Ok(body.to_owned())
}
