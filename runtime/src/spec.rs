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
    /// Indexes: one per `#[evolve(index)]` field, plus the struct-level `index(...)` ones.
    pub indexes: &'static [IndexSpec],
    /// CHECK constraints: field-level `check = "..."` and struct-level ones.
    pub checks: &'static [CheckSpec],
}

impl ModelSpec {
    /// A model with no table; generated code ends its literal with `..ModelSpec::DEFAULT`.
    pub const DEFAULT: ModelSpec = ModelSpec {
        rust_name: "",
        schema: "public",
        table: "",
        columns: &[],
        indexes: &[],
        checks: &[],
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
    /// `#[evolve(renamed_from = "old")]`: the column the field used to map to.
    pub renamed_from: Option<&'static str>,
    /// `#[evolve(unique)]`: a unique constraint on this column alone.
    pub unique: bool,
    /// `#[evolve(references = "table(column)", on_delete = "...")]`.
    pub references: Option<ForeignKeySpec>,
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
        renamed_from: None,
        unique: false,
        references: None,
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

/// An index the model declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index name; `None` lets pgevolve name it from the table and columns.
    pub name: Option<&'static str>,
    /// Key columns, in order.
    pub columns: &'static [&'static str],
    /// `UNIQUE`.
    pub unique: bool,
    /// The access method.
    pub method: IndexMethod,
    /// `WHERE` predicate of a partial index.
    pub predicate: Option<&'static str>,
    /// `INCLUDE` columns of a covering index.
    pub include: &'static [&'static str],
}

impl IndexSpec {
    /// A plain btree index with no columns; generated code ends with `..IndexSpec::DEFAULT`.
    pub const DEFAULT: IndexSpec = IndexSpec {
        name: None,
        columns: &[],
        unique: false,
        method: IndexMethod::Btree,
        predicate: None,
        include: &[],
    };
}

/// Index access methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMethod {
    /// `btree`, the default.
    Btree,
    /// `hash`.
    Hash,
    /// `gin`.
    Gin,
    /// `gist`.
    Gist,
    /// `brin`.
    Brin,
}

impl IndexMethod {
    /// The name in `USING ...`.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexMethod::Btree => "btree",
            IndexMethod::Hash => "hash",
            IndexMethod::Gin => "gin",
            IndexMethod::Gist => "gist",
            IndexMethod::Brin => "brin",
        }
    }
}

/// A foreign key from one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignKeySpec {
    /// Referenced table, optionally schema-qualified (`"schema.table"` is written as two parts).
    pub schema: Option<&'static str>,
    /// Referenced table.
    pub table: &'static str,
    /// Referenced column.
    pub column: &'static str,
    /// `ON DELETE` action.
    pub on_delete: OnDelete,
}

impl ForeignKeySpec {
    /// No target; generated code ends with `..ForeignKeySpec::DEFAULT`.
    pub const DEFAULT: ForeignKeySpec = ForeignKeySpec {
        schema: None,
        table: "",
        column: "",
        on_delete: OnDelete::NoAction,
    };
}

/// `ON DELETE` actions of a foreign key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// `NO ACTION`, the default.
    NoAction,
    /// `RESTRICT`.
    Restrict,
    /// `CASCADE`.
    Cascade,
    /// `SET NULL`.
    SetNull,
}

impl OnDelete {
    /// The SQL words.
    pub fn as_sql(self) -> &'static str {
        match self {
            OnDelete::NoAction => "NO ACTION",
            OnDelete::Restrict => "RESTRICT",
            OnDelete::Cascade => "CASCADE",
            OnDelete::SetNull => "SET NULL",
        }
    }
}

/// A CHECK constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSpec {
    /// The constraint name; `None` lets pgevolve name it.
    pub name: Option<&'static str>,
    /// The column it was declared on, for field-level checks.
    pub column: Option<&'static str>,
    /// The boolean SQL expression.
    pub expr: &'static str,
}

impl CheckSpec {
    /// An unnamed struct-level check with no expression; generated code ends with
    /// `..CheckSpec::DEFAULT`.
    pub const DEFAULT: CheckSpec = CheckSpec {
        name: None,
        column: None,
        expr: "",
    };
}
