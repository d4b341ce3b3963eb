"""The BitNet transformer: config (architectures), layers, forward pass, and the Model object.

Nothing here knows a checkpoint's tensor names: the loaders in ``minibit.io`` read a file
and hand the weights to ``minibit.io.assemble``."""

from .config import Config, from_hf_config
from .transformer import Layer, Transformer
from .model import Model

__all__ = ["Config", "from_hf_config", "Layer", "Transformer", "Model"]
