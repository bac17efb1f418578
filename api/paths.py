"""Where the checkout keeps what both the launcher and the app use: the NLU data, the trained models and the
Rasa environment (its own Python 3.10 venv, made by the Makefile)."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NLU_DATA = ROOT / "nlu_data"
MODELS = ROOT / "models"
RASA_BIN = ROOT / ".venv-rasa" / "bin" / "rasa"
RASA_REQUIREMENTS = ROOT / "requirements-rasa.txt"
RASA_ENV = {"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def nlu_data_hash() -> str:
    """Content hash of the training data, the pipeline and the Rasa version: the model's cache key."""
    digest = hashlib.sha256()
    for path in sorted(p for p in NLU_DATA.rglob("*") if p.is_file()):
        digest.update(path.relative_to(NLU_DATA).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(RASA_REQUIREMENTS.read_bytes())
    return digest.hexdigest()[:16]


def model_path() -> Path:
    """The model `make train` builds for the current data (it may not exist yet)."""
    return MODELS / f"nlu-{nlu_data_hash()}.tar.gz"
