//! `users` (see `seed_users`) with an index or a unique constraint on `email`, for the index
//! tests.
#![allow(dead_code)]

pub mod indexed {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "users")]
    #[allow(dead_code)]
    pub struct User {
        #[evolve(primary_key, generated)]
        pub id: i64,
        pub name: String,
        #[evolve(index)]
        pub email: String,
    }
}

pub mod unique {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "users")]
    #[allow(dead_code)]
    pub struct User {
        #[evolve(primary_key, generated)]
        pub id: i64,
        pub name: String,
        #[evolve(unique)]
        pub email: String,
    }
}
