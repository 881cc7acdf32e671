DROP TABLE IF EXISTS twice_flow_starts;
