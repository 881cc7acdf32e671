-- PostgreSQL carries bus signals with LISTEN/NOTIFY and needs no table.
SELECT 1;
