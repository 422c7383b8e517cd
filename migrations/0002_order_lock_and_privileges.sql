-- Tidings 0002: delivery waits only for publishers, and the functions are the only way in.
--
-- 1. Every transaction that takes an event id first holds a shared transaction-level advisory
--    lock (key 0x74696469_6e677302, "tidings" + 2). At a hole the listener waits only for the
--    holders of that lock — transactions that took (or are about to take) an event id and are
--    still open — never for unrelated transactions of this or another database.
-- 2. Roles: tidings_publisher (publish from SQL and triggers), tidings_reader (read the log),
--    tidings_gateway (what `tidings serve` needs). All NOLOGIN: grant them to login roles.
--    The functions are SECURITY DEFINER with a fixed search_path; PUBLIC keeps no right on the
--    schema's tables, sequence or functions, so nobody can insert an id, take ids outside the
--    protocol or change the sequence without being its owner.
--
-- Creating the roles needs CREATEROLE (or a superuser) the first time, in any database of the
-- cluster; where a DBA created them beforehand, it does not.

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['tidings_publisher', 'tidings_reader', 'tidings_gateway'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Another database of the cluster is being migrated at the same moment.
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

-- Takes `count` event ids for the caller's transaction, in order: its transaction id first,
-- then the shared order lock, then the ids (see DeliveryOrder.swift). The gateway's REST
-- publish uses it; SQL publishers go through tidings.publish.
CREATE FUNCTION tidings.take_event_ids(count integer) RETURNS bigint[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF count IS NULL OR count < 1 OR count > 100000 THEN
        RAISE EXCEPTION 'tidings.take_event_ids: count must be 1-100000, got %', count
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_current_xact_id();
    PERFORM pg_advisory_xact_lock_shared(8388346184940876546);
    SELECT array_agg(nextval('tidings.events_id_seq') ORDER BY n) INTO ids FROM generate_series(1, count) AS n;
    RETURN ids;
END
$$;

CREATE OR REPLACE FUNCTION tidings.publish_json(targets text[], event text, data json) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    -- The transaction id, then the order lock, then the event id: the listener relies on it.
    PERFORM pg_current_xact_id();
    PERFORM pg_advisory_xact_lock_shared(8388346184940876546);
    new_id := nextval('tidings.events_id_seq');
    INSERT INTO tidings.events (id, targets, event, data)
    VALUES (new_id, unique_targets, publish_json.event, coalesce(publish_json.data, 'null'::json));
    RETURN new_id;
END
$$;

ALTER FUNCTION tidings.publish(text[], text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tidings.publish(text, text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
-- row_event runs as its owner too: the table's owner needs no right on tidings.events.
ALTER FUNCTION tidings.row_event() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tidings.wakeup() SET search_path = pg_catalog, pg_temp;

-- Nothing for PUBLIC.
REVOKE ALL ON ALL TABLES IN SCHEMA tidings FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tidings FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tidings FROM PUBLIC;
REVOKE ALL ON SCHEMA tidings FROM PUBLIC;

GRANT USAGE ON SCHEMA tidings TO tidings_publisher, tidings_reader, tidings_gateway;

-- Publishing from SQL: the two publish functions and the trigger function (CREATE TRIGGER
-- needs EXECUTE on it; the domain table's TRIGGER right is the DBA's to give).
GRANT EXECUTE ON FUNCTION tidings.publish(text, text, jsonb), tidings.publish(text[], text, jsonb),
    tidings.row_event() TO tidings_publisher;

-- Reading the log and the delivery state; never tickets or idempotency keys.
GRANT SELECT ON tidings.events, tidings.state, tidings.settings, tidings.schema_migrations TO tidings_reader;

-- The gateway: publishes (ids only through take_event_ids), replays, prunes, keeps tickets and
-- idempotency keys, records the delivery horizon, writes the wake-up setting.
GRANT SELECT, INSERT, DELETE ON tidings.events TO tidings_gateway;
GRANT SELECT, INSERT, UPDATE, DELETE ON tidings.idempotency_keys, tidings.tickets TO tidings_gateway;
GRANT SELECT, UPDATE ON tidings.state, tidings.settings TO tidings_gateway;
GRANT SELECT ON tidings.schema_migrations TO tidings_gateway;
GRANT SELECT ON SEQUENCE tidings.events_id_seq TO tidings_gateway;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tidings TO tidings_gateway;
