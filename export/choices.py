"""Values of idl-export's choice settings that belong to torch code, kept here without torch: the command
line reads them (``idl-export --help`` and its install hint run where torch is not installed)."""

# how --to-onnx converts a package's PyTorch weights (export.convert): bioimageio.core's converter,
# idl's export, or the first that passes the checks
METHODS = ("auto", "bioimageio", "idl")
