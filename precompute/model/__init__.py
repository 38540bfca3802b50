"""One checkpoint in memory: loading it (:mod:`.load`) and finding its MLP neurons (:mod:`.sites`)."""

from precompute.model.load import (
    DeviceError,
    LoadedModel,
    ModelLoadError,
    load_checkpoint,
    resolve_device,
    resolve_dtype,
)
from precompute.model.sites import (
    MLPSite,
    UnsupportedModelError,
    count_parameters,
    find_mlp_sites,
    module_tree,
)

__all__ = [
    "DeviceError",
    "LoadedModel",
    "MLPSite",
    "ModelLoadError",
    "UnsupportedModelError",
    "count_parameters",
    "find_mlp_sites",
    "load_checkpoint",
    "module_tree",
    "resolve_device",
    "resolve_dtype",
]
