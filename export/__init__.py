"""Export trained models: ONNX graphs (deterministic and Monte Carlo) with embedded metadata."""
