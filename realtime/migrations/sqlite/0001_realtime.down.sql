DROP TABLE twice_realtime_messages;
DROP TABLE twice_realtime_rooms;
