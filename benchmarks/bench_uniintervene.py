"""UniIntervene cost: gate decision latency on the actor and learner updates per second.

Two parts, each in its own process because XLA's threading flags must be set before jax is
imported (``--part=all``, the default, runs both as subprocesses and merges the results):

* ``gate``: the actor's side, single-threaded XLA on the CPU as ``launchers/actor.sh`` runs it
  (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``,
  ``JAX_PLATFORMS=cpu``). An :class:`~uniintervene_jax.online.OnlineUniIntervene` is built from
  the task's demos and pretrained briefly (``--pretrain_steps``) so that the recovery memory has
  items; its payload is loaded into a :class:`~uniintervene_jax.gate.NetworkGateModels`. Each
  call below is timed once per decision on real observations (``--num_obs`` collected by
  stepping the task env with random actions; the policy action is a random action):
  ``value`` (proxy value), ``score`` (intervention model with the value history), ``goal``
  (embedding + faiss retrieval), ``chunk`` (recovery policy), a full non-triggering decision
  (value + score), a full triggering decision (value + score + goal + chunk; when retrieval
  finds no goal the memory's first goal is used so the chunk is always included), and
  ``UniInterveneGate.select_action`` with a forced trigger (tau 0) and with no trigger
  (tau 1.01), which adds the gate's own bookkeeping. Retrieval is also timed for memories of
  ``--memory_sizes`` items (the mined items replicated with jittered keys).
* ``learner``: default (multi-threaded) XLA as ``launchers/learner.sh`` runs it. (a) the plain
  HiL-SERL agent update exactly as the learner does it (``sample_mixed_many`` from two replay
  buffers filled with random transitions of the task's spec, ``config.learner`` batch size, UTD
  and demo fraction, then ``agent.update``), (b) the same plus ``OnlineUniIntervene.step`` after
  every update (one update of each UniIntervene model every ``train_period`` agent updates; no
  new episodes arrive, so no refresh happens inside the timing), (c) one update of each
  UniIntervene model alone, and one refresh (relabel + rebuild datasets and memory, on the
  demos only) as ``refresh_s``. Every timed call is followed by ``jax.block_until_ready``.

Outputs ``{--out}/uniintervene_latency.md`` and ``.json`` (``--part=gate|learner`` alone writes
``uniintervene_latency_{part}.md/.json``); the table is also printed. Needs the task's demos in
``demos/{task}`` (``python launchers/collect_demos.py --task=TASK --num_demos=20``).

    # from the repo root
    python benchmarks/bench_uniintervene.py --task=pick-place [--part=all] [--decisions=2000] [--updates=500]
    # quick check
    python benchmarks/bench_uniintervene.py --decisions=50 --updates=20 --out=/tmp/bench_ui
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

ACTOR_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

FLAGS = flags.FLAGS
flags.DEFINE_string("task", "pick-place", "task (config string TASK,hil_serl+uniintervene)")
flags.DEFINE_enum("part", "all", ["gate", "learner", "all"], "which part to run (all: both, as subprocesses)")
flags.DEFINE_integer("decisions", 2000, "timed calls per gate measurement")
flags.DEFINE_integer("updates", 500, "timed learner steps per learner measurement")
flags.DEFINE_integer("warmup", 50, "untimed calls before each measurement (the first compiles)")
flags.DEFINE_string("out", "benchmarks/results", "output folder")
flags.DEFINE_integer("seed", 0, "config seed (models, env, buffers)")
flags.DEFINE_integer("pretrain_steps", 200, "OnlineUniIntervene.pretrain steps before timing")
flags.DEFINE_integer("num_obs", 300, "real observations collected from the env for the gate part")
flags.DEFINE_list("memory_sizes", ["1200", "12000"], "extra memory sizes for the retrieval timing")
flags.DEFINE_integer("buffer_fill", 5000, "random transitions in each replay buffer (learner part)")
flags.DEFINE_integer("refresh_repeats", 3, "timed refreshes (learner part)")
flags.DEFINE_integer("faiss_threads", 0, "gate part: faiss.omp_set_num_threads (0: faiss's default, as the actor)")
flags.DEFINE_string("part_json", None, "internal: write this part's results as JSON here")

# Flags forwarded to the part subprocesses.
_FORWARD = ("task", "decisions", "updates", "warmup", "seed", "pretrain_steps", "num_obs", "memory_sizes",
            "buffer_fill", "refresh_repeats", "faiss_threads")


# ----------------------------------------------------------------------------- helpers
def _stats(seconds) -> dict:
    ms = 1e3 * np.asarray(seconds, np.float64)
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4), "mean_ms": round(float(ms.mean()), 4),
            "max_ms": round(float(ms.max()), 4)}


def _time_calls(fn, n: int, warmup: int):
    """Per-call wall times (s) of ``fn(i)`` for i in range(n), after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(i)
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times[i] = time.perf_counter() - t0
    return times


def _config():
    from configs.train import get_config

    config = get_config(f"{FLAGS.task},hil_serl+uniintervene")
    config.seed = int(FLAGS.seed)
    if not config.demos.path:
        config.demos.path = os.path.join(REPO, "demos", FLAGS.task)
    return config


def _online_uniintervene(config, spec, action_dim: int):
    """OnlineUniIntervene on the task's demos, pretrained ``--pretrain_steps``; also returns the
    pretrain time (s)."""
    from serl_ext.data.episodes import list_episodes, load_episode
    from serl_ext.loop.common import demo_dir_for
    from uniintervene_jax.online import OnlineUniIntervene

    directory = demo_dir_for(config)
    paths = list_episodes(directory) if os.path.isdir(directory) else []
    if not paths:
        raise SystemExit(f"no demo episodes in {directory}; collect them first with\n"
                         f"  python launchers/collect_demos.py --task={FLAGS.task} --num_demos=20")
    demos = [load_episode(p) for p in paths[: int(config.demos.num_demos)]]
    ui = OnlineUniIntervene(config, spec, action_dim, demos)
    t0 = time.perf_counter()
    ui.pretrain(steps=int(FLAGS.pretrain_steps))
    return ui, len(demos), time.perf_counter() - t0


def _collect_observations(env, n: int, seed: int):
    obs, _ = env.reset(seed=seed)
    out, episode = [obs], 0
    while len(out) < n:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append(obs)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
            out.append(obs)
    return [{k: np.asarray(v) for k, v in o.items()} for o in out[:n]]


def _machine(jax) -> dict:
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "device": str(jax.devices()[0]),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")}
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------- gate part
def run_gate() -> dict:
    os.environ["XLA_FLAGS"] = ACTOR_XLA_FLAGS  # before jax is imported (as launchers/actor.sh)
    os.environ["JAX_PLATFORMS"] = "cpu"
    import faiss
    import jax

    from serl_ext.loop.common import make_env, observation_spec
    from serl_ext.loop.gate import RECOVERY
    from uniintervene_jax.gate import NetworkGateModels, UniInterveneGate
    from uniintervene_jax.memory.memory import RecoveryMemory
    from uniintervene_jax.memory.mining import RecoveryItems

    if int(FLAGS.faiss_threads) > 0:
        faiss.omp_set_num_threads(int(FLAGS.faiss_threads))
    n, warmup = int(FLAGS.decisions), int(FLAGS.warmup)
    config = _config()
    c = config.uniintervene
    env = make_env(config, config.seed, with_operator=False)
    try:
        spec = observation_spec(env)
        action_dim = int(env.action_space.shape[0])
        observations = _collect_observations(env, int(FLAGS.num_obs), config.seed)
    finally:
        env.close()
    ui, num_demos, pretrain_s = _online_uniintervene(config, spec, action_dim)
    payload = ui.payload()
    payload["ready"] = True  # pretrained on demos only: not ready by the online criteria
    models = NetworkGateModels(config, spec, action_dim)
    models.load(payload)
    memory = models._memory
    if memory is None or len(memory) == 0:
        raise SystemExit("the pretrained OnlineUniIntervene has an empty recovery memory; nothing to retrieve")
    del ui

    rng = np.random.default_rng(config.seed)
    m = len(observations)
    obs = observations
    actions = rng.uniform(-1, 1, size=(m, action_dim)).astype(np.float32)
    values = np.array([models.value(o) for o in obs], np.float32)
    K = int(c.intervention.history_len)
    padded = np.concatenate([np.full(K, values[0], np.float32), values])
    histories = np.stack([padded[i:i + K + 1] for i in range(m)])  # V_{t-K} .. V_t
    fallback_goal = {k: np.asarray(v[0]) for k, v in memory.items.goal_observations.items()}
    found = [models.goal(o, float(v)) for o, v in zip(obs, values)]
    goal_found_rate = float(np.mean([g is not None for g in found]))
    goals = [g if g is not None else fallback_goal for g in found]

    def decision_no_trigger(i):
        o = obs[i % m]
        v = models.value(o)
        h = np.append(histories[i % m][1:], np.float32(v))
        return models.score(o, actions[i % m], h)

    def decision_trigger(i):
        o = obs[i % m]
        v = models.value(o)
        h = np.append(histories[i % m][1:], np.float32(v))
        models.score(o, actions[i % m], h)
        g = models.goal(o, v)
        return np.asarray(models.chunk(o, g if g is not None else fallback_goal))

    latency = {
        "value": _stats(_time_calls(lambda i: models.value(obs[i % m]), n, warmup)),
        "score": _stats(_time_calls(lambda i: models.score(obs[i % m], actions[i % m], histories[i % m]), n, warmup)),
        "goal": _stats(_time_calls(lambda i: models.goal(obs[i % m], float(values[i % m])), n, warmup)),
        "chunk": _stats(_time_calls(lambda i: np.asarray(models.chunk(obs[i % m], goals[i % m])), n, warmup)),
        "decision_no_trigger": _stats(_time_calls(decision_no_trigger, n, warmup)),
        "decision_trigger": _stats(_time_calls(decision_trigger, n, warmup)),
    }

    gate = UniInterveneGate(models, history_len=K, cooldown_steps=int(c.cooldown_steps),
                            max_chunks=int(c.max_chunks), use_memory_goal=bool(c.use_memory_goal))
    gate_runs = {}
    for name, tau in (("gate_select_action_trigger", 0.0), ("gate_select_action_no_trigger", 1.01)):
        models.tau = tau  # set directly: the payload check only admits [0, 1]
        gate.reset(obs[0])
        sources = []
        times = np.empty(n)
        for i in range(-warmup, n):
            gate.chunk.clear()  # every call is a fresh decision, never a queued chunk action
            gate.chunks_in_row = 0
            gate.cooldown = 0
            t0 = time.perf_counter()
            _, source = gate.select_action(obs[i % m], actions[i % m])
            dt = time.perf_counter() - t0
            if i >= 0:
                times[i] = dt
                sources.append(source)
        latency[name] = _stats(times)
        gate_runs[name] = {"tau": tau, "recovery_rate": float(np.mean(np.asarray(sources) == RECOVERY))}
    models.tau = float(payload["tau"])

    # Retrieval against bigger memories: the mined items replicated with jittered keys.
    items = memory.items
    embeddings = np.stack([np.asarray(models._value.encode(o, models.instr), np.float32) for o in obs])
    key_std = float(np.std(items.key_embedding)) or 1.0
    retrieval = []
    for size in [len(memory)] + [int(s) for s in FLAGS.memory_sizes]:
        if size == len(memory):
            mem, build_s = memory, float("nan")
        else:
            reps = -(-size // len(items))
            parts = [dataclasses.replace(
                items,
                key_embedding=(items.key_embedding + (0 if r == 0 else 0.1 * key_std) * rng.standard_normal(
                    items.key_embedding.shape)).astype(np.float32),
                episode_id=np.asarray(items.episode_id) + r * 100000) for r in range(reps)]
            big = RecoveryItems.concatenate(parts).select(slice(0, size))
            t0 = time.perf_counter()
            mem = RecoveryMemory(config=memory.config, items=big)
            build_s = time.perf_counter() - t0
        models._memory = mem
        hits = np.mean([mem.retrieve(e, models.task, float(v)) is not None for e, v in zip(embeddings, values)])
        retrieval.append({
            "items": len(mem),
            "index_type": mem.config.index_type,
            "build_s": None if np.isnan(build_s) else round(build_s, 4),
            "goal_found_rate": round(float(hits), 4),
            "retrieve": _stats(_time_calls(
                lambda i: mem.retrieve(embeddings[i % m], models.task, float(values[i % m])), n, warmup)),
            "embed_and_retrieve": _stats(_time_calls(
                lambda i: models.goal(obs[i % m], float(values[i % m])), n, warmup)),
        })
    models._memory = memory

    return {
        "machine": _machine(jax),
        "faiss_omp_threads": int(faiss.omp_get_max_threads()),
        "obs_spec": {k: [list(s), str(np.dtype(d))] for k, (s, d) in spec.items()},
        "action_dim": action_dim,
        "num_demos": num_demos,
        "pretrain_steps": int(FLAGS.pretrain_steps),
        "pretrain_s": round(pretrain_s, 2),
        "num_observations": m,
        "memory_size": len(memory),
        "goal_found_rate": round(goal_found_rate, 4),
        "history_len": K,
        "horizon": int(c.recovery.horizon),
        "latency": latency,
        "gate_runs": gate_runs,
        "retrieval": retrieval,
    }


# ----------------------------------------------------------------------------- learner part
def _fill_random(buffer, spec, action_dim: int, n: int, rng, human: bool) -> None:
    def observation():
        return {k: (rng.integers(0, 256, size=shape, dtype=np.uint8) if np.dtype(dtype) == np.uint8
                    else rng.normal(size=shape).astype(dtype)) for k, (shape, dtype) in spec.items()}

    obs = observation()
    for i in range(n):
        done = (i + 1) % 100 == 0
        next_obs = observation()
        buffer.insert({"observations": obs, "next_observations": next_obs,
                       "actions": rng.uniform(-1, 1, size=action_dim).astype(np.float32),
                       "rewards": np.float32(done), "masks": np.float32(not done), "dones": done,
                       "interventions": human, "action_source": np.int8(2 if human else 0)})
        obs = observation() if done else next_obs


def run_learner() -> dict:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CPU learner measured here; XLA_FLAGS left alone
    import jax

    from serl_ext.data.replay_buffer import sample_mixed_many
    from serl_ext.loop import common

    n, warmup = int(FLAGS.updates), int(FLAGS.warmup)
    config = _config()
    L = config.learner
    batch_size, utd = int(L.batch_size), int(L.utd_ratio)
    fractions = (1.0 - float(L.demo_fraction), float(L.demo_fraction))
    agent, spec, action_dim = common.agent_for_task(config)
    rng = np.random.default_rng(config.seed)
    fill = int(FLAGS.buffer_fill)
    replay = common.make_buffer(spec, action_dim, fill, seed=config.seed)
    demo = common.make_buffer(spec, action_dim, fill, seed=config.seed + 1)
    _fill_random(replay, spec, action_dim, fill, rng, human=False)
    _fill_random(demo, spec, action_dim, fill, rng, human=True)
    ui, num_demos, pretrain_s = _online_uniintervene(config, spec, action_dim)
    buffers = [replay, demo]

    state = {"agent": agent, "step": 0}

    def agent_step(with_ui: bool):
        batch = sample_mixed_many(buffers, batch_size, utd, fractions=fractions)
        state["agent"], info = state["agent"].update(batch, utd)
        jax.block_until_ready((state["agent"], info))
        state["step"] += 1
        if with_ui:
            ui.step(state["step"])  # its model updates read their losses back (synchronous)

    def ui_models():
        return (ui.value.state.params, ui.intervention.state.params, ui.recovery.state.params)

    results = {}
    refreshes = ui.counters["refreshes"]
    for name, with_ui in (("agent_update", False), ("agent_update_plus_uniintervene", True)):
        state["step"] = 0
        times = _time_calls(lambda i, w=with_ui: agent_step(w), n, warmup)
        jax.block_until_ready(ui_models())
        results[name] = dict(_stats(times), updates_per_s=round(n / float(times.sum()), 2))
    if ui.counters["refreshes"] != refreshes:
        raise RuntimeError("an unexpected refresh happened during the timing")

    per_model = {}
    for name, fn, params in (("value", ui._update_value, lambda: ui.value.state.params),
                             ("intervention", ui._update_intervention, lambda: ui.intervention.state.params),
                             ("recovery", ui._update_recovery, lambda: ui.recovery.state.params)):
        def call(i, fn=fn, params=params):
            fn()
            jax.block_until_ready(params())

        per_model[name] = _stats(_time_calls(call, n, warmup))
    per_model["all_three_ms_mean"] = round(sum(per_model[k]["mean_ms"] for k in ("value", "intervention", "recovery")), 4)

    refresh_s = []
    for _ in range(int(FLAGS.refresh_repeats)):
        t0 = time.perf_counter()
        ui._rebuild()
        jax.block_until_ready(ui_models())
        refresh_s.append(round(time.perf_counter() - t0, 4))

    plain, extra = results["agent_update"], results["agent_update_plus_uniintervene"]
    return {
        "machine": _machine(jax),
        "batch_size": batch_size,
        "utd_ratio": utd,
        "demo_fraction": float(L.demo_fraction),
        "buffer_fill": fill,
        "agent_name": config.agent_name,
        "num_demos": num_demos,
        "pretrain_steps": int(FLAGS.pretrain_steps),
        "pretrain_s": round(pretrain_s, 2),
        "train_period": int(config.uniintervene.train_period),
        "recovery_updates": int(config.uniintervene.recovery_updates),
        "uniintervene_batch_size": int(config.uniintervene.batch_size),
        "updates": results,
        "slowdown": round(plain["updates_per_s"] / extra["updates_per_s"], 3),
        "model_update": per_model,
        "refresh_s": refresh_s,
        "refresh_episodes": len(ui._episodes()),
        "memory_size": 0 if ui.memory_items is None else len(ui.memory_items),
    }


# ----------------------------------------------------------------------------- report
def _row(name, s, extra=""):
    return f"| {name} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['mean_ms']:.3f} |{extra}"


def markdown(report: dict) -> str:
    lines = [f"# UniIntervene latency and learner throughput ({report['task']})", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}", ""]
    gate = report.get("gate")
    if gate:
        mc = gate["machine"]
        lines += [
            "## Gate decision latency (actor: single-threaded XLA, CPU)", "",
            f"Machine: {mc['cpu_count']} CPUs, {mc['platform']}, jax {mc['jax']} ({mc['device']}), "
            f"`XLA_FLAGS={mc['XLA_FLAGS']}`, faiss OpenMP threads {gate['faiss_omp_threads']}, "
            f"load average at start {mc.get('loadavg_1m', 'n/a')}.  ",
            f"Models pretrained {gate['pretrain_steps']} steps on {gate['num_demos']} demos; memory "
            f"{gate['memory_size']} items (flat index); {gate['num_observations']} real observations, random "
            f"policy actions; K={gate['history_len']}, H={gate['horizon']}; retrieval found a goal for "
            f"{100 * gate['goal_found_rate']:.0f}% of them (otherwise `decision (trigger)` uses the first "
            f"memory goal for the chunk). {gate['latency']['value']['n']} timed calls each.", "",
            "| call | p50 ms | p99 ms | mean ms | note |", "|---|---:|---:|---:|---|"]
        names = {"value": "value (proxy value)", "score": "score (intervention model)",
                 "goal": "goal (embed + retrieval)", "chunk": "chunk (recovery policy)",
                 "decision_no_trigger": "decision, no trigger (value + score)",
                 "decision_trigger": "decision, trigger (value + score + goal + chunk)",
                 "gate_select_action_no_trigger": "gate.select_action, never triggers (tau 1.01)",
                 "gate_select_action_trigger": "gate.select_action, forced trigger (tau 0)"}
        for key, label in names.items():
            note = ""
            if key in gate["gate_runs"]:
                note = f"recovery action in {100 * gate['gate_runs'][key]['recovery_rate']:.0f}% of calls"
            lines.append(_row(label, gate["latency"][key]) + f" {note} |")
        lines += ["", "Retrieval against larger memories (mined items replicated with jittered keys):", "",
                  "| items | build s | retrieve p50 ms | p99 ms | mean ms | embed + retrieve p50 ms | p99 ms | mean ms |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in gate["retrieval"]:
            a, b = r["retrieve"], r["embed_and_retrieve"]
            build = "-" if r["build_s"] is None else f"{r['build_s']:.3f}"
            lines.append(f"| {r['items']} | {build} | {a['p50_ms']:.3f} | {a['p99_ms']:.3f} | {a['mean_ms']:.3f} | "
                         f"{b['p50_ms']:.3f} | {b['p99_ms']:.3f} | {b['mean_ms']:.3f} |")
        lines.append("")
    learner = report.get("learner")
    if learner:
        mc = learner["machine"]
        u = learner["updates"]
        lines += [
            "## Learner updates per second (default XLA threading)", "",
            f"Machine: {mc['cpu_count']} CPUs, {mc['platform']}, jax {mc['jax']} ({mc['device']}), "
            f"`XLA_FLAGS={mc['XLA_FLAGS'] or '(unset)'}`, load average at start {mc.get('loadavg_1m', 'n/a')}.  ",
            f"Agent `{learner['agent_name']}`, batch {learner['batch_size']} x UTD {learner['utd_ratio']}, "
            f"demo fraction {learner['demo_fraction']}, two buffers of {learner['buffer_fill']} random "
            f"transitions; every {learner['train_period']} agent updates UniIntervene runs one update of the proxy "
            f"value and of the intervention model and {learner.get('recovery_updates', 1)} of the recovery policy "
            f"(batch {learner['uniintervene_batch_size']}). Step = sample + update (+ `ui.step`), "
            f"{u['agent_update']['n']} timed steps.", "",
            "| learner step | updates/s | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|---:|"]
        for key, label in (("agent_update", "HiL-SERL agent update"),
                           ("agent_update_plus_uniintervene", "agent update + `OnlineUniIntervene.step`")):
            s = u[key]
            lines.append(f"| {label} | {s['updates_per_s']:.1f} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | "
                         f"{s['mean_ms']:.3f} |")
        lines += ["", f"Slowdown with UniIntervene: x{learner['slowdown']:.2f}.", "",
                  "| one UniIntervene model update | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|"]
        for key in ("value", "intervention", "recovery"):
            lines.append(_row(f"`_update_{key}`", learner["model_update"][key]))
        refresh = ", ".join(f"{s:.2f}" for s in learner["refresh_s"])
        lines += ["", f"Sum of the three means: {learner['model_update']['all_three_ms_mean']:.2f} ms. "
                  f"Refresh (relabel + rebuild datasets and memory over {learner['refresh_episodes']} episodes, "
                  f"memory {learner['memory_size']} items): `refresh_s` = {refresh}.", ""]
    return "\n".join(lines)


def _run_part(part: str) -> dict:
    fd, path = tempfile.mkstemp(prefix=f"bench_ui_{part}_", suffix=".json")
    os.close(fd)
    args = [sys.executable, os.path.abspath(__file__), f"--part={part}", f"--part_json={path}"]
    for name in _FORWARD:
        value = getattr(FLAGS, name)
        args.append(f"--{name}={','.join(value) if isinstance(value, list) else value}")
    env = dict(os.environ)
    if part == "gate":
        env["XLA_FLAGS"], env["JAX_PLATFORMS"] = ACTOR_XLA_FLAGS, "cpu"
    print(f"[bench_uniintervene] part {part} ...", flush=True)
    try:
        subprocess.run(args, env=env, check=True)
        with open(path) as f:
            return json.load(f)
    finally:
        os.unlink(path)


def main(argv) -> None:
    del argv
    if FLAGS.part_json:  # a part subprocess
        result = run_gate() if FLAGS.part == "gate" else run_learner()
        with open(FLAGS.part_json, "w") as f:
            json.dump(result, f)
        return
    report = {"benchmark": "bench_uniintervene", "task": FLAGS.task,
              "command": " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:]),
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "cpu_count": os.cpu_count(), "platform": platform.platform()}
    parts = ["gate", "learner"] if FLAGS.part == "all" else [FLAGS.part]
    for part in parts:
        report[part] = _run_part(part)
    suffix = "" if FLAGS.part == "all" else f"_{FLAGS.part}"
    os.makedirs(FLAGS.out, exist_ok=True)
    text = markdown(report)
    md_path = os.path.join(FLAGS.out, f"uniintervene_latency{suffix}.md")
    json_path = os.path.join(FLAGS.out, f"uniintervene_latency{suffix}.json")
    with open(md_path, "w") as f:
        f.write(text + "\n")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    print(text)
    print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    app.run(main)
