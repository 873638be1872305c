"""What users watch: the Grafana dashboards the chart ships, generated from code."""
