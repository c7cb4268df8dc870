"""A beating-heart echo phantom in the apical 2- and 4-chamber views: the embedded default data.

Geometry: a bullet-shaped left ventricle (a half superellipse about the mitral-plane midpoint, apex up
towards the probe), a myocardial wall that thickens in systole, a left atrium below the mitral plane, and
in the 4-chamber view a right ventricle and right atrium on the image's left. Every heart is drawn from adult
reference figures (`draw_heart`: size, sphericity, wall, atria, right heart, EF; a curved septum) and every
recording from its own acquisition (depth, tilt, place in the fan, foreshortening, acoustic window), framed as a
sonographer frames it (`framed`), so that two phantom hearts differ as much as two patients' do.

Motion: a volume curve with contraction to end systole, rapid filling, diastasis and the atrial kick; the apex
stays fixed, the base moves towards it, and the width follows so that every frame's LV volume (by revolution
about the long axis, the method of disks) is exactly the drawn curve: the ejection fraction is honoured by
construction.

Rendering: a convolution speckle model. Scatterers are attached to tissue in the end-diastolic configuration
and carried by the same motion as the labels; their complex amplitudes renew with a time constant
(out-of-plane motion), so speckle decorrelates over frames at the rate of real recordings. Echogenicity is
set per tissue (dark blood with trabeculations and papillary muscles, dim patchy myocardium, a bright
pericardium, valves and mitral annulus, dim surroundings); walls reflect specularly, so the lateral walls,
which run along the beam, fade, and one lateral segment drops out. Scatterers are splatted onto a
depth x angle grid with the round-trip carrier phase, convolved with a separable point-spread function
(axial Gaussian, lateral Gaussian that widens away from the focus), attenuated with depth and partly given
back by the time-gain compensation, joined by stationary near-field clutter and electronic noise that grows
with depth, log-compressed with the gain and grey curve of a dataset format (`LOOKS`) and scan-converted to
the fan. Labels are evaluated on the output pixel grid from the same geometry, so they are aligned with the
image.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter, gaussian_filter1d, map_coordinates

from freeecho_core.data.case import EchoCase
from freeecho_core.options import at_least, option, positive_number
from freeecho_core.validate import as_choice, as_float, as_int

# Echogenicity (relative scattering amplitude) per tissue class: dark blood, dim myocardium, a bright
# pericardium, valves and fibrous annulus; the surrounding tissue is dimmer than the myocardium.
AMPLITUDE = {"blood": 0.012, "tissue": 0.16, "myocardium": 0.55, "pericardium": 1.9, "thin_wall": 0.6,
             "valve": 1.2, "annulus": 1.6, "trabeculae": 0.18}
BODY = {name: i for i, name in enumerate(["tissue", "lv", "myo", "la", "rv", "ra", "valve"])}
SPECULAR = 0.7  # share of a wall's echo that is specular (fades as the wall turns parallel to the beam)
DECORRELATION_TIME = 0.3  # s: out-of-plane motion renews the speckle with this time constant
ATTENUATION_DB_PER_CM = 3.0  # round trip, about 0.5 dB/cm/MHz at 3 MHz
TGC_SHARE = 0.8  # the share of the attenuation the time-gain compensation gives back


@dataclass(frozen=True)
class ScannerLook:
    """The scanner settings and frame layout of one dataset format (gain and grey curve, fan, framing)."""

    gain_db: float  # added to every echo (dB) before log compression; the reference is the 99.5th percentile
    reject: float  # exponent of the grey curve after log compression (> 1 darkens the low echoes)
    noise_floor: float  # electronic noise before the gain, relative to the reference echo
    dynamic_range_db: tuple[float, float]  # range of the log-compression window
    opening_deg: tuple[float, float]  # range of the fan's opening angle
    square: bool  # a square frame as tall as the fan (its sides cut, the probe off-centre), as EchoNet stores
    apex_x: tuple[float, float]  # range of the probe's column as a fraction of the frame width (square frames)


# Tuned to real figures (grey 0-255, every pixel in the fan of every frame): EchoNet-Dynamic A4C at 112 px
# (11 videos) mean 49 [39-71], median 31 [10-58], near-black (< 16) share 0.36 [0.18-0.54], 95th / 50th
# percentile 2.6-8.8, fan 58-89 deg reaching the bottom of the frame, apex at 0.33-0.58 of the width;
# a CAMUS frame (higher gain): mean 121, median 108, 5th / 95th percentile 54 / 234, near-black share 0.01,
# fan 75 deg.
LOOKS = {
    "echonet": ScannerLook(gain_db=-1.0, reject=1.4, noise_floor=0.003, dynamic_range_db=(30.0, 38.0),
                            opening_deg=(78.0, 89.0), square=True,
                           apex_x=(0.42, 0.56)),
    "camus": ScannerLook(gain_db=-1.0, reject=1.0, noise_floor=0.015, dynamic_range_db=(30.0, 36.0),
                          opening_deg=(72.0, 80.0), square=False,
                         apex_x=(0.5, 0.5)),
}


@dataclass(frozen=True)
class PhantomConfig:
    height: int = field(default=64, metadata=option(
        "image rows in pixels; columns follow from the sector width (isotropic pixels)", at_least(16)))
    frames: int = field(default=16, metadata=option("frames rendered from end diastole", at_least(2)))
    cycles: float = field(default=1.0, metadata=option("heart beats the frames span", positive_number))
    scatterers_per_cell: float = 2.0  # scatterer density on the depth x angle grid
    look: str = "camus"  # scanner settings of a format (LOOKS): "camus" or "echonet"

    def __post_init__(self):
        as_choice("look", self.look, LOOKS)
        object.__setattr__(self, "height", as_int("height", self.height, 16))
        object.__setattr__(self, "frames", as_int("frames", self.frames, 2))
        object.__setattr__(self, "cycles", as_float("cycles", self.cycles, above=0))
        object.__setattr__(self, "scatterers_per_cell", as_float("scatterers_per_cell", self.scatterers_per_cell,
                                                                 above=0))


@dataclass(frozen=True)
class Heart:
    """The drawn parameters of one case (lengths in cm, angles in radians)."""

    view: str
    depth: float  # imaging depth
    half_angle: float  # half the sector opening
    apex_depth: float  # endocardial apex below the probe
    tilt: float  # long axis from vertical (positive: base to the image right)
    lv_length: float  # apex to mitral plane at ED, as imaged (foreshortening applied)
    lv_width: float  # ED cavity width at its widest
    wall: float  # ED lateral/septal wall thickness
    apex_wall: float  # ED apical wall thickness
    shape_power: float  # superellipse exponent of the cavity (2 = half ellipse, larger = blunter)
    base_shortening: float  # base displacement towards the apex at ES, fraction of the length
    la_length: float
    la_width: float
    ef: float  # ejection fraction (fraction)
    es_phase: float  # end systole as a fraction of the cycle
    heart_rate: float  # beats per minute
    dynamic_range: float  # log compression in dB
    lateral_offset: float  # LV axis shift at the apex (cm), image right positive
    probe_x: float = 0.5  # probe column as a fraction of the frame width
    dropout: float = 0.5  # depth of the lateral-wall dropout (0 none .. 1 the wall vanishes there)
    dropout_at: float = 0.5  # where along the lateral wall it is deepest (fraction of the LV length from the apex)
    gain_offset: float = 0.0  # dB added to the look's gain (the sonographer's setting)
    bend: float = 0.0  # mid-ventricular bow of the long axis (cm, image right positive): a curved septum
    foreshortening: float = 0.0  # share of the true LV length the imaging plane misses at the apex
    rv_length: float = 7.0  # RV cavity length (4CH)
    rv_width: float = 3.3  # RV cavity width at ED (4CH)
    ra_length: float = 4.6  # RA length (4CH)
    ra_width: float = 3.6  # RA width (4CH)
    blood: float = 0.012  # echogenicity of blood (weak speckle; brighter with slow flow or "smoke")
    clutter: float = 0.9  # strength of the stationary near-field clutter (reverberation), relative
    clutter_depth: float = 1.6  # cm over which that clutter fades (deep haze fills the apex of poor windows)
    myocardium_gain: float = 1.0  # the myocardium's echogenicity relative to AMPLITUDE (acoustic window)
    tissue_gain: float = 1.0  # the surrounding tissue's, likewise


def lognormal(rng: np.random.Generator, median: float, spread: float, low: float, high: float) -> float:
    """median * exp(spread * N(0, 1)), clipped to [low, high]: a size with a relative spread of about `spread`."""
    return float(np.clip(median * np.exp(spread * rng.normal()), low, high))


# Adult apical views, the sources the distributions below follow (book: Data, "How much hearts differ"):
# LV end-diastolic diameter 3.8-5.8 cm and wall thickness 0.6-1.0 cm (normal ranges, ASE/EACVI chamber
# quantification, Lang et al. 2015), wider and thicker in cardiomyopathy and hypertrophy; RV basal diameter
# 2.5-4.1 cm and length 5.9-8.3 cm, RA 4.0-5.3 x 2.9-4.5 cm (same source); EF 55.7 +- 12.5 % over EchoNet-Dynamic
# (Ouyang et al. 2020), whose reduced-EF hearts are dilated and rounder.
def draw_heart(rng: np.random.Generator, view: str, look: ScannerLook = LOOKS["camus"]) -> Heart:
    """Draw one case's geometry and motion: an adult apical view. A body-size factor scales every chamber;
    the LV's sphericity, wall, atria and right heart vary on their own; a low EF comes with a dilated, rounder LV;
    the acquisition varies depth (12.5-20 cm), tilt (-7 to +17 deg), apex depth, lateral place and foreshortening
    (the imaging plane misses up to 25 % of the LV length at the apex, which makes it shorter and blunter)."""
    if view not in ("2CH", "4CH"):
        raise ValueError(f"view must be '2CH' or '4CH', got {view!r}")
    u = rng.uniform
    ef = float(np.clip(rng.normal(0.56, 0.12), 0.22, 0.78))
    dilation = max(0.0, 0.50 - ef)  # reduced EF: a larger, more spherical ventricle
    size = float(np.exp(0.10 * rng.normal()))
    length = lognormal(rng, 8.6 * size * (1 + 0.5 * dilation), 0.07, 6.0, 11.5)
    width = lognormal(rng, 4.8 * size * (1 + 1.2 * dilation), 0.11, 3.2, 7.0)
    wall = lognormal(rng, 0.95, 0.15, 0.65, 1.5)
    heart = Heart(
        view=view, depth=lognormal(rng, 15.0, 0.09, 12.5, 20.0), half_angle=np.deg2rad(u(*look.opening_deg) / 2),
        apex_depth=u(2.0, 4.0), tilt=np.deg2rad(u(-7.0, 17.0)),
        lv_length=length, lv_width=width, wall=wall, apex_wall=wall * u(0.6, 0.85), shape_power=u(1.9, 2.4),
        base_shortening=u(0.10, 0.19),
        la_length=lognormal(rng, 4.7 * size * (1 + 0.6 * dilation), 0.10, 3.5, 7.0),
        la_width=lognormal(rng, 3.8 * size * (1 + 0.6 * dilation), 0.10, 2.8, 5.5),
        ef=ef, es_phase=u(0.34, 0.42), heart_rate=u(55.0, 95.0), dynamic_range=u(*look.dynamic_range_db),
        lateral_offset=u(0.4, 1.4) if view == "4CH" else u(-0.6, 0.6), probe_x=u(*look.apex_x),
        dropout=u(0.3, 0.9), dropout_at=u(0.35, 0.8), gain_offset=u(-3.0, 3.0),
        bend=float(np.clip(rng.normal(0.0, 0.25), -0.6, 0.6)),
        rv_length=lognormal(rng, 7.0 * size, 0.08, 5.5, 9.0), rv_width=lognormal(rng, 3.3 * size, 0.13, 2.3, 4.8),
        ra_length=lognormal(rng, 4.6 * size, 0.10, 3.5, 6.0), ra_width=lognormal(rng, 3.6 * size, 0.10, 2.7, 4.8),
        blood=lognormal(rng, AMPLITUDE["blood"], 0.5, 0.005, 0.035), clutter=lognormal(rng, 0.9, 0.4, 0.4, 1.8),
        clutter_depth=u(1.2, 2.8), myocardium_gain=lognormal(rng, 0.9, 0.2, 0.55, 1.4),
        tissue_gain=lognormal(rng, 1.0, 0.2, 0.6, 1.5),
    )
    return framed(foreshortened(heart, 0.25 * float(rng.beta(1.2, 3.0))))


EDGE_MARGIN = np.deg2rad(4.0)  # angle the LV's widest part keeps from either edge of the fan at least


def edge_overflow(heart: Heart) -> tuple[float, float]:
    """How far (cm, across the image) the epicardium at the LV's widest part (80 % of the way from the apex to
    the base) lies beyond the right and the left edge of the fan less EDGE_MARGIN; negative: the room left."""
    axis = np.array([np.sin(heart.tilt), np.cos(heart.tilt)])
    widest = np.array([heart.lateral_offset, heart.apex_depth]) + 0.8 * heart.lv_length * axis
    reach = (heart.lv_width / 2 + heart.wall) * np.array([axis[1], -axis[0]])
    (x_r, z_r), (x_l, z_l) = widest + reach, widest - reach
    slope = np.tan(heart.half_angle - EDGE_MARGIN)
    return float(x_r - z_r * slope), float(-x_l - z_l * slope)


BASE_MARGIN = 2.0  # cm of the left atrium that the imaging depth keeps below the mitral plane at least


def framed(heart: Heart) -> Heart:
    """`heart` as a sonographer frames it: the imaging depth raised, where needed, to hold the whole LV and
    BASE_MARGIN cm below its mitral plane, and the LV moved sideways, where needed, so that its widest part
    (80 % of the way to the base) keeps EDGE_MARGIN from both edges of the fan (or, too wide for that, lies midway
    between them). What already fits stands."""
    axis = np.array([np.sin(heart.tilt), np.cos(heart.tilt)])
    base = heart.apex_depth + heart.lv_length * axis[1] + BASE_MARGIN
    right, left = edge_overflow(heart)
    fits = right + left <= 0  # the room left on both sides together
    shift = max(left, 0.0) - max(right, 0.0) if fits else (left - right) / 2  # too wide: centred between the edges
    return replace(heart, depth=float(max(heart.depth, base)), lateral_offset=float(heart.lateral_offset + shift))


def foreshortened(heart: Heart, share: float) -> Heart:
    """`heart` imaged with the apex `share` of the true LV length out of plane (replacing its own
    foreshortening): the imaged LV is shorter by that share and its apex blunter."""
    true_length = heart.lv_length / (1 - heart.foreshortening)
    power = heart.shape_power - 2.0 * heart.foreshortening
    return replace(heart, lv_length=true_length * (1 - share), shape_power=power + 2.0 * share,
                   foreshortening=share)


def volume_curve(phase: np.ndarray, ef: float, es_phase: float) -> np.ndarray:
    """V(t) / V_ED over the cycle: ejection to 1 - EF at `es_phase`, rapid filling (75 % of the stroke
    volume back within 0.15 of the cycle), diastasis, atrial kick in the last 15 %."""
    sv = ef
    knots = np.array([0.0, es_phase * 0.5, es_phase, es_phase + 0.06, es_phase + 0.15, 0.85, 0.93, 1.0])
    values = np.array([1.0, 1 - 0.62 * sv, 1 - sv, 1 - 0.8 * sv, 1 - 0.25 * sv, 1 - 0.15 * sv,
                       1 - 0.05 * sv, 1.0])
    return PchipInterpolator(knots, values)(np.mod(phase, 1.0))


def half_width_profile(s: np.ndarray, power: float) -> np.ndarray:
    """Cavity half-width / (ED half-width) at normalised distance s = u / L from the apex (0) to the base (1).

    A superellipse cap whose widest point is near the base, narrowing by 12 % at the mitral annulus.
    """
    s = np.clip(s, 0.0, 1.0)
    cap = np.clip(1 - np.abs(1 - s / 0.8) ** power, 0.0, None) ** (1 / power)
    narrowing = 1 - 0.12 * np.clip((s - 0.8) / 0.2, 0.0, 1.0) ** 2
    return np.where(s < 0.8, cap, narrowing)


def profile_volume_factor(power: float, n: int = 4001) -> float:
    """Integral of profile^2 over s in [0, 1]: V = pi (w/2)^2 L times this."""
    s = np.linspace(0, 1, n)
    return float(np.trapezoid(half_width_profile(s, power) ** 2, s))


@dataclass(frozen=True)
class FrameGeometry:
    """The heart at one instant: LV frame of reference and sizes (cm)."""

    apex: np.ndarray  # (x, z) of the endocardial apex
    axis: np.ndarray  # unit vector apex -> base
    length: float
    half_width: float
    wall: float
    apex_wall: float
    la_scale: float
    mitral_open: float  # 0 closed (systole) .. 1 open (filling)
    bend: float = 0.0  # lateral bow of the long axis at mid-ventricle (cm)


def frame_geometry(heart: Heart, phase: float) -> FrameGeometry:
    """Apex fixed; base moves towards it; width from the volume: V ~ L w^2 (profile fixed)."""
    v = float(volume_curve(np.array([phase]), heart.ef, heart.es_phase)[0])
    contraction = (1 - v) / heart.ef  # 0 at ED, 1 at ES
    length_ratio = 1 - heart.base_shortening * contraction
    width_ratio = np.sqrt(v / length_ratio)
    thickening = 1 + 1.5 * (1 - width_ratio)
    axis = np.array([np.sin(heart.tilt), np.cos(heart.tilt)])
    apex = np.array([heart.lateral_offset, heart.apex_depth])
    p = np.mod(phase, 1.0)
    filling = float(p > heart.es_phase + 0.03 and p < 0.97)
    return FrameGeometry(apex=apex, axis=axis, length=heart.lv_length * length_ratio,
                         half_width=heart.lv_width / 2 * width_ratio, wall=heart.wall * thickening,
                         apex_wall=heart.apex_wall * thickening, la_scale=1 + 0.25 * contraction,
                         mitral_open=filling, bend=heart.bend)


def local_coordinates(points: np.ndarray, g: FrameGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(u, v): distance along the long axis from the apex, and signed lateral distance (image right +) from
    the axis, which bows sideways by `g.bend` at mid-ventricle (a curved septum) and is straight at both ends."""
    d = points - g.apex
    u = d @ g.axis
    v = d @ np.array([g.axis[1], -g.axis[0]])
    return u, v - axis_bow(u, g)


def axis_bow(u: np.ndarray, g: FrameGeometry) -> np.ndarray:
    """Lateral offset of the bowed long axis at distance u from the apex: bend * 4 s (1 - s), s = u / L in [0, 1]."""
    s = np.clip(u / g.length, 0.0, 1.0)
    return g.bend * 4 * s * (1 - s)


def from_local(u: np.ndarray, v: np.ndarray, g: FrameGeometry) -> np.ndarray:
    """The inverse of `local_coordinates`: (N, 2) image points (cm) at (u, v)."""
    normal = np.array([g.axis[1], -g.axis[0]])
    return g.apex + u[:, None] * g.axis + (v + axis_bow(u, g))[:, None] * normal


def endocardium(u: np.ndarray, g: FrameGeometry, power: float) -> np.ndarray:
    """Cavity half-width at distance u from the apex (0 outside [0, L])."""
    inside = (u >= 0) & (u <= g.length)
    return np.where(inside, g.half_width * half_width_profile(u / g.length, power), 0.0)


def epicardium(u: np.ndarray, g: FrameGeometry, power: float) -> np.ndarray:
    """Outer half-width of the LV: the cavity profile grown by the wall (apex_wall above the apex)."""
    inside = (u >= -g.apex_wall) & (u <= g.length)
    s = (u + g.apex_wall) / (g.length + g.apex_wall)
    return np.where(inside, (g.half_width + g.wall) * half_width_profile(s, power), 0.0)


def lv_regions(points: np.ndarray, g: FrameGeometry, power: float):
    """Masks of the LV cavity and the myocardium, and the normalised depth in the wall (0 endo .. 1 epi)."""
    u, v = local_coordinates(points, g)
    r_endo, r_epi = endocardium(u, g, power), epicardium(u, g, power)
    cavity = (u >= 0) & (u <= g.length) & (np.abs(v) < r_endo)
    wall = (np.abs(v) < r_epi) & ~cavity
    depth_in_wall = np.clip((np.abs(v) - r_endo) / np.maximum(r_epi - r_endo, 1e-6), 0, 1)
    return cavity, wall, depth_in_wall


def la_radius(points: np.ndarray, g: FrameGeometry, heart: Heart) -> np.ndarray:
    """Normalised elliptical radius of the LA (< 1 inside its ellipse; infinite above the mitral plane)."""
    u, v = local_coordinates(points, g)
    a, b = heart.la_length / 2 * g.la_scale ** 0.5, heart.la_width / 2 * g.la_scale ** 0.5
    centre = g.length + a * 0.92
    return np.where(u > g.length, np.sqrt(((u - centre) / a) ** 2 + (v / b) ** 2), np.inf)


def la_region(points: np.ndarray, g: FrameGeometry, heart: Heart) -> np.ndarray:
    return la_radius(points, g, heart) < 1


def right_heart_regions(points: np.ndarray, g: FrameGeometry, heart: Heart):
    """4CH only: RV cavity (left of the septum, shorter than the LV) and RA (below it), as masks, and the
    normalised elliptical radius of each (< 1 inside its ellipse)."""
    u, v = local_coordinates(points, g)
    septum = -(g.half_width + g.wall)
    rv_len, rv_w = heart.rv_length, heart.rv_width * (g.half_width / (heart.lv_width / 2)) ** 0.5
    rv_centre_u = g.length - rv_len / 2 + 0.2
    rv_q = np.sqrt(((u - rv_centre_u) / (rv_len / 2)) ** 2 + ((v - septum + rv_w / 2) / (rv_w / 2)) ** 2)
    rv = (rv_q < 1) & (v < septum - 0.05) & (u <= g.length)
    ra_a, ra_b = heart.ra_length / 2, heart.ra_width / 2
    ra_q = np.sqrt(((u - g.length - ra_a) / ra_a) ** 2 + ((v - septum + ra_b - 0.2) / ra_b) ** 2)
    ra = (u > g.length + 0.1) & (ra_q < 1) & (v < -0.35)
    return rv, ra, rv_q, ra_q


def camus_labels(points: np.ndarray, g: FrameGeometry, heart: Heart) -> np.ndarray:
    """CAMUS labels (0 background, 1 LV, 2 myocardium, 3 LA) at `points` (N, 2)."""
    cavity, wall, _ = lv_regions(points, g, heart.shape_power)
    la = la_region(points, g, heart)
    labels = np.zeros(len(points), np.uint8)
    labels[la & ~wall] = 3
    labels[wall] = 2
    labels[cavity] = 1
    return labels


def pixel_grid(heart: Heart, height: int, square: bool = False):
    """Output pixel centres (H*W, 2) in cm, the (H, W) shape, the spacing, and the sector mask. The fan reaches
    the bottom row; the frame holds the whole fan, or (`square`) a square as tall as the fan with the probe at
    column `heart.probe_x` of its width, the fan's sides cut by the frame."""
    spacing = heart.depth / height
    width = height if square else int(round(2 * heart.depth * np.sin(heart.half_angle) / spacing))
    probe = heart.probe_x if square else 0.5
    x = (np.arange(width) + 0.5) * spacing - probe * width * spacing
    z = (np.arange(height) + 0.5) * spacing
    X, Z = np.meshgrid(x, z)
    r, theta = np.hypot(X, Z), np.arctan2(X, Z)
    sector = (r <= heart.depth) & (np.abs(theta) <= heart.half_angle)
    return np.stack([X.ravel(), Z.ravel()], axis=1), (height, width), spacing, sector


def place_scatterers(heart: Heart, rng: np.random.Generator, count: int):
    """Scatterers uniform over the fan area in the ED configuration: positions (N, 2) cm and complex amplitudes."""
    r = heart.depth * np.sqrt(rng.uniform(0, 1, count))
    theta = rng.uniform(-heart.half_angle, heart.half_angle, count)
    points = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    phase = rng.uniform(0, 2 * np.pi, count)
    magnitude = rng.rayleigh(1.0, count)
    return points, magnitude * np.exp(1j * phase)


def smooth_field(rng: np.random.Generator, points: np.ndarray, depth: float, cells: int, blur: float) -> np.ndarray:
    """A unit-variance random field, smooth over depth / cells * blur cm, sampled at `points` (N, 2) cm."""
    field = gaussian_filter(rng.normal(size=(cells, cells)), blur)
    field = (field - field.mean()) / (field.std() + 1e-9)
    iz = np.clip((points[:, 1] / depth * (cells - 1)).astype(int), 0, cells - 1)
    ix = np.clip(((points[:, 0] / depth + 0.75) / 1.5 * (cells - 1)).astype(int), 0, cells - 1)
    return field[iz, ix]


def beam_incidence(points: np.ndarray, g: FrameGeometry, power: float, h: float = 0.05) -> np.ndarray:
    """|cos| of the angle between the beam (from the probe at the origin) and the normal of the LV surface
    through each point (the gradient of |v| / epicardial half-width): 1 where the wall faces the probe, near 0
    where it runs along the beam, as the lateral walls of an apical view do."""

    def shape(p):
        u, v = local_coordinates(p, g)
        return np.abs(v) / np.maximum(epicardium(u, g, power), 1e-3)

    grad = np.stack([shape(points + [h, 0]) - shape(points - [h, 0]),
                     shape(points + [0, h]) - shape(points - [0, h])], axis=1)
    normal = grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)
    beam = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    return np.abs((normal * beam).sum(axis=1))


def chamber_echo(q: np.ndarray, rng: np.random.Generator, blood: float = AMPLITUDE["blood"]) -> np.ndarray:
    """Echogenicity inside a chamber of normalised radius q (< 1): blood, rising towards the wall through
    trabeculations, so that chambers have soft, irregular borders instead of sharp black ellipses."""
    border = np.exp(-np.clip(1 - q, 0, None) / 0.07) * rng.uniform(0.3, 1.0, len(q))
    return blood + AMPLITUDE["trabeculae"] * border


def classify_scatterers(points: np.ndarray, heart: Heart, rng: np.random.Generator):
    """Tissue class, echogenicity and the body whose motion carries each scatterer (ED configuration)."""
    g0 = frame_geometry(heart, 0.0)
    p = heart.shape_power
    cavity, wall, wall_depth = lv_regions(points, g0, p)
    la = la_region(points, g0, heart)
    body = np.full(len(points), BODY["tissue"])
    # Surrounding tissue: dim, with slowly varying echogenicity (fibrous bands, lung shadowing at the edges).
    amp = AMPLITUDE["tissue"] * heart.tissue_gain * np.exp(0.8 * smooth_field(rng, points, heart.depth, 24, 3.0))
    u0, v0 = local_coordinates(points, g0)
    r_epi = epicardium(u0, g0, p)
    pericardium = ~wall & ~cavity & (np.abs(v0) >= r_epi) & (np.abs(v0) < epicardium(u0, _inflated(g0, 0.3), p))
    # Specular reflection: walls and pericardium fade where they run along the beam.
    facing = (1 - SPECULAR) + SPECULAR * beam_incidence(points, g0, p)
    amp[pericardium] = AMPLITUDE["pericardium"] * facing[pericardium]
    if heart.view == "4CH":
        rv, ra, rv_q, ra_q = right_heart_regions(points, g0, heart)
        rv_cavity = rv & ~wall
        body[rv_cavity], amp[rv_cavity] = BODY["rv"], chamber_echo(rv_q, rng, heart.blood)[rv_cavity]
        ra_cavity = ra & ~rv & ~wall
        body[ra_cavity], amp[ra_cavity] = BODY["ra"], chamber_echo(ra_q, rng, heart.blood)[ra_cavity]
        # The RV free wall and the RA wall: thin bright shells around the chambers (the tricuspid annulus and
        # the atrial septum where the shells meet the LV and LA).
        shells = ((rv_q >= 1) & (rv_q < 1.12)) | ((ra_q >= 1) & (ra_q < 1.15))
        right_walls = shells & ~rv & ~ra & ~wall & ~cavity & ~la & (v0 < 0)
        amp[right_walls] = AMPLITUDE["thin_wall"] * (0.5 + 0.5 * facing[right_walls])
    la_cavity = la & ~wall
    la_echo = chamber_echo(la_radius(points, g0, heart), rng, heart.blood)
    body[la_cavity], amp[la_cavity] = BODY["la"], la_echo[la_cavity]
    la_wall = la_region(points, _inflated_la(g0), heart) & ~la & ~wall & ~cavity
    amp[la_wall] = AMPLITUDE["thin_wall"] * facing[la_wall]
    body[la_wall] = BODY["la"]
    # Myocardium: dim and patchy, with a dropout on the lateral wall, a bright fibrous mitral annulus.
    patchy = np.exp(0.55 * smooth_field(rng, points, heart.depth, 48, 2.0))
    s = u0 / g0.length
    dropout = 1 - heart.dropout * np.exp(-(((s - heart.dropout_at) / 0.15) ** 2)) * (v0 > 0)
    amp_wall = AMPLITUDE["myocardium"] * heart.myocardium_gain * patchy * facing * dropout
    annulus = wall & (s > 0.93)
    amp_wall = np.where(annulus, AMPLITUDE["annulus"], amp_wall)
    body[wall], amp[wall] = BODY["myo"], amp_wall[wall]
    # LV cavity: blood, with trabeculations along the endocardium and two papillary muscles.
    r_endo = np.maximum(endocardium(u0, g0, p), 1e-6)
    near_wall = np.exp(-(r_endo - np.abs(v0)) / 0.2)
    papillary = np.zeros(len(points), bool)
    for side in (-1.0, 1.0):
        at = (u0 - 0.62 * g0.length) ** 2 / 1.1 ** 2 + (v0 - side * 0.8 * r_endo) ** 2 / 0.3 ** 2 < 1  # on the wall
        papillary |= at
    amp_cavity = heart.blood + AMPLITUDE["trabeculae"] * near_wall * patchy
    amp_cavity = np.where(papillary, 0.4 * AMPLITUDE["myocardium"] * patchy, amp_cavity)
    body[cavity], amp[cavity] = BODY["lv"], amp_cavity[cavity]
    return body, amp, wall_depth


def _inflated(g: FrameGeometry, margin: float) -> FrameGeometry:
    return replace(g, wall=g.wall + margin, apex_wall=g.apex_wall + margin)


def _inflated_la(g: FrameGeometry) -> FrameGeometry:
    return replace(g, la_scale=g.la_scale * 1.18)


def move_scatterers(points: np.ndarray, body: np.ndarray, wall_depth: np.ndarray, heart: Heart,
                    g0: FrameGeometry, g: FrameGeometry) -> np.ndarray:
    """Carry ED positions to the instant of `g` with the motion that also moves the labels.

    LV points keep their relative position along the axis (apex fixed) and across the cavity or wall;
    surrounding tissue follows the epicardium with a displacement fading over 2.5 cm.
    """
    p = heart.shape_power
    u0, v0 = local_coordinates(points, g0)
    u = np.where(u0 >= 0, u0 * g.length / g0.length, u0 * g.apex_wall / g0.apex_wall)
    v = v0.copy()
    lv = body == BODY["lv"]
    v[lv] = v0[lv] * g.half_width / g0.half_width
    myo = body == BODY["myo"]
    r_endo, r_epi = endocardium(u[myo], g, p), epicardium(u[myo], g, p)
    v[myo] = np.sign(v0[myo]) * (r_endo + wall_depth[myo] * (r_epi - r_endo))
    # Atria follow the mitral plane and swell as they fill.
    atrium = (body == BODY["la"]) | (body == BODY["ra"])
    grow = np.sqrt(g.la_scale / g0.la_scale)
    u[atrium] = g.length + (u0[atrium] - g0.length) * grow
    v[atrium] = v0[atrium] * grow
    # Everything else (tissue, pericardium, right heart) is dragged by the epicardium and the base.
    rest = ~(lv | myo | atrium)
    uc = np.clip(u0[rest], -g0.apex_wall, g0.length)
    uc_t = np.where(uc >= 0, uc * g.length / g0.length, uc * g.apex_wall / g0.apex_wall)
    epi0, epi_t = epicardium(uc, g0, p), epicardium(uc_t, g, p)
    fade = np.clip(1 - (np.abs(v0[rest]) - epi0) / 2.5, 0, 1)
    v[rest] = v0[rest] + np.sign(v0[rest]) * (epi_t - epi0) * fade
    along = np.clip(u0[rest] / g0.length, 0, 1)
    u[rest] = u0[rest] + (g.length - g0.length) * along * np.clip(1 - np.abs(v0[rest]) / 8.0, 0, 1)
    return from_local(u, v, g)


def mitral_leaflets(g: FrameGeometry, rng: np.random.Generator, count: int = 400):
    """Scatterer positions on the two mitral leaflets: across the annulus when closed, into the LV when open."""
    annulus_half = g.half_width * half_width_profile(np.array([1.0]), 2.5)[0]
    leaflet = 0.55 * annulus_half * 2 * 0.75
    t = rng.uniform(0, 1, count)
    side = np.where(rng.uniform(size=count) < 0.5, -1.0, 1.0)
    angle = np.deg2rad(8 + 70 * g.mitral_open)  # from the mitral plane towards the apex
    hinge_v = side * annulus_half
    v = hinge_v - side * t * leaflet * np.cos(angle)
    u = g.length - t * leaflet * np.sin(angle) + rng.normal(0, 0.04, count)
    return from_local(u, v, g)


@dataclass(frozen=True)
class PolarGrid:
    depth: float
    half_angle: float
    n_r: int
    n_theta: int

    def indices(self, points: np.ndarray):
        r = np.hypot(points[:, 0], points[:, 1])
        theta = np.arctan2(points[:, 0], points[:, 1])
        return r / self.depth * (self.n_r - 1), (theta + self.half_angle) / (2 * self.half_angle) * (
            self.n_theta - 1)


def splat(grid: PolarGrid, points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bilinear splatting of complex values onto the (n_r, n_theta) grid (sub-cell motion stays smooth)."""
    ir, it = grid.indices(points)
    keep = (ir >= 0) & (ir < grid.n_r - 1) & (it >= 0) & (it < grid.n_theta - 1)
    ir, it, values = ir[keep], it[keep], values[keep]
    r0, t0 = np.floor(ir).astype(int), np.floor(it).astype(int)
    fr, ft = ir - r0, it - t0
    out = np.zeros(grid.n_r * grid.n_theta, complex)
    for dr, dt, w in ((0, 0, (1 - fr) * (1 - ft)), (1, 0, fr * (1 - ft)), (0, 1, (1 - fr) * ft), (1, 1, fr * ft)):
        flat = (r0 + dr) * grid.n_theta + t0 + dt
        out += np.bincount(flat, weights=(w * values).real, minlength=out.size) + 1j * np.bincount(
            flat, weights=(w * values).imag, minlength=out.size)
    return out.reshape(grid.n_r, grid.n_theta)


def point_spread(rf: np.ndarray, grid: PolarGrid, axial_sigma: float, lateral_sigmas: np.ndarray) -> np.ndarray:
    """Separable PSF: axial Gaussian (the carrier is in the scatterer phases), then a lateral Gaussian whose
    width (in angle samples) varies with depth, by blending three fixed-width convolutions row by row."""
    axial = gaussian_filter1d(rf.real, axial_sigma, axis=0) + 1j * gaussian_filter1d(rf.imag, axial_sigma, axis=0)
    levels = np.array([lateral_sigmas.min(), np.median(lateral_sigmas), lateral_sigmas.max()])
    blurred = [gaussian_filter1d(axial.real, s, axis=1) + 1j * gaussian_filter1d(axial.imag, s, axis=1)
               for s in levels]
    weight = np.interp(lateral_sigmas, levels, [0.0, 1.0, 2.0])
    lo = np.clip(np.floor(weight).astype(int), 0, 1)
    frac = (weight - lo)[:, None]
    stack = np.stack(blurred)
    rows = np.arange(grid.n_r)
    return stack[lo, rows] * (1 - frac) + stack[lo + 1, rows] * frac


def scan_convert(image: np.ndarray, grid: PolarGrid, points: np.ndarray, shape, sector: np.ndarray) -> np.ndarray:
    ir, it = grid.indices(points)
    out = map_coordinates(image, [ir, it], order=1, mode="constant").reshape(shape)
    return np.where(sector, out, 0.0)


def render_case(heart: Heart, config: PhantomConfig, rng: np.random.Generator, case_id: str) -> EchoCase:
    """Render one recording of `config.frames` frames from ED (frame 0) and its CAMUS labels."""
    look = LOOKS[config.look]
    pixels, shape, spacing, sector = pixel_grid(heart, config.height, look.square)
    fan_columns = int(round(2 * heart.depth * np.sin(heart.half_angle) / spacing))
    grid = PolarGrid(heart.depth, heart.half_angle, n_r=3 * config.height, n_theta=2 * fan_columns)
    count = int(config.scatterers_per_cell * grid.n_r * grid.n_theta * 1.2)
    points0, speckle = place_scatterers(heart, rng, count)
    body, echogenicity, wall_depth = classify_scatterers(points0, heart, rng)
    # Stationary near-field clutter (reverberation between the probe and the chest wall).
    clutter_pts, clutter_amp = place_scatterers(heart, rng, count // 4)
    clutter = splat(grid, clutter_pts, clutter_amp * heart.clutter * np.exp(-clutter_pts[:, 1] / heart.clutter_depth))
    wavelength = heart.depth / grid.n_r * 3.0  # three depth samples per carrier period
    r_axis = np.linspace(0, heart.depth, grid.n_r)
    focus = heart.depth * 0.45
    lateral_sigmas = 3.6 * np.sqrt(1 + ((r_axis - focus) / (0.35 * heart.depth)) ** 2)  # beam widens off focus
    residual_db = (1 - TGC_SHARE) * ATTENUATION_DB_PER_CM * r_axis  # attenuation the TGC does not give back
    attenuation = 10 ** (-residual_db / 20)[:, None]
    frames_per_cycle = config.frames / config.cycles
    fps = float(frames_per_cycle * heart.heart_rate / 60.0)
    rho = np.exp(-1 / (fps * DECORRELATION_TIME))  # speckle memory from one frame to the next
    es_index = int(round(heart.es_phase * frames_per_cycle))
    heart = replace(heart, es_phase=es_index / frames_per_cycle)  # ES on a rendered frame: exact 1 - EF there
    g0 = frame_geometry(heart, 0.0)
    echoes, labels = [], []
    for k in range(config.frames):
        if k:
            fresh = rng.normal(size=count) + 1j * rng.normal(size=count)
            speckle = rho * speckle + np.sqrt(1 - rho**2) * fresh
        g = frame_geometry(heart, k / frames_per_cycle)
        pts = move_scatterers(points0, body, wall_depth, heart, g0, g)
        carrier = np.exp(1j * 4 * np.pi * np.hypot(pts[:, 0], pts[:, 1]) / wavelength)
        rf = splat(grid, pts, speckle * echogenicity * carrier) + clutter
        valve = mitral_leaflets(g, np.random.default_rng(rng.integers(2**32)), 300)
        rf += splat(grid, valve, AMPLITUDE["valve"] * np.exp(1j * rng.uniform(0, 2 * np.pi, len(valve))))
        echoes.append(point_spread(rf, grid, axial_sigma=2.5, lateral_sigmas=lateral_sigmas) * attenuation)
        labels.append(np.where(sector, camus_labels(pixels, g, heart).reshape(shape), 0))
    # Electronic noise, growing with depth with half the TGC's gain in dB (the receive filter narrows with depth),
    # relative to the strongest echoes of the first frame.
    scale = np.percentile(np.abs(echoes[0]), 99.5)
    noise_std = look.noise_floor * scale * (10 ** (TGC_SHARE * ATTENUATION_DB_PER_CM * r_axis / 40))[:, None]
    envelopes = [scan_convert(np.abs(e + noise_std * (rng.normal(size=e.shape) + 1j * rng.normal(size=e.shape))),
                              grid, pixels, shape, sector) for e in echoes]
    frames = log_compress(np.stack(envelopes), sector, heart.dynamic_range, look.gain_db + heart.gain_offset,
                          look.reject)
    return EchoCase(
        case_id=case_id, view=heart.view, frames=frames, labels=np.stack(labels).astype(np.uint8), sector=sector,
        es_index=es_index, ef=heart.ef, fps=fps, pixel_spacing_mm=float(spacing * 10),
    )


def log_compress(envelope: np.ndarray, sector: np.ndarray, dynamic_range: float, gain_db: float = 0.0,
                 reject: float = 1.0) -> np.ndarray:
    """20 log10 of the envelope plus `gain_db`, shown over `dynamic_range` dB below a reference (the 99.5th
    percentile in the fan of frame 0, shared by all frames so brightness does not flicker), through the grey
    curve x ** reject, to uint8."""
    reference = np.percentile(envelope[0][sector], 99.5)
    db = 20 * np.log10(np.maximum(envelope, 1e-12) / reference) + gain_db
    grey = np.clip((db + dynamic_range) / dynamic_range, 0, 1) ** reject * 255
    return np.where(sector, grey, 0).round().astype(np.uint8)


VIEW_CODE = {"2CH": 2, "4CH": 4}
# What belongs to the patient (shared by the 2CH and 4CH recordings of one heart); the rest is the acquisition's.
PATIENT_FIELDS = ("lv_length", "lv_width", "wall", "apex_wall", "shape_power", "base_shortening", "la_length",
                  "la_width", "ef", "es_phase", "heart_rate", "bend", "rv_length", "rv_width", "ra_length",
                  "ra_width")


def case_rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    """The generator of case `index`: depends on (seed, index, stream) only, not on other cases or their order."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, *stream]))


def draw_patient(seed: int, index: int, view: str, look: ScannerLook = LOOKS["camus"]) -> Heart:
    """A patient's heart seen in `view`: size, shape, EF and rhythm are the patient's (shared by both views);
    depth, sector, tilt, place in the fan and foreshortening are the acquisition's (drawn per view)."""
    patient = foreshortened(draw_heart(case_rng(seed, index), "2CH"), 0.0)
    acquisition = draw_heart(case_rng(seed, index, VIEW_CODE[view]), view, look)
    anatomy = {name: getattr(patient, name) for name in PATIENT_FIELDS}
    return framed(foreshortened(replace(acquisition, foreshortening=0.0, **anatomy), acquisition.foreshortening))


def make_case(seed: int, index: int, view: str, config: PhantomConfig = PhantomConfig(),
              case_id: str | None = None, scan: int = 0) -> EchoCase:
    """One phantom recording; the same (seed, index, view, config) always gives the same case, and the
    2CH and 4CH cases of one index show the same heart. scan: 0 is the dataset's recording; k > 0 records the
    same heart and beat (same labels) again with new scatterers, tissue texture and noise: a second scan."""
    heart = draw_patient(seed, index, view, LOOKS[config.look])
    stream = (VIEW_CODE[view], 1) if scan == 0 else (VIEW_CODE[view], 1, scan)
    case = render_case(heart, config, case_rng(seed, index, *stream), case_id or f"phantom{index:04d}")
    rng = case_rng(seed, index, 0)
    return replace(case, sex=str(rng.choice(["F", "M"])), age=int(rng.integers(25, 90)),
                   image_quality=str(rng.choice(["Good", "Medium", "Poor"], p=[0.5, 0.35, 0.15])))
