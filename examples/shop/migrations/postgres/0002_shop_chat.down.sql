ALTER TABLE shop_chat DROP COLUMN room_epoch;
ALTER TABLE shop_chat DROP COLUMN room_offset;
