//! The static description of a model that `#[derive(Evolve)]` emits.
//!
//! Everything here is `const`-constructible: the derive writes one `ModelSpec` literal per struct
//! and the planner turns it into steps at run time. Fields are public for the generated code only;
//! new fields always come with a default in `DEFAULT`, so older expansions keep compiling.

/// One struct deriving `Evolve`: the table it maps to and its columns, in field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The Rust name of the struct, for messages.
    pub rust_name: &'static str,
    /// The PostgreSQL schema of the table (`public` unless `#[evolve(schema = "...")]`).
    pub schema: &'static str,
    /// The table name from `#[evolve(table = "...")]`.
    pub table: &'static str,
    /// Every field of the struct, in declaration order.
    pub columns: &'static [ColumnSpec],
}

impl ModelSpec {
    /// A model with no table; generated code ends its literal with `..ModelSpec::DEFAULT`.
    pub const DEFAULT: ModelSpec = ModelSpec {
        rust_name: "",
        schema: "public",
        table: "",
        columns: &[],
    };

    /// The primary key columns, in field order.
    pub fn primary_key(&self) -> impl Iterator<Item = &'static ColumnSpec> {
        self.columns.iter().filter(|c| c.primary_key)
    }

    /// The column with this name, if the model has one.
    pub fn column(&self, name: &str) -> Option<&'static ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `schema.table`, for messages (unquoted).
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// One field of the struct and the column it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSpec {
    /// The Rust field name, for messages.
    pub field: &'static str,
    /// The column name (the field name unless `#[evolve(column = "...")]`).
    pub name: &'static str,
    /// The PostgreSQL type, from [`ColumnType`](crate::ColumnType) or `#[evolve(sql_type = "...")]`.
    pub sql_type: &'static str,
    /// `true` for `Option<T>` fields.
    pub nullable: bool,
    /// Part of the primary key (`#[evolve(primary_key)]`).
    pub primary_key: bool,
    /// How existing rows get a value when the column is added to a live table.
    pub fill: Fill,
}

impl ColumnSpec {
    /// A non-key, NOT NULL column with no fill; generated code ends with `..ColumnSpec::DEFAULT`.
    pub const DEFAULT: ColumnSpec = ColumnSpec {
        field: "",
        name: "",
        sql_type: "",
        nullable: false,
        primary_key: false,
        fill: Fill::None,
    };
}

/// How a NOT NULL column gets its value on rows that exist before it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Nothing: the column must already exist, or be nullable.
    None,
    /// `#[evolve(backfill = "<SQL expression over the row>")]`: computed for every existing row in
    /// batches, and by a trigger for rows written by code that does not know the column.
    Backfill(&'static str),
    /// `#[evolve(default = "<constant SQL>")]`: a column default, which PostgreSQL applies to
    /// existing rows without rewriting the table when the expression is not volatile.
    Default(&'static str),
}
