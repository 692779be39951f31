"""vae_core: variational autoencoders for mixed-type tables (torch, numpy, pyarrow only)."""

from vae_core.calibration import Calibration
from vae_core.config import ModelConfig, TrainConfig
from vae_core.data.schema import ColumnSpec, Kind, TableSchema, infer_schema
from vae_core.data.statistics import TableStatistics
from vae_core.data.tables import as_table, read_parquet
from vae_core.data.transform import ColumnTransformer
from vae_core.errors import DataError, ModelFormatError, SchemaError
from vae_core.model import TabularVAE
from vae_core.nn import LadderVAEModule, VAEModule

__all__ = [
    "Calibration", "ColumnSpec", "ColumnTransformer", "DataError", "Kind", "LadderVAEModule",
    "ModelConfig",
    "ModelFormatError", "SchemaError", "TableSchema", "TableStatistics", "TabularVAE",
    "TrainConfig", "VAEModule", "as_table", "infer_schema", "read_parquet",
]
