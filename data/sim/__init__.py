"""Built-in scene generator: PyBullet physics + headless TinyRenderer, sim_physics file format.

Modules: ``camera`` (intrinsics/projection), ``world`` (floor, wall, spawn_ball/spawn_box),
``families`` (scenario builders), ``render``, ``ground_truth`` (distance and motion vectors from
poses), ``writer`` (on-disk format, atomic), ``generate`` (orchestration), ``prompts`` (text).
Nothing is imported here, so ``data.sim.prompts`` works without pybullet.
"""
