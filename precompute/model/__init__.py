"""One checkpoint in memory: loading it (:mod:`.load`), finding its MLP neurons (:mod:`.sites`), and its layout,
built once per loaded checkpoint, with the one way to hook it (:mod:`.layout`)."""

from precompute.model.layout import ModelLayout, mlp_hooks
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
    "ModelLayout",
    "ModelLoadError",
    "UnsupportedModelError",
    "count_parameters",
    "find_mlp_sites",
    "load_checkpoint",
    "mlp_hooks",
    "module_tree",
    "resolve_device",
    "resolve_dtype",
]
