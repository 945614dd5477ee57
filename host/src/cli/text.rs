//! Building the commands' text in a `String`: [`put!`] and [`putln!`], `write!` and `writeln!`
//! without a `fmt::Result` to drop.

use std::fmt::{Arguments, Write as _};

/// Append `args` to `s`.
///
/// Formatting into a `String` cannot fail: `String`'s `fmt::Write` never returns an error, so
/// one could only come from a `Display` implementation that fails on its own, a bug (`format!`
/// panics then too). That is checked here, once, rather than a `fmt::Result` being dropped at
/// every call.
pub(crate) fn append(s: &mut String, args: Arguments<'_>) {
    s.write_fmt(args).expect("writing to a String cannot fail");
}

/// `write!(s, ...)` for a `String` `s`, through [`append`].
macro_rules! put {
    ($s:expr, $($arg:tt)*) => {
        $crate::cli::text::append(&mut $s, format_args!($($arg)*))
    };
}

/// `writeln!(s, ...)` for a `String` `s`, through [`append`].
macro_rules! putln {
    ($s:expr, $($arg:tt)*) => {{
        let s: &mut String = &mut $s;
        $crate::cli::text::append(s, format_args!($($arg)*));
        s.push('\n');
    }};
}

pub(crate) use {put, putln};
