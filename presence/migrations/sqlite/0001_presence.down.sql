DROP TABLE twice_presence_revs;
DROP TABLE twice_presence;
