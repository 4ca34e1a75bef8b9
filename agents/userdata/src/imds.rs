//! Source 3: an EC2-compatible instance metadata service, IMDSv2 only.
//!
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` gives a session token;
//! `GET /latest/user-data` with `X-aws-ec2-metadata-token` gives the document. 404 on
//! user-data (or an empty body) means the instance has no user-data. 401 means the token is no
//! longer good: a new one is asked for. Refused connections, timeouts, 5xx and garbage are
//! retried with backoff and jitter within the pass's budget, then reported as "no answer" (the
//! pass goes on; a later pass asks again). No route to the endpoint at all ends the attempt at
//! once. An endpoint that answers but does not speak IMDSv2 (404/405/403 on the token) has no
//! configuration. The endpoint is `http://169.254.169.254`, or `tessera.imds=http://host:port`
//! on the kernel command line, or `$TESSERA_IMDS_ENDPOINT`; `tessera.imds=off` turns the
//! source off.

use crate::events::Events;
use crate::http::{self, HttpUrl};
use crate::retry::{retry, RetryPolicy, Step};
use crate::schema;
use crate::source::{Fetched, Source, SourceError};
use crate::values::MAX_DOCUMENT;

pub const TOKEN_PATH: &str = "/latest/api/token";
pub const USER_DATA_PATH: &str = "/latest/user-data";
pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

pub struct ImdsSource {
    pub endpoint: HttpUrl,
    pub retry: RetryPolicy,
    pub token_ttl_seconds: u32,
}

enum Failure {
    /// Something answers but it is not IMDSv2: no configuration here.
    NotImds(String),
    NoAnswer(String),
}

impl ImdsSource {
    /// The user-data document, `None` when the instance has none.
    pub fn user_data(&self, events: &Events) -> Result<Option<Vec<u8>>, SourceError> {
        let token_url = self.endpoint.with_path(TOKEN_PATH);
        let data_url = self.endpoint.with_path(USER_DATA_PATH);
        let ttl = self.token_ttl_seconds.to_string();
        let policy = self.retry;
        let limits = |left: std::time::Duration| http::Limits {
            connect_timeout: policy.connect_timeout.min(left),
            timeout: policy.io_timeout.min(left),
            max_body: MAX_DOCUMENT,
        };
        let mut token: Option<String> = None;
        let result = retry(
            &policy,
            |failure: &Failure, delay, attempt| {
                if let Failure::NoAnswer(reason) = failure {
                    events.debug(
                        "metadata service did not answer; retrying",
                        &[
                            ("source", "imds".into()),
                            ("reason", reason.clone().into()),
                            ("attempt", attempt.into()),
                            ("delay_ms", (delay.as_millis() as u64).into()),
                        ],
                    )
                }
            },
            |left| {
                let no_answer = |e: http::HttpError| {
                    let reason = e.to_string();
                    if e.no_route() {
                        Step::GiveUp(Failure::NoAnswer(format!("no route: {reason}")))
                    } else {
                        Step::Retry(Failure::NoAnswer(reason))
                    }
                };
                if token.is_none() {
                    let r =
                        match http::request("PUT", &token_url, &[(TTL_HEADER, &ttl)], limits(left))
                        {
                            Ok(r) => r,
                            Err(e) => return no_answer(e),
                        };
                    match r.status {
                        200 => match valid_token(&r.body) {
                            Some(t) => token = Some(t),
                            None => {
                                return Step::Retry(Failure::NoAnswer(format!(
                                    "{token_url}: the token in the answer is empty or not printable"
                                )))
                            }
                        },
                        403..=405 => {
                            return Step::GiveUp(Failure::NotImds(format!(
                                "PUT {token_url} answered {} {}: not an IMDSv2 service (or IMDS is disabled)",
                                r.status, r.reason
                            )))
                        }
                        _ => {
                            return Step::Retry(Failure::NoAnswer(format!(
                                "PUT {token_url}: HTTP {} {}",
                                r.status, r.reason
                            )))
                        }
                    }
                }
                let t = token.clone().unwrap_or_default();
                let r = match http::request("GET", &data_url, &[(TOKEN_HEADER, &t)], limits(left)) {
                    Ok(r) => r,
                    Err(http::HttpError::TooLarge { .. }) => {
                        return Step::Done(Err(format!(
                            "{data_url}: user-data is larger than {MAX_DOCUMENT} bytes"
                        )))
                    }
                    Err(e) => return no_answer(e),
                };
                match r.status {
                    200 => Step::Done(Ok(Some(r.body))),
                    404 => Step::Done(Ok(None)),
                    401 => {
                        token = None;
                        Step::Retry(Failure::NoAnswer(format!(
                            "GET {data_url}: 401 Unauthorized (token refused; asking for a new one)"
                        )))
                    }
                    _ => Step::Retry(Failure::NoAnswer(format!(
                        "GET {data_url}: HTTP {} {}",
                        r.status, r.reason
                    ))),
                }
            },
        );
        match result {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(too_large)) => Err(SourceError::Invalid {
                document: format!("user-data at {data_url}"),
                error: schema::ConfigError {
                    key: String::new(),
                    message: too_large,
                    line: None,
                    origin: None,
                },
            }),
            Err(Failure::NotImds(reason)) => {
                events.info(
                    "no metadata service",
                    &[("source", "imds".into()), ("reason", reason.into())],
                );
                Ok(None)
            }
            Err(Failure::NoAnswer(reason)) => Err(SourceError::NoAnswer(format!(
                "metadata service at http://{}: {reason}",
                self.endpoint.authority()
            ))),
        }
    }
}

/// A session token is printable ASCII without spaces (it goes into a header).
fn valid_token(body: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(body).ok()?.trim();
    (!t.is_empty() && t.len() <= 4096 && t.bytes().all(|b| (0x21..=0x7e).contains(&b)))
        .then(|| t.to_string())
}

impl Source for ImdsSource {
    fn name(&self) -> &str {
        "imds"
    }

    fn fetch(&self, events: &Events) -> Result<Option<Fetched>, SourceError> {
        let Some(body) = self.user_data(events)? else {
            return Ok(None);
        };
        if schema::is_blank(&body) {
            return Ok(None);
        }
        let url = self.endpoint.with_path(USER_DATA_PATH);
        let config = schema::parse(&body).map_err(|error| SourceError::Invalid {
            document: format!("user-data at {url}"),
            error,
        })?;
        Ok(Some(Fetched {
            config,
            detail: url.to_string(),
            overlay: None,
        }))
    }
}
