"""kubetune: plans and runs distributed LLM fine-tuning on the GPUs a Kubernetes cluster has."""
