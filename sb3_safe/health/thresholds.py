"""The detectors' thresholds, one typed field each (:mod:`sb3_safe.options` checks them)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from sb3_safe.options import (
    AnyFinite,
    Count,
    Fraction,
    FractionOrZero,
    Multiple,
    NonNegative,
    Positive,
    check_fields,
)

__all__ = ["Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """
    Every threshold of the detectors, with defaults that raise nothing critical on healthy runs.

    "Updates" count calls of ``train()`` (one per rollout). Each field's type says what it
    accepts (:mod:`sb3_safe.options`: a count is a whole number >= 1, a fraction is in
    (0, 1], ...); a bad value raises :class:`~sb3_safe.options.OptionError` here and in a profile.
    """

    #: frozen_policy: approx KL below this ...
    frozen_kl: Positive = 1e-5
    #: ... and clip fraction below this ...
    frozen_clip_fraction: Fraction = 1e-3
    #: ... for this many consecutive updates ...
    frozen_updates: Count = 5
    #: ... while the entropy kept at least this fraction of its first value (exploration did not end).
    frozen_entropy_kept: Fraction = 0.5
    #: value_collapse: explained variance below this ...
    collapse_explained_variance: AnyFinite = -1.0
    #: ... for this many consecutive updates ...
    collapse_updates: Count = 5
    #: ... while the rollout's return targets vary: their std is above this fraction of the largest
    #: std the run has seen (a solved task's barely vary, whatever the reward scale).
    collapse_min_returns_std: FractionOrZero = 1e-3
    #: value_divergence: value loss this many times its reference level (geometric mean) ...
    divergence_factor: Multiple = 10.0
    #: ... over this many consecutive updates, each at least half that. Critical when the critic is
    #: also worse than a constant (explained variance < 0) and the loss is still growing (above its
    #: value this many updates before) or ``divergence_severe`` times its level.
    divergence_updates: Count = 2
    #: Updates with a value loss before any is judged (the warm-up) ...
    divergence_window: Count = 10
    #: ... against a reference level: a geometric moving average of the value loss over about this many updates.
    divergence_horizon: Count = 30
    #: The level stops following a loss this many times above it while the critic explains the
    #: returns worse (below 0, or ``divergence_ev_drop`` below its own level): a slow rise of 1.3x
    #: per update cannot drag the reference along ...
    divergence_rise: Multiple = 2.0
    #: ... for at most this many updates; then it follows again (a new scale of the returns that
    #: the critic never learned to explain is a value_collapse warning, not a divergence).
    divergence_max_rise_updates: Count = 30
    #: Critical at this many times the level while the critic is worse than a constant, growing or not.
    divergence_severe: Multiple = 30.0
    #: The rise must also stand out from the loss's own variability: its log at least this many
    #: standard deviations of the log loss around the level. A critic whose loss swings 50x between
    #: rollouts with and without episode ends (CartPole-v1 with rl-zoo's settings) is not diverging
    #: when it swings once more; one whose loss wobbles by 1.4x is, at 10x.
    divergence_noise_multiple: Multiple = 3.0
    #: The reference level is at least this fraction of the largest value loss of the first
    #: ``divergence_window`` updates: a converged critic's loss sits at a noise floor (1e-5), and a
    #: jump from there back to ordinary levels is not divergence.
    divergence_floor: FractionOrZero = 0.01
    #: When explained variance is logged, the critic must also have got worse at explaining the
    #: returns: below 0, or this much below its level (moving average, held with the loss level).
    #: A value loss that rises while explained variance holds is the return scale changing
    #: (learning), not divergence.
    divergence_ev_drop: NonNegative = 0.2
    #: reward_collapse: mean episode return lost this fraction of its gain since the start ...
    reward_collapse_fraction: Fraction = 0.7
    #: ... in this many consecutive updates ...
    reward_collapse_updates: Count = 3
    #: ... within this many updates of its best.
    reward_collapse_window: Count = 50
    #: ... only once the gain is at least this large relative to the starting return's magnitude ...
    reward_collapse_min_gain: NonNegative = 0.2
    #: ... and this many times the run's own noise: how much the change of the mean return from one
    #: update to the next varies over the window (median absolute deviation). No magnitude is
    #: assumed: returns of 0.01 and of 10,000 are judged alike, and a start near 0 does not make
    #: every wobble a gain.
    gain_noise_multiple: Multiple = 8.0
    #: ... and the mean is over at least this many episodes (``episodes`` in the row, when logged):
    #: a mean of 3 early Hopper episodes swings by 70% without anything being wrong.
    reward_collapse_min_episodes: Count = 20
    #: entropy_collapse: std (Gaussian) or entropy (discrete) fell below this fraction of its first value ...
    entropy_collapse_fraction: Fraction = 0.1
    #: ... within this many updates from the start.
    entropy_collapse_updates: Count = 20
    #: no_progress: after this many updates, over at least ``reward_collapse_min_episodes`` episodes,
    #: the mean episode return never made a real gain (``reward_collapse_min_gain``, ``gain_noise_multiple``) ...
    no_progress_updates: Count = 30
    #: ... while exploration (std or entropy) fell below this fraction of its first value. Progress is a gain of
    #: ``reward_collapse_min_gain`` of the start and this many times the run's noise: a lower bar than a gain a
    #: collapse can lose (``gain_noise_multiple``). Measured: a healthy MPE simple_spread run (safe profile, seed 0)
    #: went from -26.5 to -20.5 per agent by update 71, 7.9x its noise of 0.75, and was warned about at 8x.
    no_progress_entropy_kept: Fraction = 0.5
    no_progress_noise_multiple: Multiple = 3.0
    #: kl_spike: approx KL above this multiple of target_kl (or above kl_spike_absolute without one) ...
    kl_spike_factor: Multiple = 5.0
    kl_spike_absolute: Positive = 0.1
    #: ... with clip fraction above this.
    kl_spike_clip_fraction: FractionOrZero = 0.3

    #: policy_blowup: an update's approx KL at least this many times the run's own level (the median approx KL
    #: of its latest calm updates: no absolute KL is assumed, a run stopped at target_kl 0.01 and one that moves
    #: 0.05 per update are judged alike) ...
    blowup_factor: Multiple = 10.0
    #: ... in at least this many of the latest ``blowup_window`` updates ...
    blowup_updates: Count = 3
    blowup_window: Count = 10
    #: ... once the level rests on this many calm updates (it is the median of the latest
    #: ``blowup_reference_updates`` of them) ...
    blowup_warmup: Count = 10
    blowup_reference_updates: Count = 50
    #: ... confirmed by one of: the clip fraction of those updates above ``kl_spike_clip_fraction`` (on average),
    #: the policy's std grown back to this many times its lowest before the onset, or the training return
    #: fallen below its median before the onset by ``no_progress_noise_multiple`` times the run's noise.
    blowup_std_regrowth: Multiple = 1.5
    #: A blow-up whose spikes are sparse: the median approx KL of the latest ``blowup_window`` updates at this many
    #: times the level, confirmed by the std grown back or the clip fraction (not by the return alone). Seen on a
    #: 100M-step run: the median per update went from 0.023 to 0.062 (2.7x) while single updates reached 1,100.
    blowup_sustained_factor: Multiple = 2.5

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
