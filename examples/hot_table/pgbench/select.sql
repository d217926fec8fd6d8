-- SELECT by random id (the old build's read). pgbench -D rows=<rows in users>
\set id random(1, :rows)
SELECT id, name, email, created_at FROM users WHERE id = :id;
