-- UPDATE of name by random id (the old build's write). pgbench -D rows=<rows in users>
\set id random(1, :rows)
UPDATE users SET name = 'pgbench ' || :client_id WHERE id = :id;
