"""malaria_lib: the helper library behind the malaria cell tutorial notebooks."""

import os as _os
import platform as _platform

__version__ = "0.3.0"  # pyproject.toml's version (tests/test_colab.py checks they agree)

# On Linux, TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI or BF16, AVX-VNNI or AMX
# (its DefaultOneDnnPolicy); on other x86 CPUs (AMD Zen 2 and 3, Intel cores older than Ice Lake and Alder Lake) it
# leaves them off. With them, whole training epochs on a 2-core AMD EPYC (AVX2) ran 1.30 (tutorial A), 1.45 (B) and
# 1.29 (ours) times as fast, MobileNetV3 1.02, and runs still repeat to the last bit (benchmarks/onednn.py,
# results/onednn.json; tests/test_train.py). Set here because TensorFlow reads it once, when first imported, and
# every notebook and command imports this package first; a TF_ENABLE_ONEDNN_OPTS of your own wins.
if _platform.machine().lower() in ("x86_64", "amd64"):
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
