DROP TABLE twice_workflow_signals;
