"""Training side (torch): the fit flow, checkpoints, export, and the image classification family."""
