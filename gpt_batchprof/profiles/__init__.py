"""Model and hardware profiles: frozen specs, validated on load. Imports nothing of ``analytic``
(or anything above it): everything else reads these specs.

Sources: built-in YAML files (``profiles/models``, ``profiles/hardware``), any YAML file
by path, and Hugging Face ``config.json`` files (read offline) for models.

Modules, each importing only those before it:
- ``dtypes``: bytes per element of each storage dtype, and which weights quantisation leaves alone;
- ``fields``: typed fields read out of a mapping, errors naming file and field;
- ``measured``: the measured efficiency tables (``measured:`` section), their lookup and YAML;
- ``specs``: ModelSpec (with its size maths), LayerGroup, HardwareSpec, Interconnect, EngineOverhead;
- ``schema``: profile mappings validated into specs, and hardware written back;
- ``hf``: Hugging Face ``config.json`` mapped to the schema;
- ``loading``: built-in names and files.
"""

from gpt_batchprof.profiles.dtypes import (
    ACT_DTYPES,
    DTYPE_BYTES,
    INT4_GROUP_SIZE,
    KV_DTYPES,
    MXFP4_BLOCK,
    NVFP4_BLOCK,
    PEAK_DTYPES,
    QUANTISED_DTYPES,
    WEIGHT_DTYPES,
    store_bytes,
    unquantised_dtype,
)
from gpt_batchprof.profiles.fields import INTERCONNECT_KEYS
from gpt_batchprof.profiles.hf import model_from_hf_config
from gpt_batchprof.profiles.loading import (
    all_hardware,
    all_models,
    builtin_dir,
    builtin_names,
    hardware_path,
    load_hardware,
    load_model,
)
from gpt_batchprof.profiles.measured import MeasuredTables, Table, measured_from_mapping, measured_to_yaml_mapping
from gpt_batchprof.profiles.schema import (
    LAYER_GROUP_KEYS,
    MEMORY_FIELDS,
    engine_from_mapping,
    hardware_from_mapping,
    hardware_to_yaml_mapping,
    interconnect_from_mapping,
    model_from_mapping,
)
from gpt_batchprof.profiles.specs import (
    ENGINE_KEYS,
    FFN_KINDS,
    HARDWARE_KINDS,
    NORM_KINDS,
    POSITIONAL_KINDS,
    EngineOverhead,
    HardwareSpec,
    Interconnect,
    LayerGroup,
    ModelSpec,
    Weights,
)

__all__ = [
    "ACT_DTYPES", "DTYPE_BYTES", "INT4_GROUP_SIZE", "KV_DTYPES", "MXFP4_BLOCK", "NVFP4_BLOCK", "PEAK_DTYPES",
    "QUANTISED_DTYPES", "WEIGHT_DTYPES", "store_bytes", "unquantised_dtype", "INTERCONNECT_KEYS", "model_from_hf_config",
    "all_hardware", "all_models", "builtin_dir", "builtin_names", "hardware_path", "load_hardware", "load_model",
    "MeasuredTables", "Table", "measured_from_mapping", "measured_to_yaml_mapping", "LAYER_GROUP_KEYS",
    "MEMORY_FIELDS", "engine_from_mapping", "hardware_from_mapping", "hardware_to_yaml_mapping",
    "interconnect_from_mapping", "model_from_mapping", "ENGINE_KEYS", "FFN_KINDS", "HARDWARE_KINDS", "NORM_KINDS",
    "POSITIONAL_KINDS", "EngineOverhead", "HardwareSpec", "Interconnect", "LayerGroup", "ModelSpec", "Weights",
]
