//! A typed view of the derive input: the struct and its fields with their parsed attributes.
//! Every node keeps a reference to the syn node it came from, so errors can point at it.

use crate::attr;
use crate::ctxt::Ctxt;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

/// The struct deriving `Evolve`.
pub struct Model<'a> {
    pub ident: &'a syn::Ident,
    pub attrs: attr::Container,
    pub style: Style,
    /// The named fields, in declaration order; empty unless `style` is `Style::Named`.
    pub fields: Vec<Field<'a>>,
    pub original: &'a DeriveInput,
}

/// The shape of the input. Only a struct with named fields maps to a table.
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum Style {
    Named,
    Unsupported,
}

/// One named field.
pub struct Field<'a> {
    pub ident: &'a syn::Ident,
    pub ty: &'a Type,
    pub attrs: attr::Field,
    /// Not read yet; kept for the rules of upcoming attributes that point at the whole field.
    #[allow(dead_code)]
    pub original: &'a syn::Field,
}

impl<'a> Model<'a> {
    /// Parses the struct and field attributes, recording every problem in `cx`.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Model<'a> {
        let attrs = attr::Container::from_ast(cx, &input.attrs);
        let (style, fields) = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => {
                    let fields = named
                        .named
                        .iter()
                        .filter_map(|field| Field::from_ast(cx, field))
                        .collect();
                    (Style::Named, fields)
                }
                Fields::Unnamed(unnamed) => {
                    cx.error_spanned_by(
                        unnamed,
                        "`Evolve` cannot be derived for a tuple struct: each column needs a name; \
                         use a struct with named fields, like `struct User { id: i64 }`",
                    );
                    (Style::Unsupported, Vec::new())
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "`Evolve` cannot be derived for a unit struct: it has no columns; \
                         use a struct with named fields, like `struct User { id: i64 }`",
                    );
                    (Style::Unsupported, Vec::new())
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    "`Evolve` cannot be derived for an enum: a table maps to one struct; \
                     use a struct with named fields, like `struct User { id: i64 }`; \
                     to map a Rust enum to a PostgreSQL enum type, derive `EvolveEnum`",
                );
                (Style::Unsupported, Vec::new())
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "`Evolve` cannot be derived for a union: a table maps to one struct; \
                     use a struct with named fields, like `struct User { id: i64 }`",
                );
                (Style::Unsupported, Vec::new())
            }
        };
        Model {
            ident: &input.ident,
            attrs,
            style,
            fields,
            original: input,
        }
    }

    /// The Rust name of the struct, without `r#`.
    pub fn rust_name(&self) -> String {
        self.ident.unraw().to_string()
    }

    /// The schema from `#[evolve(schema = "..")]`, `public` by default.
    pub fn schema(&self) -> String {
        match &self.attrs.schema {
            Some(schema) => schema.value.value(),
            None => "public".to_owned(),
        }
    }

    /// The table from `#[evolve(table = "..")]`; empty when missing (an error already).
    pub fn table(&self) -> String {
        match &self.attrs.table {
            Some(table) => table.value.value(),
            None => String::new(),
        }
    }

    pub fn has_primary_key(&self) -> bool {
        self.fields.iter().any(|f| f.attrs.primary_key.is_some())
    }
}

impl<'a> Field<'a> {
    fn from_ast(cx: &Ctxt, field: &'a syn::Field) -> Option<Field<'a>> {
        Some(Field {
            ident: field.ident.as_ref()?,
            ty: &field.ty,
            attrs: attr::Field::from_ast(cx, &field.attrs),
            original: field,
        })
    }

    /// The Rust name of the field, without `r#`.
    pub fn rust_name(&self) -> String {
        self.ident.unraw().to_string()
    }

    /// The column name: `#[evolve(column = "..")]`, else the field name.
    pub fn column_name(&self) -> String {
        match &self.attrs.column {
            Some(column) => column.value.value(),
            None => self.rust_name(),
        }
    }

    /// Whether the type is `Option<..>`, judged on the syntax (the derive cannot see through type
    /// aliases): `Option`, `core::option::Option` or `std::option::Option`, with or without `::`.
    pub fn is_option(&self) -> bool {
        is_option(self.ty)
    }

    /// Whether the type is `i16`, `i32` or `i64`, or an `Option` of one: the types a sequence
    /// can fill (`#[evolve(generated)]`). Judged on the syntax, like [`Field::is_option`].
    pub fn is_sequence_integer(&self) -> bool {
        let ty = option_argument(self.ty).unwrap_or(self.ty);
        is_small_integer(ty)
    }
}

impl Field<'_> {
    /// The column type, when the derive can tell it from the syntax: `sql_type = ".."`, or a
    /// plain scalar (`i64`, `String`, ...) that `ColumnType` maps. `None` for anything else.
    pub fn known_sql_type(&self) -> Option<String> {
        if let Some(sql_type) = &self.attrs.sql_type {
            return Some(sql_type.value.value());
        }
        let ty = option_argument(self.ty).unwrap_or(self.ty);
        let Type::Path(path) = ty else {
            return None;
        };
        if path.qself.is_some() || path.path.segments.len() != 1 {
            return None;
        }
        let segment = path.path.segments.first()?;
        if !matches!(segment.arguments, PathArguments::None) {
            return None;
        }
        let sql = match segment.ident.to_string().as_str() {
            "i16" => "smallint",
            "i32" => "integer",
            "i64" => "bigint",
            "f32" => "real",
            "f64" => "double precision",
            "bool" => "boolean",
            "String" => "text",
            _ => return None,
        };
        Some(sql.to_string())
    }
}

/// `T` of `Option<T>` (as [`is_option`] recognises it).
fn option_argument(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Group(group) => return option_argument(&group.elem),
        Type::Paren(paren) => return option_argument(&paren.elem),
        _ => {}
    }
    if !is_option(ty) {
        return None;
    }
    let Type::Path(path) = ty else {
        return None;
    };
    match &path.path.segments.last()?.arguments {
        PathArguments::AngleBracketed(args) => match args.args.first()? {
            GenericArgument::Type(inner) => Some(inner),
            _ => None,
        },
        _ => None,
    }
}

/// `i16`, `i32` or `i64`, also as `core::primitive::i64` / `std::primitive::i64`.
fn is_small_integer(ty: &Type) -> bool {
    let path = match ty {
        Type::Group(group) => return is_small_integer(&group.elem),
        Type::Paren(paren) => return is_small_integer(&paren.elem),
        Type::Path(ty) if ty.qself.is_none() => &ty.path,
        _ => return false,
    };
    if path
        .segments
        .iter()
        .any(|s| !matches!(s.arguments, PathArguments::None))
    {
        return false;
    }
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let integer = |name: &str| matches!(name, "i16" | "i32" | "i64");
    match segments.as_slice() {
        [name] => path.leading_colon.is_none() && integer(name),
        [krate, module, name] => {
            (krate == "core" || krate == "std") && module == "primitive" && integer(name)
        }
        _ => false,
    }
}

fn is_option(ty: &Type) -> bool {
    let path = match ty {
        Type::Group(group) => return is_option(&group.elem),
        Type::Paren(paren) => return is_option(&paren.elem),
        Type::Path(ty) if ty.qself.is_none() => &ty.path,
        _ => return false,
    };
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let is_option_path = match segments.as_slice() {
        [option] => option == "Option" && path.leading_colon.is_none(),
        [krate, module, option] => {
            (krate == "core" || krate == "std") && module == "option" && option == "Option"
        }
        _ => false,
    };
    let one_type_argument = path.segments.last().is_some_and(|last| {
        matches!(&last.arguments, PathArguments::AngleBracketed(args)
            if args.args.len() == 1 && matches!(args.args.first(), Some(GenericArgument::Type(_))))
    });
    is_option_path && one_type_argument
}
