"""Column names shared by every artifact of the data flow (see DESIGN.md, "Data flow").

Every pipeline, the trainer and serving import these names instead of spelling strings, so a rename
happens in exactly one place.
"""

PHOTO_ID = "photo_id"
LAT = "lat"
LNG = "lng"
IMAGE_URI = "image_uri"
EMBEDDING = "embedding"
# Photos manifest (pipelines.ingest_photos): EXIF DateTimeOriginal as ISO 8601, and "Make Model".
TAKEN_AT = "taken_at"
CAMERA = "camera"

CELL_ID = "cell_id"
CELL_TOKEN = "cell_token"
LEVEL = "level"
N_IMAGES = "n_images"
N_NODES = "n_nodes"
X_SUM = "x_sum"
Y_SUM = "y_sum"
Z_SUM = "z_sum"
FEATURE_SUM = "feature_sum"

SET_ID = "set_id"
CLASS_ID = "class_id"
NODE_INDEX = "node_index"
PARTITION_ID = "partition_id"

SCORE = "score"
METHOD = "method"
TOPK_PARTITION_IDS = "topk_partition_ids"
TOPK_SCORES = "topk_scores"
TOPK_LAT = "topk_lat"
TOPK_LNG = "topk_lng"
MODEL_ID = "model_id"
PARTITIONS_ID = "partitions_id"
RUN_DATE = "run_date"
# The nearest GeoNames place of a predicted location (partition_gen.places).
COUNTRY_CODE = "country_code"
ADMIN1 = "admin1"
PLACE_NAME = "place_name"
# Confidence radii of a prediction (partition_gen.confidence): half / 90 % of eval photos fall within them.
RADIUS50_KM = "radius50_km"
RADIUS90_KM = "radius90_km"

SPLIT = "split"

JOB = "job"
REASON = "reason"
DETAIL = "detail"
RECORD = "record"


def label_column(set_name: str) -> str:
    """The per-set label feature/column name, e.g. ``label_set1``; heads are named after the set."""
    return f"label_{set_name}"


def class_column(set_name: str) -> str:
    """The per-set class column of node assignments and partition tuples, e.g. ``class_set1``."""
    return f"class_{set_name}"

# Internal to Beam jobs, never written to an artifact: a photo's position in the job's input
# (file ordinal << 40 | row in file), the deterministic "first occurrence" rule for duplicate photo_ids.
ROW_KEY = "_row_key"
