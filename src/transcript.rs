//! The Claude Code transcript line, as the processors read it.
//!
//! Claude Code's JSONL format varies between versions and holds very large
//! tool outputs, so a line is parsed in one pass straight into these borrowed
//! structs, keeping only the fields a processor uses and skipping the rest
//! without allocating. Every field is *loose*: a value of an unexpected type
//! (content a number, usage a string, a message that is an array) reads as
//! absent instead of failing the line, so one odd field never costs the
//! others. Only a line that is not JSON at all (or nests deeper than
//! serde_json's recursion limit) is malformed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One line of a transcript.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Line<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub uuid: Str<'a>,
    #[serde(rename = "parentUuid", borrow)]
    pub parent_uuid: Str<'a>,
    #[serde(rename = "sessionId", borrow)]
    pub session_id: Str<'a>,
    #[serde(borrow)]
    pub timestamp: Str<'a>,
    #[serde(borrow)]
    pub cwd: Str<'a>,
    #[serde(rename = "requestId", borrow)]
    pub request_id: Str<'a>,
    /// The Claude Code version that wrote the line.
    #[serde(borrow)]
    pub version: Str<'a>,
    #[serde(rename = "gitBranch", borrow)]
    pub git_branch: Str<'a>,
    #[serde(rename = "isSidechain")]
    pub is_sidechain: Bool,
    #[serde(rename = "isMeta")]
    pub is_meta: Bool,
    #[serde(borrow)]
    pub message: Loose<Message<'a>>,
    /// Legacy top-level tool result lines name their tool use here...
    #[serde(borrow)]
    pub tool_use_id: Str<'a>,
    /// ...or here.
    #[serde(rename = "toolUseId", borrow)]
    pub tool_use_id_camel: Str<'a>,
    pub is_error: Bool,
    /// Flat `{"role", "content"}` conversations carry these at the top.
    #[serde(borrow)]
    pub role: Str<'a>,
    #[serde(borrow)]
    pub content: Content<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow)]
    pub role: Str<'a>,
    #[serde(borrow)]
    pub model: Str<'a>,
    #[serde(borrow)]
    pub content: Content<'a>,
    pub usage: Loose<Usage>,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: Num,
    pub output_tokens: Num,
    pub cache_creation_input_tokens: Num,
    pub cache_read_input_tokens: Num,
    /// The cache writes split by lifetime, where Claude Code records it.
    pub cache_creation: Loose<CacheCreation>,
    /// `speed: "fast"`: a request in fast mode, billed at a multiple.
    pub speed: Fast,
}

/// Whether a `speed` field says `"fast"`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fast(pub bool);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct CacheCreation {
    pub ephemeral_5m_input_tokens: Num,
    pub ephemeral_1h_input_tokens: Num,
}

impl Usage {
    /// All four counts, saturating: a hostile line cannot wrap it.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .0
            .saturating_add(self.output_tokens.0)
            .saturating_add(self.cache_creation_input_tokens.0)
            .saturating_add(self.cache_read_input_tokens.0)
    }

    /// Cache writes with a five-minute lifetime: all of them unless the
    /// line splits them by lifetime.
    pub fn cache_creation_5m(&self) -> u64 {
        self.cache_creation
            .0
            .map_or(self.cache_creation_input_tokens.0, |c| {
                c.ephemeral_5m_input_tokens.0
            })
    }

    /// Cache writes with a one-hour lifetime.
    pub fn cache_creation_1h(&self) -> u64 {
        self.cache_creation
            .0
            .map_or(0, |c| c.ephemeral_1h_input_tokens.0)
    }
}

/// A content block of a message.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Block<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub input: Loose<Input<'a>>,
    #[serde(borrow)]
    pub tool_use_id: Str<'a>,
    pub is_error: Bool,
    #[serde(borrow)]
    pub text: Str<'a>,
}

/// The few tool inputs that name what was invoked.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Input<'a> {
    #[serde(borrow)]
    pub skill: Str<'a>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub subagent_type: Str<'a>,
}

/// Message content: a plain string or a list of blocks.
#[derive(Debug, Default)]
pub enum Content<'a> {
    #[default]
    None,
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

impl Line<'_> {
    /// The message content, or the top-level one of a flat line.
    pub fn content(&self) -> &Content<'_> {
        match &self.message.0 {
            Some(m) if !matches!(m.content, Content::None) => &m.content,
            _ => &self.content,
        }
    }

    /// The role: `type` for Claude Code lines, `role` for flat ones.
    pub fn role(&self) -> Option<&str> {
        self.kind
            .get()
            .or_else(|| self.message.0.as_ref().and_then(|m| m.role.get()))
            .or_else(|| self.role.get())
    }
}

/// Parses one line; `None` when it is not a JSON object.
pub fn parse(line: &[u8]) -> Option<Line<'_>> {
    // An editor or an upload tool may put a UTF-8 byte order mark before the
    // first line: it is not part of the JSON.
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    // A derived struct would also accept an array of its fields in order.
    if line.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(line).ok()
}

/// A string field; anything else reads as absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Option<Cow<'a, str>>);

impl Str<'_> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A boolean field; anything else reads as false.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bool(pub bool);

/// A non-negative integer field; anything else reads as 0.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Num(pub u64);

/// An object field read as `T`; anything else reads as absent.
#[derive(Debug, Clone, Copy)]
pub struct Loose<T>(pub Option<T>);

impl<T> Default for Loose<T> {
    fn default() -> Self {
        Loose(None)
    }
}

/// Any JSON value, seen shallowly: compound values are skipped unread.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(u64),
    Float(f64),
    Other,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(ScalarVisitor)? {
            Scalar::Str(s) => Str(Some(s)),
            _ => Str(None),
        })
    }
}

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Bool(matches!(
            d.deserialize_any(ScalarVisitor)?,
            Scalar::Bool(true)
        )))
    }
}

impl<'de> Deserialize<'de> for Fast {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Fast(matches!(
            d.deserialize_any(ScalarVisitor)?,
            Scalar::Str(s) if s == "fast"
        )))
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Num(match d.deserialize_any(ScalarVisitor)? {
            Scalar::Int(n) => n,
            Scalar::Float(x) if x >= 0.0 && x.fract() == 0.0 && x < u64::MAX as f64 => x as u64,
            _ => 0,
        }))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Loose<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Loose(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                ScalarVisitor.visit_seq(seq).map(|_| Loose(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::new();
                while let Some(Loose(block)) = seq.next_element::<Loose<Block<'de>>>()? {
                    blocks.extend(block);
                }
                Ok(Content::Blocks(blocks))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ScalarVisitor.visit_map(map).map(|_| Content::None)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_claude_code_line() {
        let line = parse(
            br#"{"type":"assistant","uuid":"a1","sessionId":"s","isSidechain":true,
                "requestId":"r","message":{"id":"m","model":"claude","usage":
                {"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":5},
                "content":[{"type":"tool_use","id":"t1","name":"Skill",
                "input":{"skill":"pdf","other":[1,2]}},{"type":"text","text":"hi \"x\""}]}}"#,
        )
        .unwrap();
        assert_eq!(line.kind.get(), Some("assistant"));
        assert!(line.is_sidechain.0);
        let m = line.message.0.as_ref().unwrap();
        assert_eq!(m.usage.0.unwrap().total(), 12);
        let Content::Blocks(blocks) = &m.content else {
            panic!()
        };
        assert_eq!(blocks[0].input.0.as_ref().unwrap().skill.get(), Some("pdf"));
        assert_eq!(blocks[1].text.get(), Some("hi \"x\""));
    }

    #[test]
    fn odd_shapes_read_as_absent_field_by_field() {
        let line = parse(
            br#"{"type":"user","timestamp":7,"isMeta":"yes","message":{"content":42,
                "usage":"lots","id":["x"]},"uuid":"u"}"#,
        )
        .unwrap();
        assert_eq!(line.uuid.get(), Some("u"));
        assert_eq!(line.timestamp.get(), None);
        assert!(!line.is_meta.0);
        let m = line.message.0.as_ref().unwrap();
        assert!(matches!(m.content, Content::None));
        assert!(m.usage.0.is_none() && m.id.get().is_none());
        let line = parse(br#"{"type":"user","message":"just text","content":[1,"a",{"type":"text","text":"t"}]}"#).unwrap();
        assert!(line.message.0.is_none());
        let Content::Blocks(blocks) = line.content() else {
            panic!()
        };
        assert_eq!(blocks.len(), 1);
    }

    #[test]
    fn non_objects_are_malformed() {
        assert!(parse(b"not json").is_none());
        assert!(parse(b"[1,2]").is_none());
        assert!(parse(b"").is_none());
        assert!(parse(b"{\"type\":\"user\"").is_none());
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        for field in ["unknown", "message", "content", "uuid"] {
            let deep = format!(
                "{{\"type\":\"user\",\"{field}\":{}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            // Read as absent or refused as malformed: either way, no crash.
            if let Some(line) = parse(deep.as_bytes()) {
                assert_eq!(line.kind.get(), Some("user"));
            }
        }
        let deep = format!(
            "{{\"message\":{}{}}}",
            "{\"a\":".repeat(100_000),
            "}".repeat(100_000)
        );
        let _ = parse(deep.as_bytes());
    }
}
