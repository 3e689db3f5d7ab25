"""Training: the YAML recipe, the collator and Trainer, and the vision stage that runs before the LLM stage."""
