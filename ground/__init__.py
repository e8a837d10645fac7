"""The ground floor: what every package shares and which imports nothing else of ours.

Errors, child processes, host facts, quiet output, targets, tensor specs and the model
bundle, per-op timing types, the FX-node keys on canonical ONNX nodes.
"""
