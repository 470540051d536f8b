"""glan-local: GLAN instruction-tuning data from a local vLLM teacher."""
__version__ = "0.1.0"
