//! The admin CLI: `spool sessions …` and `spool stats` talk to a running
//! server's admin API and print aligned tables, or the server's JSON with
//! `--json`. A failure exits non-zero with the server's own message.

mod table;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::admin_token;
use crate::config::{ClientArgs, Command, SessionsCommand};

/// Runs a CLI command; `Err` carries the message to print.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("the server is not a CLI command"),
        Command::Stats { client } => {
            let stats = Client::new(&client)?
                .call(Method::GET, "/v1/admin/stats")
                .await?;
            print(&client, &stats, table::stats)
        }
        Command::Sessions { action } => sessions(action).await,
        Command::Load(args) => crate::load::run(args).await,
        Command::MigrateTo(args) => crate::migrate::run(args).await,
    }
}

async fn sessions(action: SessionsCommand) -> anyhow::Result<()> {
    match action {
        SessionsCommand::List {
            state,
            limit,
            client,
        } => {
            let mut path = format!("/v1/admin/sessions?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={}", encode(&state)));
            }
            let list = Client::new(&client)?.call(Method::GET, &path).await?;
            print(&client, &list, table::sessions)
        }
        SessionsCommand::Show { id, client } => {
            let path = format!("/v1/admin/sessions/{}", encode(&id));
            let session = Client::new(&client)?.call(Method::GET, &path).await?;
            print(&client, &session, table::session)
        }
        SessionsCommand::Finalize { id, client } => {
            let path = format!("/v1/admin/sessions/{}/finalize", encode(&id));
            let session = Client::new(&client)?.call(Method::POST, &path).await?;
            print(&client, &session, |s| {
                format!("finalizing {}\n", s["id"].as_str().unwrap_or("?"))
            })
        }
        SessionsCommand::Delete { id, client } => {
            let path = format!("/v1/sessions/{}", encode(&id));
            let answer = Client::new(&client)?.call(Method::DELETE, &path).await?;
            print(&client, &answer, |_| format!("deleted {id}\n"))
        }
    }
}

fn print(
    client: &ClientArgs,
    value: &Value,
    table: impl Fn(&Value) -> String,
) -> anyhow::Result<()> {
    if client.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table(value));
    }
    Ok(())
}

fn encode(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match &args.admin_token {
            Some(token) => token.clone(),
            None => admin_token::read(&admin_token::path_in(&args.data_dir))?.with_context(|| {
                format!(
                    "no admin token: pass --admin-token, set SPOOL_ADMIN_TOKEN, or point --data-dir at the server's data directory (no {} there)",
                    admin_token::FILE_NAME
                )
            })?,
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: args.server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Calls the server; an error answer becomes its message.
    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("reading the server's answer")?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&body).with_context(|| {
            format!("the server answered {status} with something that is not JSON")
        })?;
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no message");
            bail!("{message} ({status})");
        }
        Ok(value)
    }
}
