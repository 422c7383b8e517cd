-- Tidings: the durable event log and the SQL publishing API.
--
-- Applied by `tidings migrate` (each file once, in order, in one transaction). Never edit a file
-- that has been applied anywhere: add a new numbered file instead.

CREATE SCHEMA IF NOT EXISTS tidings;

-- Gateway-controlled settings.
--   wakeup: 'notify' (default) makes every statement that stores events send one
--           NOTIFY tidings_wakeup (payload ''); 'poll' sends none (the gateways poll).
--           Written by the gateway at start from --wakeup; all gateways sharing a database
--           should use the same mode (the last one started wins).
CREATE TABLE tidings.settings (
    name text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO tidings.settings (name, value) VALUES ('wakeup', 'notify');

-- Counters shared by the gateways.
--   settled_through: every id at or below it is committed or will never be (written by the
--                    listeners as they deliver; a starting gateway begins there).
--   pruned_through:  every event at or below it has been pruned (retention).
CREATE TABLE tidings.state (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO tidings.state (name, value) VALUES ('settled_through', 0), ('pruned_through', 0);

-- Event ids. CACHE 1 (the default) matters: ids are handed out in the order they are asked for.
CREATE SEQUENCE tidings.events_id_seq AS bigint MINVALUE 1 NO CYCLE CACHE 1;

-- The durable log: one row per event, whatever the number of targets.
--
-- Delivery order: a publisher always takes its transaction id (pg_current_xact_id()) BEFORE it
-- takes an event id from the sequence. A listener that sees a hole below a visible id then knows
-- that whatever may still fill the hole belongs to a transaction that already had its id and was
-- still open when it looked (pg_locks), and waits for those to end (see DeliveryOrder.swift).
CREATE TABLE tidings.events (
    id bigint PRIMARY KEY,
    targets text[] NOT NULL CHECK (cardinality(targets) >= 1),
    event text NOT NULL,
    -- json, not jsonb: the text of a REST publish is kept byte for byte.
    data json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER SEQUENCE tidings.events_id_seq OWNED BY tidings.events.id;

-- Replay by target: targets && ARRAY[…].
CREATE INDEX events_targets_idx ON tidings.events USING gin (targets);
-- Retention: the highest expired id, and pruning.
CREATE INDEX events_created_at_idx ON tidings.events (created_at);

-- Idempotency keys, per publisher, kept for the retention window.
CREATE TABLE tidings.idempotency_keys (
    publisher text NOT NULL,
    key text NOT NULL,
    event_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (publisher, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON tidings.idempotency_keys (created_at);

-- One-time subscribe tickets (valid on any gateway, once). Only a SHA-256 of the ticket is kept.
CREATE TABLE tidings.tickets (
    digest bytea PRIMARY KEY,
    subject text NOT NULL,
    topics text[] NOT NULL,
    token_expires_at timestamptz,
    expires_at timestamptz NOT NULL
);
CREATE INDEX tickets_expires_at_idx ON tidings.tickets (expires_at);

-- Wake-up: one NOTIFY per statement that stores events (PostgreSQL merges identical
-- notifications of one transaction, so one per transaction). The payload is empty: the listener
-- reads the rows, so no event is bounded by NOTIFY's 8,000 bytes.
CREATE FUNCTION tidings.wakeup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce((SELECT value FROM tidings.settings WHERE name = 'wakeup'), 'notify') <> 'poll' THEN
        PERFORM pg_notify('tidings_wakeup', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_wakeup AFTER INSERT ON tidings.events
    FOR EACH STATEMENT EXECUTE FUNCTION tidings.wakeup();

-- Publishes one event inside the caller's transaction; it is delivered if and only if that
-- transaction commits. Targets are validated and de-duplicated; `data` is kept as given.
CREATE FUNCTION tidings.publish_json(targets text[], event text, data json) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
    one text;
    unique_targets text[] := '{}';
BEGIN
    IF targets IS NULL OR cardinality(targets) = 0 THEN
        RAISE EXCEPTION 'tidings.publish: no target: give at least one user:<id> or topic:<name>'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(targets) > 1000 THEN
        RAISE EXCEPTION 'tidings.publish: % targets: an event has at most 1000', cardinality(targets)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH one IN ARRAY targets LOOP
        IF one IS NULL OR one !~ '^(user|topic):[A-Za-z0-9._@:-]{1,128}$' THEN
            RAISE EXCEPTION 'tidings.publish: invalid target "%": must be user:<id> or topic:<name>, the id or name 1-128 characters of A-Z a-z 0-9 . _ @ : -',
                coalesce(left(one, 160), 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT one = ANY (unique_targets) THEN
            unique_targets := unique_targets || one;
        END IF;
    END LOOP;
    IF publish_json.event IS NULL OR publish_json.event !~ '^[A-Za-z0-9._:-]{1,64}$' THEN
        RAISE EXCEPTION 'tidings.publish: invalid event type "%": must be 1-64 characters of A-Z a-z 0-9 . _ : -',
            coalesce(left(publish_json.event, 80), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The transaction id first, then the event id: the listener's ordering relies on it.
    PERFORM pg_current_xact_id();
    new_id := nextval('tidings.events_id_seq');
    INSERT INTO tidings.events (id, targets, event, data)
    VALUES (new_id, unique_targets, publish_json.event, coalesce(publish_json.data, 'null'::json));
    RETURN new_id;
END
$$;

CREATE FUNCTION tidings.publish(targets text[], event text, data jsonb) RETURNS bigint
LANGUAGE sql AS $$
    SELECT tidings.publish_json(targets, event, data::json)
$$;

CREATE FUNCTION tidings.publish(target text, event text, data jsonb) RETURNS bigint
LANGUAGE sql AS $$
    SELECT tidings.publish_json(ARRAY[target], event, data::json)
$$;

-- Trigger function for domain tables:
--   CREATE TRIGGER orders_tidings AFTER INSERT OR UPDATE OR DELETE ON orders
--       FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'order');
-- publishes order.created / order.updated / order.deleted to user:<user_id> with the row (NEW,
-- or OLD for a delete) as data. An update that moves the row to another user tells both users.
-- A row whose user column is NULL publishes nothing.
CREATE FUNCTION tidings.row_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    user_column text;
    new_row json;
    old_row json;
    new_user text;
    old_user text;
    row_targets text[] := '{}';
    kind text;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'tidings.row_event must be an AFTER … FOR EACH ROW trigger (on %.%)', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF TG_NARGS <> 2 THEN
        RAISE EXCEPTION 'tidings.row_event(user_column, event_prefix) takes two arguments, % given (on %.%)',
            TG_NARGS, TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    user_column := TG_ARGV[0];
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_row := row_to_json(NEW);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_row := row_to_json(OLD);
    END IF;
    IF NOT (coalesce(new_row, old_row)::jsonb ? user_column) THEN
        RAISE EXCEPTION 'tidings.row_event: table %.% has no column "%"', TG_TABLE_SCHEMA, TG_TABLE_NAME, user_column;
    END IF;
    new_user := new_row ->> user_column;
    old_user := old_row ->> user_column;
    IF new_user IS NOT NULL THEN
        row_targets := row_targets || ('user:' || new_user);
    END IF;
    IF old_user IS NOT NULL AND old_user IS DISTINCT FROM new_user THEN
        row_targets := row_targets || ('user:' || old_user);
    END IF;
    IF cardinality(row_targets) = 0 THEN
        RETURN NULL;
    END IF;
    kind := CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END;
    PERFORM tidings.publish_json(row_targets, TG_ARGV[1] || '.' || kind, coalesce(new_row, old_row));
    RETURN NULL;
END
$$;
