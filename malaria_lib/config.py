"""Every path, address, checksum and seed in one place, so notebooks and CLI agree."""

from __future__ import annotations

import os
from pathlib import Path

SEED = 1337
CLASSES: tuple[str, str] = ("Parasitized", "Uninfected")  # alphabetical, as Keras orders them
POSITIVE_CLASS = "Parasitized"
POSITIVE = CLASSES.index(POSITIVE_CLASS)  # 0: the index of P(Parasitized) in every model's output

FETCH_MARKER = ".malaria_fetch.json"  # written beside fetched cells: where they came from, what was skipped

NIH_FOLDER = "https://data.lhncbc.nlm.nih.gov/public/Malaria/"
NIH_URL = NIH_FOLDER + "cell_images.zip"
NIH_URL_OLD = "https://ceb.nlm.nih.gov/proj/malaria/cell_images.zip"
NIH_SHA256 = "0a949556b2414159b5100192609805376654c4266d8d187be9b1922fad43c668"
NIH_SIZE = 353_452_851
PATIENT_CSVS: dict[str, str] = {
    "Parasitized": "patientid_cellmapping_parasitized.csv",
    "Uninfected": "patientid_cellmapping_uninfected.csv",
}

# Environment variables the tests, CI and notebooks read.
DATA_DIR_ENV = "MALARIA_DATA_DIR"
DEV_ZIP_ENV = "MALARIA_DEV_ZIP"

IMAGE_SUFFIXES = (".png",)
SKIPPED_NAMES = ("Thumbs.db", ".DS_Store")


def default_data_dir() -> Path:
    """Where `malaria fetch` puts the cells unless told otherwise: $MALARIA_DATA_DIR or ./data."""
    return Path(os.environ.get(DATA_DIR_ENV, "data"))
