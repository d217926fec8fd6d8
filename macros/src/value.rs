//! Attribute values that have a syntax of their own inside their string: `on_delete = ".."`,
//! `method = ".."` and `references = ".."`. Each is parsed once, when `attr` reads it, into the
//! typed value `expand` emits; what is wrong with it becomes an error at the literal.

/// `on_delete = ".."`, matched lowercase with single spaces (`"SET  NULL"` is `set null`).
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum OnDelete {
    Cascade,
    Restrict,
    SetNull,
    NoAction,
}

impl OnDelete {
    /// Every action, in the order error messages list them.
    const ALL: [OnDelete; 4] = [
        OnDelete::Cascade,
        OnDelete::Restrict,
        OnDelete::SetNull,
        OnDelete::NoAction,
    ];

    /// The action as written in the attribute.
    fn as_str(self) -> &'static str {
        match self {
            OnDelete::Cascade => "cascade",
            OnDelete::Restrict => "restrict",
            OnDelete::SetNull => "set null",
            OnDelete::NoAction => "no action",
        }
    }

    fn find(written: &str) -> Option<OnDelete> {
        OnDelete::ALL.into_iter().find(|a| a.as_str() == written)
    }

    pub fn parse(value: &str) -> Result<OnDelete, String> {
        let action = value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if let Some(action) = OnDelete::find(&action) {
            return Ok(action);
        }
        let mut msg = format!(
            "unknown `on_delete` action `{value}`, expected one of {}",
            quoted(OnDelete::ALL.map(OnDelete::as_str)),
        );
        let spaced = action.replace('_', " ");
        if OnDelete::find(&spaced).is_some() {
            msg.push_str(&format!("; did you mean `{spaced}`?"));
        }
        Err(msg)
    }
}

/// `method = ".."` of an index, written exactly as the runtime's `IndexMethod` names it.
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum IndexMethod {
    Btree,
    Hash,
    Gin,
    Gist,
    Brin,
}

impl IndexMethod {
    /// Every method, in the order error messages list them.
    const ALL: [IndexMethod; 5] = [
        IndexMethod::Btree,
        IndexMethod::Hash,
        IndexMethod::Gin,
        IndexMethod::Gist,
        IndexMethod::Brin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IndexMethod::Btree => "btree",
            IndexMethod::Hash => "hash",
            IndexMethod::Gin => "gin",
            IndexMethod::Gist => "gist",
            IndexMethod::Brin => "brin",
        }
    }

    pub fn parse(value: &str) -> Result<IndexMethod, String> {
        IndexMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "unknown index method `{value}`, expected one of {}",
                    quoted(IndexMethod::ALL.map(IndexMethod::as_str)),
                )
            })
    }
}

/// `references = "table(column)"` or `"schema.table(column)"`, each part trimmed. The parts
/// are not checked as identifiers here; `validate` does that like for every other name.
pub struct References {
    pub schema: Option<String>,
    pub table: String,
    pub column: String,
}

impl References {
    pub fn parse(value: &str) -> Result<References, String> {
        References::split(value).ok_or_else(|| {
            format!(
                "malformed `references = \"{value}\"`; write the referenced table and its column, like \
                 `references = \"users(id)\"` or `references = \"app.users(id)\"`"
            )
        })
    }

    fn split(value: &str) -> Option<References> {
        let (target, rest) = value.trim().split_once('(')?;
        let column = rest.strip_suffix(')')?.trim();
        let target = target.trim();
        let (schema, table) = match target.split_once('.') {
            Some((schema, table)) => (Some(schema.trim().to_owned()), table.trim()),
            None => (None, target),
        };
        if table.is_empty() || column.is_empty() || column.contains([',', '(', ')']) {
            return None;
        }
        Some(References {
            schema,
            table: table.to_owned(),
            column: column.to_owned(),
        })
    }
}

/// "`a`, `b`, `c`", for "expected one of" messages.
fn quoted<const N: usize>(words: [&str; N]) -> String {
    words.map(|w| format!("`{w}`")).join(", ")
}

/// `backfill_with = ".."`: a path to a function, like `crate::fill::email` (no generics, no
/// call). Its tokens are spanned at the literal when emitted, so a type error points there.
pub fn function_path(value: &str) -> Result<syn::Path, String> {
    let bad = |why: &str| {
        format!(
            "`backfill_with` takes the path of a function, like `backfill_with = \"crate::fill::email_normalized\"`; \
             `{value}` {why}"
        )
    };
    if value.trim().is_empty() {
        return Err(bad("is empty"));
    }
    let path: syn::Path = syn::parse_str(value).map_err(|_| bad("is not a path"))?;
    if path
        .segments
        .iter()
        .any(|s| !matches!(s.arguments, syn::PathArguments::None))
    {
        return Err(bad(
            "has generic arguments; wrap the call in a function of your own without them",
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_delete_is_matched_lowercase_with_single_spaces() {
        assert!(matches!(
            OnDelete::parse(" SET  Null "),
            Ok(OnDelete::SetNull)
        ));
        assert!(matches!(
            OnDelete::parse("no action"),
            Ok(OnDelete::NoAction)
        ));
        let typo = OnDelete::parse("set_null").err().unwrap_or_default();
        assert!(typo.ends_with("; did you mean `set null`?"), "{typo}");
        assert!(OnDelete::parse("delete").is_err());
    }

    #[test]
    fn index_methods_are_matched_exactly() {
        assert!(matches!(IndexMethod::parse("gin"), Ok(IndexMethod::Gin)));
        assert!(IndexMethod::parse("GIN").is_err());
    }

    #[test]
    fn references_split_into_schema_table_and_column() {
        let r = References::parse(" app . users ( id ) ").ok();
        let parts = r.map(|r| (r.schema, r.table, r.column));
        assert_eq!(
            parts,
            Some((Some("app".into()), "users".into(), "id".into()))
        );
        for bad in ["authors.id", "users()", "(id)", "users(a, b)", "users(id"] {
            assert!(References::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn function_paths_parse_once_and_calls_or_generics_do_not() {
        assert!(function_path("crate::fill::email").is_ok());
        assert!(function_path("normalize").is_ok());
        for bad in ["", "normalize(email)", "fill::<u8>::f", "a b"] {
            assert!(function_path(bad).is_err(), "{bad}");
        }
    }
}
