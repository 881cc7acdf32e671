DROP TABLE twice_leases;
