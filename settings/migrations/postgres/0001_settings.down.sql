DROP TABLE twice_settings_revs;
DROP TABLE twice_settings_history;
DROP TABLE twice_settings;
