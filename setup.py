"""Package set-up for uniintervene_jax (HiL-SERL in JAX + UniIntervene).

`pip install -e .` installs the CPU working set; extras:
  robot : UR arms (ur_rtde), SpaceMouse (pyspacemouse), cameras (opencv; RealSense needs
          `pip install pyrealsense2` on top)
  robosuite : the simulated UR5e (robosuite's run-time dependencies; robosuite itself goes in
          with `pip install --no-deps robosuite==1.5.2`, because its pin mink==0.0.5 wants
          numpy<2, which jax cannot use; mink serves only robosuite's humanoid IK)
  vlm   : transformers + a CPU torch build for frozen vision encoders
  rlds  : tensorflow-datasets export/import
  wandb : Weights & Biases logging beside tensorboard (--config.logging.wandb=True)
  video : mp4 evaluation videos (imageio-ffmpeg: an ffmpeg binary for imageio)
  dev   : pytest and friends, and what the wandb-offline and video tests need
  cuda  : jax with CUDA 12 (NVIDIA wheels, no system CUDA needed) for the learner on a GPU box;
          the learner then uses the GPU by itself (docs/gpu_and_devices.md)
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax[cpu]>=0.4.30",
    "flax>=0.8",
    "optax>=0.2",
    "chex>=0.1.86",
    "orbax-checkpoint>=0.5",
    "ml_collections>=0.1.1",
    "absl-py>=2.0",
    "pyzmq>=25",
    "msgpack>=1.0",
    "metaworld==3.1.1",
    "mujoco==3.3.0",
    "gymnasium>=1.0",
    "faiss-cpu>=1.8",
    "tokenizers>=0.15",
    "scipy>=1.10",
    "numpy>=1.26",
    "tensorboard>=2.15",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "imageio>=2.31",
]

EXTRAS_REQUIRE = {
    "robot": ["ur-rtde", "pyspacemouse", "opencv-python-headless"],
    # robosuite 1.5.2 itself: `pip install --no-deps robosuite==1.5.2` (see the docstring).
    "robosuite": ["numba>=0.49.1", "termcolor", "opencv-python-headless", "Pillow"],
    # torch pinned: this version has a local CPU build; an unpinned torch pulls CUDA wheels.
    "vlm": ["transformers>=4.40", "torch==2.13.0"],
    # tfds writes and reads RLDS (array_record) without TensorFlow; tfrecord needs tensorflow-cpu.
    # importlib_resources: tfds' builders import it, but tfds requires it only on Python < 3.9.
    "rlds": ["tensorflow-datasets>=4.9.10", "importlib_resources"],
    "wandb": ["wandb>=0.17"],
    "video": ["imageio-ffmpeg>=0.4.9"],
    # The same jax constraint as INSTALL_REQUIRES; jax pins jax-cuda12-plugin to its own version.
    "cuda": ["jax[cuda12]>=0.4.30"],
    # dev: what the test suite needs (the RLDS round trip runs without TensorFlow).
    "dev": ["pytest>=8", "pytest-timeout>=2.2", "wandb>=0.17", "imageio-ffmpeg>=0.4.9",
            "tensorflow-datasets>=4.9.10", "importlib_resources"],
}

setup(
    name="uniintervene_jax",
    version="0.1.0",
    description="HiL-SERL actor/learner in JAX with the UniIntervene learned intervention gate",
    python_requires=">=3.10",
    packages=find_packages(include=["serl_ext*", "uniintervene_jax*", "configs*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
