"""Where models come from: real checkpoints made into plain folders (`checkpoints`: GGUF files,
the SmolLM2 package), and random ones built from a config (`random_models`)."""

from hybridpo.zoo.checkpoints import GGUF_SEP, MARKER, MODELS, PackagedModel, convert_gguf, get, models_home, packaged_file, resolve
from hybridpo.zoo.random_models import ARCHS, SIZES, Arch, Shape, init_model, random_config, random_model

__all__ = [
    "ARCHS", "GGUF_SEP", "MARKER", "MODELS", "SIZES", "Arch", "PackagedModel", "Shape", "convert_gguf", "get",
    "init_model", "models_home", "packaged_file", "random_config", "random_model", "resolve",
]
