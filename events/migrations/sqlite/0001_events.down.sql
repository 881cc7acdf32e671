DROP TABLE twice_event_dead;
DROP TABLE twice_event_offsets;
DROP TABLE twice_event_groups;
DROP TABLE twice_events;
