-- Tidings 0004: presence — how many streams are open per user and topic, over every gateway.
--
-- Each gateway (an instance: one `tidings serve` process, a random id per start) reports what
-- its event bus holds every report interval (2 s): a heartbeat on its tidings.instances row,
-- and only the tidings.presence rows that changed since its last report, in one statement. A
-- gateway counts as live while its last report is younger than three of its intervals; the
-- presence endpoints sum the rows of live gateways only, so a killed one drops out within three
-- intervals. A gateway that stops gracefully deletes its instance row (its presence rows go
-- with it); the rows of one that stayed silent for 60 intervals are deleted by the others.

CREATE TABLE tidings.instances (
    instance uuid PRIMARY KEY,
    reported_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    report_interval interval NOT NULL CHECK (report_interval > interval '0')
);

-- Open streams of one instance: per target (user:<id> or topic:<name>) and user. A user's own
-- target has one row, user_id being that user. The endpoints read one target of each live
-- instance through the primary key, so a report maintains no other index.
CREATE TABLE tidings.presence (
    instance uuid NOT NULL REFERENCES tidings.instances ON DELETE CASCADE,
    target text NOT NULL,
    user_id text NOT NULL,
    connections integer NOT NULL CHECK (connections > 0),
    PRIMARY KEY (instance, target, user_id)
);

REVOKE ALL ON tidings.instances, tidings.presence FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON tidings.instances, tidings.presence TO tidings_gateway;
