# %% [markdown]
# # A phase diagram in a notebook
#
# This is a percent-format script: open it in Jupyter (with jupytext), VS Code or
# Spyder and run it cell by cell, or run it whole with `python example_notebook.py`.
# It writes `sweep.nc`, `sweep.png` and `boundary.nc` in the current folder.
# The test suite runs it (`tests/test_notebook.py`), so it stays working.
#
# Everything goes through the public API: `phasekit.api` and the `ds.phasekit`
# accessor, registered by `import phasekit`.

# %%
import numpy as np

import phasekit  # noqa: F401  (registers the ds.phasekit accessor)
from phasekit import api as pk

# %% [markdown]
# ## Run a small sweep, store it, load it back
#
# The figure 1 setting (pure quadratic model on the toy point (1, 0)) at a small
# width so that it runs in about a second.  `overrides` take the same
# `KEY=VALUE` strings as `phasekit run --set`.  On a real study, run
# `phasekit run --preset fig1 -o sweep.nc` once and only `pk.load` here.

# %%
pk.run(preset="fig1", output="sweep.nc",
       overrides=["model.width=200", "sweep.seeds=3",
                  "sweep.eta_lambda0={start=0.5, stop=4.5, num=17}"])
ds = pk.load("sweep.nc")
ds  # noqa: B018  (a notebook displays the last expression)

# %% [markdown]
# ## Select runs
#
# The dimensions are `seed`, `eta_lambda0` (c = eta * lambda_0) and `step`.  Pick a
# learning rate with `.sel(..., method="nearest")`; trajectories are NaN after
# a run stopped, so `.dropna("step")` keeps the steps it made.

# %%
one = ds.sel(seed=0, eta_lambda0=3.0, method="nearest")
loss = one["loss"].dropna("step")
print(f"c = {float(one.eta_lambda0):.3g}: {one.status.item()} after {int(one.steps)} steps, "
      f"loss {float(loss[0]):.3g} -> peak {float(loss.max()):.3g} -> {float(loss[-1]):.2g}")

# %% [markdown]
# ## Classify every run
#
# `phases()` returns `phase(seed, eta_lambda0)`; `add_phases()` stores it (and
# `loss_peak_ratio`) in the dataset, with the criteria in its attributes
# (see `docs/phases.md`).

# %%
phase = ds.phasekit.phases()
print(phase.sel(seed=0).to_series().to_string())
ds = ds.phasekit.add_phases()
print(ds["phase"].attrs["criteria"])

# %%
print(ds.phasekit.summary())

# %% [markdown]
# ## Compare seeds
#
# Each seed has its own initialisation, hence its own lambda_0, bounds and
# critical learning rate.  `critical()` collects them per seed.

# %%
crit = ds.phasekit.critical()
print(crit[["c_max", "c_fail", "c_catapult"]].to_dataframe())
ratio = ds["final_weight_norm"] / ds["weight_norm"].isel(step=0)
at3 = ratio.sel(eta_lambda0=3.0, method="nearest")
print("theta^2_inf / theta^2_0 at c = 3 per seed:", np.round(at3.values, 3))
print("eq. 60 bound per seed:", np.round(ds["bound_eq60"].values, 3))

# %% [markdown]
# ## Plot
#
# The paper's panels; `c_values` chooses the learning rates of the trajectory
# panels (nearest stored values).  In Jupyter the returned figure displays itself.

# %%
fig = ds.phasekit.plot(c_values=[1.0, 2.5, 3.5, 4.5])
fig.savefig("sweep.png")
fig  # noqa: B018

# %% [markdown]
# ## Critical learning rate by bisection
#
# `pk.boundary` brackets c_max on the config's grid and bisects to `tol`,
# all seeds together; every evaluated run is kept (in the usual schema).

# %%
b = pk.boundary(preset="fig1", output="boundary.nc", tol=0.02,
                overrides=["model.width=100", "sweep.seeds=2"])
print(b.phasekit.summary().split("\n\n")[-1])
print("c_max per seed:", np.round(b["c_max"].values, 3))
