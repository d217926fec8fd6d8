// Index and constraint attributes on fields and on the struct, and the spec they build.
use pgevolve::{CheckSpec, Evolve, ForeignKeySpec, IndexMethod, IndexSpec, OnDelete};

#[derive(Evolve)]
#[evolve(table = "posts")]
#[evolve(index(columns("author_id", "created_at"), include("title")))]
#[evolve(index(name = "posts_live_slug", columns("slug"), unique, where = "deleted_at IS NULL"))]
#[evolve(index(name = "posts_body_search", columns("body"), method = "gin"))]
#[evolve(check = "created_at > 0")]
#[evolve(check(name = "posts_dates", expr = "deleted_at IS NULL OR deleted_at >= created_at"))]
pub struct Post {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(references = "app.authors(id)", on_delete = "Set Null")]
    pub author_id: Option<i64>,
    #[evolve(references = "editors(id)")]
    pub editor_id: i64,
    #[evolve(unique)]
    pub slug: String,
    #[evolve(index(method = "hash"))]
    pub title: String,
    #[evolve(index, check = "length(body) < 100000", sql_type = "tsvector")]
    pub body: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

fn main() {
    let model = Post::MODEL;
    assert_eq!(
        model.indexes,
        &[
            IndexSpec {
                method: IndexMethod::Hash,
                columns: &["title"],
                ..IndexSpec::DEFAULT
            },
            IndexSpec {
                columns: &["body"],
                ..IndexSpec::DEFAULT
            },
            IndexSpec {
                columns: &["author_id", "created_at"],
                include: &["title"],
                ..IndexSpec::DEFAULT
            },
            IndexSpec {
                name: Some("posts_live_slug"),
                columns: &["slug"],
                unique: true,
                predicate: Some("deleted_at IS NULL"),
                ..IndexSpec::DEFAULT
            },
            IndexSpec {
                name: Some("posts_body_search"),
                columns: &["body"],
                method: IndexMethod::Gin,
                ..IndexSpec::DEFAULT
            },
        ]
    );
    assert_eq!(
        model.checks,
        &[
            CheckSpec {
                column: Some("body"),
                expr: "length(body) < 100000",
                ..CheckSpec::DEFAULT
            },
            CheckSpec {
                expr: "created_at > 0",
                ..CheckSpec::DEFAULT
            },
            CheckSpec {
                name: Some("posts_dates"),
                expr: "deleted_at IS NULL OR deleted_at >= created_at",
                ..CheckSpec::DEFAULT
            },
        ]
    );
    assert_eq!(
        model.column("author_id").unwrap().references,
        Some(ForeignKeySpec {
            schema: Some("app"),
            table: "authors",
            column: "id",
            on_delete: OnDelete::SetNull,
        })
    );
    assert_eq!(
        model.column("editor_id").unwrap().references,
        Some(ForeignKeySpec {
            table: "editors",
            column: "id",
            ..ForeignKeySpec::DEFAULT
        })
    );
    assert!(model.column("slug").unwrap().unique);
    assert!(!model.column("title").unwrap().unique);
}
