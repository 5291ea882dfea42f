"""RLHF Studio: collect human feedback and run the InstructGPT loop."""

__version__ = "0.1.0"
