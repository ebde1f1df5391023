//! Which engines the host offers scripts, from flags, the environment and a
//! TOML file with profiles.
//!
//! Precedence, highest first: command-line flags, environment variables,
//! the config file, built-in defaults. Scripts never see any of it: they ask
//! for `engines.host(name)` and get what was resolved here. Keys are held as
//! [`Secret`]s, which never print.
//!
//! ```toml
//! # ~/.config/marionette/config.toml (or $MARIONETTE_CONFIG, or --config)
//! default = "local"
//!
//! [engines.local]
//! provider = "openai"               # an OpenAI-compatible server
//! base_url = "http://127.0.0.1:11434/v1"
//! model = "llama3.1"
//!
//! [engines.claude]
//! provider = "anthropic"
//! model = "claude-sonnet-4-5"
//! api_key_env = "MY_ANTHROPIC_KEY"  # where the key is; default ANTHROPIC_API_KEY
//! timeout_secs = 600                # the whole request, streaming included (300)
//! idle_timeout_secs = 60            # between two events of the stream (120)
//! max_retries = 4                   # retries of a failure before the answer (2)
//! max_retry_wait_secs = 120         # the most the retries may wait in all (60)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A value that must never be printed: an API key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Who serves an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI's Chat Completions API, or a server that speaks it (vLLM,
    /// Ollama, llama.cpp's server, LM Studio).
    #[serde(alias = "openai-compatible")]
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// The built-in echo engine: needs nothing, answers a fixed text.
    Echo,
}

impl Provider {
    /// The provider's name as flags and files write it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Echo => "echo",
        }
    }

    /// The environment variable that holds the provider's key by default.
    pub fn key_env(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("OPENAI_API_KEY"),
            Provider::Anthropic => Some("ANTHROPIC_API_KEY"),
            Provider::Echo => None,
        }
    }

    /// The environment variable that overrides the provider's base URL.
    pub fn base_url_env(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("OPENAI_BASE_URL"),
            Provider::Anthropic => Some("ANTHROPIC_BASE_URL"),
            Provider::Echo => None,
        }
    }

    /// The provider's public endpoint.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("https://api.openai.com/v1"),
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::Echo => None,
        }
    }

    /// The model used when none is named.
    pub fn default_model(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("gpt-4o-mini"),
            Provider::Anthropic => Some("claude-sonnet-4-5"),
            Provider::Echo => None,
        }
    }
}

/// One engine of the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineProfile {
    /// Who serves it.
    pub provider: Option<Provider>,
    /// The model to ask for.
    pub model: Option<String>,
    /// Where the provider's API is.
    pub base_url: Option<String>,
    /// The environment variable holding the key (the key itself never goes
    /// in the file).
    pub api_key_env: Option<String>,
    /// Seconds one request may take, streaming included.
    pub timeout_secs: Option<f64>,
    /// Seconds the stream may go without an event.
    pub idle_timeout_secs: Option<f64>,
    /// Retries of a request that failed before its answer began.
    pub max_retries: Option<u32>,
    /// Seconds the retries of one call may wait in all.
    pub max_retry_wait_secs: Option<f64>,
    /// What the echo engine answers.
    pub reply: Option<String>,
}

/// How a provider engine waits and retries; `None` keeps the default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Network {
    /// Seconds one request may take, streaming included.
    pub timeout_secs: Option<f64>,
    /// Seconds the stream may go without an event.
    pub idle_timeout_secs: Option<f64>,
    /// Retries of a request that failed before its answer began.
    pub max_retries: Option<u32>,
    /// Seconds the retries of one call may wait in all.
    pub max_retry_wait_secs: Option<f64>,
}

impl Network {
    /// `self`, with `over`'s values where it has them.
    pub fn overridden_by(self, over: Network) -> Network {
        Network {
            timeout_secs: over.timeout_secs.or(self.timeout_secs),
            idle_timeout_secs: over.idle_timeout_secs.or(self.idle_timeout_secs),
            max_retries: over.max_retries.or(self.max_retries),
            max_retry_wait_secs: over.max_retry_wait_secs.or(self.max_retry_wait_secs),
        }
    }

    /// Checks that each number of seconds is positive and finite.
    ///
    /// # Errors
    /// Names the setting that is not.
    pub fn validate(&self, what: &str) -> anyhow::Result<()> {
        for (name, value) in [
            ("timeout_secs", self.timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_retry_wait_secs", self.max_retry_wait_secs),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0 && v < 1e9)
            {
                anyhow::bail!("{what}: {name} must be a positive number of seconds, not {v}");
            }
        }
        Ok(())
    }
}

/// The config file: named engines and which one is the default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The engine `engines.host()` returns.
    pub default: Option<String>,
    /// Engines by name: `engines.host(name)`.
    #[serde(default)]
    pub engines: BTreeMap<String, EngineProfile>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    ///
    /// # Errors
    /// The file cannot be read, or is not valid TOML of this shape (the
    /// message names the line and the key).
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// The file to read when none is named: `$MARIONETTE_CONFIG`, else
    /// `$XDG_CONFIG_HOME/marionette/config.toml`, else
    /// `~/.config/marionette/config.toml`; only if it exists.
    pub fn default_path(env: &dyn Env) -> Option<PathBuf> {
        if let Some(path) = env.var("MARIONETTE_CONFIG") {
            return Some(PathBuf::from(path));
        }
        let base = env
            .var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env.var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        let path = base.join("marionette").join("config.toml");
        path.exists().then_some(path)
    }
}

/// What the command line says about the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineFlags {
    /// `--engine openai|anthropic|echo|NAME`.
    pub engine: Option<String>,
    /// `--model`.
    pub model: Option<String>,
    /// `--base-url`.
    pub base_url: Option<String>,
    /// `--request-timeout-secs`, `--idle-timeout-secs`, `--max-retries`:
    /// for every provider engine, over the file's profiles.
    pub network: Network,
}

/// Reads environment variables; a trait so tests need not touch the
/// process's environment.
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// An engine, resolved: everything needed to build it.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    /// Its name for `engines.host(name)`.
    pub name: String,
    /// Who serves it.
    pub provider: Provider,
    /// The model (none for echo).
    pub model: Option<String>,
    /// The API's base URL (none for echo).
    pub base_url: Option<String>,
    /// The key, when the provider needs one and it was found.
    pub api_key: Option<Secret>,
    /// Where the key was looked for (for error messages; never the key).
    pub api_key_env: Option<String>,
    /// Timeouts and retries.
    pub network: Network,
    /// The echo engine's answer.
    pub reply: Option<String>,
}

/// Every engine the host offers, and the default.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// All engines, the default among them.
    pub engines: Vec<EngineSpec>,
    /// The name of the engine `engines.host()` returns.
    pub default: String,
    /// Whether nothing was configured and the built-in echo engine is the
    /// default (the command says so).
    pub built_in_default: bool,
}

/// Resolves the engines from flags, environment and file.
///
/// # Errors
/// An unknown `--engine` name, a profile without a provider, a default
/// that names no engine, or a timeout that is not a positive number of
/// seconds; each message says what is known.
pub fn resolve(flags: &EngineFlags, env: &dyn Env, file: &ConfigFile) -> anyhow::Result<Resolved> {
    let mut engines: Vec<EngineSpec> = Vec::new();
    // The providers themselves are always there by name, configured from
    // the environment.
    for provider in [Provider::OpenAi, Provider::Anthropic, Provider::Echo] {
        engines.push(spec(
            provider.name(),
            provider,
            &EngineProfile::default(),
            env,
        ));
    }
    // Profiles of the file, by name (a profile may shadow a provider's name).
    for (name, profile) in &file.engines {
        let provider = profile.provider.ok_or_else(|| {
            anyhow::anyhow!(
                "config file: engine {name:?} has no provider (openai, anthropic or echo)"
            )
        })?;
        profile
            .network()
            .validate(&format!("config file: engine {name:?}"))?;
        engines.retain(|e| &e.name != name);
        engines.push(spec(name, provider, profile, env));
    }

    let known = |engines: &[EngineSpec]| {
        engines
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    flags.network.validate("flags")?;
    for engine in &mut engines {
        engine.network = engine.network.overridden_by(flags.network);
    }
    let chosen = flags.engine.clone().or_else(|| file.default.clone());
    let built_in_default = chosen.is_none();
    let default = chosen.unwrap_or_else(|| "echo".to_string());
    let Some(index) = engines.iter().position(|e| e.name == default) else {
        anyhow::bail!("no engine named {default:?} (known: {})", known(&engines));
    };
    // Flags apply to the engine they chose.
    let engine = &mut engines[index];
    if let Some(model) = &flags.model {
        engine.model = Some(model.clone());
    }
    if let Some(url) = &flags.base_url {
        engine.base_url = Some(url.clone());
    }
    if engine.provider == Provider::Echo && (flags.model.is_some() || flags.base_url.is_some()) {
        anyhow::bail!(
            "--model and --base-url need a provider engine (openai, anthropic or a profile), not echo"
        );
    }
    Ok(Resolved {
        engines,
        default,
        built_in_default,
    })
}

/// One engine: the profile's values, else the environment's, else defaults.
fn spec(name: &str, provider: Provider, profile: &EngineProfile, env: &dyn Env) -> EngineSpec {
    let api_key_env = profile
        .api_key_env
        .clone()
        .or_else(|| provider.key_env().map(str::to_string));
    EngineSpec {
        name: name.to_string(),
        provider,
        model: profile
            .model
            .clone()
            .or_else(|| provider.default_model().map(str::to_string)),
        base_url: profile
            .base_url
            .clone()
            .or_else(|| provider.base_url_env().and_then(|v| env.var(v)))
            .or_else(|| provider.default_base_url().map(str::to_string)),
        api_key: api_key_env
            .as_deref()
            .and_then(|v| env.var(v))
            .map(Secret::new),
        api_key_env,
        network: profile.network(),
        reply: profile.reply.clone(),
    }
}

impl EngineProfile {
    /// The profile's timeouts and retries.
    pub fn network(&self) -> Network {
        Network {
            timeout_secs: self.timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            max_retries: self.max_retries,
            max_retry_wait_secs: self.max_retry_wait_secs,
        }
    }
}

impl Resolved {
    /// The host services these engines make: each engine by name, the
    /// default as `engines.host()`, the built-in middleware, no tools.
    ///
    /// # Errors
    /// An engine that cannot be built (an unusable base URL).
    pub fn services(&self) -> marionette::Result<marionette::HostServices> {
        let mut engines = marionette::session::EngineRegistry::new();
        for spec in &self.engines {
            engines = engines.register(spec.name.clone(), spec.build()?);
        }
        Ok(marionette::HostServices {
            engines: engines.set_default(&self.default)?,
            ..marionette::HostServices::default()
        })
    }
}

impl EngineSpec {
    /// The engine this spec describes.
    ///
    /// # Errors
    /// As the provider's engine constructor.
    pub fn build(&self) -> marionette::Result<std::sync::Arc<dyn marionette::session::Engine>> {
        use std::sync::Arc;
        use std::time::Duration;

        use marionette::engines::{
            AnthropicConfig, AnthropicEngine, OpenAiConfig, OpenAiEngine, RetryPolicy,
        };
        let network = self.network;
        let seconds =
            |s: Option<f64>, default: Duration| s.map_or(default, Duration::from_secs_f64);
        let retry = |defaults: RetryPolicy| RetryPolicy {
            max_retries: network.max_retries.unwrap_or(defaults.max_retries),
            max_retry_wait: seconds(network.max_retry_wait_secs, defaults.max_retry_wait),
            ..defaults
        };
        let source = self
            .api_key_env
            .clone()
            .unwrap_or_else(|| "the config file".into());
        Ok(match self.provider {
            Provider::Echo => Arc::new(marionette::session::EchoEngine::new(
                self.reply.clone().unwrap_or_else(|| "READY".into()),
            )),
            Provider::OpenAi => {
                let defaults = OpenAiConfig::default();
                Arc::new(OpenAiEngine::new(OpenAiConfig {
                    base_url: self.base_url.clone().unwrap_or(defaults.base_url.clone()),
                    api_key: self.api_key.as_ref().map(|k| k.expose().to_string()),
                    api_key_source: source,
                    model: self.model.clone().unwrap_or(defaults.model.clone()),
                    timeout: seconds(network.timeout_secs, defaults.timeout),
                    idle_timeout: seconds(network.idle_timeout_secs, defaults.idle_timeout),
                    retry: retry(defaults.retry.clone()),
                    ..defaults
                })?)
            }
            Provider::Anthropic => {
                let defaults = AnthropicConfig::default();
                Arc::new(AnthropicEngine::new(AnthropicConfig {
                    base_url: self.base_url.clone().unwrap_or(defaults.base_url.clone()),
                    api_key: self.api_key.as_ref().map(|k| k.expose().to_string()),
                    api_key_source: source,
                    model: self.model.clone().unwrap_or(defaults.model.clone()),
                    timeout: seconds(network.timeout_secs, defaults.timeout),
                    idle_timeout: seconds(network.idle_timeout_secs, defaults.idle_timeout),
                    retry: retry(defaults.retry.clone()),
                    ..defaults
                })?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> ConfigFile {
        toml::from_str(text).unwrap()
    }

    fn engine<'a>(r: &'a Resolved, name: &str) -> &'a EngineSpec {
        r.engines.iter().find(|e| e.name == name).unwrap()
    }

    #[test]
    fn nothing_configured_means_the_built_in_echo_engine() {
        let r = resolve(&EngineFlags::default(), &env(&[]), &ConfigFile::default()).unwrap();
        assert_eq!(r.default, "echo");
        assert!(r.built_in_default);
        assert_eq!(engine(&r, "openai").api_key, None);
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let f = file(
            "default = \"local\"\n[engines.local]\nprovider = \"openai\"\nbase_url = \"http://file\"\nmodel = \"file-model\"\n",
        );
        let e = env(&[
            ("OPENAI_API_KEY", "sk-env"),
            ("OPENAI_BASE_URL", "http://env"),
        ]);
        // The file's profile: its own URL and model; the key from the environment.
        let r = resolve(&EngineFlags::default(), &e, &f).unwrap();
        let local = engine(&r, "local");
        assert_eq!(
            (
                r.default.as_str(),
                local.base_url.as_deref(),
                local.model.as_deref()
            ),
            ("local", Some("http://file"), Some("file-model"))
        );
        assert_eq!(local.api_key.as_ref().map(Secret::expose), Some("sk-env"));
        // The plain provider: the environment's URL over the default.
        assert_eq!(engine(&r, "openai").base_url.as_deref(), Some("http://env"));
        assert_eq!(
            engine(&r, "anthropic").base_url.as_deref(),
            Some("https://api.anthropic.com")
        );
        // Flags: another engine, another model and URL.
        let flags = EngineFlags {
            engine: Some("openai".into()),
            model: Some("flag-model".into()),
            base_url: Some("http://flag".into()),
            ..EngineFlags::default()
        };
        let r = resolve(&flags, &e, &f).unwrap();
        let openai = engine(&r, "openai");
        assert_eq!(
            (
                r.default.as_str(),
                openai.base_url.as_deref(),
                openai.model.as_deref()
            ),
            ("openai", Some("http://flag"), Some("flag-model"))
        );
        assert!(!r.built_in_default);
    }

    #[test]
    fn timeouts_and_retries_come_from_the_profile_then_the_flags() {
        let f = file(
            "[engines.slow]\nprovider = \"openai\"\ntimeout_secs = 600\nidle_timeout_secs = 0.5\nmax_retries = 5\n",
        );
        let r = resolve(&EngineFlags::default(), &env(&[]), &f).unwrap();
        let slow = engine(&r, "slow").network;
        assert_eq!(
            (slow.timeout_secs, slow.idle_timeout_secs, slow.max_retries),
            (Some(600.0), Some(0.5), Some(5))
        );
        assert_eq!(engine(&r, "openai").network, Network::default());
        let flags = EngineFlags {
            network: Network {
                max_retries: Some(0),
                idle_timeout_secs: Some(2.0),
                ..Network::default()
            },
            ..EngineFlags::default()
        };
        let r = resolve(&flags, &env(&[]), &f).unwrap();
        for name in ["slow", "openai", "anthropic"] {
            let network = engine(&r, name).network;
            assert_eq!(network.max_retries, Some(0), "{name}");
            assert_eq!(network.idle_timeout_secs, Some(2.0), "{name}");
        }
        assert_eq!(engine(&r, "slow").network.timeout_secs, Some(600.0));
        let bad = file("[engines.x]\nprovider = \"openai\"\nidle_timeout_secs = 0\n");
        let error = resolve(&EngineFlags::default(), &env(&[]), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("idle_timeout_secs must be a positive"),
            "{error}"
        );
    }

    #[test]
    fn a_profile_names_where_its_key_is() {
        let f = file("[engines.claude]\nprovider = \"anthropic\"\napi_key_env = \"MY_KEY\"\n");
        let r = resolve(
            &EngineFlags::default(),
            &env(&[("ANTHROPIC_API_KEY", "a"), ("MY_KEY", "b")]),
            &f,
        )
        .unwrap();
        let claude = engine(&r, "claude");
        assert_eq!(claude.api_key.as_ref().map(Secret::expose), Some("b"));
        assert_eq!(claude.api_key_env.as_deref(), Some("MY_KEY"));
    }

    #[test]
    fn keys_never_print() {
        let r = resolve(
            &EngineFlags::default(),
            &env(&[("OPENAI_API_KEY", "sk-very-secret")]),
            &ConfigFile::default(),
        )
        .unwrap();
        let printed = format!("{r:?}");
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn mistakes_say_what_is_known() {
        let flags = EngineFlags {
            engine: Some("gpt".into()),
            ..EngineFlags::default()
        };
        let error = resolve(&flags, &env(&[]), &ConfigFile::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "no engine named \"gpt\" (known: openai, anthropic, echo)"
        );
        let error = resolve(
            &EngineFlags::default(),
            &env(&[]),
            &file("[engines.x]\nmodel = \"m\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("engine \"x\" has no provider"), "{error}");
        let bad: Result<ConfigFile, _> =
            toml::from_str("[engines.x]\nprovider = \"openai\"\napi_key = \"sk-inline\"\n");
        let error = bad.unwrap_err().to_string();
        assert!(error.contains("unknown field `api_key`"), "{error}");
        let flags = EngineFlags {
            model: Some("m".into()),
            ..EngineFlags::default()
        };
        assert!(resolve(&flags, &env(&[]), &ConfigFile::default()).is_err());
    }
}
