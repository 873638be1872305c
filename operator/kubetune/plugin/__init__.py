"""`kubectl kubetune`: the operator's planner against the live cluster, and a FineTuneJob on one screen."""
