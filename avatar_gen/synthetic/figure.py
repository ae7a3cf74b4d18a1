"""Drawing a half-body talking figure with OpenCV: shoulders, neck, head, hair, eyes, brows, nose, mouth.

The face is drawn so that OpenCV's Haar frontal-face cascade (what the scraper's face filter uses)
finds it: dark brows and pupils over bright sclera, a lighter nose bridge between the eyes, shading
down the sides of the face and the nose, a darker mouth.  A figure's look is a :class:`FigureStyle`
drawn from a seeded RNG; its pose per frame is a :class:`FigurePose`.

Coordinates are pixels in the frame, x to the right, y down; the head's half-width ``head_radius``
sets every other size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Skin tones (RGB) from light to dark; a style blends two neighbours, so any tone between occurs.
SKIN_TONES = np.array([
    [255, 224, 196], [241, 194, 160], [224, 172, 135], [198, 140, 104], [168, 112, 80], [128, 84, 58], [96, 62, 44],
], dtype=np.float64)
HAIR_COLOURS = np.array([[25, 20, 18], [60, 40, 28], [105, 70, 40], [150, 110, 60], [90, 90, 95]], dtype=np.float64)
IRIS_COLOURS = np.array([[70, 45, 25], [40, 90, 130], [60, 110, 70], [30, 25, 20]], dtype=np.float64)
HEAD_ASPECT = 1.28  # head half-height / half-width
MOUTH_OFFSET = 0.66  # mouth centre below the head centre, in head radii
# Mouth box around the mouth centre, in head radii (half-width, half-height): lips at their widest, mouth wide open.
MOUTH_HALF_WIDTH_RADII = 0.45
MOUTH_HALF_HEIGHT_RADII = 0.4
LINE = cv2.LINE_AA


def _colour(rgb: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(c)) for c in np.clip(rgb, 0, 255))


@dataclass(frozen=True)
class FigureStyle:
    """How one figure looks (all colours RGB 0..255)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    shirt: tuple[int, int, int]
    hair_volume: float  # 0 (short) .. 1 (big)
    eye_spacing: float  # eye centre distance from the face axis, in head radii
    mouth_width: float  # mouth half-width in head radii

    @classmethod
    def random(cls, rng: np.random.Generator) -> FigureStyle:
        tone = rng.uniform(0, len(SKIN_TONES) - 1)
        low = int(np.floor(tone))
        high = min(low + 1, len(SKIN_TONES) - 1)
        skin = SKIN_TONES[low] * (1 - (tone - low)) + SKIN_TONES[high] * (tone - low)
        hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.1)
        iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]
        lips = skin * np.array([0.78, 0.52, 0.52]) + np.array([20, 0, 0])
        shirt = rng.uniform(20, 235, size=3)
        return cls(skin=_colour(skin), hair=_colour(hair), iris=_colour(iris), lips=_colour(lips),
                   shirt=_colour(shirt), hair_volume=float(rng.uniform(0, 1)),
                   eye_spacing=float(rng.uniform(0.36, 0.42)), mouth_width=float(rng.uniform(0.26, 0.34)))


@dataclass(frozen=True)
class FigurePose:
    """Where the figure is in one frame and what its face does.

    head_x, head_y: head centre in pixels.  head_radius: head half-width in pixels.
    mouth_open: 0 (closed) .. 1 (wide open).  eye_open: 0 (shut) .. 1 (open).
    body_x: horizontal centre of the shoulders in pixels (the body moves less than the head).
    """

    head_x: float
    head_y: float
    head_radius: float
    mouth_open: float = 0.0
    eye_open: float = 1.0
    body_x: float | None = None


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A plain or two-colour gradient background, uint8 RGB [height, width, 3]."""
    top = rng.uniform(30, 230, size=3)
    bottom = top if rng.random() < 0.3 else rng.uniform(30, 230, size=3)
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (np.cos(angle) * xs / max(width - 1, 1) + np.sin(angle) * ys / max(height - 1, 1))
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-9)
    image = top[None, None, :] * (1 - ramp[..., None]) + bottom[None, None, :] * ramp[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return _colour(np.array(colour, dtype=np.float64) * factor)


def _ellipse(image, centre, axes, colour, angle=0.0, start=0, end=360, thickness=-1):
    cv2.ellipse(image, (int(round(centre[0])), int(round(centre[1]))),
                (max(int(round(axes[0])), 1), max(int(round(axes[1])), 1)), angle, start, end, colour, thickness, LINE)


def draw_figure(image: np.ndarray, style: FigureStyle, pose: FigurePose) -> None:
    """Draw one figure onto ``image`` (uint8 RGB [H, W, 3], modified in place)."""
    r = pose.head_radius
    hx, hy = pose.head_x, pose.head_y
    body_x = hx if pose.body_x is None else pose.body_x
    height = image.shape[0]
    skin = style.skin

    # Shoulders and torso: a wide rounded shape from under the chin to the bottom edge.
    shoulder_y = hy + HEAD_ASPECT * r + 0.55 * r
    _ellipse(image, (body_x, shoulder_y + 1.6 * r), (2.3 * r, 1.9 * r), style.shirt)
    cv2.rectangle(image, (int(body_x - 2.3 * r), int(shoulder_y + 1.6 * r)), (int(body_x + 2.3 * r), height),
                  style.shirt, -1)
    # Neck, with a shadow under the jaw.
    neck_top = hy + 0.7 * r
    cv2.rectangle(image, (int(hx - 0.42 * r), int(neck_top)), (int(hx + 0.42 * r), int(shoulder_y + 0.35 * r)),
                  _shade(skin, 0.86), -1)
    _ellipse(image, (hx, shoulder_y + 0.3 * r), (0.48 * r, 0.22 * r), style.shirt, start=180, end=360)
    _ellipse(image, (hx, shoulder_y + 0.3 * r), (0.48 * r, 0.18 * r), _shade(style.shirt, 0.7), start=0, end=180)

    # Hair behind the head, ears, then the face: darker rim, lighter centre (roundness shading).
    hair_height = HEAD_ASPECT * r * (1.05 + 0.1 * style.hair_volume)
    _ellipse(image, (hx, hy - 0.12 * r), (r * (1.08 + 0.12 * style.hair_volume), hair_height), style.hair)
    for side in (-1, 1):
        _ellipse(image, (hx + side * 0.98 * r, hy + 0.05 * r), (0.16 * r, 0.26 * r), _shade(skin, 0.85))
    _ellipse(image, (hx, hy), (r, HEAD_ASPECT * r), _shade(skin, 0.82))
    _ellipse(image, (hx, hy + 0.02 * r), (0.9 * r, 1.2 * r), _shade(skin, 0.92))
    _ellipse(image, (hx, hy + 0.05 * r), (0.72 * r, 1.05 * r), skin)
    # Light from the front: cheeks, nose and forehead brighter than the eye sockets.  Dark skin needs
    # this most, or the bright eye whites make the eye band lighter than the cheeks (not face-like).
    highlight = _colour(np.array(skin, dtype=np.float64) * 1.12 + 14)
    _ellipse(image, (hx, hy + 0.22 * r), (0.55 * r, 0.42 * r), highlight)
    _ellipse(image, (hx, hy - 0.55 * r), (0.45 * r, 0.22 * r), highlight)
    # Fringe: hair over the forehead, down to just above the brows.
    _ellipse(image, (hx, hy - 0.95 * r), (1.0 * r, 0.5 * r), style.hair, start=180, end=360)
    _ellipse(image, (hx, hy - 0.95 * r), (1.0 * r, 0.22 * r), style.hair, start=0, end=180)

    _draw_eyes(image, style, hx, hy, r, pose.eye_open)
    _draw_nose(image, skin, hx, hy, r)
    _draw_mouth(image, style, hx, hy, r, pose.mouth_open)


def _draw_eyes(image, style: FigureStyle, hx: float, hy: float, r: float, eye_open: float) -> None:
    eye_y = hy - 0.12 * r
    brow_colour = _colour(np.minimum(np.array(style.hair) * 0.6, np.array(style.skin) * 0.35))
    socket = _shade(style.skin, 0.62)
    for side in (-1, 1):
        ex = hx + side * style.eye_spacing * r
        # Eye socket shadow, then the brow above it: the darkest band of a face.
        _ellipse(image, (ex, eye_y - 0.03 * r), (0.24 * r, 0.15 * r), socket)
        cv2.line(image, (int(ex - 0.22 * r), int(eye_y - 0.2 * r + side * 0.0)),
                 (int(ex + 0.22 * r), int(eye_y - 0.25 * r)), brow_colour, max(2, int(round(0.09 * r))), LINE)
        if eye_open > 0.15:
            open_height = 0.1 * r * eye_open
            _ellipse(image, (ex, eye_y), (0.17 * r, open_height), (240, 240, 236))
            _ellipse(image, (ex, eye_y), (0.085 * r, min(0.085 * r, open_height)), style.iris)
            _ellipse(image, (ex, eye_y), (0.045 * r, min(0.045 * r, open_height)), (10, 10, 12))
            _ellipse(image, (ex, eye_y), (0.17 * r, open_height), (40, 30, 30), start=180, end=360,
                     thickness=max(1, int(round(0.03 * r))))
        else:  # shut: a lash line
            cv2.line(image, (int(ex - 0.17 * r), int(eye_y)), (int(ex + 0.17 * r), int(eye_y)), (40, 30, 30),
                     max(1, int(round(0.04 * r))), LINE)


def _draw_nose(image, skin, hx: float, hy: float, r: float) -> None:
    shadow = _shade(skin, 0.78)
    # A light bridge between the eyes and a shadow down one side of it, nostrils at the tip.
    _ellipse(image, (hx, hy + 0.05 * r), (0.08 * r, 0.3 * r), _shade(skin, 1.06))
    cv2.line(image, (int(hx + 0.09 * r), int(hy - 0.02 * r)), (int(hx + 0.12 * r), int(hy + 0.32 * r)), shadow,
             max(1, int(round(0.04 * r))), LINE)
    _ellipse(image, (hx, hy + 0.36 * r), (0.15 * r, 0.07 * r), shadow)
    for side in (-1, 1):
        _ellipse(image, (hx + side * 0.07 * r, hy + 0.38 * r), (0.04 * r, 0.025 * r), _shade(skin, 0.45))


def _draw_mouth(image, style: FigureStyle, hx: float, hy: float, r: float, mouth_open: float) -> None:
    mouth_y = hy + MOUTH_OFFSET * r
    half_width = style.mouth_width * r * (1.0 - 0.15 * mouth_open)  # lips round a little as they open
    opening = 0.32 * r * float(np.clip(mouth_open, 0.0, 1.0))
    lips = style.lips
    if opening < 0.02 * r:
        _ellipse(image, (hx, mouth_y), (half_width, 0.06 * r), lips)
        cv2.line(image, (int(hx - half_width), int(mouth_y)), (int(hx + half_width), int(mouth_y)),
                 _shade(lips, 0.55), max(1, int(round(0.035 * r))), LINE)
        return
    _ellipse(image, (hx, mouth_y + 0.3 * opening), (half_width + 0.03 * r, 0.06 * r + 0.55 * opening), lips)
    _ellipse(image, (hx, mouth_y + 0.3 * opening), (half_width * 0.85, 0.5 * opening), (45, 15, 20))
    # Upper teeth show once the mouth is open enough.
    if opening > 0.08 * r:
        _ellipse(image, (hx, mouth_y + 0.3 * opening - 0.35 * opening), (half_width * 0.6, 0.12 * opening),
                 (235, 232, 222))
