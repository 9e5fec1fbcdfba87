"""The stimulus-locked scene signal of the generated StudyForrest data.

In real movie fMRI much of the BOLD signal is driven by what is on screen and heard (shots,
settings, faces, speech, sound) and is shared by every viewer: the inter-subject correlation
of sensory cortex reaches 0.3-0.5 (Hasson et al. 2004). That signal knows nothing of the
portrayed emotion, but it is what a split that puts the same movie moment on both sides (the
original's random split of volumes) can recognise. :func:`scene_model` builds it for
:func:`emolib.synthetic.generate_studyforrest` (``scene_size``): the movie cut into scenes of
lognormal length (:func:`movie_scenes`), each with its own random pattern of smooth feature
maps (:func:`scene_maps`) weighted by how strongly each voxel follows the stimulus
(:func:`scene_envelope`), HRF-convolved in movie time (:func:`scene_timecourses`), from the
seed's own random streams, so that it is independent of the labels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from emolib.forrest.timing import RunTiming
from emolib.synthetic.native import brain_mask

__all__ = [
    "SCENE_FEATURES", "SCENE_LOG_SD", "SCENE_MEAN_DURATION", "movie_scenes", "scene_envelope",
    "scene_maps", "scene_model", "scene_timecourses",
]


#: Mean scene length (s) of the stimulus-locked signal. A scene here is a stretch of the movie
#: that looks and sounds the same to the brain (a shot, or a run of shots of one setting and
#: soundscape). Forrest Gump's ~870 shots in the ~2-h cut average ~8 s (Haeusler & Hanke 2016,
#: F1000Research 5:2273), and shots of one setting follow each other, so 12 s.
SCENE_MEAN_DURATION = 12.0
#: Standard deviation of the log of scene lengths. Film shot lengths are close to lognormal
#: (Salt 2006; Cutting et al. 2010); 0.8 gives a median of ~9 s, ~3 % under 2 s, ~5 % over 33 s.
SCENE_LOG_SD = 0.8
#: Stimulus features a scene is described by (its look, motion, faces, speech, sound, ...):
#: the shared response is their voxel-wise weighted sum, the low-rank form in which movie fMRI
#: is shared across subjects (the shared response model fits tens of such components).
SCENE_FEATURES = 50
_SCENE_STREAM = 0x5CE7E  # the scene model draws from its own streams of the seed


def _scene_rng(seed: int, part: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SCENE_STREAM, part])


def movie_scenes(duration: float, seed: int = 0, n_features: int = SCENE_FEATURES,
                 mean_duration: float = SCENE_MEAN_DURATION,
                 log_sd: float = SCENE_LOG_SD) -> tuple[pd.DataFrame, np.ndarray]:
    """Cut a movie of ``duration`` seconds into scenes and draw each scene's stimulus features.

    Scene lengths are lognormal with mean ``mean_duration`` and log-sd ``log_sd`` (at least
    1 s); each scene's features are independent standard normals. Both are drawn one scene
    after the other from the seed's own scene stream, so they are a function of movie time:
    a longer movie (another ``duration`` or run timing) has the same scenes at the same
    moments, and the emotion labels (drawn from other streams) are independent of them.

    Returns
    -------
    scenes : pandas.DataFrame
        ``onset`` and ``duration`` (s) of each scene, covering ``[0, duration]``.
    features : numpy.ndarray
        ``(n_scenes, n_features)`` stimulus features of each scene.
    """
    rng = _scene_rng(seed, 0)
    mu = math.log(mean_duration) - log_sd ** 2 / 2
    onsets, lengths, features = [], [], []
    t = 0.0
    while t < duration:
        length = max(1.0, float(rng.lognormal(mu, log_sd)))
        onsets.append(t)
        lengths.append(length)
        features.append(rng.standard_normal(n_features))
        t += length
    scenes = pd.DataFrame({"onset": onsets, "duration": lengths})
    return scenes, np.array(features).reshape(len(onsets), n_features)


def scene_envelope(shape: tuple[int, int, int]) -> np.ndarray:
    """How strongly each template voxel follows the stimulus, in ``[0, 1]`` (0 outside the
    brain): 1 in a posterior "visual" third and in lateral "auditory" temporal regions, falling
    smoothly to 0.25 elsewhere (inter-subject correlation in movie fMRI is highest in
    sensory cortex and low but present over much of the brain)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    visual = 1.0 / (1.0 + np.exp((y + 0.35) / 0.12))
    auditory = np.exp(-((np.abs(x) - 0.7) / 0.2) ** 2 - (y / 0.35) ** 2
                      - ((z + 0.15) / 0.25) ** 2)
    env = 0.25 + 0.75 * np.maximum(visual, auditory)
    return np.where(brain_mask(shape), env, 0.0)


def scene_maps(shape: tuple[int, int, int], seed: int = 0,
               n_features: int = SCENE_FEATURES) -> np.ndarray:
    """Each voxel's weights on the scene features, ``(n_features, n_voxels)`` float32 on the
    template grid.

    Every feature's map is a smooth random field (Gaussian, sigma 1.5 voxels on the real
    80 x 80 x 35 grid, scaled down with smaller grids like the planted regions, at least 0.75);
    each voxel's weight vector is then scaled to the length :func:`scene_envelope` gives, so
    that a voxel's sustained response to a scene has standard deviation (over scenes) equal to
    its envelope.
    """
    from scipy.ndimage import gaussian_filter

    rng = _scene_rng(seed, 1)
    sigma = max(0.75, 1.5 * min(1.0, min(shape) / 35))
    fields = rng.standard_normal((n_features, *shape)).astype(np.float32)
    for f in fields:
        gaussian_filter(f, sigma, output=f, mode="nearest")
    maps = fields.reshape(n_features, -1)
    norm = np.linalg.norm(maps, axis=0)
    env = scene_envelope(shape).ravel()
    maps *= (env / np.where(norm > 0, norm, 1.0)).astype(np.float32)
    return maps


def scene_timecourses(scenes: pd.DataFrame, features: np.ndarray, frame_times: np.ndarray,
                      tr: float, oversampling: int = 16) -> np.ndarray:
    """HRF-convolved (Glover) scene features at one run's ``frame_times`` (movie time),
    ``(n_volumes, n_features)``: a scene held long enough evokes its features (plateau 1).

    As for the emotion (:func:`emolib.synthetic.forrest.class_regressors`), only what is on
    screen during the run drives it: scenes, or the parts of them, shown before the run started
    were seen in the previous run, before the break, so a run's response rises from rest. The
    convolution runs on a grid of ``tr / oversampling`` steps anchored at movie time 0, the same
    for every run, so in the overlap of two runs the later run's response equals the earlier
    run's exactly once the HRF (32 s long) has forgotten the break.
    """
    from nilearn.glm.first_level.hemodynamic_models import glover_hrf
    from scipy.signal import lfilter

    dt = tr / oversampling
    first = int(math.floor(frame_times[0] / dt + 1e-9))
    last = int(math.ceil(frame_times[-1] / dt - 1e-9))
    grid = np.arange(first, last + 1) * dt  # movie time
    run_start, run_end = frame_times[0], frame_times[-1] + tr
    onsets = scenes["onset"].to_numpy(float)
    offsets = onsets + scenes["duration"].to_numpy(float)
    # the scene on screen at each grid time (none before the run started)
    k = np.searchsorted(offsets, grid, side="right")
    shown = (grid >= run_start - 1e-9) & (grid < run_end) & (k < len(onsets))
    stim = np.zeros((grid.size, features.shape[1]))
    stim[shown] = features[k[shown]]
    resp = lfilter(glover_hrf(tr, oversampling, time_length=32.0), [1.0], stim, axis=0)
    return np.stack([np.interp(frame_times, grid, resp[:, j])
                     for j in range(features.shape[1])], axis=1)


def scene_model(shape: tuple[int, int, int], timing: RunTiming, seed: int = 0) -> dict:
    """The stimulus-locked scene signal :func:`generate_studyforrest` adds, in template space.

    Returns
    -------
    dict
        ``scenes`` and ``features`` (:func:`movie_scenes` of the whole movie), ``maps``
        (:func:`scene_maps`) and ``timecourses``: per run, :func:`scene_timecourses` at its
        frames. The signal of run ``r`` (fraction of baseline, before ``scene_size``) is
        ``timecourses[r] @ maps``, the same in every subject; each subject samples it in its
        own grid.
    """
    duration = max(s + timing.tr * n for s, n in zip(timing.starts, timing.n_volumes,
                                                      strict=True))
    scenes, features = movie_scenes(duration, seed)
    return {
        "scenes": scenes, "features": features, "maps": scene_maps(shape, seed),
        "timecourses": [scene_timecourses(scenes, features, s + timing.tr * np.arange(n),
                                          timing.tr)
                        for s, n in zip(timing.starts, timing.n_volumes, strict=True)],
    }
