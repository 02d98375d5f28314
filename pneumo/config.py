"""Project-wide constants, each with the reason it has its value.

Everything that the library, the training script, the CLI and the app must agree on lives here, so it cannot drift.
Values that belong to a trained model (threshold, metrics, input size) live in the model's JSON metadata instead.
"""

from __future__ import annotations

import os
from pathlib import Path

# Where the package lives.
PACKAGE_DIR = Path(__file__).resolve().parent
# The repository root in a checkout (the benchmark and the tests start the app from there).
ROOT_DIR = PACKAGE_DIR.parent
# The repository's models/ and assets/, reached through the links pneumo/_shipped/{models,assets}: the same path works
# in a checkout and in an installed wheel, which holds copies of both (`pip install .` runs on the committed models).
_SHIPPED = PACKAGE_DIR / "_shipped"
# Committed model files; the app and the CLI default to the model here.
MODELS_DIR = _SHIPPED / "models"
# Sample images and other static files shipped with the app.
ASSETS_DIR = _SHIPPED / "assets"
# The committed model: the app and `pneumo.predict` load it when no --model is given.
DEFAULT_MODEL_PATH = MODELS_DIR / "pneumo_cnn.keras"

# The public data set's training copies are 224x224, squashed from the originals: train and predict at that size.
IMAGE_SIZE = 224
# Grayscale radiographs: one channel carries all information (the RGB copies have three equal channels).
CHANNELS = 1
# Index 0 and 1 of the model's single sigmoid output: P(PNEUMONIA) = output, P(NORMAL) = 1 - output.
CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
# The convolution layer Grad-CAM explains: the last feature map before global average pooling.
GRADCAM_LAYER = "gradcam_conv"
# Used only when a model's metadata has no threshold: 0.5 is the natural cut of a class-balanced sigmoid.
DEFAULT_THRESHOLD = 0.5

# ---- lungs (segmentation and the lung-only classifier input) ----
# The network that finds the lung fields when a lungs-mode classifier's metadata names none: the scope gate, whose
# lung head shares the gate's encoder (two networks per image instead of three; a classifier names its own).
LUNG_MODEL_PATH = MODELS_DIR / "pneumo_scope.keras"
# Input side of a separate lung U-Net (pneumo.training.train_lungs, the three-network option): lung fields are large,
# smooth shapes; at 64 px validation Dice is 0.951 (0.954 at 128 px) for a quarter of the compute.
LUNG_SEG_SIZE = 64
# Pixels (at 224) the lung mask is grown by before cropping and greying: keeps the costophrenic angles and pleura.
LUNG_MARGIN_PX = 8
# Plausible lung area as a fraction of the 224 squash (training masks: ~0.15-0.40); outside it the mask is doubtful.
LUNG_AREA_RANGE = (0.08, 0.55)
# The classifier's input side: the dilated lung box of a 224 copy is ~150 px wide, so 160 keeps all its detail.
LUNG_INPUT_SIZE = 160
# Warn below this height ratio of the shorter to the taller lung field: a field cut short often means dense
# consolidation outside the outline. It flags 1.0 % of validation images (1.4 % of pneumonias, no normal).
LUNG_HEIGHT_RATIO_MIN = 0.75
# Images per forward pass inside the pipeline: on 2 cores as fast per image as 32, and ~60 MB less peak memory.
PIPELINE_BATCH = 8
# TFLite threads per network: measured on 2 cores, a second thread gains nothing for these small networks (batch 1
# to 32), and one leaves the other core to JPEG decoding (CLI) or another visitor (app).
LITE_THREADS = 1
# Version of pneumo.training.export's graph: bump it when the export changes, and older .tflite copies are refused.
ENGINE_EXPORT_VERSION = 1
# Batches the CLI analyses at the same time (pneumo.pipeline.analyze_stream): the networks and OpenCV release the
# GIL, so each batch gets a core (measured on 2 cores: 1.7x the images per second of one at a time).
ANALYSIS_WORKERS = max(1, min(4, os.cpu_count() or 1))

# Loader guard: a 2-byte PNG header can claim gigapixels; real X-rays are at most ~4300x4300 (18.5 MP).
MAX_IMAGE_PIXELS = 50_000_000
# Loader guard: files larger than this are refused before decoding (DICOMs of large detectors are ~30-60 MB).
MAX_FILE_BYTES = 200 * 1024 * 1024
# Loader guard: below this side length there is nothing for a 224 px model to see.
MIN_IMAGE_SIDE = 32
# Loader guard: radiographs are roughly square; a 30000x10 strip is not an image of a chest.
MAX_ASPECT_RATIO = 6.0
# Plausibility check: chest radiographs of this data set have width/height between ~0.6 and ~2.2.
PLAUSIBLE_ASPECT = (0.5, 2.5)
# Plausibility check: below this side length (pixels) a result is shown with a warning.
PLAUSIBLE_MIN_SIDE = 200
# Plausibility check: mean |R-G|+|G-B| above this (0-255 scale) means a colour photo, not a radiograph.
MAX_COLOURFULNESS = 12.0
# DICOM modalities that are projection radiographs; anything else (CT, MR, US, ...) is not analysed.
XRAY_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "RF", "PX", "OT"})
# DICOM values reach the page, report and CSV only as one of these codes, anything else as "other" (a free-text tag can
# hold a name or markdown). Modality: the defined terms of PS3.3 C.7.3.1.1.1 (current and retired), plus the common
# non-standard "DR" for digital radiography, which the scope rule above treats as X-ray.
DICOM_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DG DMS DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL IVOCT IVUS "
    "KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX REG RESP RF RG "
    "RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA "
    "XA XAPROTOCOL XC AS CD CF CP CS DD DF DM DR DS EC FA FS LP MA MS OPR ST VF".split()
)
# DICOM ViewPosition codes shown: the defined terms of the CR and DX modules (PS3.3 C.8.1.1, C.8.11.5), plus the
# vendor terms that NON_FRONTAL_VIEWS (below) relies on; anything else is "other".
DICOM_VIEW_POSITIONS = frozenset({"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", "LAT", "LATERAL", "LO", "OBL"})
# DICOM BodyPartExamined codes shown: the radiographed regions among the defined terms of PS3.16 Annex L. A value
# outside it that names the chest (CHEST_BODY_PARTS, e.g. "PORT CHEST") is shown as CHEST, anything else as "other",
# so the scope rule on the body part decides exactly as on the raw value.
DICOM_BODY_PARTS = frozenset(
    "ABDOMEN ABDOMENPELVIS ACJOINT ANKLE ARM AXILLA BACK BREAST CALCANEUS CHEST CHESTABDOMEN CHESTABDPELVIS CLAVICLE "
    "COCCYX CSPINE CTSPINE ELBOW EXTREMITY FACE FEMUR FINGER FOOT FOREARM HAND HEAD HEADNECK HEART HIP HUMERUS JAW "
    "KNEE LEG LOWERLEG LSPINE LSSPINE LUNG MANDIBLE MAXILLA MEDIASTINUM NECK NECKCHEST NECKCHESTABDOMEN "
    "NECKCHESTABDPELV PATELLA PELVIS RADIUS RIB SACRUM SCAPULA SHOULDER SKULL SPINE STERNUM THIGH THUMB TIBIA TOE "
    "TLSPINE TSPINE ULNA UPPERARM WHOLEBODY WRIST ZYGOMA".split()
)
# DICOM PhotometricInterpretation codes shown: the defined terms of PS3.3 C.7.6.3.1.2 (CMYK, ARGB, HSV retired).
DICOM_PHOTOMETRICS = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
     "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB", "CMYK", "ARGB", "HSV"}
)  # fmt: skip

# File endings the CLI picks up when it is given a folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})

# Environment variable naming another model file for the app (tests, or a freshly trained model before it is committed).
MODEL_ENV_VAR = "PNEUMO_MODEL"
# Largest upload the app accepts (MB); keep in step with .streamlit/config.toml (large-detector DICOMs are ~30-60 MB).
APP_MAX_UPLOAD_MB = 50
# Bytes of analyses the app keeps for all sessions (a result at display size holds ~1.5-2 MB: ~50 images); with the PNG
# cache below at most 128 MB stays: measured, 40 7000x7000 PNGs in one upload peak at ~400 MB and settle 119 MB above
# the 194 MB idle server (docs/performance.md, "Memory under hostile uploads").
APP_CACHE_BYTES = 96 * 1024 * 1024
# Bytes of PNGs (radiograph and overlays at display size, ~0.3-3 MB each) kept for re-sending to browsers.
APP_PNG_CACHE_BYTES = 32 * 1024 * 1024
# Files analysed from one upload: each is decoded at full size one after another (~1 s per 49-megapixel PNG on 2
# cores) and its result stays in the session; 24 is every shipped sample at once and keeps a page under ~45 s.
APP_MAX_FILES = 24
# Seconds between the app's memory housekeeping passes (expired cache entries dropped, freed heap handed back).
APP_JANITOR_S = 30
# Seconds an analysed image stays in the app's memory cache: long enough for a session, short enough to forget uploads.
APP_CACHE_TTL_S = 3600

# --- issue 11: speed, absolute heatmap scale, model registry (pneumo/gradcam.py, pneumo/io.py, pneumo/bench.py) ---
# The app shows images at most this many pixels on the long side: decode and blend overlays at that size, no larger.
DISPLAY_MAX_SIDE = 1200
# JPEG DCT-domain reduction keeps each side >= this factor times the model input, so that the area resize to the
# input stays nearly exact (measured against the data set's 224 copies: docs/performance.md).
DECODE_MIN_FACTOR = 2
# Most threads for decoding a batch of files (JPEG/PNG decoders release the GIL); capped by the CPU count at run time.
DECODE_WORKERS = 4
# A heatmap whose peak stays below this on the absolute scale looks faint (a borderline label's map often does): the
# app and report say so in words. On the 24 full-resolution samples it flags the borderline person622 (peak 0.41).
FAINT_HEAT = 0.5
# An ECE at or below this on new patients is reported as calibrated (scores within ~5 points of observed frequencies
# on average); above it the app and report say "poorly calibrated".
CALIBRATED_ECE = 0.05
# A typed image reference on the report is cut to this many characters: one line of the page.
REPORT_REFERENCE_CHARS = 60
# Heatmap colour scale for PNEUMONIA evidence, RGB stops evenly spaced from heat 0 to 1: warm only, pale yellow to
# red (strongest). No blue, cyan or green at any level, so a weak PNEUMONIA map cannot pass for a NORMAL one.
HEAT_STOPS_PNEUMONIA: tuple[tuple[int, int, int], ...] = (
    (255, 235, 110), (255, 185, 50), (250, 120, 25), (235, 50, 20), (220, 0, 0),
)  # fmt: skip
# Heatmap colour scale for NORMAL evidence, RGB stops evenly spaced from heat 0 to 1: one cool hue family, dark navy to
# bright aqua, never red or yellow, so a NORMAL map (strongest = brightest) cannot be read as evidence of disease.
HEAT_STOPS_NORMAL: tuple[tuple[int, int, int], ...] = (
    (0, 0, 80), (0, 60, 190), (0, 140, 235), (0, 210, 245), (60, 255, 220),
)  # fmt: skip
# Lung outline colour (RGB) on overlays: magenta occurs neither in the heat colour scales nor in a grayscale radiograph.
OUTLINE_COLOUR: tuple[int, int, int] = (255, 0, 255)
# Outline thickness is max(1, long side / this): 1 px at the display size of 1200, thicker on full-size downloads.
OUTLINE_PIXELS_PER_WIDTH = 800
# ---------------------------------------------------------------------------------------------------- scope gate
# The committed scope gate (pneumo/scope.py): the app and the CLI load it to refuse images outside the intended use.
SCOPE_MODEL_PATH = MODELS_DIR / "pneumo_scope.keras"
# Scope rule: below this grey-level standard deviation (0-255) an image is nearly uniform; nothing to analyse.
UNIFORM_MAX_STD = 8.0
# Scope rule: DICOM BodyPartExamined values (upper case, substring match) that mean the chest.
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "RIB", "TORSO")
# Scope rule: DICOM ViewPosition values of a non-frontal projection (lateral and decubitus views).
NON_FRONTAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LLO", "RLO", "LO", "OBL"})
# ---- independent evaluations and reports (issue 10) ----
# A figure (AUC, sensitivity, specificity, ECE) resting on fewer images than this is shown as "too few images to mean
# much", not as a number: with 29 images a 95 % interval of a proportion is still about +-17 points wide.
FEW_IMAGES = 30
# Maintainers' scores of a model on sequestered sets, one file per model named <sha256 of the .keras file>.json and
# shipped in the repository (a cloud deploy has no data folder beside it): a retrained model has none until scored.
EVALUATIONS_DIR = MODELS_DIR / "evaluations"
# The independent set that matches the intended use (pediatric, same hospital, new patients): quoted on every page.
PRIMARY_EVALUATION_SET = "official_test"
# Report PNG resolution: A4 at 200 dpi (1654 x 2339 px) prints sharply; 110 dpi looked blurry on paper.
REPORT_PNG_DPI = 200
# The public repository, linked from the About page: set it when the repository is published ('' shows no link).
REPOSITORY_URL = ""
# ---------------------------------------------------------------------------------------------------- batch (Ray)
# CPUs a batch actor asks Ray for: it runs its own decode and analysis threads, and on a 2-core machine whole CPUs
# per actor left nothing for Ray's own tasks (the job hung at "0/?"); the threads use what is free anyway.
BATCH_ACTOR_CPUS = 0.5
# Threads an actor decodes with and batches it analyses at once (pneumo.io.load_many, pipeline.analyze_stream):
# the CLI's 2 on 2 cores; the default actor count is the cluster's CPUs / this, so threads ~ cores.
BATCH_ACTOR_THREADS = 2
# Files per Ray block and per actor call: large enough that an actor's thread pools stay busy across one call
# (the pools drain at the end of each), small enough that a retried call repeats little work.
BATCH_SIZE = 128
# A part file is committed when this many rows are waiting, or BATCH_COMMIT_SECONDS after the last commit: a
# crash loses at most that much work, and 10^6 files make a few hundred parts, not tens of thousands.
BATCH_PART_ROWS = 4096
BATCH_COMMIT_SECONDS = 10.0
# Object-store files (s3://, gs://) an actor reads at once: each read waits tens of ms on the network, not on a core.
BATCH_URI_READS = 16
# Object store of the embedded local Ray: it only holds paths and result rows (~200 bytes per file).
BATCH_OBJECT_STORE_BYTES = 256 * 2**20
