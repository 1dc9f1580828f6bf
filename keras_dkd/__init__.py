"""keras-dkd: speech emotion recognition with DKD-distilled head-fusion CNNs on Keras 3.

The backend is Keras' own choice: set ``KERAS_BACKEND`` to ``tensorflow``, ``torch`` or ``jax``
before importing. Submodules are imported on demand so that ``import keras_dkd`` stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
