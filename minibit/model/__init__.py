"""The BitNet transformer: config (architectures), layers, forward pass, and the Model object."""

from .config import Config, from_hf_config
from .transformer import Layer, Transformer
from .model import Model, build_from_hf

__all__ = ["Config", "from_hf_config", "Layer", "Transformer", "Model", "build_from_hf"]
