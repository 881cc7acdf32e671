DROP TABLE twice_workflow_steps;
DROP TABLE twice_workflows;
