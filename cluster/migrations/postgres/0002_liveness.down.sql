ALTER TABLE twice_members DROP COLUMN live_key;
