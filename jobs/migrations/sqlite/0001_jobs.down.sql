DROP TABLE twice_queues;
DROP TABLE twice_job_keys;
DROP TABLE twice_jobs;
