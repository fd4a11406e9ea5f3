//! Whole numbers in request bodies as JSON Schema means them: `12` and `12.0` are the same
//! integer there (the OpenAPI document says `integer`), while serde takes only the first. These
//! accept an integral number in either form, exactly (no fraction, no float past 2^53), and
//! refuse anything else with serde's usual error.

use serde::de::{self, Deserializer, Visitor};

/// The largest integer every JSON float holds exactly.
const EXACT_FLOAT_MAX: f64 = 9_007_199_254_740_992.0;

struct Whole;

impl Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a non-negative whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..=EXACT_FLOAT_MAX).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

fn narrow<T: TryFrom<u64>, E: de::Error>(v: u64) -> Result<T, E> {
    T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"a smaller whole number"))
}

/// `#[serde(deserialize_with = "crate::number::whole")]`
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
    narrow(deserializer.deserialize_any(Whole)?)
}

/// `#[serde(default, deserialize_with = "crate::number::whole_opt")]`
pub fn whole_opt<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<Option<T>, D::Error> {
    struct Maybe;
    impl<'de> Visitor<'de> for Maybe {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative whole number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Whole).map(Some)
        }
    }
    deserializer.deserialize_option(Maybe)?.map(narrow).transpose()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[serde(deserialize_with = "super::whole")]
        version: u64,
        #[serde(default, deserialize_with = "super::whole")]
        flags: u8,
        #[serde(default, deserialize_with = "super::whole_opt")]
        seen: Option<u64>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_integers_and_nothing_else_is() {
        let body = parse(r#"{"version": 12239.0, "flags": 1.0, "seen": 7.0}"#).unwrap();
        assert_eq!((body.version, body.flags, body.seen), (12239, 1, Some(7)));
        let body = parse(r#"{"version": 3, "seen": null}"#).unwrap();
        assert_eq!((body.version, body.flags, body.seen), (3, 0, None));
        for bad in [
            r#"{"version": 1.5}"#,
            r#"{"version": -1}"#,
            r#"{"version": 1e300}"#,
            r#"{"version": "1"}"#,
            r#"{"version": 1, "flags": 256}"#,
            r#"{"version": 1, "seen": 0.5}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
