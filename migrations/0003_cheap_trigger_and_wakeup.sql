-- Tidings 0003: a trigger a busy table can afford, and a wake-up that does not serialise commits.
--
-- 1. Wake-up. Until now every transaction that stored events sent NOTIFY tidings_wakeup. A
--    committing transaction that notified holds PostgreSQL's notification lock through its
--    commit, so under load their commits and fsyncs went one at a time (a busy table with
--    row_event kept 0.15x of its write rate). Now a publisher notifies only when a listener is
--    asleep. A listener with nothing to do takes the *sleep lock* (a shared session-level
--    advisory lock, key "tidings" + 3) before it waits for a notification, and lets it go when
--    it wakes; while events flow it reads without being told. A publisher, after it holds the
--    order lock and has its ids, tries the sleep lock exclusively for an instant: if that
--    fails, a listener may be asleep and it notifies. The race between a listener falling
--    asleep and a publisher deciding not to notify is closed by the order lock: a listener
--    holds the sleep lock first, then looks for holders of the order lock, then reads; it only
--    sleeps when there was none and nothing new (see ListenerLoop.swift). A listener that dies
--    asleep loses its session and with it the lock.
-- 2. row_event does its own insert (one SECURITY DEFINER call per row instead of two), builds
--    the row's JSON once (an update also builds the old row's, to compare the user), and looks
--    the user column up in the catalogue only when the row has no user (the old check converted
--    every row to jsonb).
-- 3. An event row costs two index inserts instead of three, and no deferred ones: created_at is
--    no longer indexed (retention finds the expired prefix of the id order by walking the
--    primary key from where pruning stopped), and the targets' GIN index takes each insert at
--    once instead of through its pending list (whose clean-up fell on one unlucky publisher).

DROP TRIGGER events_wakeup ON tidings.events;
DROP FUNCTION tidings.wakeup();
-- The wake-up mode is now each gateway's own (a polling gateway never sleeps, so nobody
-- notifies it): the shared setting, the table's only row, is gone.
DROP TABLE tidings.settings;

DROP INDEX tidings.events_created_at_idx;
ALTER INDEX tidings.events_targets_idx SET (fastupdate = off);
SELECT gin_clean_pending_list('tidings.events_targets_idx');

CREATE OR REPLACE FUNCTION tidings.take_event_ids(count integer) RETURNS bigint[]
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
    -- Wake a sleeping listener (after the order lock: see the head of this file).
    IF pg_try_advisory_lock(8388346184940876547) THEN
        PERFORM pg_advisory_unlock(8388346184940876547);
    ELSE
        PERFORM pg_notify('tidings_wakeup', '');
    END IF;
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
    IF pg_try_advisory_lock(8388346184940876547) THEN
        PERFORM pg_advisory_unlock(8388346184940876547);
    ELSE
        PERFORM pg_notify('tidings_wakeup', '');
    END IF;
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION tidings.row_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    user_column text;
    row_data json;
    new_user text;
    old_user text;
    row_targets text[];
    one text;
    event_type text;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'tidings.row_event must be an AFTER … FOR EACH ROW trigger (on %.%)', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF TG_NARGS <> 2 THEN
        RAISE EXCEPTION 'tidings.row_event(user_column, event_prefix) takes two arguments, % given (on %.%)',
            TG_NARGS, TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    user_column := TG_ARGV[0];
    -- The data is the row (NEW, or OLD for a delete); an update also reads OLD's user.
    IF TG_OP = 'DELETE' THEN
        row_data := row_to_json(OLD);
        old_user := row_data ->> user_column;
        event_type := TG_ARGV[1] || '.deleted';
    ELSE
        row_data := row_to_json(NEW);
        new_user := row_data ->> user_column;
        IF TG_OP = 'UPDATE' THEN
            old_user := row_to_json(OLD) ->> user_column;
            event_type := TG_ARGV[1] || '.updated';
        ELSE
            event_type := TG_ARGV[1] || '.created';
        END IF;
    END IF;
    IF new_user IS NULL AND old_user IS NULL THEN
        -- No user: publish nothing, unless the column does not exist at all.
        IF NOT EXISTS (
            SELECT FROM pg_attribute
            WHERE attrelid = TG_RELID AND attname = user_column AND attnum > 0 AND NOT attisdropped
        ) THEN
            RAISE EXCEPTION 'tidings.row_event: table %.% has no column "%"', TG_TABLE_SCHEMA, TG_TABLE_NAME, user_column;
        END IF;
        RETURN NULL;
    END IF;
    IF new_user IS NULL THEN
        row_targets := ARRAY['user:' || old_user];
    ELSIF old_user IS NULL OR old_user = new_user THEN
        row_targets := ARRAY['user:' || new_user];
    ELSE
        -- A move tells the new user and the old one.
        row_targets := ARRAY['user:' || new_user, 'user:' || old_user];
    END IF;
    FOREACH one IN ARRAY row_targets LOOP
        IF one !~ '^user:[A-Za-z0-9._@:-]{1,128}$' THEN
            RAISE EXCEPTION 'tidings.publish: invalid target "%": must be user:<id> or topic:<name>, the id or name 1-128 characters of A-Z a-z 0-9 . _ @ : -',
                left(one, 160)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF event_type !~ '^[A-Za-z0-9._:-]{1,64}$' THEN
        RAISE EXCEPTION 'tidings.publish: invalid event type "%": must be 1-64 characters of A-Z a-z 0-9 . _ : -',
            left(event_type, 80)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The row change already gave the transaction its id; then the order lock, then the event id.
    PERFORM pg_advisory_xact_lock_shared(8388346184940876546);
    INSERT INTO tidings.events (id, targets, event, data)
    VALUES (nextval('tidings.events_id_seq'), row_targets, event_type, row_data);
    IF pg_try_advisory_lock(8388346184940876547) THEN
        PERFORM pg_advisory_unlock(8388346184940876547);
    ELSE
        PERFORM pg_notify('tidings_wakeup', '');
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION tidings.take_event_ids(integer), tidings.publish_json(text[], text, json), tidings.row_event() FROM PUBLIC;
