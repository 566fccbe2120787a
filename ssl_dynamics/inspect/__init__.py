"""Phase two: replay augmentations over archived checkpoints and analyse r_t."""
