-- SQLite has no notifications: signals are rows that every instance polls for. There is one
-- writer at a time, so ids increase in commit order and a poller never skips a row.
CREATE TABLE twice_bus (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	service TEXT    NOT NULL,
	channel TEXT    NOT NULL,
	payload BLOB    NOT NULL,
	sender  TEXT    NOT NULL,
	at      INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec')*1000000 AS INTEGER))
);
CREATE INDEX twice_bus_service ON twice_bus (service, id);
CREATE INDEX twice_bus_at ON twice_bus (at);
