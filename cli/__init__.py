"""Command-line tools: idl-train, idl-predict, idl-export, idl-evaluate, idl-demo.

Each command lives in its own module; ``idl.cli.predict`` and ``idl.cli.evaluate`` never import torch.
"""
