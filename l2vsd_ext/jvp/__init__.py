"""Forward-mode JVP engine for the LoRA score model (see docs/jvp.md)."""
from .engine import lora_jvp

__all__ = ["lora_jvp"]
