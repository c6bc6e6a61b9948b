"""Data policies: detectors of sensitive data and what to do when they fire, applied by a step
of the call pipeline to what every model call sends upstream."""
