"""A plugin whose import fails (used to test that phasekit survives it)."""

raise ImportError("this plugin is broken on purpose")
