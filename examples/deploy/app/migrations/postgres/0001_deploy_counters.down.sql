DROP TABLE deploy_counters;
