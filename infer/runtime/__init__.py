"""Running networks: ONNX Runtime sessions, idl models and bioimage.io packages, their input/output
specification and bioimage.io pre- and post-processing."""
