//! Rewriting the server part of a `postgres://` URL.

use crate::Error;

/// `database_url` with its host and port replaced by `127.0.0.1:<port>`, keeping the scheme, the
/// user (and password), the database and the parameters.
pub(crate) fn with_port(database_url: &str, port: u16) -> Result<String, Error> {
    let bad_url = || Error::BadUrl(database_url.to_owned());
    let (scheme, rest) = database_url.split_once("://").ok_or_else(bad_url)?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let userinfo = match authority.rsplit_once('@') {
        Some((userinfo, _)) => format!("{userinfo}@"),
        None => String::new(),
    };
    Ok(format!("{scheme}://{userinfo}127.0.0.1:{port}{path}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_server_part_is_replaced_and_the_rest_kept() {
        assert_eq!(
            super::with_port("postgres://u:p@localhost:5432/db?sslmode=disable", 7000).unwrap(),
            "postgres://u:p@127.0.0.1:7000/db?sslmode=disable"
        );
        assert_eq!(
            super::with_port("postgresql://host/db", 1).unwrap(),
            "postgresql://127.0.0.1:1/db"
        );
        assert!(super::with_port("host=x", 1).is_err());
    }
}
