"""The FineTuneJob API (kubetune.io/v1alpha1): pydantic models, the one source of the CRD schema."""
