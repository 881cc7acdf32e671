DROP TABLE twice_cron;
