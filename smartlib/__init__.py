"""smart-ct: SMART self-supervised pretraining for 3D CT, and the studies around it."""
__version__ = "0.1.0"

