"""The objects a FineTuneJob owns, built as plain manifests from its spec, its plan and the operator's configuration: pure functions, no API calls."""
