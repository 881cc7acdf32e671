-- Each chat message's position in the realtime hub's room, which a page resumes from.
ALTER TABLE shop_chat ADD COLUMN room_offset BIGINT NOT NULL DEFAULT 0;
ALTER TABLE shop_chat ADD COLUMN room_epoch  TEXT   NOT NULL DEFAULT '';
