DROP TABLE twice_scs_sessions;
DROP TABLE twice_session_values;
DROP TABLE twice_sessions;
