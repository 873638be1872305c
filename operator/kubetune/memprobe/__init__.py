"""Measure what real Hugging Face models hold in memory, to check the memory model against.

Imports torch, transformers and peft (the `test` or `trainer` extra); the planner never imports this.
"""
