//! The database's connection from its Secrets Manager secret (the RDS format), TLS verified
//! against the packaged RDS CA bundle.

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct RdsSecret {
    username: String,
    password: String,
    host: String,
    #[serde(default)]
    port: Option<serde_json::Value>,
    #[serde(default)]
    dbname: Option<String>,
}

/// The RDS CA bundle the database's TLS is verified against (checked at start: a package
/// without it is permanent).
pub(super) fn ca_bundle() -> Result<PathBuf, Error> {
    let ca = env(ENV_DB_CA_BUNDLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| package_dir().join("rds-ca-bundle.pem"));
    if !ca.is_file() {
        return Err(Error::Config {
            variable: ENV_DB_CA_BUNDLE.into(),
            reason: format!(
                "the RDS CA bundle {} is missing; TLS to the database is verified against it",
                ca.display()
            ),
        });
    }
    Ok(ca)
}

/// A failed read of the secret: Secrets Manager (or the way to it) may answer the next time,
/// so it is `ServiceError`, which the state machine retries, never `ConfigError`.
pub(super) fn secret_read_error(arn: &str, error: impl std::fmt::Display) -> Error {
    Error::Service {
        service: "Secrets Manager".into(),
        message: format!("cannot read the database secret {arn} ({ENV_DB_SECRET_ARN}): {error}"),
    }
}

pub(super) async fn options_from_secret(
    arn: &str,
    ca: &std::path::Path,
) -> Result<PgConnectOptions, Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let secret = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            secret_read_error(arn, aws_sdk_secretsmanager::error::DisplayErrorContext(&e))
        })?;
    let text = secret.secret_string().unwrap_or_default();
    let parsed: RdsSecret = serde_json::from_str(text).map_err(|e| Error::Config {
        variable: ENV_DB_SECRET_ARN.into(),
        // Never echo the secret: only the shape is wrong.
        reason: format!(
            "the secret is not in the RDS format (username, password, host, port, dbname): {}",
            e.classify_name()
        ),
    })?;
    let dbname = env(ENV_DB_NAME)
        .or(parsed.dbname.filter(|d| !d.is_empty()))
        .ok_or_else(|| Error::Config {
            variable: ENV_DB_NAME.into(),
            reason: "not set, and the secret has no `dbname`: the workers would not know which database to migrate".into(),
        })?;
    let port = match parsed.port {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(5432) as u16,
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(5432),
        _ => 5432,
    };
    Ok(PgConnectOptions::new()
        .host(&parsed.host)
        .port(port)
        .username(&parsed.username)
        .password(&parsed.password)
        .database(&dbname)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(ca))
}

pub(super) trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
        }
    }
}
