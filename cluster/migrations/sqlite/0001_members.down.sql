DROP TABLE twice_members;
