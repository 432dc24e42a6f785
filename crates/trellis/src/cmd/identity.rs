//! `trellis identity`: the CA as the control plane's admin API shows it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::api::{get_json, request};
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
                    expires_in(&root["not_after_unix"], SystemTime::now()),
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
                    expires_in(&svid["not_after_unix"], SystemTime::now()),
                    svid["signed_by"].as_str().unwrap_or("?"),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn identity(admin: SocketAddr) -> anyhow::Result<serde_json::Value> {
    get_json(admin, "/api/identity").await
}

/// Time from `now` to `unix` (seconds since the epoch) in its largest unit, or `expired`.
pub(crate) fn expires_in(unix: &serde_json::Value, now: SystemTime) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.as_u64().unwrap_or_default());
    match at.duration_since(now) {
        Ok(left) if left.as_secs() >= 86_400 => format!("{}d", left.as_secs() / 86_400),
        Ok(left) if left.as_secs() >= 3600 => format!("{}h", left.as_secs() / 3600),
        Ok(left) => format!("{}s", left.as_secs()),
        Err(_) => "expired".to_owned(),
    }
}
