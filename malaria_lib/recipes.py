"""How each model is trained in each profile: one table, so the CLI, notebooks and benchmarks agree.

`full` keeps the tutorials' own settings (input size, batch, optimizer, epochs) for a GPU;
`cpu` trains each model within minutes on a 2-core CPU; `smoke` only proves that it runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .errors import UsageError
from .models import MODELS

PROFILES = ("full", "cpu", "smoke")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run besides the data and the seed."""

    model: str
    input_size: int
    batch_size: int
    epochs: int
    optimizer: str  # adam | rmsprop | adamw
    learning_rate: float
    schedule: str = "constant"  # constant | cosine (one cosine decay over the run, with warm-up)
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    augment: str | None = None  # tutorial_a | ours | None
    resize: str = "bilinear"  # how cells are scaled to the input size
    standardize: bool = False  # each cell's channels to mean 0, sd 1 inside the model (models.CellStandardization)
    early_stopping: int | None = None  # patience in epochs on val_accuracy
    max_train_images: int | None = None  # cap for quick profiles; a seeded sample, stratified by class

    def to_dict(self) -> dict:
        return asdict(self)


# Tutorial A: flow_from_directory (nearest-neighbour resizing), Adam(1e-4), batch 16, 30 epochs.
_A = Recipe("tutorial_a", 128, 16, 30, "adam", 1e-4, augment="tutorial_a", resize="nearest")
# Tutorial B: flow_from_directory, RMSprop with Keras' default learning rate, batch 32, 10 epochs.
_B = Recipe("tutorial_b", 125, 32, 10, "rmsprop", 1e-3, resize="nearest")
# Ours: see the model chapter for what each choice bought.
_OURS = Recipe("malarianet", 96, 32, 30, "adamw", 3e-3, schedule="cosine", weight_decay=1e-4,
               label_smoothing=0.05, augment="ours", resize="area", standardize=True, early_stopping=None)

RECIPES: dict[tuple[str, str], Recipe] = {
    ("tutorial_a", "full"): _A,
    ("tutorial_b", "full"): _B,
    ("malarianet", "full"): _OURS,
    ("tutorial_a", "cpu"): replace(_A, epochs=6),  # Adam at 1e-4 starts slowly: 4 epochs left it at 80%
    ("tutorial_b", "cpu"): replace(_B, epochs=3),  # B learns fast (95% val on patients by epoch 2); keeps make run < 30 min
    ("malarianet", "cpu"): replace(_OURS, epochs=12),
    ("tutorial_a", "smoke"): replace(_A, epochs=2),
    ("tutorial_b", "smoke"): replace(_B, epochs=2),
    ("malarianet", "smoke"): replace(_OURS, epochs=3, learning_rate=1e-3),
}


_OPTIONAL = {"augment", "early_stopping", "max_train_images"}  # the settings for which None means "none"


def get_recipe(model: str, profile: str, **overrides) -> Recipe:
    """The recipe for a model in a profile, with optional overrides (e.g. epochs=3)."""
    if profile not in PROFILES:
        raise UsageError(f"Unknown profile '{profile}'; choose one of: {', '.join(PROFILES)}.")
    recipe = RECIPES.get((model, profile))
    if recipe is None:
        raise UsageError(f"Unknown model '{model}'; choose one of: {', '.join(sorted(MODELS))}.")
    unknown = set(overrides) - set(Recipe.__dataclass_fields__)
    if unknown:
        raise UsageError(f"Unknown recipe setting(s) {', '.join(sorted(unknown))}; see malaria_lib.recipes.Recipe.")
    # None is a value here (augment=None trains without augmentation); callers leave out what they do not set
    cannot_be_none = sorted(k for k, v in overrides.items() if v is None and k not in _OPTIONAL)
    if cannot_be_none:
        raise UsageError(f"Recipe setting(s) {', '.join(cannot_be_none)} need a value, not None.")
    recipe = replace(recipe, **overrides)
    if recipe.standardize and model != "malarianet":
        raise UsageError(f"Only malarianet can standardize its cells; {model} is kept as its tutorial built it.")
    return recipe
