"""Hook specifications: the whole contract between phasekit and its plugins.

A plugin is any module (or object) with functions named after these hooks and
marked with :data:`phasekit.hookimpl`.  Built-in plugins live in the top-level
``plugins/`` directory and are found through the ``phasekit`` entry-point
group, exactly like third-party ones::

    # pyproject.toml of a third-party distribution
    [project.entry-points.phasekit]
    tanh_net = "my_package.tanh_net"

Every hook follows the ``register_*(register)`` pattern: phasekit hands the
plugin a ``register`` callback and the plugin calls it once per thing it
provides.  Each hook is called once per plugin, inside its own error guard, so a
plugin whose hook raises is reported and skipped without breaking the others.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "phasekit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def phasekit_register_models(register):
    """Register model classes.

    Called once when the plugin manager is first used.  ``register(cls)`` takes
    a subclass of :class:`phasekit.model.Model`; its ``name`` attribute is the
    value of ``[model] name`` in a config.  Return value ignored.
    """


@hookspec
def phasekit_register_datasets(register):
    """Register dataset classes.

    ``register(cls)`` takes a subclass of :class:`phasekit.dataset.DatasetPlugin`;
    its ``name`` is the value of ``[dataset] name`` in a config.  Return value
    ignored.
    """


@hookspec
def phasekit_register_observables(register):
    """Register observables recorded along every run.

    ``register(obs)`` takes a :class:`phasekit.observables.Observable`.  Each
    sweep records every registered observable whose ``applies(model, data)``
    returns true, as a trajectory ``<name>(seed, eta_lambda0, step, ...)`` and
    a final value ``final_<name>(seed, eta_lambda0, ...)``.  Return value
    ignored.
    """


@hookspec
def phasekit_register_presets(register):
    """Register named configurations for ``phasekit run --preset NAME``.

    ``register(name, config, description)`` takes the preset's name, a config
    mapping with the tables ``model``, ``dataset`` and ``sweep`` (the same
    structure as a config TOML file) and a one-line description.  Return value
    ignored.
    """
