"""malaria_lib: the helper library behind the malaria cell tutorial notebooks."""

__version__ = "0.1.0"
