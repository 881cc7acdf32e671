DROP TABLE twice_idempotency;
