//! Checking what crosses as a layout and an address: the host's context (checked by the
//! plugin) and an extension's table (checked by the side that uses it). See `docs/abi.md`.

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;

use crate::abi::RawExtension;

/// How many fields the struct of layout `other` has, once it is known to begin with the
/// fields of `mine` (same names, compatible layouts, in order). `other` may have more fields
/// (a later version appended them) or fewer (an earlier one): the first `min` are compared.
pub fn prefix_of(mine: &'static TypeLayout, other: &'static TypeLayout) -> Result<usize, String> {
    let (Some(mine_fields), Some(other_fields)) = (mine.get_fields(), other.get_fields()) else {
        return Err(format!("`{}` is not a struct with fields", other.name()));
    };
    for (m, o) in mine_fields.iter().zip(other_fields.iter()) {
        if m.name() != o.name() {
            return Err(format!(
                "field `{}` where `{}` was expected",
                o.name(),
                m.name()
            ));
        }
        if let Err(e) = check_layout_compatibility(m.layout(), o.layout()) {
            let first = e
                .errors
                .first()
                .map(|e| format!("{e:?}"))
                .unwrap_or_default();
            let first: String = first.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(format!(
                "field `{}`: expected `{}`, found `{}` ({})",
                m.name(),
                m.layout().full_type(),
                o.layout().full_type(),
                first.chars().take(120).collect::<String>()
            ));
        }
    }
    Ok(other_fields.len())
}

/// The table of an extension, once its layout is checked against this crate's `T`.
///
/// # Safety
///
/// `raw` must come from a `extension` call of a library or instance (the ABI's promise: its
/// `table` points to a table of the layout `raw.layout` that lives as long as the library).
pub unsafe fn table<T: StableAbi>(raw: &RawExtension) -> Result<&'static T, String> {
    check_layout_compatibility(T::LAYOUT, raw.layout).map_err(|e| {
        let first = e
            .errors
            .first()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        let first: String = first.split_whitespace().collect::<Vec<_>>().join(" ");
        format!(
            "the extension's table is not a `{}`: {}",
            T::LAYOUT.name(),
            first.chars().take(160).collect::<String>()
        )
    })?;
    // SAFETY: the layout of what `table` points to was just checked to be `T`'s; the caller
    // promises it lives as long as the library, which is never unloaded.
    Ok(unsafe { &*raw.table.cast::<T>() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::RStr;

    #[repr(C)]
    #[derive(StableAbi)]
    struct Old {
        a: u32,
        b: RStr<'static>,
    }

    #[repr(C)]
    #[derive(StableAbi)]
    struct New {
        a: u32,
        b: RStr<'static>,
        c: u64,
    }

    #[repr(C)]
    #[derive(StableAbi)]
    struct Drifted {
        a: u64,
        b: RStr<'static>,
    }

    #[repr(C)]
    #[derive(StableAbi)]
    struct Renamed {
        a: u32,
        x: RStr<'static>,
    }

    #[test]
    fn a_struct_with_more_or_fewer_fields_at_its_end_is_a_prefix() {
        assert_eq!(prefix_of(Old::LAYOUT, New::LAYOUT), Ok(3));
        assert_eq!(prefix_of(New::LAYOUT, Old::LAYOUT), Ok(2));
        assert_eq!(prefix_of(Old::LAYOUT, Old::LAYOUT), Ok(2));
    }

    #[test]
    fn a_field_of_another_type_or_name_is_refused_by_name() {
        let e = prefix_of(Old::LAYOUT, Drifted::LAYOUT).unwrap_err();
        assert!(
            e.contains("field `a`") && e.contains("u32") && e.contains("u64"),
            "{e}"
        );
        let e = prefix_of(Old::LAYOUT, Renamed::LAYOUT).unwrap_err();
        assert!(e.contains("`x`") && e.contains("`b`"), "{e}");
    }
}
