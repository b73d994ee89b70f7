"""Figures of a stored sweep: the paper's trajectory and final-value panels, and the
2-D phase diagram over a sweep axis."""
