"""The engine: full-batch gradient descent on a grid of (seed, c) as one batched tensor
program (:mod:`.engine`), the axis points of a sweep and how their chunks are cut and
batched (:mod:`.points`, :mod:`.chunks`), the sharpness solvers (:mod:`.spectrum`,
:mod:`.batched`) and memory sizing (:mod:`.memory`).  It reads a resolved config and
the plugins' objects; it knows nothing of files, analysis or the command line."""
