"""Configs and plugins: the plugin manager (:mod:`.registry`), resolving a config
against the plugins' declared options (:mod:`.resolve`) and the generated reference of
every key (:mod:`.reference`)."""
