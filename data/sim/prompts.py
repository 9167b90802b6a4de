"""Text prompts for generated scenes, derived from ``scene.json`` (family + objects).

Pure Python with no pybullet import, so ``scripts/make_metadata.py`` can use it on machines that
only read data.  Placeholders name objects: ``{ball}`` is the colour name of the object called
``ball``; ``{n:domino}`` is how many objects have names starting with ``domino``;
``{shape:item}`` names its shape (:func:`shape_word`).
"""

from __future__ import annotations

import re

TEMPLATES: dict[str, str] = {
    "ball_on_block": "A {ball} ball falls onto a {block} {shape:block} on a {floor} floor.",
    "ball_collide": "A {ball_a} ball and a {ball_b} ball roll towards each other and collide "
    "on a {floor} floor.",
    "ramp_roll": "A {ball} ball rolls down a {ramp} ramp onto a {floor} floor.",
    "table_edge": "A {roller} {shape:roller} rolls off the edge of a {table} table and falls onto "
    "a {floor} floor.",
    "domino": "A row of {n:domino} {domino_0} dominoes topples one after another on a "
    "{floor} floor.",
    "fall_into_box": "A {item} {shape:item} falls into an open {container_left} box on a "
    "{floor} floor.",
    "roll_behind_occluder": "A {roller} {shape:roller} rolls across a {floor} floor and passes "
    "behind a {occluder} block.",
    "stack_topple": "A {ball} ball is thrown at a stack of {n:block} {block_0} {shape:block_0}s "
    "and knocks it over on a {floor} floor.",
    "projectile": "A {body} {shape:body} is thrown through the air in an arc and lands on a "
    "{floor} floor.",
    "bounce": "A {ball} ball is dropped onto a {floor} floor and bounces, each bounce lower "
    "than the last.",
    "incline_slide": "A {box} box is pushed down a {ramp} ramp and slides along it on a "
    "{floor} floor.",
    "floor_slide": "A {slider} {shape:slider} slides and spins across a {floor} floor until "
    "friction stops it.",
    "pendulum": "A {bob} pendulum swings back and forth under a {beam} bar above a checkered "
    "floor.",
    "newton_cradle": "A row of {n:ball} {ball_0} balls hangs from a {beam} bar; the swinging end "
    "ball strikes the row and the ball at the far end swings out.",
    "seesaw": "A {weight} block drops onto the raised end of a {plank} seesaw, which tips and "
    "tosses a {load} cube into the air above a {floor} floor.",
    "ramp_race": "A {ball} ball and a {cylinder} cylinder roll down a {ramp} ramp side by side "
    "and the ball pulls ahead on a {floor} floor.",
    "topple": "An upright {body} {shape:body} tips over and falls onto a {floor} floor.",
    "wall_rebound": "A {mover} {shape:mover} runs into a {barrier} barrier and bounces back "
    "across a {floor} floor.",
}

# How a prompt describes the look's floor texture (scene.json look.floor.texture); "checkered"
# for scenes made before looks existed (they all had a checkerboard floor).
FLOOR_WORDS = {"checker": "checkered", "stripes": "striped", "tiles": "tiled", "bricks": "brick",
               "planks": "wooden", "noise": "mottled", "dots": "spotted"}

# What a compound's ``form`` is called in a prompt.
_FORM_WORDS = {"l_bracket": "L-shaped bracket"}

_FIELD = re.compile(r"\{(?:(n|shape):)?(\w+)\}")
_FLOOR = "{floor}"
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def prompt_from_name(scene_name: str) -> str:
    """Prompt for real data without ``scene.json``: ``test_ball_collide`` -> ``ball collide``."""
    return family_from_name(scene_name).replace("_", " ")


def family_from_name(scene_name: str) -> str:
    """Scenario family of a scene name: strip a ``test_``/``train_`` prefix and ``_<digits>``."""
    name = re.sub(r"^(test|train)_", "", scene_name)
    return re.sub(r"_\d+$", "", name)


def prompt_from_scene(meta: dict) -> str:
    """Prompt for a generated scene from its ``scene.json`` contents.

    Unknown families fall back to the family name, so the metadata step never fails on a scene
    made by a newer generator.
    """
    template = TEMPLATES.get(meta.get("family", ""))
    objects = {o["name"]: o for o in meta.get("objects", [])}
    if template is None:
        return prompt_from_name(meta.get("family", "scene"))

    def fill(match: re.Match) -> str:
        kind, key = match.groups()
        if kind == "n":
            count = sum(1 for name in objects if name.startswith(key))
            return _NUMBERS.get(count, str(count))
        obj = objects.get(key)
        if obj is None:
            return ""
        if kind == "shape":
            return shape_word(obj)
        return obj.get("color_name", "")

    floor = FLOOR_WORDS.get(((meta.get("look") or {}).get("floor") or {}).get("texture", "checker"), "textured")
    text = re.sub(r"\s+", " ", _FIELD.sub(fill, template.replace(_FLOOR, floor))).strip()
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)  # "a orange" -> "an orange"


def shape_word(obj: dict) -> str:
    """What to call a ``scene.json`` object: ball, cube or block, cylinder or disc, capsule, or a
    compound's form (dumbbell, hammer...); an unknown shape is called by its name."""
    shape = obj.get("shape", "object")
    if shape == "sphere":
        return "ball"
    if shape == "box":
        half = obj.get("half_extents")
        return "cube" if half and max(half) < 1.05 * min(half) else "block"
    if shape == "cylinder" and obj.get("length", [1.0])[0] < obj.get("radius", [0.0])[0]:
        return "disc"
    if shape == "compound":
        form = obj.get("form", "object")
        return _FORM_WORDS.get(form, form.replace("_", " "))
    return shape
