//! `bitnet download OWNER/NAME`: fetches a model from the Hugging Face hub into the Hugging Face hub cache and prints
//! its local path (HF_HOME, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE apply).

use super::UsageError;
use crate::output;
use anyhow::Result;
use bitnet_models::hub::{fetch, is_hub_id};
use clap::Args;

/// Arguments of `bitnet download`.
#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// The hub model id, e.g. microsoft/bitnet-b1.58-2B-4T.
    #[arg(value_name = "OWNER/NAME")]
    repo: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
}

/// Runs the command.
pub fn run(args: DownloadArgs) -> Result<()> {
    if !is_hub_id(&args.repo) {
        return Err(UsageError(format!("'{}' is not a hub model id (OWNER/NAME)", args.repo)).into());
    }
    let path = fetch(&args.repo, &args.revision)?;
    output::println(&path.display().to_string())
}
