"""The ``phasekit`` command: ``run`` (:mod:`.main`), ``plot``/``analyze``/``boundary``
(:mod:`.analysis`), ``--dry-run`` estimates (:mod:`.dryrun`) and ``bench``
(:mod:`.bench`)."""
