//! InfluxDB line protocol, written by us rather than by the client crate:
//! `influxdb2`'s `DataPoint` formats floats with `{}` (so NaN and infinity
//! become invalid lines) and escapes neither backslashes in string fields
//! nor line breaks anywhere. Here a non-finite float field is left out (and
//! counted by the caller), tag values and keys have control characters
//! replaced, and string fields are escaped and capped.
//!
//! ```text
//! ping,agent=edge-1,prefix=10.1.2.0/24,target=10.1.2.7,tenant=acme lost=0i,rtt_ms=1.5,status="ok" 1795262888098000000
//! ```

use std::fmt::Write as _;

/// Longest string field value written (InfluxDB allows 64 KiB; error
/// texts never need that much).
pub const MAX_STRING_FIELD: usize = 1024;

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(String),
}

/// One point: measurement, tags, fields and a nanosecond timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: &'static str,
    /// Tag pairs; empty values are left out (line protocol forbids them).
    pub tags: Vec<(&'static str, String)>,
    pub fields: Vec<(&'static str, Field)>,
    pub time_ns: i64,
}

/// What writing a point produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Whether a line was written (a point left without fields is not).
    pub line: bool,
    /// Non-finite float fields left out.
    pub dropped_fields: usize,
}

impl Point {
    pub fn new(measurement: &'static str, time_ns: i64) -> Self {
        Self {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            time_ns,
        }
    }

    #[must_use]
    pub fn tag(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.tags.push((key, value.into()));
        self
    }

    #[must_use]
    pub fn field(mut self, key: &'static str, value: Field) -> Self {
        self.fields.push((key, value));
        self
    }

    /// Appends the point as one line (with its `\n`) to `out`.
    pub fn write_line(&self, out: &mut String) -> Written {
        let finite = |f: &Field| !matches!(f, Field::F64(v) if !v.is_finite());
        let dropped_fields = self.fields.iter().filter(|(_, f)| !finite(f)).count();
        if self.fields.iter().all(|(_, f)| !finite(f)) {
            return Written {
                line: false,
                dropped_fields,
            };
        }
        escape_name(self.measurement, &[',', ' '], out);
        let mut tags: Vec<_> = self.tags.iter().filter(|(_, v)| !v.is_empty()).collect();
        // Sorted tags are what InfluxDB stores; sending them sorted saves
        // it the work.
        tags.sort_by_key(|(k, _)| *k);
        for (k, v) in tags {
            out.push(',');
            escape_name(k, KEY_SPECIALS, out);
            out.push('=');
            escape_name(v, KEY_SPECIALS, out);
        }
        let mut first = true;
        for (k, v) in self.fields.iter().filter(|(_, f)| finite(f)) {
            out.push(if first { ' ' } else { ',' });
            first = false;
            escape_name(k, KEY_SPECIALS, out);
            out.push('=');
            match v {
                Field::F64(f) => {
                    let _ = write!(out, "{f}");
                }
                Field::I64(i) => {
                    let _ = write!(out, "{i}i");
                }
                Field::Bool(b) => out.push(if *b { 't' } else { 'f' }),
                Field::Str(s) => {
                    out.push('"');
                    for c in s.chars().take(MAX_STRING_FIELD) {
                        match c {
                            '"' | '\\' => {
                                out.push('\\');
                                out.push(c);
                            }
                            c if c.is_control() => out.push(' '),
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
            }
        }
        let _ = writeln!(out, " {}", self.time_ns);
        Written {
            line: true,
            dropped_fields,
        }
    }
}

const KEY_SPECIALS: &[char] = &[',', '=', ' '];

/// Escapes a measurement, tag key/value or field key. Backslashes become
/// `/` (a trailing one would escape the separator after it) and control
/// characters `?` (a line break would end the line).
fn escape_name(s: &str, specials: &[char], out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push('/'),
            c if c.is_control() => out.push('?'),
            c if specials.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(p: &Point) -> (String, Written) {
        let mut s = String::new();
        let w = p.write_line(&mut s);
        (s, w)
    }

    #[test]
    fn escapes_and_sorts() {
        let p = Point::new("ping", 42)
            .tag("target", "a b,c=d")
            .tag("agent", "x\\")
            .tag("empty", "")
            .field("rtt_ms", Field::F64(1.5))
            .field("lost", Field::I64(0))
            .field("reached", Field::Bool(true))
            .field("error", Field::Str("say \"hi\"\\\nbye".into()));
        let (s, w) = line(&p);
        assert_eq!(
            s,
            "ping,agent=x/,target=a\\ b\\,c\\=d rtt_ms=1.5,lost=0i,reached=t,error=\"say \\\"hi\\\"\\\\ bye\" 42\n"
        );
        assert_eq!(
            w,
            Written {
                line: true,
                dropped_fields: 0
            }
        );
    }

    #[test]
    fn non_finite_floats_are_never_written() {
        let p = Point::new("ping", 1)
            .field("rtt_ms", Field::F64(f64::NAN))
            .field("jitter_ms", Field::F64(f64::INFINITY))
            .field("lost", Field::I64(1));
        let (s, w) = line(&p);
        assert_eq!(s, "ping lost=1i 1\n");
        assert_eq!(w.dropped_fields, 2);
        // Nothing left: no line at all rather than an invalid one.
        let p = Point::new("ping", 1).field("rtt_ms", Field::F64(f64::NEG_INFINITY));
        assert_eq!(
            line(&p),
            (
                String::new(),
                Written {
                    line: false,
                    dropped_fields: 1
                }
            )
        );
    }

    #[test]
    fn long_strings_are_capped() {
        let p = Point::new("m", 1).field("e", Field::Str("x".repeat(5000)));
        let (s, _) = line(&p);
        assert_eq!(s.len(), "m e=\"\" 1\n".len() + MAX_STRING_FIELD);
    }
}
