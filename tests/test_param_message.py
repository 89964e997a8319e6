"""The learner -> actor parameter message (serl_ext/loop/param_message.py): a round trip through
the transport's codec, and refusal of malformed, wrong-shape and NaN messages; the actor
applies nothing of a refused message."""

import copy

import numpy as np
import pytest

from serl_ext.loop.param_message import SCHEMA_VERSION, MessageError, build_message, check_message
from serl_ext.transport import codec


def _params():
    return {"actor": {"Dense_0": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                                  "bias": np.zeros(3, np.float32)}},
            "encoder": {"scale": np.ones((1,), np.float32)}}


def _part(version=3):
    return {"version": version, "ready": True, "tau": 0.4, "value": {"w": np.full((4,), 0.5, np.float32)},
            "memory": None, "tasks": ["pick-place"]}


def test_round_trip_through_the_codec_keeps_every_field():
    message = build_message(7, 120, _params(), {"method": _part()})
    assert message["schema_version"] == SCHEMA_VERSION
    decoded = codec.decode(codec.encode(message))
    checked = check_message(decoded, params_template=_params(), accepted_parts=("method",))
    assert (checked.version, checked.learner_step) == (7, 120)
    np.testing.assert_array_equal(checked.params["actor"]["Dense_0"]["kernel"], _params()["actor"]["Dense_0"]["kernel"])
    assert checked.parts["method"]["version"] == 3 and checked.parts["method"]["tau"] == pytest.approx(0.4)
    np.testing.assert_array_equal(checked.parts["method"]["value"]["w"], np.full((4,), 0.5, np.float32))
    # No parts is a valid message too (plain HiL-SERL).
    assert check_message(build_message(0, 0, _params())).parts == {}


def _bad_messages():
    good = build_message(1, 0, _params(), {"method": _part()})
    cases = {}
    cases["not a dict"] = [good]
    cases["no params"] = {k: v for k, v in good.items() if k != "params"}
    cases["old schema"] = dict(good, schema_version=0)
    cases["legacy top-level part"] = {"version": 1, "learner_step": 0, "params": _params(), "method": _part()}
    cases["float version"] = dict(good, version=1.5)
    cases["negative step"] = dict(good, learner_step=-1)
    cases["bool version"] = dict(good, version=True)
    wrong_shape = copy.deepcopy(good)
    wrong_shape["params"]["actor"]["Dense_0"]["kernel"] = np.zeros((3, 2), np.float32)
    cases["wrong shape"] = wrong_shape
    missing_leaf = copy.deepcopy(good)
    del missing_leaf["params"]["encoder"]
    cases["missing subtree"] = missing_leaf
    nan_params = copy.deepcopy(good)
    nan_params["params"]["actor"]["Dense_0"]["bias"][1] = np.nan
    cases["NaN params"] = nan_params
    inf_part = copy.deepcopy(good)
    inf_part["parts"]["method"]["value"]["w"][0] = np.inf
    cases["inf in part"] = inf_part
    unversioned = copy.deepcopy(good)
    del unversioned["parts"]["method"]["version"]
    cases["unversioned part"] = unversioned
    cases["unknown part"] = build_message(1, 0, _params(), {"other": _part()})
    return cases


@pytest.mark.parametrize("name", sorted(_bad_messages()))
def test_malformed_wrong_shape_and_nan_messages_are_refused_with_a_reason(name):
    with pytest.raises(MessageError) as e:
        check_message(_bad_messages()[name], params_template=_params(), accepted_parts=("method",))
    assert str(e.value)  # says why
    assert isinstance(e.value, ValueError)


def test_build_message_refuses_bad_versions_but_leaves_nan_to_the_receiver():
    with pytest.raises(MessageError, match="version"):
        build_message(-1, 0, _params())
    with pytest.raises(MessageError, match="parts/method/version"):
        build_message(1, 0, _params(), {"method": {"version": "3"}})
    nan = _params()
    nan["encoder"]["scale"][0] = np.nan
    message = build_message(1, 0, nan)  # the learner publishes; the actor refuses it
    with pytest.raises(MessageError, match="params/encoder/scale contains NaN"):
        check_message(message)


def test_actor_applies_nothing_of_a_refused_message(tmp_path):
    """Through run_actor: a NaN message and a wrong-shape message are both counted as errors
    and the actor keeps the version (and parameters) of the last good one."""
    import json
    import os

    from configs.train import get_config
    from serl_ext.loop import common
    from serl_ext.loop.actor import run_actor
    from test_loop import small_actor_settings
    from test_online import PushingClient

    config = small_actor_settings(get_config("pick-place,hil_serl"), tmp_path, 60)
    config.operator.enabled = False
    config.env.max_episode_steps = 15
    spec = {"state": ((39,), np.dtype(np.float32))}
    params = common.to_numpy_tree(common.create_agent(config, spec, 4).policy_params())
    nan = copy.deepcopy(params)
    first = nan
    while isinstance(first, dict):
        key = sorted(first)[0]
        if isinstance(first[key], dict):
            first = first[key]
        else:
            first[key] = np.full_like(first[key], np.nan)
            break
    shapes = copy.deepcopy(params)
    shapes["actor"] = {"bogus": np.zeros((2,), np.float32)}
    messages = {1: build_message(1, 0, params), 2: build_message(2, 0, nan), 3: build_message(3, 0, shapes),
                4: build_message(4, 0, params, {"uniintervene": {"version": 1}})}  # no gate takes it
    summary = run_actor(config, make_client=lambda stores: PushingClient(stores, messages))
    rows = [json.loads(line) for line in open(os.path.join(common.run_dir_for(config), "metrics", "actor.jsonl"))]
    last = [r for r in rows if "rollout/param_errors" in r][-1]
    assert last["rollout/param_errors"] == 3.0 and last["rollout/param_version"] == 1.0
    assert summary["env_steps"] == 60


def test_parameter_slot_survives_garbage_on_the_transport_thread():
    from serl_ext.loop.actor import ParameterSlot

    slot = ParameterSlot()
    slot.put(build_message(1, 40, _params()))
    assert slot.learner_step == 40
    for garbage in ({"learner_step": "lots"}, {"learner_step": True}, [1, 2], None):
        slot.put(garbage)  # never raises; refused whole on arrival, nothing of it stored
        assert slot.learner_step == 40
    assert slot.num_refused == 4
    assert slot.take().learner_step == 40 and slot.take() is None  # the good message is still the pending one
