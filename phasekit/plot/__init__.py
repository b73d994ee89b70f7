"""Figures of a stored sweep (``docs/plotting.md``): the public entry
:func:`phasekit.plot.figure.plot_sweep`; the paper's trajectory and final-value
panels (:mod:`~phasekit.plot.panels`), the 2-D phase diagram over a sweep axis
(:mod:`~phasekit.plot.diagram`), axis selection (:mod:`~phasekit.plot.select`) and
the shared look (:mod:`~phasekit.plot.style`).

This package module imports nothing, so that ``import phasekit`` and ``phasekit
--help`` never import matplotlib; ``phasekit.plot.figure`` does.
"""
