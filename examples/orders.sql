-- A demo domain table whose changes Tidings publishes: every insert, update and delete of an
-- order becomes order.created / order.updated / order.deleted for user:<user_id>, with the row
-- as data, delivered if and only if the transaction commits.
--
--   tidings migrate --database-url "$DATABASE_URL"
--   psql "$DATABASE_URL" -f examples/orders.sql
--
-- Safe to run again: the table, trigger and demo rows are created once.

CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL,
    status text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'paid', 'shipped', 'delivered', 'cancelled')),
    total numeric(12, 2) NOT NULL CHECK (total >= 0),
    currency text NOT NULL DEFAULT 'EUR',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS orders_user_id_idx ON orders (user_id);

CREATE OR REPLACE TRIGGER orders_tidings
    AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'order');

-- Two demo orders for user 42 (only when the table is empty).
INSERT INTO orders (user_id, status, total)
SELECT * FROM (VALUES (42::bigint, 'new', 19.90::numeric), (42, 'paid', 250.00)) AS demo(user_id, status, total)
WHERE NOT EXISTS (SELECT 1 FROM orders);

-- Try it (with `tidings tail --token <token for sub 42>` running):
--   UPDATE orders SET status = 'shipped', updated_at = now() WHERE id = 1;
--   DELETE FROM orders WHERE id = 2;
--   SELECT tidings.publish('user:42', 'note', '{"text": "hello from SQL"}');
--   NOTIFY tidings, '{"user": "42", "event": "maintenance", "data": {"in": "5m"}}';
