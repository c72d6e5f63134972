"""Looking inside: activation caches, head detectors, the logit lens."""
