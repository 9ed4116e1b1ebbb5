"""The default, generated dataset: rendered shape scenes with grammar-written captions.

No offline package ships captioned real photos, so the default workflow runs on scenes we render
ourselves.  Each image holds 1-3 coloured shapes (small or large) on one of six backgrounds, placed
in a corner, in the middle, side by side or stacked.  Every scene (background, layout and the
ordered list of size/colour/shape) is unique in the whole dataset, so a caption that names these
attributes singles out its image.

Captions come from two independent grammars (see ``docs/synthetic-dataset.md``):

* English, for every split: ``captions_per_image`` different paraphrases per image
  (word order, synonyms, optional size / background), ``origin="human"``.
* French (and German) reference queries for the test split only, written by their own grammars
  with gender and case agreement -- never by translating the English captions -- so that
  evaluating on them does not reward a system for imitating one MT system's output.

Everything is deterministic given ``seed``: scene sampling, caption wording and the rendered
pixels (and so the PNG bytes) each use their own seeded numpy stream.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from ccr.data.tables import CAPTIONS_SCHEMA, IMAGES_SCHEMA, validate_captions, validate_images
from ccr.io import Progress

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (35, 165, 55),
    "blue": (30, 75, 225),
    "yellow": (250, 215, 25),
    "orange": (250, 130, 15),
    "purple": (140, 45, 185),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}
SIZES = ("small", "large")
BACKGROUNDS = ("white", "black", "sky", "grass", "wood", "checker")
# Object colours that would vanish into a background are never drawn on it.
CLASHES: dict[str, frozenset[str]] = {
    "white": frozenset({"white"}),
    "black": frozenset({"black"}),
    "sky": frozenset({"blue", "white"}),
    "grass": frozenset({"green"}),
    "wood": frozenset({"orange"}),
    "checker": frozenset({"white"}),
}
CORNERS = ("centre", "top left", "top right", "bottom left", "bottom right")
AXES = ("horizontal", "vertical")  # pairs and triples: reading order left->right or top->bottom
SUPPORTED_LANGS = ("fr", "de")  # reference grammars besides English

SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str


@dataclass(frozen=True)
class Scene:
    background: str
    place: str  # single object: one of CORNERS; 2-3 objects: one of AXES
    objects: tuple[Obj, ...]  # in reading order (left to right, or top to bottom)


# --------------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def sample_scene(rng: np.random.Generator) -> Scene:
    """One random scene; objects in a scene differ in (shape, colour) so each can be named."""
    background = _choice(rng, BACKGROUNDS)
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    colours = [c for c in COLOURS if c not in CLASHES[background]]
    objects: list[Obj] = []
    while len(objects) < n:
        obj = Obj(_choice(rng, SHAPES), _choice(rng, colours), _choice(rng, SIZES))
        if all((o.shape, o.colour) != (obj.shape, obj.colour) for o in objects):
            objects.append(obj)
    place = _choice(rng, CORNERS) if n == 1 else _choice(rng, AXES)
    return Scene(background, place, tuple(objects))


def sample_scenes(n: int, seed: int) -> list[Scene]:
    """``n`` pairwise different scenes (so captions can tell every image apart)."""
    rng = np.random.default_rng([seed, 0])
    seen: set[Scene] = set()
    scenes: list[Scene] = []
    tries = 0
    while len(scenes) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"synthetic: could not sample {n} distinct scenes")
        scene = sample_scene(rng)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
    return scenes


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased edges like a real photo's


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An (size, size, 3) uint8 texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "white":
        img = np.full((size, size, 3), 238.0) + rng.normal(0, 2.0, (size, size, 1))
    elif kind == "black":
        img = np.full((size, size, 3), 28.0) + rng.normal(0, 2.0, (size, size, 1))
    elif kind == "sky":
        top, bottom = np.array([70, 135, 225.0]), np.array([185, 215, 250.0])
        t = (yy + rng.uniform(-0.1, 0.1))[..., None].clip(0, 1)
        img = top * (1 - t) + bottom * t
    elif kind == "grass":
        # Coarse patches (upsampled low-res noise) plus fine vertical "blades".
        coarse = Image.fromarray(rng.normal(0, 1, (8, 8)).astype(np.float32), "F")
        coarse = np.asarray(coarse.resize((size, size), Image.BICUBIC))
        blades = rng.normal(0, 1, (1, size)) * 0.6 + rng.normal(0, 1, (size, size)) * 0.8
        shade = 1 + 0.12 * coarse + 0.10 * blades
        img = np.array([55, 135, 45.0]) * shade[..., None]
    elif kind == "wood":
        planks = int(rng.integers(3, 6))
        phase = rng.uniform(0, 2 * np.pi)
        grain = np.sin(yy * size / 3.5 + 2.0 * np.sin(xx * 6 + phase) + phase)
        plank_idx = np.floor(yy * planks)
        tone = 1 + 0.07 * np.sin(plank_idx * 2.3 + phase)
        seam = (np.abs(yy * planks - np.round(yy * planks)) < 0.02 * planks).astype(np.float32)
        shade = tone * (0.9 + 0.1 * grain) * (1 - 0.45 * seam)
        img = np.array([160, 105, 55.0]) * shade[..., None]
    elif kind == "checker":
        cells = int(rng.integers(6, 11))
        off = rng.uniform(0, 1, 2)
        parity = (np.floor(xx * cells + off[0]) + np.floor(yy * cells + off[1])) % 2
        img = np.where(parity[..., None] > 0, 200.0, 120.0) * np.ones(3)
    else:  # pragma: no cover - BACKGROUNDS is closed
        raise ValueError(f"unknown background {kind!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape with 'radius' r, rotated by ``angle`` degrees."""
    if shape == "square":
        pts = [(math.cos(math.radians(45 + 90 * k)) * 1.1, math.sin(math.radians(45 + 90 * k)) * 1.1) for k in range(4)]
    elif shape == "diamond":  # a rhombus taller than wide: never mistaken for a tilted square
        pts = [(0, -1.2), (0.72, 0), (0, 1.2), (-0.72, 0)]
    elif shape == "triangle":
        pts = [(math.cos(math.radians(-90 + 120 * k)) * 1.2, math.sin(math.radians(-90 + 120 * k)) * 1.2 + 0.15)
               for k in range(3)]
    elif shape == "star":
        pts = [(math.cos(math.radians(-90 + 36 * k)) * (1.2 if k % 2 == 0 else 0.48),
                math.sin(math.radians(-90 + 36 * k)) * (1.2 if k % 2 == 0 else 0.48)) for k in range(10)]
    elif shape == "cross":
        a, w = 1.05, 0.34
        pts = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]
    elif shape == "hexagon":
        pts = [(math.cos(math.radians(60 * k)) * 1.05, math.sin(math.radians(60 * k)) * 1.05) for k in range(6)]
    else:
        raise ValueError(f"not a polygon shape: {shape!r}")
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


# Object radius (fraction of the image side) by number of objects and size word.
# As large as the layout allows: pooled ImageNet features encode an object's colour only weakly
# when it covers a small part of the image.
_RADIUS = {1: {"small": 0.13, "large": 0.25}, 2: {"small": 0.11, "large": 0.19}, 3: {"small": 0.08, "large": 0.135}}
_CORNER_XY = {"centre": (0.5, 0.5), "top left": (0.3, 0.3), "top right": (0.7, 0.3),
              "bottom left": (0.3, 0.7), "bottom right": (0.7, 0.7)}


def _layout(scene: Scene, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Object centres (fractions of the side), jittered but keeping the stated relations clear."""
    n = len(scene.objects)
    if n == 1:
        x, y = _CORNER_XY[scene.place]
        return [(x + rng.uniform(-0.04, 0.04), y + rng.uniform(-0.04, 0.04))]
    main = [0.27, 0.73] if n == 2 else [0.17, 0.5, 0.83]
    cross = 0.5 + rng.uniform(-0.12, 0.12)  # shared offset across the reading axis
    pts = []
    for m in main:
        a = m + rng.uniform(-0.03, 0.03)
        b = cross + rng.uniform(-0.04, 0.04)
        pts.append((a, b) if scene.place == "horizontal" else (b, a))
    return pts


def render(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image."""
    big = size * SUPERSAMPLE
    img = Image.fromarray(_background(scene.background, big, rng), "RGB")
    draw = ImageDraw.Draw(img)
    n = len(scene.objects)
    for obj, (fx, fy) in zip(scene.objects, _layout(scene, rng), strict=True):
        r = _RADIUS[n][obj.size] * big * rng.uniform(0.92, 1.08)
        # Keep the whole shape (its points reach 1.2 r) inside the frame.
        lo, hi = 1.25 * r, big - 1.25 * r
        cx, cy = min(max(fx * big, lo), hi), min(max(fy * big, lo), hi)
        fill = COLOURS[obj.colour]
        edge = tuple(int(v * 0.6) for v in fill) if obj.colour != "black" else (70, 70, 70)
        line = max(1, round(big / 224))
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=edge, width=line)
        elif obj.shape == "ring":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, round(0.32 * r)))
        else:
            base = 45.0 if obj.shape == "diamond" else 0.0
            angle = base + rng.uniform(-12, 12) if obj.shape != "diamond" else rng.uniform(-8, 8)
            draw.polygon(_polygon(obj.shape, cx, cy, r, angle), fill=fill, outline=edge, width=line)
    return img.resize((size, size), Image.LANCZOS)


# --------------------------------------------------------------------------------------------
# Grammar helpers
# --------------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _tidy(text: str) -> str:
    """Collapse the double spaces that optional (empty) slots leave, and spaces before commas/dots."""
    text = " ".join(text.split())
    return text.replace(" ,", ",").replace(" .", ".")


def _pick(rng: np.random.Generator, options: Sequence, weights: Sequence[float] | None = None):
    if weights is None:
        return _choice(rng, options)
    p = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


# --------------------------------------------------------------------------------------------
# English grammar (all splits)
# --------------------------------------------------------------------------------------------

EN_SIZE = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
EN_SHAPE = {
    "circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
    "star": ("star",), "ring": ("ring", "hoop", "donut"), "cross": ("cross", "plus sign"),
    "diamond": ("diamond", "rhombus"), "hexagon": ("hexagon",),
}
EN_COLOUR = {
    "red": ("red",), "green": ("green",), "blue": ("blue",), "yellow": ("yellow",),
    "orange": ("orange",), "purple": ("purple", "violet"), "white": ("white",), "black": ("black",),
}
EN_BG = {
    "white": ("on a white background", "against a plain white backdrop", "on plain white"),
    "black": ("on a black background", "against a dark backdrop", "on plain black"),
    "sky": ("against a blue sky", "in front of a blue sky", "on a sky background"),
    "grass": ("on a grassy background", "on grass", "on a green lawn"),
    "wood": ("on a wooden background", "on a wooden table", "on wooden planks"),
    "checker": ("on a checkerboard", "on a checkered background", "on a grey checkerboard"),
}
EN_CORNER = {
    "centre": ("in the centre", "in the middle", "in the center of the picture"),
    "top left": ("in the top left corner", "in the upper left corner", "at the top left"),
    "top right": ("in the top right corner", "in the upper right corner", "at the top right"),
    "bottom left": ("in the bottom left corner", "in the lower left corner", "at the bottom left"),
    "bottom right": ("in the bottom right corner", "in the lower right corner", "at the bottom right"),
}
EN_VERB = ("is", "sits", "lies", "appears")
# {v} is a verb slot: empty in noun-phrase frames ("There is A left of B"), a verb in clauses.
EN_PAIR = {
    "horizontal": ("{A} {v} to the left of {B}", "{A} {v} left of {B}", "{B} {v} to the right of {A}",
                   "{A} {v} on the left and {B} on the right"),
    "vertical": ("{A} {v} above {B}", "{B} {v} below {A}", "{A} {v} over {B}", "{B} {v} underneath {A}",
                 "{A} {v} at the top and {B} at the bottom"),
}
EN_TRIPLE = {
    "horizontal": ("{A}, {B} and {C} in a row from left to right", "from left to right: {A}, {B} and {C}",
                   "{A} on the left, {B} in the middle and {C} on the right",
                   "{C} on the right, {A} on the left and {B} between them"),
    "vertical": ("{A}, {B} and {C} stacked from top to bottom", "from top to bottom: {A}, {B} and {C}",
                 "{A} at the top, {B} in the middle and {C} at the bottom", "{A} above {B}, which is above {C}"),
}


def _en_np(obj: Obj, rng: np.random.Generator) -> str:
    size, colour, shape = (_pick(rng, EN_SIZE[obj.size]), _pick(rng, EN_COLOUR[obj.colour]),
                           _pick(rng, EN_SHAPE[obj.shape]))
    form = _pick(rng, ("{s} {c} {n}", "{c} {n}", "{s} {n} in {c}"), (6, 1, 1))
    words = form.format(s=size, c=colour, n=shape)
    return ("an " if words[0] in "aeiou" else "a ") + words


def english_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One English caption of ``scene`` (a random paraphrase)."""
    bg = "" if rng.random() < 0.1 else _pick(rng, EN_BG[scene.background])
    nps = [_en_np(o, rng) for o in scene.objects]
    verb = _pick(rng, EN_VERB)
    n = len(nps)
    if n == 1:
        pos = _pick(rng, EN_CORNER[scene.place])
        frames = ["{np} {pos} {bg}.", "There is {np} {pos} {bg}.", "{np} {v} {pos} {bg}.",
                  "A picture of {np} {pos} {bg}."]
        if bg:
            frames.append("{Bg}, {np} {v} {pos}.")
        text = _pick(rng, frames).format(np=nps[0], pos=pos, bg=bg, Bg=_cap(bg), v=verb)
    elif n == 2:
        rel = _pick(rng, EN_PAIR[scene.place])
        nominal = rel.format(A=nps[0], B=nps[1], v="")
        clause = rel.format(A=nps[0], B=nps[1], v=verb)
        frames = ["{n} {bg}.", "There is {n} {bg}.", "{c} {bg}.", "A picture of {n} {bg}."]
        if bg:
            frames.append("{Bg}, {c}.")
        text = _pick(rng, frames).format(n=nominal, c=clause, bg=bg, Bg=_cap(bg))
    else:
        rel = _pick(rng, EN_TRIPLE[scene.place]).format(A=nps[0], B=nps[1], C=nps[2])
        frames = ["{r}, {bg}."] if bg else ["{r}."]
        if bg:
            frames.append("{Bg}, {r}.")
        text = _pick(rng, frames).format(r=rel, bg=bg, Bg=_cap(bg))
    return _cap(_tidy(text))


# --------------------------------------------------------------------------------------------
# French grammar (test references): own phrasing, gender agreement of adjectives and participles
# --------------------------------------------------------------------------------------------

FR_SHAPE = {
    "circle": (("cercle", "m"), ("disque", "m")), "square": (("carré", "m"),), "triangle": (("triangle", "m"),),
    "star": (("étoile", "f"),), "ring": (("anneau", "m"),), "cross": (("croix", "f"),),
    "diamond": (("losange", "m"),), "hexagon": (("hexagone", "m"),),
}
FR_COLOUR = {  # (masculine, feminine); placed after the noun
    "red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
    "yellow": ("jaune", "jaune"), "orange": ("orange", "orange"), "purple": ("violet", "violette"),
    "white": ("blanc", "blanche"), "black": ("noir", "noire"),
}
FR_SIZE = {"small": (("petit", "petite"),), "large": (("grand", "grande"), ("gros", "grosse"))}  # before the noun
FR_BG = {
    "white": ("sur un fond blanc", "sur fond blanc uni"),
    "black": ("sur un fond noir", "sur fond noir uni"),
    "sky": ("sur fond de ciel bleu", "devant un ciel bleu"),
    "grass": ("sur un fond d'herbe", "sur l'herbe", "sur une pelouse"),
    "wood": ("sur un fond en bois", "sur une table en bois"),
    "checker": ("sur un damier", "sur un fond en damier gris"),
}
FR_CORNER = {
    "centre": ("au centre", "au milieu de l'image"),
    "top left": ("dans le coin supérieur gauche", "en haut à gauche"),
    "top right": ("dans le coin supérieur droit", "en haut à droite"),
    "bottom left": ("dans le coin inférieur gauche", "en bas à gauche"),
    "bottom right": ("dans le coin inférieur droit", "en bas à droite"),
}
FR_VERB = (("se trouve", "se trouve"), ("est placé", "est placée"), ("est situé", "est située"))


@dataclass(frozen=True)
class _FrNP:
    text: str  # with the indefinite article: "une petite étoile bleue"
    gender: str

    @property
    def de(self) -> str:
        """The phrase after "de": de + un -> d'un, de + une -> d'une."""
        return "d'" + self.text


def _fr_np(obj: Obj, rng: np.random.Generator) -> _FrNP:
    noun, g = _pick(rng, FR_SHAPE[obj.shape])
    i = 0 if g == "m" else 1
    colour = FR_COLOUR[obj.colour][i]
    size = "" if rng.random() < 0.1 else _pick(rng, FR_SIZE[obj.size])[i]
    article = "un" if g == "m" else "une"
    return _FrNP(_tidy(f"{article} {size} {noun} {colour}"), g)


def _fr_plural(nps: Sequence[_FrNP], masc: str, fem: str) -> str:
    """French plural agreement: masculine as soon as one noun is masculine."""
    return masc if any(np_.gender == "m" for np_ in nps) else fem


def french_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One French reference caption of ``scene``, written directly from the scene (no MT)."""
    bg = _pick(rng, FR_BG[scene.background])
    nps = [_fr_np(o, rng) for o in scene.objects]
    n = len(nps)
    if n == 1:
        a = nps[0]
        verb = _pick(rng, FR_VERB)[0 if a.gender == "m" else 1]
        pos = _pick(rng, FR_CORNER[scene.place])
        text = _pick(rng, (f"{a.text} {pos}, {bg}.", f"il y a {a.text} {pos}, {bg}.",
                           f"{bg}, {a.text} {verb} {pos}.", f"on voit {a.text} {pos} {bg}."))
    elif n == 2:
        a, b = nps
        if scene.place == "horizontal":
            rels = ((a, f"à gauche {b.de}"), (b, f"à droite {a.de}"), (a, f"à gauche et {b.text} à droite"))
        else:
            rels = ((a, f"au-dessus {b.de}"), (b, f"en dessous {a.de}"), (b, f"sous {a.text}"),
                    (a, f"en haut et {b.text} en bas"))
        subj, rest = _pick(rng, rels)
        verb = _pick(rng, FR_VERB)[0 if subj.gender == "m" else 1]
        text = _pick(rng, (f"{subj.text} {rest} {bg}.", f"il y a {subj.text} {rest}, {bg}.",
                           f"{bg}, {subj.text} {verb} {rest}.", f"on voit {subj.text} {rest} {bg}."))
    else:
        a, b, c = (x.text for x in nps)
        if scene.place == "horizontal":
            aligned = _fr_plural(nps, "alignés", "alignées")
            rel = _pick(rng, (f"de gauche à droite : {a}, {b} et {c}", f"{a} à gauche, {b} au milieu et {c} à droite",
                              f"{a}, {b} et {c} {aligned} de gauche à droite"))
        else:
            stacked = _fr_plural(nps, "empilés", "empilées")
            rel = _pick(rng, (f"de haut en bas : {a}, {b} et {c}", f"{a} en haut, {b} au milieu et {c} en bas",
                              f"{a}, {b} et {c} {stacked} de haut en bas"))
        text = _pick(rng, (f"{rel}, {bg}.", f"{bg}, {rel}."))
    return _cap(_tidy(text).replace(" ,", ","))


# --------------------------------------------------------------------------------------------
# German grammar (test references, only when "de" is asked for): gender + case adjective endings
# --------------------------------------------------------------------------------------------

DE_SHAPE = {
    "circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"), "star": ("Stern", "m"),
    "ring": ("Ring", "m"), "cross": ("Kreuz", "n"), "diamond": ("Raute", "f"), "hexagon": ("Sechseck", "n"),
}
DE_COLOUR = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "orange": "orangefarben",
             "purple": "violett", "white": "weiß", "black": "schwarz"}
DE_SIZE = {"small": "klein", "large": "groß"}
# Mixed declension after ein/eine: nominative endings depend on gender, dative is always -en.
DE_ARTICLE = {("nom", "m"): "ein", ("nom", "f"): "eine", ("nom", "n"): "ein",
              ("dat", "m"): "einem", ("dat", "f"): "einer", ("dat", "n"): "einem"}
DE_ENDING = {("nom", "m"): "er", ("nom", "f"): "e", ("nom", "n"): "es",
             ("dat", "m"): "en", ("dat", "f"): "en", ("dat", "n"): "en"}
DE_BG = {
    "white": ("auf weißem Hintergrund", "vor einem weißen Hintergrund"),
    "black": ("auf schwarzem Hintergrund", "vor einem dunklen Hintergrund"),
    "sky": ("vor blauem Himmel", "vor einem blauen Himmel"),
    "grass": ("auf Gras", "auf einer Wiese", "auf einem Rasen"),
    "wood": ("auf einem Holztisch", "auf Holzbrettern"),
    "checker": ("auf einem Schachbrettmuster", "auf einem grau karierten Hintergrund"),
}
DE_CORNER = {
    "centre": ("in der Mitte", "mitten im Bild"),
    "top left": ("in der oberen linken Ecke", "oben links"),
    "top right": ("in der oberen rechten Ecke", "oben rechts"),
    "bottom left": ("in der unteren linken Ecke", "unten links"),
    "bottom right": ("in der unteren rechten Ecke", "unten rechts"),
}


def _de_np(obj: Obj, case: str) -> str:
    noun, g = DE_SHAPE[obj.shape]
    end = DE_ENDING[(case, g)]
    return f"{DE_ARTICLE[(case, g)]} {DE_SIZE[obj.size]}{end} {DE_COLOUR[obj.colour]}{end} {noun}"


def german_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One German reference caption of ``scene`` (nominative subjects, dative after von/über/unter)."""
    bg = _pick(rng, DE_BG[scene.background])
    objs = scene.objects
    nom = [_de_np(o, "nom") for o in objs]
    dat = [_de_np(o, "dat") for o in objs]
    if len(objs) == 1:
        pos = _pick(rng, DE_CORNER[scene.place])
        body = f"{nom[0]} {pos}"
    elif len(objs) == 2:
        if scene.place == "horizontal":
            body = _pick(rng, (f"{nom[0]} links von {dat[1]}", f"{nom[1]} rechts von {dat[0]}",
                               f"links {nom[0]}, rechts {nom[1]}"))
        else:
            body = _pick(rng, (f"{nom[0]} über {dat[1]}", f"{nom[1]} unter {dat[0]}",
                               f"oben {nom[0]}, unten {nom[1]}"))
    else:
        a, b, c = nom
        if scene.place == "horizontal":
            body = _pick(rng, (f"von links nach rechts: {a}, {b} und {c}", f"links {a}, in der Mitte {b} und rechts {c}"))
        else:
            body = _pick(rng, (f"von oben nach unten: {a}, {b} und {c}", f"oben {a}, in der Mitte {b} und unten {c}"))
    if len(objs) < 3 and not body.startswith(("links", "oben")):
        text = _pick(rng, (f"{body} {bg}.", f"{_cap(bg)} befindet sich {body}.", f"zu sehen ist {body} {bg}."))
    else:
        text = f"{body}, {bg}."
    return _cap(_tidy(text))


REFERENCE_GRAMMARS: dict[str, Callable[[Scene, np.random.Generator], str]] = {
    "fr": french_caption,
    "de": german_caption,
}


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


def _english_captions(scene: Scene, k: int, rng: np.random.Generator, where: str) -> list[str]:
    """``k`` pairwise different English paraphrases."""
    out: list[str] = []
    for _ in range(200 * k):
        text = english_caption(scene, rng)
        if text not in out:
            out.append(text)
            if len(out) == k:
                return out
    raise ValueError(f"synthetic: could not write {k} different captions for {where}; lower captions_per_image")


def _save_png(img: Image.Image, path: Path) -> None:
    """Atomic write: a crash never leaves a truncated PNG under the final name."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    img.save(tmp, format="PNG", compress_level=1)  # fast; PNG stays lossless
    os.replace(tmp, path)


def build(
    out_dir: Path,
    seed: int,
    n_train: int = 400,
    n_val: int = 100,
    n_test: int = 200,
    captions_per_image: int = 2,
    image_size: int = 224,
    target_langs: Sequence[str] = ("fr",),
    reference_splits: Sequence[str] = ("test",),
) -> tuple[pa.Table, pa.Table]:
    """Render the dataset into ``out_dir/images/`` and return its (images, captions) tables.

    ``target_langs``: languages that get one reference caption per image of ``reference_splits`` (``fr``,
    ``de``; on ``val`` too, a system can be evaluated there); English captions (``captions_per_image``
    each) are written for every split.
    """
    counts = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"synthetic: param '{name}' must be a non-negative integer, got {value!r}")
    if not isinstance(captions_per_image, int) or captions_per_image < 1:
        raise ValueError(f"synthetic: param 'captions_per_image' must be an integer >= 1, got {captions_per_image!r}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"synthetic: param 'image_size' must be an integer >= 32, got {image_size!r}")
    if isinstance(target_langs, str):
        target_langs = (target_langs,)
    bad = [split for split in reference_splits if split not in ("val", "test")]
    if bad or not reference_splits:
        raise ValueError(f"synthetic: param 'reference_splits' must list 'val' and/or 'test', got {list(reference_splits)}")
    langs = list(dict.fromkeys(target_langs))
    unknown = [lang for lang in langs if lang not in REFERENCE_GRAMMARS]
    if unknown:
        raise ValueError(f"synthetic: param 'target_langs' has {unknown} without a reference grammar; "
                         f"supported: {list(REFERENCE_GRAMMARS)}")

    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    splits = [s for s, n in zip(SPLIT_ORDER, (n_train, n_val, n_test), strict=True) for _ in range(n)]
    scenes = sample_scenes(len(splits), seed)

    image_rows: dict[str, list] = {"image_id": [], "path": [], "split": []}
    cap_rows: dict[str, list] = {name: [] for name in CAPTIONS_SCHEMA.names}

    def add_caption(cid: str, iid: str, lang: str, text: str, split: str) -> None:
        for key, value in zip(CAPTIONS_SCHEMA.names, (cid, iid, lang, text, "human", split, None), strict=True):
            cap_rows[key].append(value)

    progress = Progress(len(scenes), "render synthetic images")
    index_in_split = dict.fromkeys(SPLIT_ORDER, 0)
    for i, (scene, split) in enumerate(zip(scenes, splits, strict=True)):
        image_id = f"syn-{split}-{index_in_split[split]:05d}"
        index_in_split[split] += 1
        rel_path = f"images/{image_id}.png"
        # Independent streams: pixels, English wording and each reference language.
        _save_png(render(scene, image_size, np.random.default_rng([seed, 1, i])), out_dir / rel_path)
        image_rows["image_id"].append(image_id)
        image_rows["path"].append(rel_path)
        image_rows["split"].append(split)
        texts = _english_captions(scene, captions_per_image, np.random.default_rng([seed, 2, i]), image_id)
        for k, text in enumerate(texts):
            add_caption(f"{image_id}#en{k}", image_id, "en", text, split)
        if split in reference_splits:
            for lang in langs:
                # Keyed by the language code, so adding a language never rewords another one.
                ref_rng = np.random.default_rng([seed, 3, i, int.from_bytes(lang.encode(), "big")])
                add_caption(f"{image_id}#{lang}0", image_id, lang, REFERENCE_GRAMMARS[lang](scene, ref_rng), split)
        progress.update(1)

    images = validate_images(pa.table(image_rows, schema=IMAGES_SCHEMA), where="synthetic images")
    captions = validate_captions(pa.table(cap_rows, schema=CAPTIONS_SCHEMA), where="synthetic captions")
    return images, captions
