"""logitls: a language server that shows a causal language model's next-token probabilities."""

__version__ = "0.1.0"
