ALTER TABLE twice_members DROP COLUMN report;
