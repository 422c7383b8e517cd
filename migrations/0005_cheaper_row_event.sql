-- Tidings 0005: row_event and publish_json at a little over half the server work per event.
--
-- Measured per updated row (instructions the server runs for the trigger, counted under
-- valgrind, the same every run; README "What a trigger costs"), row_event cost 290,000
-- instructions where a plain outbox row costs 64,000. Two kinds of step took much of the
-- difference:
--
-- 1. The checks of the target and the event type: 117,000 of the 290,000. A regular expression
--    with a bounded repetition ({1,128}, {1,64}) is expanded into as many states, and PostgreSQL
--    builds the states it visits anew for every match. The same test, written as "one or more
--    of these characters" (a handful of states) plus a length limit, gives the same answer for
--    every string and costs 6,000. The error messages, SQLSTATE and order of the checks (each
--    target in turn, new user first, then the event type) are today's: on a failure the targets
--    are checked again with the old expressions, which also pick the one to name.
-- 2. PERFORM runs its SELECT through a whole executor (start, run, end): about 9,000 a time, for
--    the order lock and for letting the sleep lock go. An assignment or an IF condition is
--    evaluated as a plain expression. The order of the steps stays as the listener needs it
--    (the transaction's id, then the order lock, then the event id, then the wake test; see the
--    head of 0003): a CASE evaluates its conditions one after the other, which SQL promises for
--    CASE and not for the operands of AND or OR.
--
-- Smaller: the three argument checks are one test (the error tells them apart, as before), and an
-- update is tested first. row_event now costs 164,000 instructions per row (the outbox row
-- 64,000). What remains is the event row itself (its insert, its two indexes and its CHECK, about
-- 100,000), the row's JSON, the old row's JSON to compare the user (14,000), the fixed search_path
-- (9,500) and the locks.
--
-- Kept as they were: the events, targets and data (the same row_to_json text), what a row without
-- a user or a missing column does, the security: SECURITY DEFINER with search_path fixed to
-- pg_catalog, pg_temp. Without that clause a caller's search_path could pick the functions and
-- operators (=, ||, ->>, !~) this body names without a schema; qualifying every one of them would
-- save the 9,500 but leave the function safe only as long as nobody ever adds an unqualified one.
-- take_event_ids runs once per REST batch, not per row, and is left as it is.

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
        -- '^(user|topic):[A-Za-z0-9._@:-]{1,128}$' (see the head of this file): in a target that
        -- matches, the first colon ends user: or topic:, so what follows it is the id or name.
        IF one IS NULL OR one !~ '^(user|topic):[A-Za-z0-9._@:-]+$' OR length(one) - strpos(one, ':') > 128 THEN
            RAISE EXCEPTION 'tidings.publish: invalid target "%": must be user:<id> or topic:<name>, the id or name 1-128 characters of A-Z a-z 0-9 . _ @ : -',
                coalesce(left(one, 160), 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT one = ANY (unique_targets) THEN
            unique_targets := unique_targets || one;
        END IF;
    END LOOP;
    IF publish_json.event IS NULL OR length(publish_json.event) > 64 OR publish_json.event !~ '^[A-Za-z0-9._:-]+$' THEN
        RAISE EXCEPTION 'tidings.publish: invalid event type "%": must be 1-64 characters of A-Z a-z 0-9 . _ : -',
            coalesce(left(publish_json.event, 80), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The transaction id, then the order lock, then the event id, in this order: the listener
    -- relies on it. Neither of the first two is ever NULL; CASE runs them one after the other.
    new_id := CASE WHEN pg_current_xact_id() IS NULL THEN NULL
                   WHEN pg_advisory_xact_lock_shared(8388346184940876546) IS NULL THEN NULL
                   ELSE nextval('tidings.events_id_seq') END;
    INSERT INTO tidings.events (id, targets, event, data)
    VALUES (new_id, unique_targets, publish_json.event, coalesce(publish_json.data, 'null'::json));
    -- Wake a sleeping listener: notify unless the sleep lock can be had (and let go) at once.
    IF NOT (CASE WHEN pg_try_advisory_lock(8388346184940876547) THEN pg_advisory_unlock(8388346184940876547) ELSE false END) THEN
        PERFORM pg_notify('tidings_wakeup', '');
    END IF;
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION tidings.row_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    row_data json;
    new_user text;
    old_user text;
    event_type text;
    row_targets text[];
    one text;
    new_id bigint;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' OR TG_NARGS <> 2 THEN
        IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
            RAISE EXCEPTION 'tidings.row_event must be an AFTER … FOR EACH ROW trigger (on %.%)', TG_TABLE_SCHEMA, TG_TABLE_NAME;
        END IF;
        RAISE EXCEPTION 'tidings.row_event(user_column, event_prefix) takes two arguments, % given (on %.%)',
            TG_NARGS, TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    -- The data is the row (NEW, or OLD for a delete); an update also reads OLD's user.
    IF TG_OP = 'UPDATE' THEN
        row_data := row_to_json(NEW);
        new_user := row_data ->> TG_ARGV[0];
        old_user := row_to_json(OLD) ->> TG_ARGV[0];
        event_type := TG_ARGV[1] || '.updated';
    ELSIF TG_OP = 'INSERT' THEN
        row_data := row_to_json(NEW);
        new_user := row_data ->> TG_ARGV[0];
        event_type := TG_ARGV[1] || '.created';
    ELSE
        row_data := row_to_json(OLD);
        old_user := row_data ->> TG_ARGV[0];
        event_type := TG_ARGV[1] || '.deleted';
    END IF;
    IF new_user IS NULL THEN
        IF old_user IS NULL THEN
            -- No user: publish nothing, unless the column does not exist at all.
            IF NOT EXISTS (
                SELECT FROM pg_attribute
                WHERE attrelid = TG_RELID AND attname = TG_ARGV[0] AND attnum > 0 AND NOT attisdropped
            ) THEN
                RAISE EXCEPTION 'tidings.row_event: table %.% has no column "%"', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0];
            END IF;
            RETURN NULL;
        END IF;
        -- A delete, or an update that took the row from its user: tell the old user.
        new_user := old_user;
    END IF;
    IF new_user = old_user OR old_user IS NULL THEN
        row_targets := ARRAY['user:' || new_user];
    ELSE
        -- A move tells the new user and the old one.
        row_targets := ARRAY['user:' || new_user, 'user:' || old_user];
    END IF;
    -- Each target must match '^user:[A-Za-z0-9._@:-]{1,128}$' and the event type
    -- '^[A-Za-z0-9._:-]{1,64}$'; the same tests without the bounded repetitions (see the head of
    -- this file). On a failure, the old expressions name the first target that fails, in order.
    IF length(new_user) > 128 OR new_user !~ '^[A-Za-z0-9._@:-]+$'
        OR cardinality(row_targets) = 2 AND (length(old_user) > 128 OR old_user !~ '^[A-Za-z0-9._@:-]+$')
        OR length(event_type) > 64 OR event_type !~ '^[A-Za-z0-9._:-]+$' THEN
        FOREACH one IN ARRAY row_targets LOOP
            IF one !~ '^user:[A-Za-z0-9._@:-]{1,128}$' THEN
                RAISE EXCEPTION 'tidings.publish: invalid target "%": must be user:<id> or topic:<name>, the id or name 1-128 characters of A-Z a-z 0-9 . _ @ : -',
                    left(one, 160)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        RAISE EXCEPTION 'tidings.publish: invalid event type "%": must be 1-64 characters of A-Z a-z 0-9 . _ : -',
            left(event_type, 80)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The row change already gave the transaction its id; then the order lock, then the event id
    -- (CASE runs them in this order; the lock's void result is never NULL).
    new_id := CASE WHEN pg_advisory_xact_lock_shared(8388346184940876546) IS NULL THEN NULL
                   ELSE nextval('tidings.events_id_seq') END;
    INSERT INTO tidings.events (id, targets, event, data) VALUES (new_id, row_targets, event_type, row_data);
    -- Wake a sleeping listener: notify unless the sleep lock can be had (and let go) at once.
    IF NOT (CASE WHEN pg_try_advisory_lock(8388346184940876547) THEN pg_advisory_unlock(8388346184940876547) ELSE false END) THEN
        PERFORM pg_notify('tidings_wakeup', '');
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION tidings.publish_json(text[], text, json), tidings.row_event() FROM PUBLIC;
