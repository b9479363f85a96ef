//! Closed sets of values that Kubernetes writes as strings (phases, policies, modes), as Rust
//! enums at the boundary: code compares and matches values, never string literals, and the
//! list a validator accepts is the enum's own.

/// Declares `enum $name { $variant, ... }` with `as_str`, `parse` and `NAMES` (the wire
/// spellings, as given).
#[macro_export]
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value's wire spelling.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($variant)),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }

            /// The value spelled `s`, if it is one.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $(stringify!($variant) => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
