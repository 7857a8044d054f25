//! Per-server options the config file (and `-o KEY=VALUE`) may set: the
//! warm policy (which the local agent keeps), resume (`true`, `false` or
//! how long), and terminal allocation (over which `exec -t` and `-T` win).
//! They are parsed and checked here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The option keys, as written in the file and after `-o`.
pub(crate) const OPTION_KEYS: [&str; 3] = ["warm", "resume", "terminal"];

/// The warm policy: how the local agent (`core-client agent`) keeps the
/// server's session ready between commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Warm {
    /// Not warmed on a timer (the agent still holds the session its
    /// commands use).
    #[default]
    Off,
    /// Ping or re-establish the session on this interval; the agent holds
    /// it from its start.
    Every(Duration),
}

/// Whether, and for how long, a command whose link breaks waits for its
/// session to come back (through any of its relays) and goes on with
/// nothing lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The command ends with its link.
    Off,
    /// The client keeps trying to come back for this long after the link
    /// broke.
    Within(Duration),
}

impl Default for Resume {
    /// A minute ([`rex_client::DEFAULT_RESUME`]): as long as an
    /// exec-server keeps a session by default.
    fn default() -> Self {
        Resume::Within(rex_client::DEFAULT_RESUME)
    }
}

impl Resume {
    /// `true` is the default time, `false` off.
    pub(crate) fn from_flag(on: bool) -> Self {
        if on { Resume::default() } else { Resume::Off }
    }

    /// How long the client keeps trying (`None`: off).
    pub(crate) fn duration(self) -> Option<Duration> {
        match self {
            Resume::Off => None,
            Resume::Within(d) => Some(d),
        }
    }
}

impl FromStr for Resume {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => return Ok(Resume::default()),
            "false" | "no" | "off" => return Ok(Resume::Off),
            _ => {}
        }
        match lifecycle::durations::parse(s.trim()) {
            Ok(d) if d.is_zero() => Ok(Resume::Off),
            Ok(d) => Ok(Resume::Within(d)),
            Err(_) => Err(OptionError::Resume),
        }
    }
}

impl fmt::Display for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resume::Off => f.write_str("off"),
            Resume::Within(d) if d.subsec_nanos() == 0 => write!(f, "{}s", d.as_secs()),
            Resume::Within(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

/// When `exec` asks for a remote terminal (ssh's `RequestTTY`); `-t` and
/// `-T` win over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Terminal {
    /// Never: a command and the login shell get pipes.
    Never,
    /// For the login shell (`exec` without a command) when the local stdin
    /// and stdout are terminals and stdin is forwarded; a command gets
    /// pipes. The default, as ssh's.
    #[default]
    Auto,
    /// Always: a command and the login shell get a terminal.
    Always,
}

/// An option value that is not valid for its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OptionError {
    /// `-o` without `=`.
    #[error("-o takes KEY=VALUE (KEY is one of: warm, resume, terminal, accept_new)")]
    NotKeyValue,
    /// A key that is not an option.
    #[error("unknown option {key:?}{}", crate::config::suggest::did_you_mean(.suggestion.as_deref()))]
    UnknownKey {
        /// The key given.
        key: String,
        /// The nearest option key.
        suggestion: Option<String>,
    },
    /// `warm` is neither `off` nor an interval.
    #[error("warm: expected \"off\" or an interval such as \"30s\", \"5m\" or \"1h\"")]
    Warm,
    /// `resume` is neither a yes/no nor a duration.
    #[error("resume: expected true, false or a duration such as \"30s\" or \"5m\"")]
    Resume,
    /// `terminal` is not one of its words.
    #[error("terminal: expected \"never\", \"auto\" or \"always\"")]
    Terminal,
    /// A yes/no option got something else.
    #[error("{0}: expected true or false")]
    Bool(&'static str),
}

impl FromStr for Warm {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Warm::Off);
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| OptionError::Warm)?;
        let secs = match unit {
            "s" => Some(n),
            "m" => n.checked_mul(60),
            "h" => n.checked_mul(3600),
            _ => None,
        };
        match secs {
            Some(s) if s > 0 => Ok(Warm::Every(Duration::from_secs(s))),
            _ => Err(OptionError::Warm),
        }
    }
}

impl fmt::Display for Warm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warm::Off => f.write_str("off"),
            Warm::Every(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

impl FromStr for Terminal {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "never" => Ok(Terminal::Never),
            "auto" => Ok(Terminal::Auto),
            "always" => Ok(Terminal::Always),
            _ => Err(OptionError::Terminal),
        }
    }
}

impl fmt::Display for Terminal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Terminal::Never => "never",
            Terminal::Auto => "auto",
            Terminal::Always => "always",
        })
    }
}

/// `true`/`false` (also `yes`/`no`, as ssh's `-o` takes them).
pub(crate) fn parse_bool(key: &'static str, s: &str) -> Result<bool, OptionError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(OptionError::Bool(key)),
    }
}

/// One option, as `-o KEY=VALUE` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptionValue {
    /// `warm=…`
    Warm(Warm),
    /// `resume=…`
    Resume(Resume),
    /// `terminal=…`
    Terminal(Terminal),
    /// `accept_new=…` (same as `--accept-new`).
    AcceptNew(bool),
}

impl OptionValue {
    /// Parses `KEY=VALUE`.
    pub(crate) fn parse(text: &str) -> Result<Self, OptionError> {
        let (key, value) = text.split_once('=').ok_or(OptionError::NotKeyValue)?;
        let key = key.trim().replace('-', "_").to_ascii_lowercase();
        match key.as_str() {
            "warm" => value.parse().map(Self::Warm),
            "resume" => value.parse().map(Self::Resume),
            "terminal" => value.parse().map(Self::Terminal),
            "accept_new" => parse_bool("accept_new", value).map(Self::AcceptNew),
            _ => Err(OptionError::UnknownKey {
                suggestion: crate::config::suggest::nearest(
                    &key,
                    OPTION_KEYS.iter().copied().chain(["accept_new"]),
                )
                .map(str::to_owned),
                key,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse() {
        assert_eq!("off".parse(), Ok(Warm::Off));
        assert_eq!("30s".parse(), Ok(Warm::Every(Duration::from_secs(30))));
        assert_eq!("5m".parse(), Ok(Warm::Every(Duration::from_secs(300))));
        assert_eq!("1h".parse(), Ok(Warm::Every(Duration::from_secs(3600))));
        assert_eq!("0s".parse::<Warm>(), Err(OptionError::Warm));
        assert_eq!("30".parse::<Warm>(), Err(OptionError::Warm));
        assert_eq!("soon".parse::<Warm>(), Err(OptionError::Warm));
        assert_eq!("AUTO".parse(), Ok(Terminal::Auto));
        assert_eq!("tty".parse::<Terminal>(), Err(OptionError::Terminal));
        assert_eq!("90s".parse(), Ok(Resume::Within(Duration::from_secs(90))));
        assert_eq!("2m".parse(), Ok(Resume::Within(Duration::from_secs(120))));
        assert_eq!("0".parse(), Ok(Resume::Off));
        assert_eq!(
            Resume::Within(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(Resume::default().to_string(), "60s");
        assert_eq!(Resume::Off.to_string(), "off");
    }

    #[test]
    fn dash_o_parses_and_suggests() {
        assert_eq!(
            OptionValue::parse("resume=yes"),
            Ok(OptionValue::Resume(Resume::default()))
        );
        assert_eq!(
            OptionValue::parse("resume=3s"),
            Ok(OptionValue::Resume(Resume::Within(Duration::from_secs(3))))
        );
        assert_eq!(
            OptionValue::parse("resume=false"),
            Ok(OptionValue::Resume(Resume::Off))
        );
        assert_eq!(OptionValue::parse("resume=later"), Err(OptionError::Resume));
        assert_eq!(
            OptionValue::parse("accept-new=true"),
            Ok(OptionValue::AcceptNew(true))
        );
        assert_eq!(OptionValue::parse("warm"), Err(OptionError::NotKeyValue));
        let err = OptionValue::parse("terminl=auto").unwrap_err();
        assert_eq!(
            err,
            OptionError::UnknownKey {
                key: "terminl".into(),
                suggestion: Some("terminal".into())
            }
        );
        assert!(err.to_string().contains("did you mean `terminal`?"));
    }
}
