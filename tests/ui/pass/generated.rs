// Keys the database assigns: every integer width, `Option`s, a composite key with one
// generated part, a generated column that is not a key, and `insert_returning` on each.
use pgevolve::Evolve;

#[derive(Evolve, Debug)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key)]
    pub tenant_id: i32,
    #[evolve(primary_key, generated)]
    pub id: core::primitive::i64,
    #[evolve(generated)]
    pub number: Option<i32>,
    pub total: i64,
}

#[derive(Evolve, Debug)]
#[evolve(table = "tags")]
pub struct Tag {
    #[evolve(generated, primary_key, column = "tag_id")]
    pub id: i16,
    pub label: String,
}

async fn create(pool: &sqlx::PgPool) -> Result<(Order, Tag), pgevolve::Error> {
    let order = Order {
        tenant_id: 7,
        id: 0,
        number: None,
        total: 100,
    }
    .insert_returning(pool)
    .await?;
    let tag = Tag {
        id: 0,
        label: "new".into(),
    }
    .insert_returning(pool)
    .await?;
    Ok((order, tag))
}

fn main() {
    assert!(Order::MODEL.columns[1].generated);
    assert!(Order::MODEL.columns[2].generated);
    assert!(!Order::MODEL.columns[0].generated);
    assert!(Tag::MODEL.columns[0].generated);
    let _ = create;
}
