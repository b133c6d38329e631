"""What every part of the inference side shares: user-facing errors, axes, the model description
stored in ONNX files, intensity normalization and the project folder layout."""
