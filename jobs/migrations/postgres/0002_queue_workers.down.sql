DROP TABLE twice_queue_workers;
