"""Running a sweep: in process or on Dask (:mod:`.dask`), crash-safe and resumable
(:mod:`.execute`), with a progress bar (:mod:`.progress`)."""
