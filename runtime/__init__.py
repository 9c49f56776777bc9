"""facecrop.runtime: load a facecrop bundle and run it on video (torch, numpy, PyAV only)."""
