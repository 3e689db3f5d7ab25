"""The model: configuration, the processor that lays out every sequence, the vision encoder → projector → LLM
module, and constrained generation of answers."""
