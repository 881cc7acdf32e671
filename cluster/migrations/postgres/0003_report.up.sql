-- What the instance last told the others about itself (its health checks' latest results,
-- the HTTP requests it counted), as JSON written by each heartbeat (see cluster.Report).
-- NULL for an instance that reports nothing.
ALTER TABLE twice_members ADD COLUMN report text;
