"""Phase one: train every (setup, seed) with a checkpoint per epoch."""
