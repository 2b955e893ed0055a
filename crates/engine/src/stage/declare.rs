//! The macros that declare a kind's parameters once: `stage_params!` (struct, schema,
//! name constants) and `param_enum!` (enum parameter types).

/// Declares an enum parameter type: a Rust enum whose variants are written as the given
/// strings in pipelines, with [`ParamType::Enum`](crate::stage::ParamType::Enum) listing them (so `pipe kinds` and "did you
/// mean" see the same names).
#[macro_export]
macro_rules! param_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[doc = $d:literal])* $variant:ident = $text:literal),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
        pub enum $name {
            $($(#[doc = $d])* #[serde(rename = $text)] $variant,)*
        }
        impl $name {
            /// Every value, as written in pipelines.
            pub const NAMES: &'static [&'static str] = &[$($text),*];
            /// The value as written in pipelines.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }
        impl $crate::stage::ParamValue for $name {
            const TYPE: $crate::stage::ParamType = $crate::stage::ParamType::Enum(Self::NAMES);
        }
    };
}

/// Declares a kind's parameters once: a `#[derive(Deserialize)]` struct with one field per
/// parameter, and its [`KindParams::specs`](crate::stage::KindParams::specs) (the schema `pipe kinds` prints and the spec
/// checks) from the same lines. Each line is `name: Type, PRESENCE, "doc";` where
/// PRESENCE is `required`, `optional` (the type is then `Option<_>`) or `default "TOML"`,
/// optionally followed by `not_in_key` or `key_unless_default` (in the key only when it
/// differs from its default: an option added to a kind keeps older keys); `name as "key": ...` names a parameter whose key is
/// not a Rust identifier (`final`). The [`ParamType`](crate::stage::ParamType) comes from the Rust type
/// ([`ParamValue`](crate::stage::ParamValue)). `..field: Type;` at the end includes another declared struct's
/// parameters (shared groups such as a worker's `device` and `threads`).
#[macro_export]
macro_rules! stage_params {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $field:ident $(as $rename:literal)? : $ty:ty, $presence:ident $($default:literal)? $(, $nik:ident)?, $doc:literal;
            )*
            $(..$group_field:ident : $group:ty;)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, serde::Deserialize)]
        pub struct $name {
            $(
                #[doc = $doc]
                $(#[serde(rename = $rename)])?
                pub $field: $ty,
            )*
            $(
                /// Parameters shared with other kinds.
                #[serde(flatten)]
                pub $group_field: $group,
            )?
        }

        /// Each parameter's name as written in pipelines, one constant per field (named as
        /// the field), for checks and key lists: `ParamError::param(TrainParams::epochs, ..)`.
        #[allow(non_upper_case_globals, dead_code)]
        impl $name {
            $(
                #[doc = concat!("The name of the parameter `", $crate::stage_params!(@name $field $($rename)?), "`.")]
                pub const $field: &'static str = $crate::stage_params!(@name $field $($rename)?);
            )*
        }

        impl $crate::stage::KindParams for $name {
            fn specs() -> &'static [$crate::stage::ParamSpec] {
                static SPECS: std::sync::LazyLock<Vec<$crate::stage::ParamSpec>> =
                    std::sync::LazyLock::new(|| {
                        #[allow(unused_mut)]
                        let mut specs = vec![$(
                            $crate::stage::ParamSpec {
                                name: $crate::stage_params!(@name $field $($rename)?),
                                ty: <$ty as $crate::stage::ParamValue>::TYPE,
                                presence: $crate::stage_params!(@presence $ty, $presence $($default)?),
                                in_key: $crate::stage_params!(@in_key $($nik)?),
                                key_omits_default: $crate::stage_params!(@omits_default $($nik)?),
                                doc: $doc,
                            },
                        )*];
                        $(specs.extend_from_slice(<$group as $crate::stage::KindParams>::specs());)?
                        specs
                    });
                &SPECS
            }
        }
    };
    (@presence $ty:ty, required) => { $crate::stage::Presence::Required };
    (@presence $ty:ty, optional) => {{
        const _: () = assert!(<$ty as $crate::stage::ParamValue>::OPTIONAL, "an optional parameter's type must be Option<_>");
        $crate::stage::Presence::Optional
    }};
    (@presence $ty:ty, default $d:literal) => { $crate::stage::Presence::Default($d) };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $rename:literal) => { $rename };
    (@in_key) => { true };
    (@in_key not_in_key) => { false };
    (@in_key key_unless_default) => { true };
    (@omits_default) => { false };
    (@omits_default not_in_key) => { false };
    (@omits_default key_unless_default) => { true };
}

#[cfg(test)]
mod typed_params_tests {
    use std::sync::Arc;

    use crate::stage::{KeyInputs, KindParams, Params, Presence, Scalar};
    use serde_json::json;

    crate::param_enum! {
        /// A test enum.
        pub enum Mode {
            Fast = "fast",
            Careful = "careful",
        }
    }

    crate::stage_params! {
        /// Shared parameters.
        pub struct Shared {
            threads: i64, default "1", not_in_key, "threads";
        }
    }

    crate::stage_params! {
        /// A kind's parameters.
        pub struct Sample {
            lr: f64, required, "a rate";
            size: Option<i64>, optional, "a size";
            mode: Mode, default "\"careful\"", "a mode";
            widths: Vec<i64>, default "[4, 2]", "widths";
            last as "final": Scalar, default "\"final\"", "a keyword name";
            record: bool, default "false", key_unless_default, "an option added later";
            ..shared: Shared;
        }
    }

    #[test]
    fn one_declaration_gives_the_schema_and_the_struct() {
        let specs = Sample::specs();
        let rows: Vec<String> = specs
            .iter()
            .map(|s| {
                let presence = match s.presence {
                    Presence::Required => "required".to_string(),
                    Presence::Optional => "optional".to_string(),
                    Presence::Default(d) => format!("default {d}"),
                };
                format!("{} {} {presence} {}", s.name, s.ty.describe(), s.in_key)
            })
            .collect();
        assert_eq!(
            rows,
            [
                "lr a number required true",
                "size an integer optional true",
                "mode one of \"fast\", \"careful\" default \"careful\" true",
                "widths an array of integers default [4, 2] true",
                "final a string, number or boolean default \"final\" true",
                "record a boolean default false true",
                "threads an integer default 1 false",
            ]
        );
        // Absent defaulted values take their declared defaults; optional ones stay None.
        let values = json!({"lr": 0.5}).as_object().unwrap().clone();
        let p = Params::new(values).typed::<Sample>().unwrap();
        assert_eq!(p.lr, 0.5);
        assert_eq!(p.size, None);
        assert_eq!(p.mode, Mode::Careful);
        assert_eq!(
            (p.mode.as_str(), Mode::NAMES),
            ("careful", &["fast", "careful"][..])
        );
        assert_eq!(p.widths, [4, 2]);
        assert_eq!(p.last, Scalar(json!("final")));
        assert_eq!(p.shared.threads, 1);
        assert!(!p.record);
        let values = json!({"lr": 1.0, "size": 3, "mode": "fast", "final": 7, "threads": 4});
        let p = Sample::parse(values.as_object().unwrap()).unwrap();
        assert_eq!((p.size, p.mode, p.shared.threads), (Some(3), Mode::Fast, 4));
        assert_eq!(p.last, Scalar(json!(7)));
        assert!(
            Sample::parse(&serde_json::Map::new()).is_err(),
            "lr is required"
        );
    }

    #[test]
    fn an_option_at_its_default_stays_out_of_the_key() {
        let key_names = |values: serde_json::Value| -> Vec<String> {
            let params = Params::new(values.as_object().unwrap().clone());
            let keys = KeyInputs {
                values: &params,
                input_keys: &[],
                input_parts: &[],
            };
            keys.key_params(Sample::specs(), &[])
                .keys()
                .cloned()
                .collect()
        };
        // `threads` is never in the key; `record` only when it is not `false`; a defaulted
        // parameter without the mark is in the key at its default too.
        let base = json!({"lr": 1.0, "mode": "careful", "threads": 2});
        assert_eq!(key_names(base.clone()), ["lr", "mode"]);
        let mut off = base.clone();
        off["record"] = json!(false);
        assert_eq!(key_names(off), ["lr", "mode"]);
        let mut on = base;
        on["record"] = json!(true);
        assert_eq!(key_names(on), ["lr", "mode", "record"]);
    }

    #[test]
    fn typed_params_are_parsed_once_and_shared_by_clones() {
        let params = Params::new(json!({"lr": 0.25}).as_object().unwrap().clone());
        let a = params.typed::<Sample>().unwrap();
        let b = params.clone().typed::<Sample>().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
