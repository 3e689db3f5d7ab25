"""LLaVA tooling out: `export` writes a trained model as a transformers `LlavaForConditionalGeneration` directory.
(LLaVA directories in, as a recipe's start, are read by `aullava.model.llava_checkpoint`: building the model's
parts is the model's business, and this package sits above the model.)"""
