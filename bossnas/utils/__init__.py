"""Small helpers: atomic checkpoints, devices, progress display."""
