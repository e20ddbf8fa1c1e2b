"""Data: the built-in set, 2D folders, Decathlon/nnU-Net volumes, the folds, MONAI's loader."""
