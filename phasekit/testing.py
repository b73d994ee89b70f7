"""Contract checks for model plugins: one call runs every rule a model must honour.

A plugin's own test suite calls them, as scikit-learn's ``check_estimator`` does
for estimators::

    from phasekit.testing import check_model

    def test_my_model_contract():
        check_model({"model": {"name": "tanh_net", "width": 16},
                     "dataset": {"name": "random", "num_train": 4}})

or, one pytest test per check::

    CHECKS = model_checks(CONFIG)

    @pytest.mark.parametrize("name, check", CHECKS, ids=[name for name, _ in CHECKS])
    def test_contract(name, check):
        check()

The config is a mapping with ``[model]`` and ``[dataset]`` tables (or a resolved
config); the model is built as the sweep engine builds it
(:func:`phasekit.api.build_model`).  Every check draws seeds, perturbed
parameters and learning rates with Hypothesis (the active profile's
``max_examples`` unless ``max_examples`` is given) and works in float64.  A
failing check raises :class:`AssertionError` whose message starts with
``[<check name>]`` and states the rule that broke; an exception inside the
model is reported the same way.  The checks (:data:`CHECKS`, in order):

``setup_deterministic``
    ``setup(seed)`` twice gives bit-identical ``theta0`` and features.
``setup_draws_in_float64``
    ``theta0`` has shape ``(P,)`` and the requested dtype and device, so does
    every floating-point tensor of the features, and the float32 draw is the
    float64 draw rounded (draw on the CPU in float64, then move; docs/plugins.md).
``shapes``
    ``forward`` gives ``(G, D)`` on every split, ``loss_gradient`` ``(G, P)``,
    ``ntk`` ``(G, D, D)``, ``weight_norm`` ``(G,)``: float64, on theta's device,
    finite at initialisation.
``gradient_autograd``
    ``loss_gradient`` equals :func:`phasekit.model.autograd_loss_gradient`
    (docs/theory.md §1) to rtol 1e-10.
``ntk_autograd``
    ``ntk`` equals :func:`phasekit.model.autograd_ntk` (eq. 4) to rtol 1e-10 and
    is symmetric positive semi-definite.
``ntk_without_cache``
    ``ntk(features, theta, None)``, as the engine calls it at initialisation,
    equals ``ntk`` with ``forward``'s cache.
``ntk_operator``
    For a model that offers NTK-vector products (``ntk_operator`` returns a
    function; nothing to check otherwise): the products ``H u`` of a batch of
    vectors ``u`` (G, D) equal the NTK matrix's, row by row, to rtol 1e-10.
``descend``
    ``descend`` with a per-row learning rate ``eta`` of shape ``(G,)`` updates
    ``theta`` in place to ``theta - eta * loss_gradient`` (docs/theory.md §1), to
    rounding.
``batching``
    A batch of G points gives what G one-point calls give (outputs on every
    split, NTK, gradient, weight norm, step), each row within
    :data:`~phasekit.engine.batched.BATCH_RTOL` of the batch's largest magnitude of the value.
``stack_seeds``
    For a model that stacks seeds (``can_stack_seeds()``; nothing to check
    otherwise): a batch of rows of two seeds, in mixed order, on
    ``stack_seeds``' features gives every row (outputs on every split, NTK,
    gradient, weight norm, step) what that row gives alone on its own seed's
    features, within :data:`~phasekit.engine.batched.BATCH_RTOL` of the batch's largest
    magnitude of the value, and the same ``is_trivial``; ``take_rows`` equals stacking the kept
    rows afresh, to the same bound.  This is the bound on how a sweep's numbers
    depend on how its seeds are batched (docs/scale.md): no BLAS promises bitwise
    batch invariance, so a bitwise rule would fail on hardware the plugin's
    authors do not control.
``weight_norm``
    ``(G,)``, finite, non-negative; ``sum theta^2`` (docs/theory.md §1) unless
    the model overrides ``weight_norm``, which is then allowed only a constant
    offset ``c >= 0`` per seed (reduced coordinates: the norm of the parameters
    not stored, as the networks' input-span coordinates do).
``is_trivial``
    ``None``, or a ``(G,)`` bool tensor on theta's device that is all False on
    fresh initialisations.
``memory_per_point``
    ``None``, or a positive int of bytes between the tensors one step keeps alive
    (cache, NTK, outputs, theta) and 4x the measured peak of the step's tensors
    (forward, NTK, the other splits' forward, descend) for one grid point
    (:mod:`phasekit.engine.memory`).
``homogeneous``
    A model with ``homogeneous = True`` has ``z(l theta) = l^2 z(theta)`` (eq. 11).
``bounds_declared``
    Every bound the model declares on the config's data is well formed: a
    unique identifier ``name`` (stored as ``bound_<name>``), ``eta`` finite and
    positive, ``kind`` ``"catapult"`` or ``"divergence"``, an ``equation``.
``bounds_hold``
    The theorems behind the bounds.  They are per-step statements on one
    training point with label y = 0 (eq. 12, 81, 96, 122 of Appendix B; the
    several-point bounds of Appendix C, eq. 138/154/163/180, are large-width
    estimates, "<~"), so the model is rebuilt on one point ``x`` (Hypothesis: any
    direction, |x| in [0.2, 3], the config's input dimension) with y = 0, and for
    every bound it declares there, runs ``steps`` steps of gradient descent at
    several ``eta`` on the bound's side: fractions 0.5, 0.9, 0.999 and a drawn one
    of ``bound.eta`` for ``"catapult"``, 1.001, 1.1, 1.5 and a drawn one for
    ``"divergence"``.  The bound's quantity q must decrease (catapult) or
    increase (divergence) at every step while the loss is finite and below the
    sweep's default ``divergence_loss`` (1e10),
    and a run below a catapult bound must keep a finite loss.  The quantity is a
    callable given in ``quantities`` for that bound's name, else
    ``model.bound_quantity(bound, features, theta, theta0)`` (``theta0`` per row,
    ``(G, P)`` like ``theta``) when the model has
    that method and it returns a tensor (theta_+^2 for eq. 124, theta^2 + b^2
    for eq. 92), else ``weight_norm``.  Float64 rounding: the change q_(t+1) - q_t is predicted in
    exact arithmetic from the pre-step parameters and the step ``delta = -eta grad
    L``, as ``grad q(theta + delta/2) . delta`` (the midpoint rule, exact for a
    quadratic q, as every quantity of the paper is; the prediction must match the
    measured change to 1e-9 relative plus rounding).  Where the predicted change exceeds a few units
    in the last place of q (``ULP * q``, ULP = 8 float64 eps) it must have the
    theorem's sign and so must the measured change; elsewhere the measured change
    may not go the wrong way by more than ``ULP * q``.

``skip`` names checks that do not apply to a model (each name is checked).
Hypothesis is imported only when a check runs, so ``import phasekit`` never
needs it.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from phasekit.config.resolve import SWEEP_OPTIONS
from phasekit.engine.batched import BATCH_RTOL
from phasekit.engine.memory import tensor_bytes
from phasekit.engine.spectrum import initial_lambda_max
from phasekit.model import Bound, Model, autograd_loss_gradient, autograd_ntk

#: a few units in the last place of float64: the resolution of a change of a norm
ULP = 8 * torch.finfo(torch.float64).eps

#: a run whose loss is non-finite or above this has diverged (the sweep's default)
DIVERGED_LOSS = SWEEP_OPTIONS["divergence_loss"].default

Quantity = Callable[[Model, Any, torch.Tensor, torch.Tensor], torch.Tensor]


class _Subject:
    """The model under test, built on first use and shared by the checks."""

    def __init__(self, config, manager, device, max_examples, quantities, steps):
        self.config = config
        self.manager = manager
        self.device = torch.device(device)
        self.max_examples = max_examples
        self.quantities = dict(quantities or {})
        self.steps = steps
        self._model: Model | None = None

    @property
    def model(self) -> Model:
        if self._model is None:
            from phasekit.api import build_model

            self._model = build_model(self.config, manager=self.manager)
        return self._model

    def setup(self, seed: int, dtype=torch.float64):
        return self.model.setup(seed, self.device, dtype)

    def labels(self, split: str = "train") -> torch.Tensor:
        return self.model.data.labels(split).to(self.device, torch.float64)

    def splits(self) -> list[str]:
        return ["train"] + (["test"] if self.model.data.has_test else [])


def _fail(check: str, rule: str, detail: str = "") -> AssertionError:
    return AssertionError(f"[{check}] {rule}" + (f": {detail}" if detail else ""))


def _require(ok: bool, check: str, rule: str, detail: str = "") -> None:
    if not ok:
        raise _fail(check, rule, detail)


def _close(check: str, rule: str, actual: torch.Tensor, expected: torch.Tensor,
           rtol: float, atol: float) -> None:
    """|actual - expected| <= atol + rtol |expected| elementwise, else a named failure."""
    _require(actual.shape == expected.shape, check, rule,
             f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    err = (actual - expected).abs()
    allowed = atol + rtol * expected.abs()
    bad = ~(err <= allowed)
    if bool(bad.any()):
        worst = int(torch.argmax(torch.where(bad, err - allowed, -math.inf)))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), err.shape))
        raise _fail(check, rule, f"{int(bad.sum())} of {err.numel()} entries differ; at "
                                 f"{index}: {float(actual.flatten()[worst])!r} vs "
                                 f"{float(expected.flatten()[worst])!r} (allowed "
                                 f"{float(allowed.flatten()[worst]):.3g})")


def _rows_close(check: str, rule: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Every row of ``actual`` within :data:`~phasekit.engine.batched.BATCH_RTOL` of ``expected``,
    relative to the largest finite magnitude of ``expected`` over the batch's rows (NaN
    where NaN), else a named failure: the bound on what sharing a batch does to a row
    (docs/scale.md).  The batch's scale, not the row's: a row whose values cancel (a
    quadratic form near 0) is rounded relative to its terms, which its own values no
    longer show."""
    _require(actual.shape == expected.shape, check, rule,
             f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    a = actual.detach().double().cpu().reshape(actual.shape[0], -1)
    b = expected.detach().double().cpu().reshape(expected.shape[0], -1)
    _require(torch.equal(a.isnan(), b.isnan()), check, rule, "NaN in different places")
    a, b = a.nan_to_num(), b.nan_to_num()
    scale = float(b.abs().max()) if b.numel() else 0.0
    err = (a - b).abs()
    bad = ~(err <= BATCH_RTOL * scale)
    if bool(bad.any()):
        row = int(bad.any(-1).nonzero()[0])
        worst = float(err[row].max()) / (scale or torch.finfo(torch.float64).tiny)
        raise _fail(check, rule, f"{int(bad.any(-1).sum())} of {a.shape[0]} rows differ by "
                                 f"more than BATCH_RTOL = {BATCH_RTOL:g} of the batch's "
                                 f"largest magnitude; row {row}: {worst:.3g}")


def _scale(t: torch.Tensor) -> float:
    finite = t[torch.isfinite(t)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _rows(theta0: torch.Tensor, G: int, seed: int, spread: float) -> torch.Tensor:
    """G parameter vectors: theta0 and G - 1 perturbations ``theta0 + spread rms(theta0) N(0, 1)``
    (drawn on the CPU in float64)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(G - 1, theta0.numel(), generator=gen, dtype=torch.float64)
    rms = float(theta0.double().square().mean().sqrt()) or 1.0
    rows = theta0[None].double().cpu() + spread * rms * noise
    return torch.cat([theta0[None].double().cpu(), rows]).to(theta0.device, theta0.dtype)


def _walk(obj: Any, path: str = "features", seen: set | None = None):
    """``(path, leaf)`` for every tensor and number inside ``obj`` (as
    :func:`phasekit.engine.memory.tensor_bytes` walks it)."""
    seen = set() if seen is None else seen
    if isinstance(obj, bool | int | float | str) or obj is None:
        yield path, obj
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name), f"{path}.{f.name}", seen)
    elif isinstance(obj, dict):
        for k in sorted(obj, key=repr):
            yield from _walk(obj[k], f"{path}[{k!r}]", seen)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]", seen)
    elif hasattr(obj, "__dict__"):
        for k, v in sorted(vars(obj).items()):
            yield from _walk(v, f"{path}.{k}", seen)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype):
            return False
        a, b = a.cpu(), b.cpu()
        if a.is_floating_point() or a.is_complex():            # NaN where NaN, else equal
            return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(),
                                                                      b.nan_to_num())
        return torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _given(subject: _Subject, **strategies):
    """``hypothesis.given`` with the kit's settings: the active profile's example count
    (or ``max_examples``), no deadline (model set-ups can be slow)."""
    from hypothesis import HealthCheck, given, settings

    kw = {"deadline": None,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}
    if subject.max_examples is not None:
        kw["max_examples"] = subject.max_examples

    def wrap(fn):
        return settings(**kw)(given(**strategies)(fn))

    return wrap


def _st():
    from hypothesis import strategies as st

    return st


SEEDS_MAX = 2 ** 16


# -- the checks ------------------------------------------------------------------------

def _check_setup_deterministic(subject: _Subject) -> None:
    name = "setup_deterministic"
    st = _st()

    @_given(subject, seed=st.integers(0, SEEDS_MAX))
    def run(seed):
        f1, t1 = subject.setup(seed)
        f2, t2 = subject.setup(seed)
        _require(_same(t1, t2), name, "setup(seed) twice must give bit-identical theta0",
                 f"seed {seed}")
        a, b = list(_walk(f1)), list(_walk(f2))
        _require([p for p, _ in a] == [p for p, _ in b], name,
                 "setup(seed) twice must give features of the same structure",
                 f"{[p for p, _ in a]} vs {[p for p, _ in b]}")
        for (path, x), (_, y) in zip(a, b, strict=True):
            _require(_same(x, y), name, "setup(seed) twice must give bit-identical features",
                     f"{path} differs (seed {seed})")

    run()


def _check_setup_draws_in_float64(subject: _Subject) -> None:
    name = "setup_draws_in_float64"
    st = _st()
    dev = subject.device

    @_given(subject, seed=st.integers(0, SEEDS_MAX))
    def run(seed):
        for dtype in (torch.float64, torch.float32):
            feats, theta0 = subject.setup(seed, dtype)
            _require(isinstance(theta0, torch.Tensor) and theta0.dim() == 1, name,
                     "theta0 must be a tensor of shape (P,)",
                     f"got {getattr(theta0, 'shape', type(theta0))}")
            _require(theta0.dtype == dtype and theta0.device.type == dev.type, name,
                     "theta0 must have the requested dtype and device",
                     f"asked {dtype} on {dev}, got {theta0.dtype} on {theta0.device}")
            for path, leaf in _walk(feats):
                if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
                    _require(leaf.dtype == dtype and leaf.device.type == dev.type, name,
                             "every floating-point tensor of the features must have the "
                             "requested dtype and device",
                             f"{path}: {leaf.dtype} on {leaf.device}, asked {dtype} on {dev}")
            if dtype == torch.float64:
                theta64 = theta0
        _require(torch.equal(theta0.cpu(), theta64.to(torch.float32).cpu()), name,
                 "theta0 must be drawn in float64 on the CPU and then converted, so float32 "
                 "and float64 (and CPU and GPU) runs start from the same draw",
                 f"seed {seed}: setup(float32) differs from setup(float64) rounded")

    run()


def _first_point(subject: _Subject, seed: int, spread: float, G: int):
    feats, theta0 = subject.setup(seed)
    theta = _rows(theta0, G, seed + 1, spread)
    return feats, theta0, theta


def _lambda0(model: Model, feats, theta0: torch.Tensor) -> float:
    """lambda_max(H_0) as the engine computes it (``initial_lambda_max``), but with
    ``forward``'s cache, so that only ``ntk_without_cache`` needs ``ntk`` without one."""
    cache = model.forward(feats, theta0[None])[1]
    return initial_lambda_max(model.ntk(feats, theta0[None], cache)[0])


def _check_shapes(subject: _Subject) -> None:
    name = "shapes"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX), G=st.integers(1, 4))
    def run(seed, G):
        feats, theta0, theta = _first_point(subject, seed, 0.1, G)
        P, dev = theta0.numel(), theta0.device

        def tensor(t, shape, what):
            _require(isinstance(t, torch.Tensor), name, f"{what} must be a tensor",
                     f"got {type(t).__name__}")
            _require(tuple(t.shape) == shape, name, f"{what} must have shape {shape}",
                     f"got {tuple(t.shape)}")
            _require(t.dtype == torch.float64 and t.device == dev, name,
                     f"{what} must be float64 on theta's device",
                     f"got {t.dtype} on {t.device}")
            _require(bool(torch.isfinite(t).all()), name,
                     f"{what} must be finite near initialisation")

        out = model.forward(feats, theta)
        _require(isinstance(out, tuple) and len(out) == 2, name,
                 "forward must return a pair (z, cache)")
        z, cache = out
        for split in subject.splits():
            D = model.data.inputs(split).shape[0]
            zs = z if split == "train" else model.forward(feats, theta, split)[0]
            tensor(zs, (G, D), f"forward(split={split!r}) outputs z")
        D = z.shape[1]
        eps = z - subject.labels()
        tensor(model.loss_gradient(feats, theta, cache, eps), (G, P), "loss_gradient")
        tensor(model.ntk(feats, theta, cache), (G, D, D), "ntk")
        tensor(model.weight_norm(feats, theta), (G,), "weight_norm")

    run()


def _check_gradient_autograd(subject: _Subject) -> None:
    name = "gradient_autograd"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX), spread=st.floats(0.0, 0.5))
    def run(seed, spread):
        feats, _, theta = _first_point(subject, seed, spread, 3)
        z, cache = model.forward(feats, theta)
        eps = z - subject.labels()
        grad = model.loss_gradient(feats, theta, cache, eps)
        ref = autograd_loss_gradient(model, feats, theta, eps)
        _close(name, "loss_gradient must equal the autograd gradient (1/D) sum_a eps_a "
               "dz_a/dtheta (docs/theory.md §1)", grad, ref, 1e-10, 1e-12 * _scale(ref))

    run()


def _check_ntk_autograd(subject: _Subject) -> None:
    name = "ntk_autograd"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX), spread=st.floats(0.0, 0.5))
    def run(seed, spread):
        feats, _, theta = _first_point(subject, seed, spread, 3)
        z, cache = model.forward(feats, theta)
        H = model.ntk(feats, theta, cache)
        ref = autograd_ntk(model, feats, theta)
        scale = _scale(ref)
        _close(name, "ntk must equal the autograd NTK H = J J^T / D (eq. 4)", H, ref, 1e-10,
               1e-12 * scale)
        _close(name, "the NTK must be symmetric (eq. 4)", H, H.transpose(-1, -2), 0.0,
               1e-12 * scale)
        low = float(torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2))).min())
        _require(low >= -1e-10 * scale, name,
                 "the NTK must be positive semi-definite (eq. 4)",
                 f"smallest eigenvalue {low:.3g}, largest entry {scale:.3g}")

    run()


def _check_ntk_without_cache(subject: _Subject) -> None:
    name = "ntk_without_cache"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX), spread=st.floats(0.0, 0.5))
    def run(seed, spread):
        feats, theta0, theta = _first_point(subject, seed, spread, 3)
        for th, where in ((theta0[None], "theta0[None], as the engine calls it at "
                           "initialisation"), (theta, "perturbed parameters")):
            try:
                bare = model.ntk(feats, th, None)
            except Exception as exc:  # noqa: BLE001 - reported as the rule broken
                raise _fail(name, "ntk(features, theta, cache=None) must work (the engine "
                            "calls it so at initialisation)",
                            f"on {where} it raised {exc!r}") from exc
            cached = model.ntk(feats, th, model.forward(feats, th)[1])
            _close(name, "ntk(features, theta, None) must equal ntk with forward's cache",
                   bare, cached, 1e-12, 1e-14 * _scale(cached))

    run()


def _check_ntk_operator(subject: _Subject) -> None:
    name = "ntk_operator"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX), spread=st.floats(0.0, 0.5))
    def run(seed, spread):
        feats, _, theta = _first_point(subject, seed, spread, 3)
        z, cache = model.forward(feats, theta)
        product = model.ntk_operator(feats, theta, cache)
        if product is None:                     # the engine forms the matrix: nothing to check
            return
        gen = torch.Generator().manual_seed(seed)
        u = torch.randn(z.shape, generator=gen, dtype=torch.float64).to(z)
        H = model.ntk(feats, theta, cache)
        ref = (H @ u.unsqueeze(-1)).squeeze(-1)
        _close(name, "ntk_operator's products must equal H u with the NTK of eq. 4, row by row",
               product(u), ref, 1e-10, 1e-12 * _scale(H) * float(u.abs().max()))

    run()


def _check_descend(subject: _Subject) -> None:
    name = "descend"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX), spread=st.floats(0.05, 0.5),
            etas=st.lists(st.floats(1e-3, 2.0), min_size=3, max_size=3, unique=True))
    def run(seed, spread, etas):
        feats, _, theta = _first_point(subject, seed, spread, 3)
        eta = torch.tensor(etas, dtype=theta.dtype, device=theta.device)
        z, cache = model.forward(feats, theta)
        eps = z - subject.labels()
        step = eta[:, None] * model.loss_gradient(feats, theta, cache, eps)
        expected = theta - step
        before = theta.clone()
        returned = model.descend(feats, theta, cache, eps, eta)
        _require(returned is None or returned is theta, name,
                 "descend updates theta in place (the engine ignores what it returns)",
                 f"it returned a {type(returned).__name__}")
        moved = (step != 0).any(-1)
        _require(bool((theta != before).any(-1)[moved].all()), name,
                 "descend must update theta in place", "theta is unchanged")
        _close(name, "descend must equal theta - eta * loss_gradient with eta per row, "
               "shape (G,) (docs/theory.md §1)", theta, expected, 1e-12,
               1e-12 * _scale(step) + 1e-300)

    run()


def _step_values(subject: _Subject, feats, theta: torch.Tensor, eta: torch.Tensor,
                 lambda0: torch.Tensor | None = None, eps: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """Everything one step computes for the rows ``theta``: outputs on every split, NTK,
    gradient, weight norm, the updated parameters (and ``is_trivial`` given the rows'
    ``lambda0``).  The gradient and the step take the residuals ``eps`` if given, else
    ``z - y``: comparing a batch with its rows alone, both get the same ``eps``, so that
    each method is held to its own rounding (``z - y`` cancels where z is close to y and
    would magnify a difference of the outputs, a difference the outputs' comparison
    already bounds)."""
    model, y = subject.model, subject.labels()
    z, cache = model.forward(feats, theta)
    eps = z - y if eps is None else eps
    out = {"forward": z,
           **{f"forward(split={s!r})": model.forward(feats, theta, s)[0]
              for s in subject.splits() if s != "train"},
           "ntk": model.ntk(feats, theta, cache),
           "loss_gradient": model.loss_gradient(feats, theta, cache, eps),
           "weight_norm": model.weight_norm(feats, theta)}
    stepped = theta.clone()
    model.descend(feats, stepped, model.forward(feats, stepped)[1], eps, eta)
    out["descend"] = stepped
    if lambda0 is not None:
        dead = model.is_trivial(feats, theta, cache, out["ntk"], lambda0)
        if dead is not None:
            out["is_trivial"] = dead.to(torch.float64)
    return out


def _check_batching(subject: _Subject) -> None:
    name = "batching"
    st = _st()
    rule = "a batch of G points must give what G one-point calls give"

    @_given(subject, seed=st.integers(0, SEEDS_MAX), spread=st.floats(0.05, 0.5))
    def run(seed, spread):
        feats, _, theta = _first_point(subject, seed, spread, 4)
        eta = torch.tensor([0.05, 0.1, 0.2, 0.4], dtype=theta.dtype, device=theta.device)

        single = [_step_values(subject, feats, theta[i:i + 1].clone(), eta[i:i + 1])
                  for i in range(4)]
        eps = torch.cat([s["forward"] for s in single]) - subject.labels()
        batch = _step_values(subject, feats, theta.clone(), eta, eps=eps)
        for key, value in batch.items():
            _rows_close(name, f"{rule} ({key})", value, torch.cat([s[key] for s in single]))

    run()


def _check_stack_seeds(subject: _Subject) -> None:
    name = "stack_seeds"
    st = _st()
    model = subject.model
    if not model.can_stack_seeds():
        return
    rule = ("a row of a batch of stacked seeds must give what it gives alone on its own "
            "seed's features")
    owner = torch.tensor([0, 1, 1, 0, 1], device=subject.device)

    @_given(subject, seeds=st.lists(st.integers(0, SEEDS_MAX), min_size=2, max_size=2,
                                    unique=True), spread=st.floats(0.05, 0.5))
    def run(seeds, spread):
        per_seed = [subject.setup(seed) for seed in seeds]
        rows = [_rows(theta0, 3, seed + 1, spread) for seed, (_, theta0) in
                zip(seeds, per_seed, strict=True)]
        lambdas = torch.tensor([_lambda0(model, f, t0) for f, t0 in per_seed],
                               dtype=torch.float64, device=subject.device)
        used = [0, 0]
        picked = []
        for s in owner.tolist():                              # each seed's rows in turn
            picked.append(rows[s][used[s]])
            used[s] += 1
        theta = torch.stack(picked)
        eta = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.4], dtype=theta.dtype, device=theta.device)

        def evaluate(feats, th, et, rows, eps=None):
            return _step_values(subject, feats, th, et, lambdas[rows], eps=eps)

        def compare(what, batch, expected):
            for key, value in batch.items():
                if key == "is_trivial":                 # a decision: the same, exactly
                    _require(_same(value, expected[key]), name, f"{rule} ({what}: {key})")
                else:
                    _rows_close(name, f"{rule} ({what}: {key})", value, expected[key])

        stacked = model.stack_seeds([f for f, _ in per_seed], owner)
        alone = [evaluate(per_seed[int(s)][0], theta[i:i + 1].clone(), eta[i:i + 1],
                          owner[i:i + 1]) for i, s in enumerate(owner.tolist())]
        expected = {k: torch.cat([a[k] for a in alone]) for k in alone[0]}
        eps = expected["forward"] - subject.labels()
        compare("whole batch", evaluate(stacked, theta.clone(), eta, owner, eps), expected)
        keep = torch.tensor([True, False, True, True, False], device=subject.device)
        afresh = evaluate(model.stack_seeds([f for f, _ in per_seed], owner[keep]),
                          theta[keep].clone(), eta[keep], owner[keep])
        eps = afresh["forward"] - subject.labels()
        compare("take_rows", evaluate(model.take_rows(stacked, keep), theta[keep].clone(),
                                      eta[keep], owner[keep], eps), afresh)

    run()


def _check_weight_norm(subject: _Subject) -> None:
    name = "weight_norm"
    st = _st()
    model = subject.model
    overridden = type(model).weight_norm is not Model.weight_norm

    @_given(subject, seed=st.integers(0, SEEDS_MAX), spread=st.floats(0.1, 2.0))
    def run(seed, spread):
        feats, _, theta = _first_point(subject, seed, spread, 4)
        w = model.weight_norm(feats, theta)
        _require(isinstance(w, torch.Tensor) and tuple(w.shape) == (4,), name,
                 "weight_norm must be a tensor of shape (G,)",
                 f"got {getattr(w, 'shape', type(w))}")
        _require(bool(torch.isfinite(w).all()) and bool((w >= 0).all()), name,
                 "weight_norm must be finite and non-negative", f"got {w.tolist()}")
        theta2 = (theta * theta).sum(-1)
        if not overridden:
            _close(name, "weight_norm must be sum theta^2 (docs/theory.md §1)", w, theta2,
                   1e-13, 0.0)
            return
        offset = w - theta2
        tol = ULP * float(w.max())
        _require(float(offset.min()) >= -tol, name,
                 "an overridden weight_norm is sum theta^2 plus the norm of parameters "
                 "not stored (reduced coordinates), an offset >= 0",
                 f"offset {offset.tolist()}")
        _require(float(offset.max() - offset.min()) <= tol, name,
                 "an overridden weight_norm may differ from sum theta^2 only by a constant "
                 "per seed (the norm of parameters not stored), not depending on theta",
                 f"offsets {offset.tolist()} for four parameter vectors")

    run()


def _check_is_trivial(subject: _Subject) -> None:
    name = "is_trivial"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX))
    def run(seed):
        feats, theta0, theta = _first_point(subject, seed, 0.0, 2)
        _, cache = model.forward(feats, theta)
        H = model.ntk(feats, theta, cache)
        from hypothesis import assume

        lambda0 = _lambda0(model, feats, theta0)
        assume(bool(torch.isfinite(H).all()) and lambda0 > 0)
        out = model.is_trivial(feats, theta, cache, H, theta.new_full((2,), lambda0))
        if out is None:
            return
        _require(isinstance(out, torch.Tensor) and tuple(out.shape) == (2,)
                 and out.dtype == torch.bool and out.device == theta0.device, name,
                 "is_trivial must return None or a (G,) bool tensor on theta's device",
                 f"got {getattr(out, 'shape', type(out))}, {getattr(out, 'dtype', '')}")
        _require(not bool(out.any()), name,
                 "a fresh initialisation (lambda_max(H_0) > 0) must not be trivial",
                 f"seed {seed}")

    run()


class _PeakBytes:
    """Live bytes of the tensors allocated while active, and their peak (any device).

    A ``TorchDispatchMode`` sees every operator's outputs: a tensor whose storage is
    new counts its bytes until the last tensor on that storage is freed; views and
    in-place results of known storages add nothing, and storages that existed
    before (features, theta0) are not counted.
    """

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = {_storage(t) for t in tree_leaves((args, kwargs))
                          if isinstance(t, torch.Tensor)}
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        tracker._track(t, inputs)
                return out

        self.mode = Mode()
        self.live: dict[int, list[int]] = {}
        self.seen: set[int] = set()
        self.now = 0
        self.peak = 0

    def _track(self, t: torch.Tensor, inputs: set[int]) -> None:
        if id(t) in self.seen:
            return
        key = _storage(t)
        if key in self.live:
            self.live[key][1] += 1
        elif key in inputs or key == 0:
            return
        else:
            size = t.untyped_storage().nbytes()
            self.live[key] = [size, 1]
            self.now += size
            self.peak = max(self.peak, self.now)
        self.seen.add(id(t))
        weakref.finalize(t, self._release, key, id(t))

    def _release(self, key: int, ident: int) -> None:
        self.seen.discard(ident)
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.now -= entry[0]
                del self.live[key]

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


def _check_memory_per_point(subject: _Subject) -> None:
    name = "memory_per_point"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX))
    def run(seed):
        feats, theta0 = subject.setup(seed)
        stated = model.memory_per_point(feats, theta0)
        if stated is None:
            return
        _require(isinstance(stated, int) and stated > 0, name,
                 "memory_per_point must be None or a positive int (bytes)", f"got {stated!r}")
        y = subject.labels()
        with _PeakBytes() as tracker:
            theta = theta0.expand(1, -1).clone()
            z, cache = model.forward(feats, theta)
            eps = z - y
            H = model.ntk(feats, theta, cache)
            others = [model.forward(feats, theta, s)[0] for s in subject.splits()
                      if s != "train"]
            model.descend(feats, theta, cache, eps, torch.full_like(eps[:, 0], 1e-3))
        kept = tensor_bytes(cache) + tensor_bytes(H) + tensor_bytes(z) + tensor_bytes(theta) \
            + tensor_bytes(others)
        _require(stated >= kept, name,
                 "memory_per_point must cover the tensors one step keeps alive (forward "
                 "cache after the NTK, NTK, outputs, theta)",
                 f"stated {stated} bytes, they hold {kept}")
        _require(stated <= 4 * tracker.peak, name,
                 "memory_per_point must not exceed 4x the measured peak of one step's "
                 "tensors (forward, NTK, other splits, descend) for one grid point",
                 f"stated {stated} bytes, measured peak {tracker.peak}")

    run()


def _check_homogeneous(subject: _Subject) -> None:
    name = "homogeneous"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX), scale=st.floats(0.1, 10.0))
    def run(seed, scale):
        if not model.homogeneous:
            return
        feats, _, theta = _first_point(subject, seed, 0.3, 2)
        z = model.forward(feats, theta)[0]
        z_scaled = model.forward(feats, scale * theta)[0]
        _close(name, "a model declaring homogeneous = True must have z(l theta) = l^2 "
               "z(theta) (eq. 11)", z_scaled, scale ** 2 * z, 1e-10,
               1e-12 * scale ** 2 * _scale(z))

    run()


def _check_bounds_declared(subject: _Subject) -> None:
    name = "bounds_declared"
    st = _st()
    model = subject.model

    @_given(subject, seed=st.integers(0, SEEDS_MAX))
    def run(seed):
        feats, theta0 = subject.setup(seed)
        bounds = model.bounds(feats, theta0, _lambda0(model, feats, theta0))
        _validate_bounds(name, bounds)

    run()


def _validate_bounds(name: str, bounds: Any) -> None:
    _require(isinstance(bounds, list), name, "bounds must return a list of Bound",
             f"got {type(bounds).__name__}")
    names = [getattr(b, "name", None) for b in bounds]
    for b in bounds:
        _require(isinstance(b, Bound), name, "bounds must return phasekit.model.Bound objects",
                 f"got {type(b).__name__}")
        _require(isinstance(b.name, str) and b.name.isidentifier(), name,
                 "a bound's name must be an identifier (stored as bound_<name>)",
                 f"got {b.name!r}")
        _require(math.isfinite(b.eta) and b.eta > 0, name,
                 "a bound's eta must be finite and positive", f"{b.name}: {b.eta!r}")
        _require(b.kind in ("catapult", "divergence"), name,
                 "a bound's kind must be 'catapult' or 'divergence'", f"{b.name}: {b.kind!r}")
        _require(isinstance(b.equation, str) and bool(b.equation.strip()), name,
                 "a bound must cite its equation", f"{b.name}")
    _require(len(set(names)) == len(names), name, "bound names must be unique", f"{names}")


def _quantity(subject: _Subject, model: Model, bound: Bound, feats, theta0):
    """``q(theta)`` for ``bound`` (module docstring, ``bounds_hold``) on ``feats``, every
    row started from ``theta0`` (P,), or ``None`` for the weight norm.  The model's
    ``bound_quantity`` and the given quantities see ``theta0`` per row, ``(G, P)``."""
    given = subject.quantities.get(bound.name)
    if given is not None:
        return lambda th: given(model, feats, th, theta0.expand(th.shape[0], -1))
    own = getattr(model, "bound_quantity", None)
    if own is not None and own(bound, feats, theta0[None], theta0[None]) is not None:
        return lambda th: own(bound, feats, th, theta0.expand(th.shape[0], -1))
    return None


def _predicted_change(q, theta, delta):
    """``q(theta + delta) - q(theta)`` in exact arithmetic for a quadratic q, ``(G,)``, by
    the midpoint rule ``grad q(theta + delta/2) . delta`` (exact for a quadratic): for the
    weight norm (``q is None``; sum theta^2 plus a constant, as the ``weight_norm`` check
    enforces) ``2 theta.delta + delta^2``, otherwise with one autograd pass."""
    if q is None:
        return 2.0 * (theta * delta).sum(-1) + (delta * delta).sum(-1)
    with torch.enable_grad():
        mid = (theta + 0.5 * delta).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(q(mid).sum(), mid, allow_unused=True)
    if grad is None:                                  # q does not depend on theta
        return torch.zeros(theta.shape[0], dtype=theta.dtype, device=theta.device)
    return (grad * delta).sum(-1)


def _check_bounds_hold(subject: _Subject) -> None:
    name = "bounds_hold"
    st = _st()
    from hypothesis import assume

    from phasekit.api import build_model

    d = subject.model.data.input_dim
    raw = subject.config.to_dict() if hasattr(subject.config, "to_dict") else subject.config
    model_table = dict(raw["model"])

    @_given(subject, seed=st.integers(0, SEEDS_MAX), radius=st.floats(0.2, 3.0),
            below=st.floats(0.05, 0.999), above=st.floats(1.001, 2.0))
    def run(seed, radius, below, above):
        direction = torch.randn(d, generator=torch.Generator().manual_seed(seed + 7),
                                dtype=torch.float64)
        x = (radius * direction / direction.norm()).tolist()
        one_point = {"model": model_table, "dataset": {"name": "toy", "x": x, "y": 0.0}}
        try:
            model = build_model(one_point, manager=subject.manager)
        except Exception as exc:  # noqa: BLE001
            raise _fail(name, "the bounds' theorems are checked on one training point with "
                        "y = 0; the model must build on the toy dataset (or skip "
                        "'bounds_hold')", repr(exc)) from exc
        feats, theta0 = model.setup(seed, subject.device, torch.float64)
        lambda0 = _lambda0(model, feats, theta0)           # NaN: H_0 not finite
        assume(lambda0 > 0)
        bounds = model.bounds(feats, theta0, lambda0)
        _validate_bounds(name, bounds)
        for bound in bounds:
            fracs = [0.5, 0.9, 0.999, below] if bound.kind == "catapult" else \
                [1.001, 1.1, 1.5, above]
            _train_against(name, subject, model, feats, theta0, bound, fracs,
                           f"x = {x}, seed {seed}")

    run()


def _train_against(name, subject, model, feats, theta0, bound, fracs, where) -> None:
    """Gradient descent at ``eta = frac * bound.eta`` for each frac, checking the
    bound's quantity step by step (module docstring, ``bounds_hold``)."""
    sign = -1 if bound.kind == "catapult" else +1
    custom = _quantity(subject, model, bound, feats, theta0)

    def q(th):
        return model.weight_norm(feats, th) if custom is None else custom(th)

    y = model.data.y_train.to(theta0)
    eta = torch.tensor(fracs, dtype=theta0.dtype, device=theta0.device) * bound.eta
    theta = theta0.expand(len(fracs), -1).clone()
    active = list(range(len(fracs)))
    label = f"{bound.equation} ({bound.kind}, eta = frac * {bound.eta:.6g})"
    q_now = None
    for t in range(subject.steps):
        z, cache = model.forward(feats, theta)
        eps = z - y
        loss = 0.5 * (eps * eps).mean(-1)
        ok = torch.isfinite(loss) & (loss <= DIVERGED_LOSS)
        if sign < 0:
            _require(bool(ok.all()), name,
                     f"{label}: a run below a catapult bound keeps a finite loss (its "
                     f"quantity decreases, docs/theory.md §3)",
                     f"frac {[fracs[i] for i in active]} diverged by step {t}; {where}")
        if not bool(ok.all()):
            keep = ok.nonzero().flatten()
            if keep.numel() == 0:
                return
            theta, eta = theta[keep].clone(), eta[keep]
            active = [active[i] for i in keep.tolist()]
            q_now = None
            z, cache = model.forward(feats, theta)
            eps = z - y
        if q_now is None or q_now.shape[0] != theta.shape[0]:
            q_now = q(theta).detach()
        q_old = q_now
        delta = -eta[:, None] * model.loss_gradient(feats, theta, cache, eps)
        predicted = _predicted_change(custom, theta, delta)
        model.descend(feats, theta, cache, eps, eta)
        q_now = q(theta).detach()
        _check_change(name, label, sign, q_now - q_old, predicted, ULP * q_old.abs(),
                      f"step {t}, frac {[fracs[i] for i in active]}; {where}")


def _check_change(name: str, label: str, sign: int, change: torch.Tensor,
                  predicted: torch.Tensor, floor: torch.Tensor, at: str) -> None:
    """One step's measured ``change`` of a bound's quantity against its exact
    ``predicted`` change and the theorem's ``sign``, to rounding ``floor`` (module
    docstring, ``bounds_hold``)."""
    verb = "decrease" if sign < 0 else "increase"
    mismatch = (change - predicted).abs() > 1e-9 * predicted.abs() + 2 * floor
    _require(not bool(mismatch.any()), name,
             f"{label}: the measured change of the bound's quantity must equal its "
             f"exact change along the step (the quantity must be quadratic in theta "
             f"and descend must be theta - eta grad L)",
             f"measured {change.tolist()}, predicted {predicted.tolist()}; {at}")
    resolvable = predicted.abs() > floor
    _require(bool((sign * predicted[resolvable] > 0).all()), name,
             f"{label}: the bound's quantity must {verb} at every step (exact-arithmetic "
             f"change of the pre-step parameters)",
             f"predicted change {predicted.tolist()}; {at}")
    _require(bool((sign * change[resolvable] > 0).all()), name,
             f"{label}: the bound's quantity must {verb} at every step where the change "
             f"is resolvable in float64", f"measured change {change.tolist()}; {at}")
    _require(bool((sign * change >= -floor).all()), name,
             f"{label}: the bound's quantity may not move the wrong way beyond rounding",
             f"measured change {change.tolist()}, rounding {floor.tolist()}; {at}")


_FUNCTIONS: dict[str, Callable[[_Subject], None]] = {
    "setup_deterministic": _check_setup_deterministic,
    "setup_draws_in_float64": _check_setup_draws_in_float64,
    "shapes": _check_shapes,
    "gradient_autograd": _check_gradient_autograd,
    "ntk_autograd": _check_ntk_autograd,
    "ntk_without_cache": _check_ntk_without_cache,
    "ntk_operator": _check_ntk_operator,
    "descend": _check_descend,
    "batching": _check_batching,
    "stack_seeds": _check_stack_seeds,
    "weight_norm": _check_weight_norm,
    "is_trivial": _check_is_trivial,
    "memory_per_point": _check_memory_per_point,
    "homogeneous": _check_homogeneous,
    "bounds_declared": _check_bounds_declared,
    "bounds_hold": _check_bounds_hold,
}

#: the names of the checks, in the order they run
CHECKS = tuple(_FUNCTIONS)


def _named(name: str, fn: Callable[[_Subject], None], subject: _Subject) -> Callable[[], None]:
    def check() -> None:
        try:
            fn(subject)
        except AssertionError as exc:
            if str(exc).startswith(f"[{name}]"):
                raise
            raise AssertionError(f"[{name}] {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a crash breaks the check's rule too
            raise AssertionError(f"[{name}] the model raised {exc!r}") from exc

    check.__name__ = check.__qualname__ = f"check_{name}"
    check.__doc__ = fn.__doc__
    return check


def model_checks(config, *, manager=None, device: str | torch.device = "cpu",
                 max_examples: int | None = None,
                 quantities: Mapping[str, Quantity] | None = None, steps: int = 100,
                 skip: Iterable[str] = ()) -> list[tuple[str, Callable[[], None]]]:
    """``(name, check)`` for every contract check (:data:`CHECKS`, module docstring), for
    ``pytest.mark.parametrize``; calling ``check()`` runs it.

    Nothing is built until a check runs (the model is built once and shared), so this
    is cheap at collection time.  ``config``: a mapping with ``[model]`` and
    ``[dataset]`` tables, or a resolved config.  ``manager``: the plugin manager
    (default: the process-wide one).  ``device``: where tensors live.
    ``max_examples``: Hypothesis examples per check (default: the active profile's).
    ``quantities``: bound name -> ``q(model, features, theta, theta0)``, ``(G,)`` with
    ``theta0`` ``(G, P)`` like ``theta``, the
    quantity a bound's theorem makes monotone, for a model that does not say so
    through ``bound_quantity``.  ``steps``: gradient-descent steps per run of
    ``bounds_hold``.  ``skip``: names of checks that do not apply.
    """
    skip = set(skip)
    unknown = skip - set(CHECKS)
    if unknown:
        raise ValueError(f"skip: unknown checks {sorted(unknown)}; the checks are "
                         f"{', '.join(CHECKS)}")
    subject = _Subject(config, manager, device, max_examples, quantities, steps)
    return [(name, _named(name, _FUNCTIONS[name], subject)) for name in CHECKS
            if name not in skip]


def check_model(config, **options) -> None:
    """Run every contract check on the model of ``config`` (options: :func:`model_checks`).

    Raises one AssertionError listing every check that failed, each message starting
    with ``[<check name>]`` and stating the rule that broke.
    """
    failures = []
    for _, check in model_checks(config, **options):
        try:
            check()
        except AssertionError as exc:
            notes = getattr(exc, "__notes__", [])        # Hypothesis: the falsifying example
            failures.append("\n".join([str(exc), *notes]))
    if failures:
        raise AssertionError(f"{len(failures)} phasekit model contract check(s) failed:\n"
                             + "\n".join(failures))


__all__ = ["CHECKS", "ULP", "check_model", "model_checks"]
