//! [`settings!`](crate::settings): a structure of settings, each declared once.

/// Declares a structure of settings: each field with its type, default, flag, environment
/// variable, file key and documentation, in one place.
///
/// ```ignore
/// vexil_settings::settings! {
///     /// The sidecar's settings.
///     #[derive(Clone, Debug)]
///     pub struct ProxyConfig {
///         group "listeners" {
///             /// Outbound HTTP proxy listener.
///             outbound_addr: SocketAddr = addr("127.0.0.1:15001"),
///                 flag "outbound-addr", env "VEXIL_OUTBOUND_ADDR", key "outbound_addr";
///             /// Drain time on SIGTERM.
///             shutdown_grace: Duration as Seconds = secs(25),
///                 flag "shutdown-grace-secs", key "shutdown_grace_secs", check nonzero;
///         }
///         /// The data plane's sections.
///         section dataplane in "": DataPlaneConfig;
///     }
///     validate check_combinations;
/// }
/// ```
///
/// Per setting, in this order, all optional: `as P` (the value is read as `P`, e.g.
/// [`Millis`](crate::Millis), then converted into the field's type), `= default` (else
/// `Default::default()`), `flag`, `env`, `key` (relative to the section), `default_doc` (how the
/// documentation states a default the value alone would not say), `check` (a
/// `Fn(&P) -> Result<(), String>` every given value must pass). `group` names the documentation
/// table; `section NAME in "PREFIX": TYPE` nests another structure whose keys sit under `PREFIX`.
/// `validate f` runs `f(&self, &mut Resolver, prefix)` after resolution, for combinations.
///
/// It implements [`Settings`](crate::Settings), `Default` (every declared default) and
/// [`Value`](crate::Value) (a table of these keys: the structure can be an element of a list).
#[macro_export]
macro_rules! settings {
    (
        $(#[$attr:meta])*
        $vis:vis struct $Name:ident {
            $(
                group $group:literal {
                    $(
                        $(#[doc = $doc:literal])*
                        $field:ident : $ty:ty $(as $via:ty)? $(= $default:expr)?
                            $(, flag $flag:literal)?
                            $(, env $env:literal)?
                            $(, key $key:literal)?
                            $(, default_doc $default_doc:literal)?
                            $(, check $check:expr)?
                        ;
                    )*
                }
            )*
            $(
                $(#[doc = $sdoc:literal])*
                section $section:ident in $prefix:literal : $sty:ty;
            )*
        }
        $(validate $validate:path;)?
    ) => {
        $(#[$attr])*
        $vis struct $Name {
            $($(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*)*
            $(
                $(#[doc = $sdoc])*
                pub $section: $sty,
            )*
        }

        impl ::core::default::Default for $Name {
            fn default() -> Self {
                $Name {
                    $($(
                        $field: $crate::__default!($($default)?),
                    )*)*
                    $(
                        $section: ::core::default::Default::default(),
                    )*
                }
            }
        }

        impl $crate::Settings for $Name {
            fn declare(prefix: &str, out: &mut ::std::vec::Vec<$crate::Declared>) {
                $($(
                    out.push($crate::Declared::new(prefix, $group, $crate::__setting!(
                        $field, $ty, [$($via)?], [$($default)?], [$($doc),*],
                        [$($flag)?], [$($env)?], [$($key)?], [$($default_doc)?]
                    )));
                )*)*
                $(
                    <$sty as $crate::Settings>::declare(&$crate::join_key(prefix, $prefix), out);
                )*
            }

            fn resolve(r: &mut $crate::Resolver<'_>, prefix: &str) -> Self {
                $Name {
                    $($(
                        $field: {
                            type P = $crate::__via!($ty $(, $via)?);
                            let setting = $crate::__setting!(
                                $field, $ty, [$($via)?], [$($default)?], [$($doc),*],
                                [$($flag)?], [$($env)?], [$($key)?], [$($default_doc)?]
                            );
                            let value: P = r.get::<P>(
                                setting,
                                prefix,
                                || <P as ::core::convert::From<$ty>>::from(
                                    $crate::__default!($($default)?)
                                ),
                                |_v: &P| -> ::core::result::Result<(), ::std::string::String> {
                                    $crate::__check!(_v $(, $check)?)
                                },
                            );
                            <$ty as ::core::convert::From<P>>::from(value)
                        },
                    )*)*
                    $(
                        $section: <$sty as $crate::Settings>::resolve(
                            r,
                            &$crate::join_key(prefix, $prefix),
                        ),
                    )*
                }
            }

            #[allow(unused_variables)]
            fn check(&self, r: &mut $crate::Resolver<'_>, prefix: &str) {
                $(
                    <$sty as $crate::Settings>::check(
                        &self.$section,
                        r,
                        &$crate::join_key(prefix, $prefix),
                    );
                )*
                $( $validate(self, r, prefix); )?
            }

            fn show(&self) -> $crate::__private::toml::Table {
                #[allow(unused_mut)]
                let mut table = $crate::__private::toml::Table::new();
                $($(
                    $crate::__show!(table, self.$field, $crate::__via!($ty $(, $via)?), $ty, [$($key)?]);
                )*)*
                table
            }
        }

        impl $crate::Value for $Name {
            fn from_text(text: &str) -> ::core::result::Result<Self, $crate::Problems> {
                <Self as $crate::Value>::from_toml(&$crate::json_to_toml(text)?)
            }

            fn from_toml(
                value: &$crate::__private::toml::Value,
            ) -> ::core::result::Result<Self, $crate::Problems> {
                match value.as_table() {
                    Some(table) => $crate::resolve_record::<Self>(table),
                    None => ::core::result::Result::Err($crate::expected("a table", value)),
                }
            }

            fn show(&self) -> ::core::option::Option<$crate::__private::toml::Value> {
                ::core::option::Option::Some($crate::__private::toml::Value::Table(
                    <Self as $crate::Settings>::show(self),
                ))
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __setting {
    (
        $field:ident, $ty:ty, [$($via:ty)?], [$($default:expr)?], [$($doc:literal),*],
        [$($flag:literal)?], [$($env:literal)?], [$($key:literal)?], [$($default_doc:literal)?]
    ) => {{
        type P = $crate::__via!($ty $(, $via)?);
        static SETTING: $crate::Setting = $crate::Setting {
            name: ::core::stringify!($field),
            doc: &[$($doc),*],
            flag: $crate::__opt!($($flag)?),
            env: $crate::__opt!($($env)?),
            key: $crate::__opt!($($key)?),
            default_doc: $crate::__opt!($($default_doc)?),
            default: || {
                <P as $crate::Value>::show(&<P as ::core::convert::From<$ty>>::from(
                    $crate::__default!($($default)?),
                ))
            },
            switch: <P as $crate::Value>::SWITCH,
            list: <P as $crate::Value>::LIST,
        };
        &SETTING
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __via {
    ($ty:ty) => {
        $ty
    };
    ($ty:ty, $via:ty) => {
        $via
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __default {
    () => {
        ::core::default::Default::default()
    };
    ($default:expr) => {
        $default
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __opt {
    () => {
        ::core::option::Option::None
    };
    ($v:expr) => {
        ::core::option::Option::Some($v)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __check {
    ($v:ident) => {
        ::core::result::Result::Ok(())
    };
    ($v:ident, $check:expr) => {
        ($check)($v)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __show {
    ($table:ident, $value:expr, $p:ty, $ty:ty, []) => {};
    ($table:ident, $value:expr, $p:ty, $ty:ty, [$key:literal]) => {
        if let ::core::option::Option::Some(v) = <$p as $crate::Value>::show(
            &<$p as ::core::convert::From<$ty>>::from(::core::clone::Clone::clone(&$value)),
        ) {
            $table.insert(::std::string::String::from($key), v);
        }
    };
}
