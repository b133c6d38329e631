"""Values of idl-train's choice settings that belong to torch code, kept here without torch: the command
line reads them (``idl-train --help`` and its install hint run where torch is not installed)."""

# mixed precision on a CUDA GPU (train.accelerate): bf16 where the GPU has it, else fp16; off
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
