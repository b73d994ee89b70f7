"""The plugin's own test suite: phasekit's contract checks on the tanh net."""

from phasekit.testing import check_model


def test_tanh_net_honours_the_model_contract():
    check_model({"model": {"name": "tanh_net", "width": 16},
                 "dataset": {"name": "random", "num_train": 4, "num_test": 3}})
