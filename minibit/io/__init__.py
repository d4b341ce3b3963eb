"""Loaders: HF snapshot directories (safetensors), GGUF files, and source resolution."""
