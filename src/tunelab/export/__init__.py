"""`tunelab export`: a run written where people run models, each file checked against the run.

- `merge` (`--merge`): an adapter folded into its base, a plain transformers directory.
- `gguf` (`--format gguf [--quant ...]`): llama.cpp / Ollama, with a Modelfile.
- `onnx` (`--format onnx [--int8]`): ONNX Runtime on CPU.
"""
from tunelab.export.merge import ExportResult, run

__all__ = ["ExportResult", "run"]
