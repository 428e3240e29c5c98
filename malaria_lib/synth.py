"""Offline stand-in for the NIH malaria cell images.

The notebooks and tests must run without downloading 350 MB, so this module draws small,
deterministic fake cells in the same folder layout and file-name scheme as the real set
(cell_images/{Parasitized,Uninfected}/<slide key>_IMG_<date>_<time>_cell_<k>.png).
The pictures are crude but keep the properties the tutorial relies on: per-slide stain
differences, patients contributing many cells (so patient-wise splits matter), purple
parasites in infected cells and occasional purple look-alikes in healthy ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from malaria_lib.config import CLASSES
from malaria_lib.errors import InTheWay, MalariaError, UsageError


def _validate(n: int, n_patients: int, healthy_fraction: float) -> int:
    """Check the arguments and return the number of healthy patients."""
    if n_patients < 2:
        raise UsageError(f"n_patients={n_patients} is too small; use at least 2 so a patient-wise split is possible.")
    if not 0 <= healthy_fraction < 1:
        raise UsageError(f"healthy_fraction={healthy_fraction} is outside [0, 1); pass a fraction such as 0.25.")
    if n < max(2, n_patients):
        raise UsageError(f"n={n} is too small to give each of the {n_patients} patients a cell; "
                           f"use n >= {max(2, n_patients)} or fewer patients.")
    # At least one infected patient must exist to hold the parasitized cells.
    n_healthy = min(int(round(n_patients * healthy_fraction)), n_patients - 1)
    if n - n // 2 < n_healthy:
        raise UsageError(f"{n_healthy} healthy patients need more than the {n - n // 2} uninfected cells; "
                           f"raise n or lower healthy_fraction.")
    return n_healthy


def _allocate(rng: np.random.Generator, n_par: int, n_uninf: int, n_healthy: int, n_patients: int) -> np.ndarray:
    """Return a (n_patients, 2) array of per-patient cell counts [parasitized, uninfected].

    Every patient gets a cell, infected ones get both classes when there are enough cells, and the rest
    is spread with log-normal weights so a few patients dominate, as on real slides.
    """
    counts = np.zeros((n_patients, 2), dtype=int)
    inf = np.arange(n_healthy, n_patients)  # healthy patients come first
    w = rng.lognormal(0.0, 0.8, n_patients)
    if n_par >= len(inf):
        counts[inf, 0] = 1
        counts[inf, 0] += rng.multinomial(n_par - len(inf), w[inf] / w[inf].sum())
    else:
        counts[rng.choice(inf, n_par, replace=False), 0] = 1
    counts[:n_healthy, 1] = 1
    counts[inf[counts[inf, 0] == 0], 1] = 1
    left = n_uninf - counts[:, 1].sum()
    need = rng.permutation(inf[counts[inf, 1] == 0])[:left]
    counts[need, 1] = 1
    left -= len(need)
    counts[:, 1] += rng.multinomial(left, w / w.sum())
    return counts


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Paint colour onto img in place with per-pixel opacity alpha."""
    a = np.clip(alpha, 0, 1)[..., None]
    img *= 1 - a
    img += a * colour


def _draw_cell(rng: np.random.Generator, stain: np.ndarray, size: float, infected: bool) -> np.ndarray:
    """Draw one segmented cell on black as an RGB uint8 array."""
    h, w = (np.clip(size * rng.uniform(0.85, 1.15, 2), 50, 150)).astype(int)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, ry, rx = (h - 1) / 2, (w - 1) / 2, h / 2 - 2, w / 2 - 2
    dy, dx = (yy - cy) / ry, (xx - cx) / rx
    theta = np.arctan2(dy, dx)
    wobble = 1 - 0.06 * rng.random()
    for k in (2, 3, 5):  # a few low harmonics give a slightly irregular outline
        wobble = wobble + rng.uniform(0, 0.03) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    d = np.sqrt(dx**2 + dy**2) / wobble
    mask = np.clip((1 - d) * min(rx, ry), 0, 1)  # ~1 px anti-aliased edge
    coarse = Image.fromarray(rng.normal(0, 1, (6, 6)).astype(np.float32)).resize((w, h), Image.BILINEAR)
    shade = 1 + 0.04 * np.asarray(coarse) + rng.normal(0, 0.02, (h, w))
    shade -= 0.18 * np.clip((d - 0.72) / 0.28, 0, 1) ** 2  # darker rim
    shade += 0.05 * np.exp(-(d / 0.35) ** 2)  # faint central pallor
    img = shade[..., None] * stain

    def spot(r_max: float, r_min: float = 0.0) -> np.ndarray:
        """Distance map (px) from a random point in the cell at normalised radius r_min..r_max."""
        r, t = np.sqrt(rng.uniform(r_min**2, r_max**2)), rng.uniform(0, 2 * np.pi)
        return np.hypot(yy - (cy + r * ry * np.sin(t)), xx - (cx + r * rx * np.cos(t)))

    if infected:
        for _ in range(rng.choice([1, 2], p=[0.75, 0.25])):
            colour, strength = np.array([95, 35, 125]) * rng.uniform(0.8, 1.15), rng.uniform(0.7, 1.3)
            dist = spot(0.65)
            if rng.random() < 0.5:  # ring form (trophozoite)
                rad, thick = rng.uniform(3, 6), rng.uniform(1.0, 1.8)
                alpha = strength * np.exp(-((dist - rad) ** 2) / (2 * thick**2))
            else:  # compact chromatin dot
                alpha = 1.2 * strength * np.exp(-(dist**2) / (2 * rng.uniform(1.8, 3.2) ** 2))
            _blend(img, alpha, colour)
    elif rng.random() < 0.25:
        if rng.random() < 0.5:  # platelet-like blob, pale and blurred, usually on the edge
            alpha = 0.55 * np.exp(-(spot(1.0, 0.7) ** 2) / (2 * rng.uniform(2.5, 4.0) ** 2))
            _blend(img, alpha, np.array([140, 85, 165]))
        else:  # a few tiny stain specks
            for _ in range(rng.integers(1, 4)):
                _blend(img, 0.5 * np.exp(-(spot(0.9) ** 2) / 1.5), np.array([140, 90, 150]))
    img *= mask[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def make_synthetic_cells(out_dir: str | Path, n: int = 400, seed: int = 1337, n_patients: int = 20,
                         healthy_fraction: float = 0.25, progress: bool = False) -> dict:
    """Write n synthetic cell PNGs in the NIH layout under out_dir/cell_images/{Parasitized,Uninfected}.

    Used when the real data cannot be downloaded: same layout and names, so every later step runs
    unchanged. Deterministic for equal arguments. Returns {"out": str(path to cell_images),
    "classes": {"Parasitized": k, "Uninfected": m}, "patients": n_patients, "seed": seed}.
    """
    n_healthy = _validate(n, n_patients, healthy_fraction)
    root = Path(out_dir) / "cell_images"
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InTheWay(f"{root} already exists and is not empty; choose another folder or delete it.")
    try:
        for cls in CLASSES:
            (root / cls).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MalariaError(f"Cannot create {root} ({exc.strerror or exc}); choose a writable folder.") from exc

    rng = np.random.default_rng(seed)
    n_par = n // 2
    counts = _allocate(rng, n_par, n - n_par, n_healthy, n_patients)
    numbers = rng.choice(np.arange(1, max(250, 3 * n_patients)), n_patients, replace=False)
    jobs = []  # (class index, patient index, file name)
    for p in range(n_patients):
        key = f"C{numbers[p]}NThinF" if p < n_healthy else f"C{numbers[p]}P{p - n_healthy + 1}ThinF"
        total = int(counts[p].sum())
        date = f"{rng.integers(5, 10):02d}{rng.integers(1, 29):02d}"
        shots = [f"{rng.integers(9, 18):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}"
                 for _ in range(max(1, total // 12))]
        cell_ids = np.sort(rng.choice(np.arange(1, 3 * total + 20), total, replace=False))
        labels = rng.permutation(np.repeat([0, 1], counts[p]))
        for lab, cid in zip(labels, cell_ids, strict=False):
            shot = shots[rng.integers(len(shots))]
            jobs.append((int(lab), p, f"{key}_IMG_2015{date}_{shot}_cell_{cid}.png"))

    # Per-patient stain and cell size mimic slide-to-slide differences.
    stains = np.array([205, 155, 150]) * rng.uniform(0.8, 1.1, (n_patients, 1)) + rng.normal(0, 9, (n_patients, 3))
    sizes = rng.uniform(75, 125, n_patients)
    try:
        for lab, p, name in tqdm(jobs, desc="synthetic cells", disable=not progress):
            arr = _draw_cell(rng, stains[p], sizes[p], infected=lab == 0)
            Image.fromarray(arr, "RGB").save(root / CLASSES[lab] / name, format="PNG")
    except OSError as exc:
        raise MalariaError(f"Cannot write images to {root} ({exc.strerror or exc}); choose a writable folder.") from exc
    return {"out": str(root), "classes": {"Parasitized": n_par, "Uninfected": n - n_par},
            "patients": n_patients, "seed": seed}
