//! The LLM the `verification` processor asks: configuration, and a blocking
//! HTTP client for Anthropic's Messages API and OpenAI-compatible chat
//! completions, on rustls.
//!
//! Guarantees: the API key never leaves this module except in the request
//! header (it is redacted from every error text); plain `http://` is refused
//! except to a loopback address; each call has a timeout and is retried up to
//! three times on 429, 5xx and network errors, honouring `retry-after`.
//! Failures are classified so the runner can tell a session's fault from the
//! provider's: see [`LlmError`].

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::env::{self, Environment};
use serde::Deserialize;

/// Which API the base URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

impl Provider {
    pub fn parse(text: &str) -> Option<Provider> {
        match text {
            "anthropic" => Some(Provider::Anthropic),
            "openai" => Some(Provider::OpenAi),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::OpenAi => "https://api.openai.com/v1",
        }
    }

    pub fn default_model(self) -> &'static str {
        match self {
            Provider::Anthropic => "claude-haiku-4-5",
            Provider::OpenAi => "gpt-4.1-mini",
        }
    }

    /// The provider's own variable for the key, after SESSIONPIPE_LLM_API_KEY.
    pub fn key_variable(self) -> &'static str {
        match self {
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::OpenAi => "OPENAI_API_KEY",
        }
    }
}

/// A secret that never prints.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    /// Removes the key from a text that is about to be shown or stored.
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Everything needed to call the model.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub provider: Provider,
    pub base_url: String,
    pub model: String,
    pub timeout: Duration,
    /// The variable the key is read from after `SESSIONPIPE_LLM_API_KEY`.
    pub key_variable: String,
    /// `Err(reason)` when no key is configured: the processor is unavailable.
    pub key: Result<ApiKey, String>,
}

/// The `[llm]` section, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    pub provider: Option<String>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// The variable holding the key, instead of the provider's own.
    pub api_key_env: Option<String>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    pub timeout: Option<Duration>,
}

/// How long a call may take unless `[llm] timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl LlmConfig {
    /// The `[llm]` section, overridden by the environment. A missing key is
    /// not an error here: it makes `verification` unavailable, and says how
    /// to fix it.
    pub fn resolve(section: &LlmSection, env: &Environment) -> Result<LlmConfig> {
        let provider_name = env
            .text(env::LLM_PROVIDER)
            .or_else(|| section.provider.clone())
            .unwrap_or_else(|| Provider::Anthropic.name().to_owned());
        let Some(provider) = Provider::parse(&provider_name) else {
            bail!("config: llm.provider {provider_name:?} must be \"anthropic\" or \"openai\"");
        };
        let base_url = env
            .text(env::LLM_BASE_URL)
            .or_else(|| section.base_url.clone())
            .unwrap_or_else(|| provider.default_base_url().to_owned());
        check_base_url(&base_url).map_err(|e| anyhow::anyhow!("config: {e}"))?;
        let model = env
            .text(env::LLM_MODEL)
            .or_else(|| section.model.clone())
            .unwrap_or_else(|| provider.default_model().to_owned());
        let key_variable = section
            .api_key_env
            .clone()
            .unwrap_or_else(|| provider.key_variable().to_owned());
        let key = env
            .text(env::LLM_API_KEY)
            .or_else(|| env.text(&key_variable))
            .map(ApiKey::new)
            .ok_or_else(|| format!("no LLM API key: set {} or {key_variable}", env::LLM_API_KEY));
        Ok(LlmConfig {
            provider,
            base_url,
            model,
            timeout: section.timeout.unwrap_or(DEFAULT_TIMEOUT),
            key_variable,
            key,
        })
    }
}

/// How a call failed.
#[derive(Debug)]
pub enum LlmError {
    /// Network trouble, a timeout, 429 or 5xx even after the retries.
    Transient(String),
    /// 401 or 403: the key was rejected; no other call will do better.
    Rejected(String),
    /// Any other answer that cannot be used (4xx, not JSON, wrong shape).
    Unusable(String),
}

impl std::fmt::Display for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LlmError::Transient(m) | LlmError::Rejected(m) | LlmError::Unusable(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for LlmError {}

/// Checks a base URL: `https://`, or `http://` to a loopback address only.
pub fn check_base_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("LLM base URL {url:?} must start with https://"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "LLM base URL {url:?}: plain http:// is only allowed to a loopback address"
        ))
    }
}

/// Retries after the first call, on 429, 5xx and network errors.
const RETRIES: u32 = 3;
/// The longest `retry-after` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The most of a response body kept in an error message.
const BODY_EXCERPT: usize = 300;

#[derive(Clone)]
pub struct Client {
    config: LlmConfig,
    key: ApiKey,
    agent: ureq::Agent,
}

impl Client {
    /// A client, or why there cannot be one (no key).
    pub fn new(config: LlmConfig) -> Result<Client, String> {
        let key = config.key.clone()?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client { config, key, agent })
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// Asks the model to fill `schema` from `prompt`. An error means no call
    /// was answered; an answer holds the tokens it cost and the JSON object
    /// it produced, or why it holds none.
    ///
    /// On Anthropic the system prompt is marked for prompt caching: it and
    /// the tool schema before it are the same in every call, so repeated
    /// calls pay the cache-read rate for them. OpenAI caches long prefixes
    /// by itself.
    pub fn extract(
        &self,
        system: &str,
        prompt: &str,
        tool: &str,
        schema: &Value,
    ) -> Result<Answer, LlmError> {
        let (url, body) = match self.config.provider {
            Provider::Anthropic => (
                format!("{}/v1/messages", self.config.base_url.trim_end_matches('/')),
                json!({
                    "model": self.config.model,
                    "max_tokens": 4096,
                    "system": [{"type": "text", "text": system,
                                "cache_control": {"type": "ephemeral"}}],
                    "messages": [{"role": "user", "content": prompt}],
                    "tools": [{"name": tool, "description": "Record what the user verified.",
                               "input_schema": schema}],
                    "tool_choice": {"type": "tool", "name": tool},
                }),
            ),
            Provider::OpenAi => (
                format!(
                    "{}/chat/completions",
                    self.config.base_url.trim_end_matches('/')
                ),
                json!({
                    "model": self.config.model,
                    "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": prompt}],
                    "response_format": {"type": "json_schema",
                        "json_schema": {"name": tool, "schema": schema, "strict": true}},
                }),
            ),
        };
        let text = self.post(&url, &body.to_string())?;
        let reply: Value = match serde_json::from_str(&text) {
            Ok(reply) => reply,
            Err(e) => {
                return Ok(Answer {
                    usage: Usage::default(),
                    output: Err(LlmError::Unusable(format!(
                        "the LLM answer is not JSON: {e}"
                    ))),
                });
            }
        };
        Ok(match self.config.provider {
            Provider::Anthropic => Answer {
                usage: Usage::anthropic(&reply["usage"]),
                output: anthropic_output(&reply, tool),
            },
            Provider::OpenAi => Answer {
                usage: Usage::openai(&reply["usage"]),
                output: openai_output(&reply),
            },
        })
    }

    /// POSTs with retries; returns the body of a 2xx answer.
    fn post(&self, url: &str, body: &str) -> Result<String, LlmError> {
        let mut attempt = 0;
        loop {
            let request = self
                .agent
                .post(url)
                .header("content-type", "application/json");
            let request = match self.config.provider {
                Provider::Anthropic => request
                    .header("x-api-key", &self.key.0)
                    .header("anthropic-version", "2023-06-01"),
                Provider::OpenAi => {
                    request.header("authorization", &format!("Bearer {}", self.key.0))
                }
            };
            let (failure, wait) = match request.send(body) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.body_mut().read_to_string().map_err(|e| {
                        LlmError::Transient(
                            self.key.redact(&format!("reading the LLM answer: {e}")),
                        )
                    })?;
                    match status {
                        200..=299 => return Ok(text),
                        401 | 403 => {
                            return Err(LlmError::Rejected(format!(
                                "the LLM provider rejected the API key (HTTP {status}): {}",
                                self.excerpt(&text)
                            )));
                        }
                        429 | 500..=599 => (
                            format!("HTTP {status} from the LLM: {}", self.excerpt(&text)),
                            retry_after,
                        ),
                        _ => {
                            return Err(LlmError::Unusable(format!(
                                "HTTP {status} from the LLM: {}",
                                self.excerpt(&text)
                            )));
                        }
                    }
                }
                Err(e) => (self.key.redact(&format!("calling the LLM: {e}")), None),
            };
            if attempt >= RETRIES {
                return Err(LlmError::Transient(format!(
                    "{failure} (after {RETRIES} retries)"
                )));
            }
            attempt += 1;
            let backoff = Duration::from_millis(500 << attempt);
            std::thread::sleep(wait.unwrap_or(backoff).min(MAX_RETRY_AFTER));
        }
    }

    fn excerpt(&self, body: &str) -> String {
        let body = self.key.redact(body.trim());
        match body.char_indices().nth(BODY_EXCERPT) {
            Some((i, _)) => format!("{}…", &body[..i]),
            None => body,
        }
    }
}

/// What an answered call produced.
#[derive(Debug)]
pub struct Answer {
    /// The tokens it cost, paid whether the output is usable or not.
    pub usage: Usage,
    pub output: Result<Value, LlmError>,
}

/// Tokens one call used, as the API reported them; a count it left out (or
/// gave as anything but a whole number) is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens neither written to nor read from the prompt cache.
    pub input: u64,
    pub output: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
}

impl Usage {
    /// Anthropic reports the three kinds of input apart.
    fn anthropic(usage: &Value) -> Usage {
        let n = |k: &str| usage[k].as_u64().unwrap_or(0);
        Usage {
            input: n("input_tokens"),
            output: n("output_tokens"),
            cache_creation: n("cache_creation_input_tokens"),
            cache_read: n("cache_read_input_tokens"),
        }
    }

    /// OpenAI's prompt tokens include the cached ones.
    fn openai(usage: &Value) -> Usage {
        let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0)
            .min(prompt);
        Usage {
            input: prompt - cached,
            output: usage["completion_tokens"].as_u64().unwrap_or(0),
            cache_creation: 0,
            cache_read: cached,
        }
    }
}

/// The forced tool's input, or JSON in a text block.
fn anthropic_output(reply: &Value, tool: &str) -> Result<Value, LlmError> {
    let blocks = reply["content"]
        .as_array()
        .ok_or_else(|| LlmError::Unusable("the LLM answer has no content blocks".to_owned()))?;
    if let Some(input) = blocks
        .iter()
        .find(|b| b["type"] == "tool_use" && b["name"] == tool)
        .map(|b| b["input"].clone())
    {
        return Ok(input);
    }
    let text: String = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    json_in_text(&text)
}

/// JSON in the first choice's message content, fenced or bare.
fn openai_output(reply: &Value) -> Result<Value, LlmError> {
    let text = reply["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| LlmError::Unusable("the LLM answer has no message content".to_owned()))?;
    json_in_text(text)
}

/// Parses JSON that may be wrapped in a ``` fence or surrounded by prose.
pub fn json_in_text(text: &str) -> Result<Value, LlmError> {
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed);
    if let Ok(v) = serde_json::from_str(unfenced.trim()) {
        return Ok(v);
    }
    // Prose around an object: take the outermost braces.
    if let (Some(a), Some(b)) = (trimmed.find('{'), trimmed.rfind('}'))
        && a < b
        && let Ok(v) = serde_json::from_str(&trimmed[a..=b])
    {
        return Ok(v);
    }
    let shown: String = trimmed.chars().take(BODY_EXCERPT).collect();
    Err(LlmError::Unusable(format!(
        "the LLM answer holds no JSON object: {shown:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback() {
        assert!(check_base_url("https://api.anthropic.com").is_ok());
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/v1",
            "http://[::1]:9/x",
            "http://127.3.4.5",
        ] {
            assert!(check_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:80",
            "http://example.com",
            "ftp://x",
            "http://localhost.evil.com",
            "api.anthropic.com",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_fenced_bare_or_in_prose() {
        assert_eq!(json_in_text("{\"a\":1}").unwrap()["a"], 1);
        assert_eq!(json_in_text("```json\n{\"a\":2}\n```").unwrap()["a"], 2);
        assert_eq!(json_in_text("Here it is: {\"a\":3} done").unwrap()["a"], 3);
        assert!(json_in_text("no json here").is_err());
    }

    #[test]
    fn usage_as_each_api_reports_it() {
        let a = Usage::anthropic(&serde_json::json!({"input_tokens": 12, "output_tokens": 5,
            "cache_creation_input_tokens": 700, "cache_read_input_tokens": -3}));
        assert_eq!(
            (a.input, a.output, a.cache_creation, a.cache_read),
            (12, 5, 700, 0)
        );
        let o = Usage::openai(
            &serde_json::json!({"prompt_tokens": 1000, "completion_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 5000}}),
        );
        assert_eq!((o.input, o.output, o.cache_read), (0, 9, 1000));
        assert_eq!(Usage::openai(&Value::Null), Usage::default());
    }

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey::new("sk-secret-123".into());
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        assert_eq!(key.redact("bad key sk-secret-123!"), "bad key [redacted]!");
    }
}
