"""The trainer that runs inside every training pod: DeepSpeed + PEFT + transformers, driven by the
trainer.json contract (kubetune.api.trainer_config). Imports torch; the operator never imports it."""
