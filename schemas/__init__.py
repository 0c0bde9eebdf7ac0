"""Single source of truth for column names, Arrow schemas, validators and the TFRecord feature spec."""

from schemas import columns
from schemas.tables import (
    CELLS,
    DEAD_LETTERS,
    EMBEDDING_TYPE,
    FEATURES,
    GEOCLASS_CLASSES,
    MANIFEST,
    PHOTOS,
    PHOTOS_WITH_CELL,
    PREDICTIONS,
    Reason,
    SchemaError,
    check_columns,
    row_problem,
    validate_cells,
    validate_features,
    validate_manifest,
)

__all__ = [
    "CELLS",
    "DEAD_LETTERS",
    "EMBEDDING_TYPE",
    "FEATURES",
    "GEOCLASS_CLASSES",
    "MANIFEST",
    "PHOTOS",
    "PHOTOS_WITH_CELL",
    "PREDICTIONS",
    "Reason",
    "SchemaError",
    "check_columns",
    "columns",
    "row_problem",
    "validate_cells",
    "validate_features",
    "validate_manifest",
]
