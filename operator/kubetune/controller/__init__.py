"""The kopf operator: plans FineTuneJobs against the cluster's GPU nodes and runs them as DeepSpeed Jobs."""
