-- INSERT of a new user with a mixed-case email (the old build's write: no email_normalized).
\set n random(1, 1000000000)
INSERT INTO users (name, email) VALUES ('pgbench ' || :client_id, 'PgBench.' || :client_id || '.' || :n || '@Example.COM');
