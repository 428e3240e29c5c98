"""malaria_lib: the helper library behind the malaria cell tutorial notebooks."""

__version__ = "0.3.0"  # pyproject.toml's version (tests/test_colab.py checks they agree)
