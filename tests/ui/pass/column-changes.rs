// NOT NULL on and off and a changed default, and the spec the derive builds from them.
use pgevolve::{ColumnSpec, Evolve, Fill, SetNotNull};

#[derive(Evolve)]
#[evolve(table = "tickets")]
pub struct Ticket {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(set_not_null, backfill = "'p' || id")]
    pub priority: String,
    #[evolve(set_not_null)]
    pub total: i64,
    #[evolve(drop_not_null)]
    pub assignee: Option<String>,
    #[evolve(set_default = "'open'", set_not_null, backfill = "'open'")]
    pub state: String,
}

fn main() {
    let columns = Ticket::MODEL.columns;
    assert_eq!(
        columns[1],
        ColumnSpec {
            field: "priority",
            name: "priority",
            sql_type: "text",
            set_not_null: Some(SetNotNull {
                backfill: Some("'p' || id"),
            }),
            ..ColumnSpec::DEFAULT
        }
    );
    // With `set_not_null`, `backfill` fills the NULL rows: no new column is filled.
    assert_eq!(columns[1].fill, Fill::None);
    assert_eq!(columns[2].set_not_null, Some(SetNotNull::DEFAULT));
    assert!(columns[3].drop_not_null && columns[3].nullable);
    assert_eq!(columns[4].set_default, Some("'open'"));
}
