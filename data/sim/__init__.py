"""Built-in scene generator: PyBullet physics + headless TinyRenderer, sim_physics file format.

Modules: ``camera`` (intrinsics/projection), ``world`` (floor, wall), ``bodies`` (spawn_ball/box/
cylinder/capsule/compound, friction and restitution, pins), ``shapes`` (mass properties without
pybullet), ``layout`` (what builders share), ``families`` (Physics-IQ-like builders and the
registry ``FAMILIES``), ``families_mechanics`` (textbook mechanics builders), ``render``,
``ground_truth`` (distance and motion vectors from poses), ``writer`` (on-disk format, atomic),
``generate`` (orchestration), ``violations`` (implausible variants: spec and simulation hooks),
``violation_pairs`` (plausible/implausible pairs and their manifest), ``prompts`` (text).
Nothing is imported here, so ``data.sim.prompts`` works without pybullet.
"""
